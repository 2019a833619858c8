//! Root-only end-to-end tests: real netns, veth, bridges and iptables rules.
//!
//! Every test works on its own resources: a /24 under 10.99.0.0/16 reserved through a claim
//! file (so tests in parallel processes never share one), a bridge `cb<6 hex>`, namespaces
//! `crisp-t-<hex>`, a network name `t<hex>` that tags every iptables rule, and temp dirs.
//! Drop guards remove all of it even when a test fails.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crisp_cni::runtime::{CniConfig, CniRuntime, PodNetwork, PortMapping};

macro_rules! need_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
    };
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn uniq() -> u32 {
    let c = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (std::process::id() << 8) ^ c ^ (t & 0xffff_ff00)
}

fn sh(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

fn bridge_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_crisp-bridge"))
}

const CLAIM_DIR: &str = "/run/crisp-cni-test-subnets";

/// A claimed 10.99.<n>.0/24 plus the bridge name, network name and directories that go with
/// it. Drop removes the bridge, every iptables rule mentioning the network name, and the claim.
struct TestNet {
    n: u8,
    bridge: String,
    name: String,
    dir: tempfile::TempDir,
}

impl TestNet {
    fn new() -> TestNet {
        std::fs::create_dir_all(CLAIM_DIR).unwrap();
        let start = uniq();
        for i in 0..250u32 {
            let n = ((start.wrapping_add(i * 7)) % 240 + 10) as u8;
            let claim = Path::new(CLAIM_DIR).join(n.to_string());
            let taken = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim)
            {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id()).unwrap();
                    true
                }
                Err(_) => {
                    // Take over claims of processes that are gone.
                    let owner: i32 = std::fs::read_to_string(&claim)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                    if owner > 0 && !Path::new(&format!("/proc/{owner}")).exists() {
                        std::fs::write(&claim, std::process::id().to_string()).unwrap();
                        true
                    } else {
                        false
                    }
                }
            };
            if taken {
                let h = uniq();
                return TestNet {
                    n,
                    bridge: format!("cb{:06x}", h & 0xff_ffff),
                    name: format!("t{:06x}n{n}", h & 0xff_ffff),
                    dir: tempfile::tempdir().unwrap(),
                };
            }
        }
        panic!("no free test subnet");
    }

    fn subnet(&self) -> String {
        format!("10.99.{}.0/24", self.n)
    }
    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, self.n, 1)
    }
    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }
    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }
    fn bin_dir(&self) -> PathBuf {
        bridge_bin().parent().unwrap().to_path_buf()
    }

    fn write_conf(&self, file: &str, json: &serde_json::Value) {
        std::fs::create_dir_all(self.conf_dir()).unwrap();
        std::fs::write(
            self.conf_dir().join(file),
            serde_json::to_vec_pretty(json).unwrap(),
        )
        .unwrap();
    }

    /// A conflist with one crisp-bridge plugin on this test's bridge and subnet.
    fn crisp_conflist(&self) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [{
                "type": "crisp-bridge",
                "bridge": self.bridge,
                "subnet": self.subnet(),
                "mtu": 1400,
                "hairpinMode": true,
                "ipMasq": true,
                "dataDir": self.data_dir(),
                "capabilities": {"portMappings": true}
            }]
        })
    }

    fn runtime(&self, bin_dirs: Vec<PathBuf>) -> CniRuntime {
        CniRuntime::load(CniConfig {
            conf_dir: self.conf_dir(),
            bin_dirs,
            cache_dir: self.cache_dir(),
        })
        .unwrap()
        .with_timeout(Duration::from_secs(30))
    }

    /// iptables-save lines (both tables) mentioning `needle`.
    fn rules_with(needle: &str) -> Vec<String> {
        let mut out = Vec::new();
        for t in ["nat", "filter"] {
            let (_, s) = sh("iptables-save", &["-t", t]);
            out.extend(
                s.lines()
                    .filter(|l| l.contains(needle))
                    .map(|l| format!("{t}: {l}")),
            );
        }
        out
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Rules tagged with the network name (crisp-bridge's and the reference plugins').
        for t in ["nat", "filter"] {
            let (_, saved) = sh("iptables-save", &["-t", t]);
            let mut chains = Vec::new();
            for l in saved
                .lines()
                .filter(|l| l.starts_with("-A ") && l.contains(&self.name))
            {
                let args: Vec<String> = l[3..]
                    .split_whitespace()
                    .map(|s| s.trim_matches('"').to_string())
                    .collect();
                if let Some(i) = args.iter().position(|a| a == "-j") {
                    if let Some(c) = args
                        .get(i + 1)
                        .filter(|c| c.starts_with("CNI-") && !c.starts_with("CNI-HOSTPORT"))
                    {
                        chains.push(c.clone());
                    }
                }
                let mut script = format!("*{t}\n-D {}\nCOMMIT\n", &l[3..]);
                let mut child = Command::new("iptables-restore")
                    .args(["-w", "--noflush"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(script.as_bytes())
                    .unwrap();
                let _ = child.wait();
                script.clear();
            }
            for c in chains {
                sh("iptables", &["-w", "-t", t, "-F", &c]);
                sh("iptables", &["-w", "-t", t, "-X", &c]);
            }
        }
        sh("ip", &["link", "del", &self.bridge]);
        let _ = std::fs::remove_file(Path::new(CLAIM_DIR).join(self.n.to_string()));
    }
}

/// A named netns (`/run/netns/crisp-t-<hex>`), deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!("crisp-t-{:08x}", uniq());
        let (ok, out) = sh("ip", &["netns", "add", &name]);
        assert!(ok, "ip netns add {name}: {out}");
        Netns { name }
    }
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
    fn exec(&self, args: &[&str]) -> (bool, String) {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(args);
        sh("ip", &a)
    }
    fn ping(&self, ip: &str) -> bool {
        // The first packet may need ARP on a fresh bridge port: allow a few tries.
        (0..5).any(|_| self.exec(&["busybox", "ping", "-c1", "-W1", ip]).0)
    }
    fn addrs(&self, ifname: &str) -> String {
        sh(
            "ip",
            &["-n", &self.name, "-4", "-o", "addr", "show", "dev", ifname],
        )
        .1
    }
    fn delete(&self) {
        sh("ip", &["netns", "del", &self.name]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

fn pod(id: &str, ns: &Netns) -> PodNetwork {
    PodNetwork {
        id: id.to_string(),
        netns: ns.path(),
        ifname: "eth0".into(),
        pod_name: format!("pod-{id}"),
        pod_namespace: "default".into(),
        pod_uid: format!("uid-{id}"),
        ..Default::default()
    }
}

fn pod_id() -> String {
    format!("{:016x}{:016x}", uniq(), uniq() as u64 * 0x9e37_79b9)
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn default_config_is_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let rt = CniRuntime::load(CniConfig {
        conf_dir: dir.path().join("none"),
        bin_dirs: vec![dir.path().to_path_buf()],
        cache_dir: dir.path().join("cache"),
    })
    .unwrap();
    assert!(rt.is_default());
    assert_eq!(rt.network_name(), "crisp");
    let e = rt.status().unwrap_err();
    assert!(
        e.contains("crisp-bridge") && e.contains(&dir.path().display().to_string()),
        "{e}"
    );
    // With the plugin found the default network is ready.
    let rt = CniRuntime::load(CniConfig {
        conf_dir: dir.path().join("none"),
        bin_dirs: vec![dir.path().into(), bridge_bin().parent().unwrap().into()],
        cache_dir: dir.path().join("cache"),
    })
    .unwrap();
    rt.status().unwrap();
}

#[test]
fn broken_or_incomplete_configs_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("10-broken.conflist"), "{\"cniVersion\": ").unwrap();
    let cfg = CniConfig {
        conf_dir: conf_dir.clone(),
        bin_dirs: vec![PathBuf::from("/usr/lib/cni")],
        cache_dir: dir.path().join("cache"),
    };
    let e = CniRuntime::load(cfg.clone()).unwrap_err().to_string();
    assert!(e.contains("10-broken.conflist"), "{e}");

    std::fs::remove_file(conf_dir.join("10-broken.conflist")).unwrap();
    std::fs::write(
        conf_dir.join("10-missing.conflist"),
        r#"{"cniVersion":"1.0.0","name":"m","plugins":[{"type":"bridge"},{"type":"no-such-plugin"}]}"#,
    )
    .unwrap();
    let rt = CniRuntime::load(cfg).unwrap();
    assert!(!rt.is_default());
    let e = rt.status().unwrap_err();
    assert!(
        e.contains("no-such-plugin") && e.contains("/usr/lib/cni"),
        "{e}"
    );

    // add names the missing plugin too (the netns must exist: use our own).
    let p = PodNetwork {
        id: "x".into(),
        netns: "/proc/self/ns/net".into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    let rt2 = CniRuntime::load(CniConfig {
        conf_dir: conf_dir.clone(),
        bin_dirs: vec![dir.path().join("empty")],
        cache_dir: dir.path().join("cache"),
    })
    .unwrap();
    let e = rt2.add(&p).unwrap_err().to_string();
    assert!(e.contains("\"bridge\" not found"), "{e}");
}

#[test]
fn plugin_errors_and_timeouts_are_surfaced() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let write_plugin = |name: &str, body: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_plugin(
        "failing",
        r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":7,"msg":"bad thing","details":"really"}'; exit 1"#,
    );
    write_plugin("stderr-only", "cat >/dev/null; echo oops >&2; exit 3");
    write_plugin("hang", "sleep 30");
    let conf_dir = dir.path().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let p = PodNetwork {
        id: "x".into(),
        netns: "/proc/self/ns/net".into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    for (ty, want) in [
        ("failing", vec!["failing", "bad thing", "code 7", "really"]),
        ("stderr-only", vec!["stderr-only", "oops"]),
        ("hang", vec!["hang", "timed out"]),
    ] {
        std::fs::write(
            conf_dir.join("10.conf"),
            format!(r#"{{"cniVersion":"1.0.0","name":"e","type":"{ty}"}}"#),
        )
        .unwrap();
        let rt = CniRuntime::load(CniConfig {
            conf_dir: conf_dir.clone(),
            bin_dirs: vec![bin.clone()],
            cache_dir: dir.path().join("cache"),
        })
        .unwrap()
        .with_timeout(Duration::from_millis(500));
        let start = std::time::Instant::now();
        let e = rt.add(&p).unwrap_err().to_string();
        for w in want {
            assert!(e.contains(w), "{ty}: {e}");
        }
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn crisp_bridge_pods_reach_each_other_and_del_cleans_up() {
    need_root!();
    let net = TestNet::new();
    net.write_conf("10-test.conflist", &net.crisp_conflist());
    let rt = net.runtime(vec![net.bin_dir()]);
    assert!(!rt.is_default());
    rt.status().unwrap();

    let (ns1, ns2) = (Netns::new(), Netns::new());
    let (id1, id2) = (pod_id(), pod_id());
    let (p1, p2) = (pod(&id1, &ns1), pod(&id2, &ns2));
    let r1 = rt.add(&p1).unwrap();
    let r2 = rt.add(&p2).unwrap();
    let (ip1, ip2) = (r1.ips[0], r2.ips[0]);
    assert_ne!(ip1, ip2);
    for ip in [ip1, ip2] {
        let IpAddr::V4(v4) = ip else { panic!() };
        assert_eq!(v4.octets()[..3], [10, 99, net.n]);
    }
    assert_eq!(r1.raw["cniVersion"], "1.0.0");
    assert_eq!(r1.raw["interfaces"][0]["name"], net.bridge.as_str());
    assert_eq!(r1.raw["interfaces"][2]["name"], "eth0");
    assert_eq!(
        r1.raw["interfaces"][2]["sandbox"],
        ns1.path().display().to_string()
    );
    assert_eq!(r1.raw["ips"][0]["interface"], 2);
    assert_eq!(r1.raw["ips"][0]["gateway"], net.gateway().to_string());
    assert!(
        ns1.addrs("eth0").contains(&format!("{ip1}/24")),
        "{}",
        ns1.addrs("eth0")
    );
    assert!(ns1.exec(&["ip", "link", "show", "lo"]).1.contains("UP"));
    let (_, mtu) = ns1.exec(&["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1400");

    let veth1 = r1.raw["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(link_exists(&veth1));
    assert_eq!(
        std::fs::read_to_string(format!("/sys/class/net/{veth1}/brport/hairpin_mode"))
            .unwrap()
            .trim(),
        "1"
    );
    assert!(std::fs::read_link(format!("/sys/class/net/{veth1}/master"))
        .unwrap()
        .ends_with(&net.bridge));

    assert!(ns1.ping(&ip2.to_string()), "pod1 -> pod2");
    assert!(ns2.ping(&ip1.to_string()), "pod2 -> pod1");
    assert!(ns1.ping(&net.gateway().to_string()), "pod1 -> gateway");

    rt.check(&p1).unwrap();
    // No hostPorts: the pods have no rules of their own, their network has its masquerade and
    // forward rules, once.
    assert_eq!(TestNet::rules_with(&id1), Vec::<String>::new());
    let network_tag = format!("crisp:{}:subnet:", net.name);
    let network_rules = TestNet::rules_with(&network_tag);
    assert_eq!(network_rules.len(), 3, "{network_rules:#?}");
    assert!(
        network_rules.iter().any(|r| r.contains("MASQUERADE")),
        "{network_rules:#?}"
    );
    let lease_dir = net.data_dir().join(&net.name);
    assert!(lease_dir.join(ip1.to_string()).exists());
    let cache = crisp_cni::runtime::cache_file(&net.cache_dir(), &net.name, &id1, "eth0");
    assert!(cache.exists());

    rt.del(&p1).unwrap();
    assert!(!link_exists(&veth1), "veth still there");
    assert!(
        !lease_dir.join(ip1.to_string()).exists(),
        "lease still there"
    );
    assert_eq!(TestNet::rules_with(&id1), Vec::<String>::new());
    assert!(!cache.exists());
    assert!(!ns1.addrs("eth0").contains(&ip1.to_string()));
    rt.del(&p1).unwrap(); // twice is fine
    assert!(rt.check(&p1).is_err());
    assert!(ns2.ping(&net.gateway().to_string()), "pod2 unaffected");
    assert_eq!(
        TestNet::rules_with(&network_tag),
        network_rules,
        "the network's rules went with a pod that was not its last"
    );

    // DEL after the netns vanished.
    ns2.delete();
    rt.del(&p2).unwrap();
    assert_eq!(TestNet::rules_with(&id2), Vec::<String>::new());
    assert!(!lease_dir.join(ip2.to_string()).exists());
    assert_eq!(
        TestNet::rules_with(&network_tag),
        Vec::<String>::new(),
        "the network's last DEL left its rules"
    );
    rt.del(&p2).unwrap();

    // DEL of an id never added.
    rt.del(&pod(&pod_id(), &ns1)).unwrap();
}

#[test]
fn del_uses_the_cached_config_after_the_conflist_changed() {
    need_root!();
    let net = TestNet::new();
    net.write_conf("10-test.conflist", &net.crisp_conflist());
    let ns = Netns::new();
    let id = pod_id();
    let p = pod(&id, &ns);
    let r = net.runtime(vec![net.bin_dir()]).add(&p).unwrap();
    let veth = r.raw["interfaces"][1]["name"].as_str().unwrap().to_string();
    // The admin replaces the config by one under another name (crispd restarts).
    std::fs::remove_file(net.conf_dir().join("10-test.conflist")).unwrap();
    net.write_conf(
        "05-other.conflist",
        &serde_json::json!({"cniVersion":"1.0.0","name":"other","plugins":[{"type":"no-such-plugin"}]}),
    );
    let rt = net.runtime(vec![net.bin_dir()]);
    assert_eq!(rt.network_name(), "other");
    rt.del(&p).unwrap();
    assert!(!link_exists(&veth));
    assert_eq!(TestNet::rules_with(&id), Vec::<String>::new());
    assert!(!net
        .data_dir()
        .join(&net.name)
        .join(r.ips[0].to_string())
        .exists());
}

#[test]
fn del_before_netns_removal_leaves_the_veth_to_the_netns() {
    need_root!();
    let net = TestNet::new();
    net.write_conf("10-test.conflist", &net.crisp_conflist());
    let rt = net.runtime(vec![net.bin_dir()]);
    let ns = Netns::new();
    let p = pod(&pod_id(), &ns);
    let r = rt.add(&p).unwrap();
    let veth = r.raw["interfaces"][1]["name"].as_str().unwrap().to_string();
    let ip = r.ips[0];

    rt.del_before_netns_removal(&p).unwrap();
    // Released at once; the host end is down, so it forwards nothing for the address's next
    // holder while the pair waits for the netns to go.
    assert!(!net.data_dir().join(&net.name).join(ip.to_string()).exists());
    let flags = std::fs::read_to_string(format!("/sys/class/net/{veth}/flags")).unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & libc::IFF_UP as u32, 0, "{veth} still up");
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{veth}/master")).exists(),
        "{veth} still on the bridge"
    );
    rt.del_before_netns_removal(&p).unwrap(); // twice is fine

    ns.delete();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while link_exists(&veth) {
        assert!(
            std::time::Instant::now() < deadline,
            "{veth} outlived its netns"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Without the netns (a DEL after a restart), there is no promise to rely on: nothing left.
    rt.del_before_netns_removal(&p).unwrap();
    assert!(!link_exists(&veth));

    // A netns that outlives the runtime's pin (someone holds it) keeps its pair: a later DEL
    // on the network deletes it once the grace period has passed.
    let ns2 = Netns::new();
    let p2 = pod(&pod_id(), &ns2);
    let r2 = rt.add(&p2).unwrap();
    let veth2 = r2.raw["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let held = std::fs::File::open(ns2.path()).unwrap();
    rt.del_before_netns_removal(&p2).unwrap();
    ns2.delete();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(link_exists(&veth2), "the held netns lost its veth");
    let mark = net.data_dir().join(&net.name).join("detached").join(&veth2);
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&mark)
        .unwrap()
        .set_modified(past)
        .unwrap();
    rt.del(&pod(&pod_id(), &ns)).unwrap();
    assert!(
        !link_exists(&veth2),
        "the detached veth outlived the grace period"
    );
    assert!(!mark.exists());
    drop(held);
}

#[test]
fn concurrent_adds_and_dels_on_one_bridge() {
    need_root!();
    let net = TestNet::new();
    net.write_conf("10-test.conflist", &net.crisp_conflist());
    let rt = net.runtime(vec![net.bin_dir()]);
    let nss: Vec<Netns> = (0..6).map(|_| Netns::new()).collect();
    let pods: Vec<PodNetwork> = nss.iter().map(|ns| pod(&pod_id(), ns)).collect();
    // The first ADDs race to create the bridge and the shared chains.
    let ips: Vec<IpAddr> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .map(|p| s.spawn(|| rt.add(p).unwrap().ips[0]))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: std::collections::HashSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), pods.len(), "{ips:?}");
    assert!(nss[0].ping(&ips[5].to_string()));
    // An unmounted leftover netns file instead of the namespace: DEL still cleans the host.
    let stale = net.dir.path().join("stale-netns");
    std::fs::write(&stale, "").unwrap();
    let mut p0 = pods[0].clone();
    p0.netns = stale;
    std::thread::scope(|s| {
        s.spawn(|| rt.del(&p0).unwrap());
        for p in &pods[1..] {
            s.spawn(|| rt.del(p).unwrap());
        }
    });
    for p in &pods {
        assert_eq!(TestNet::rules_with(&p.id), Vec::<String>::new());
    }
    let leases: Vec<_> = std::fs::read_dir(net.data_dir().join(&net.name))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<Ipv4Addr>().ok())
        .collect();
    assert!(leases.is_empty(), "{leases:?}");
    assert!(rt.add(&p0).is_err(), "ADD into a non-netns file must fail");
}

/// A TCP server inside `ns` answering "hi <n>" once per connection, on a thread that entered
/// the namespace.
fn serve_in(ns: &Netns, port: u16) -> std::sync::mpsc::Receiver<()> {
    let path = ns.path();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        tx.send(()).unwrap();
        for (i, c) in l.incoming().enumerate() {
            let Ok(mut c) = c else { break };
            let _ = writeln!(c, "hi {i}");
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    rx
}

fn free_port() -> u16 {
    for _ in 0..100 {
        let p = 20000 + (uniq() % 30000) as u16;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port");
}

/// `container_port` published on every host address at `hp` and on 127.0.0.1 at `hp_local`;
/// the protocol once upper- and once lower-case, as both occur in the wild.
fn host_port_pair(hp: u16, hp_local: u16, container_port: u16, protocol: &str) -> Vec<PortMapping> {
    vec![
        PortMapping {
            host_port: hp,
            container_port,
            protocol: protocol.to_uppercase(),
            host_ip: String::new(),
        },
        PortMapping {
            host_port: hp_local,
            container_port,
            protocol: protocol.to_lowercase(),
            host_ip: "127.0.0.1".into(),
        },
    ]
}

fn fetch(addr: (IpAddr, u16)) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn host_port_reaches_the_pod_on_localhost() {
    need_root!();
    let net = TestNet::new();
    net.write_conf("10-test.conflist", &net.crisp_conflist());
    let rt = net.runtime(vec![net.bin_dir()]);
    let ns = Netns::new();
    let id = pod_id();
    let mut p = pod(&id, &ns);
    let (hp, hp_local) = (free_port(), free_port());
    p.port_mappings = host_port_pair(hp, hp_local, 8080, "tcp");
    let r = rt.add(&p).unwrap();
    let _server = serve_in(&ns, 8080);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let gw = IpAddr::V4(net.gateway());
    let got = fetch((lo, hp)).expect("127.0.0.1:hostPort");
    assert!(got.starts_with("hi"), "{got:?}");
    let got = fetch((lo, hp_local)).expect("127.0.0.1:hostPort (hostIP 127.0.0.1)");
    assert!(got.starts_with("hi"), "{got:?}");
    let got = fetch((gw, hp)).expect("bridge ip:hostPort");
    assert!(got.starts_with("hi"), "{got:?}");
    let got = fetch((r.ips[0], 8080)).expect("pod ip directly");
    assert!(got.starts_with("hi"), "{got:?}");
    let rules = TestNet::rules_with(&id);
    assert!(
        rules.iter().any(|r| r.contains(&format!("--dport {hp}"))),
        "{rules:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(format!(
            "/proc/sys/net/ipv4/conf/{}/route_localnet",
            net.bridge
        ))
        .unwrap()
        .trim(),
        "1"
    );

    rt.del(&p).unwrap();
    assert_eq!(TestNet::rules_with(&id), Vec::<String>::new());
    assert!(fetch((lo, hp)).is_err(), "hostPort still answers after DEL");
}

/// A UDP echo server inside `ns` on a thread that entered the namespace.
fn echo_udp_in(ns: &Netns, port: u16) {
    let path = ns.path();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], peer);
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

/// Sends a datagram to `addr` and waits for its echo (a few tries: UDP may drop one).
fn udp_round_trip(addr: (IpAddr, u16)) -> Option<String> {
    let s = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let mut buf = [0u8; 64];
    for _ in 0..6 {
        s.send_to(b"ping-udp", addr).ok()?;
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

#[test]
fn udp_host_port_reaches_the_pod() {
    need_root!();
    let net = TestNet::new();
    net.write_conf("10-test.conflist", &net.crisp_conflist());
    let rt = net.runtime(vec![net.bin_dir()]);
    let ns = Netns::new();
    let id = pod_id();
    let mut p = pod(&id, &ns);
    let (hp, hp_local) = (free_port(), free_port());
    p.port_mappings = host_port_pair(hp, hp_local, 5353, "udp");
    rt.add(&p).unwrap();
    echo_udp_in(&ns, 5353);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(udp_round_trip((lo, hp)).as_deref(), Some("ping-udp"));
    assert_eq!(udp_round_trip((lo, hp_local)).as_deref(), Some("ping-udp"));
    assert_eq!(
        udp_round_trip((IpAddr::V4(net.gateway()), hp)).as_deref(),
        Some("ping-udp")
    );
    let rules = TestNet::rules_with(&id);
    assert!(
        rules
            .iter()
            .any(|r| r.contains("-p udp") && r.contains(&format!("--dport {hp}"))),
        "{rules:#?}"
    );
    rt.del(&p).unwrap();
    assert_eq!(TestNet::rules_with(&id), Vec::<String>::new());
}

#[test]
fn reference_plugins_interop() {
    need_root!();
    let net = TestNet::new();
    let ref_dir = PathBuf::from("/usr/lib/cni");
    if !ref_dir.join("bridge").exists() {
        eprintln!("skipping: no reference plugins in /usr/lib/cni");
        return;
    }
    net.write_conf(
        "10-ref.conflist",
        &serde_json::json!({
            "cniVersion": "1.0.0",
            "name": net.name,
            "plugins": [
                {"type": "loopback"},
                {
                    "type": "bridge",
                    "bridge": net.bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": net.subnet()}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": net.data_dir()
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
            ]
        }),
    );
    let rt = net.runtime(vec![ref_dir]);
    rt.status().unwrap();
    let ns = Netns::new();
    let id = pod_id();
    let mut p = pod(&id, &ns);
    let hp = free_port();
    p.port_mappings = vec![PortMapping {
        host_port: hp,
        container_port: 8080,
        protocol: "tcp".into(),
        host_ip: String::new(),
    }];
    let r = rt.add(&p).unwrap();
    let IpAddr::V4(ip) = r.ips[0] else { panic!() };
    assert_eq!(ip.octets()[..3], [10, 99, net.n]);
    assert!(ns.addrs("eth0").contains(&format!("{ip}/24")));
    assert!(ns.ping(&net.gateway().to_string()));
    // No CHECK here: portmap 1.1.1's CHECK looks for its IPv6 chain even on an IPv4-only pod
    // and fails ("could not check ipv6 dnat"), a bug of that plugin version.
    assert!(!TestNet::rules_with(&id).is_empty());
    let _server = serve_in(&ns, 8080);
    let got = fetch((IpAddr::V4(net.gateway()), hp)).expect("hostPort via reference portmap");
    assert!(got.starts_with("hi"), "{got:?}");

    rt.del(&p).unwrap();
    assert_eq!(TestNet::rules_with(&id), Vec::<String>::new());
    assert!(!net.data_dir().join(&net.name).join(ip.to_string()).exists());
    assert!(!ns.addrs("eth0").contains(&ip.to_string()));
    rt.del(&p).unwrap();
}

#[test]
fn crisp_bridge_speaks_older_versions_and_reports_errors() {
    need_root!();
    let net = TestNet::new();
    let mut list = net.crisp_conflist();
    list["cniVersion"] = "0.4.0".into();
    net.write_conf("10-test.conflist", &list);
    let rt = net.runtime(vec![net.bin_dir()]);
    let ns = Netns::new();
    let id = pod_id();
    let p = pod(&id, &ns);
    let r = rt.add(&p).unwrap();
    assert_eq!(r.raw["cniVersion"], "0.4.0");
    assert_eq!(r.raw["ips"][0]["version"], "4");
    rt.check(&p).unwrap();
    // A second ADD for another id on the same ifname in the same netns fails with the
    // plugin's message, and leaves nothing behind.
    let id2 = pod_id();
    let e = rt.add(&pod(&id2, &ns)).unwrap_err().to_string();
    assert!(
        e.contains("crisp-bridge") && e.contains("already exists"),
        "{e}"
    );
    assert_eq!(TestNet::rules_with(&id2), Vec::<String>::new());
    // ... and the failed attachment's cleanup did not touch the first pod's eth0.
    rt.check(&p).unwrap();
    assert!(ns.ping(&net.gateway().to_string()));
    rt.del(&p).unwrap();
    assert!(!ns.addrs("eth0").contains(&r.ips[0].to_string()));
    assert_eq!(TestNet::rules_with(&id), Vec::<String>::new());

    // VERSION and --version of the binary.
    let out = Command::new(bridge_bin())
        .env("CNI_COMMAND", "VERSION")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&"1.0.0".into()));
    let out = Command::new(bridge_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("crisp-bridge"));
}
