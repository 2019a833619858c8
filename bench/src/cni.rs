//! `crisp-bench --cni`: CNI ADD+DEL time per pod with crisp-bridge vs Debian's reference
//! plugins (bridge + host-local + portmap), through the same CNI runtime (crisp-cni) so only
//! the plugins differ. Each side gets its own bridge and private /24; every pod gets a fresh
//! network namespace (created outside the timed part) and one hostPort mapping, as a typical
//! pod with a port would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crisp_cni::runtime::{CniConfig, CniRuntime, PodNetwork, PortMapping};
use serde_json::json;

use crate::drive::percentile;

const REFERENCE_BIN_DIR: &str = "/usr/lib/cni";

/// The plugins of one side.
#[derive(Clone, Copy)]
enum Side {
    CrispBridge,
    Reference,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::CrispBridge => "crisp-bridge",
            Side::Reference => "reference bridge+host-local+portmap",
        }
    }

    fn conflist(self, bridge: &str, octet: u8, data_dir: &Path) -> serde_json::Value {
        let subnet = format!("10.90.{octet}.0/24");
        let gateway = format!("10.90.{octet}.1");
        match self {
            Side::CrispBridge => json!({
                "cniVersion": "1.0.0",
                "name": bridge,
                "plugins": [{
                    "type": "crisp-bridge", "bridge": bridge, "subnet": subnet,
                    "gateway": gateway, "ipMasq": true, "hairpinMode": true,
                    "dataDir": data_dir, "capabilities": { "portMappings": true }
                }]
            }),
            Side::Reference => json!({
                "cniVersion": "1.0.0",
                "name": bridge,
                "plugins": [
                    {
                        "type": "bridge", "bridge": bridge, "isGateway": true,
                        "ipMasq": true, "hairpinMode": true,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{ "subnet": subnet, "gateway": gateway }]],
                            "routes": [{ "dst": "0.0.0.0/0" }],
                            "dataDir": data_dir
                        }
                    },
                    { "type": "portmap", "capabilities": { "portMappings": true } }
                ]
            }),
        }
    }
}

/// A named network namespace (`ip netns`), deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> anyhow::Result<Netns> {
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .context("ip netns add")?
            .success();
        if !ok {
            bail!("ip netns add {name} failed");
        }
        Ok(Netns(name))
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A bridge a side's plugin created, deleted on drop (DEL leaves bridges, as CNI plugins do).
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[derive(serde::Serialize)]
pub struct CniFigures {
    pub side: &'static str,
    pub add_p50_ms: f64,
    pub del_p50_ms: f64,
    pub add_del_p50_ms: f64,
    pub add_del_p99_ms: f64,
}

/// Runs `pods` ADD+DEL cycles per side; `bin_dir` holds crisp-bridge; `work` is scratch.
pub fn run(pods: usize, bin_dir: &Path, work: &Path) -> anyhow::Result<Vec<CniFigures>> {
    if !Path::new(REFERENCE_BIN_DIR).join("bridge").exists() {
        bail!("{REFERENCE_BIN_DIR}/bridge not found: apt-get install containernetworking-plugins");
    }
    let mut out = Vec::new();
    for (i, side) in [Side::CrispBridge, Side::Reference].into_iter().enumerate() {
        let bridge = format!("cbcni{i}");
        let _bridge = Bridge(bridge.clone());
        let dir = work.join(format!("cni-{i}"));
        let conf_dir = dir.join("net.d");
        std::fs::create_dir_all(&conf_dir)?;
        std::fs::write(
            conf_dir.join("10-bench.conflist"),
            side.conflist(&bridge, 200 + i as u8, &dir.join("ipam"))
                .to_string(),
        )?;
        let rt = CniRuntime::load(CniConfig {
            conf_dir,
            bin_dirs: vec![bin_dir.to_path_buf(), PathBuf::from(REFERENCE_BIN_DIR)],
            cache_dir: dir.join("cache"),
        })
        .context("loading the bench conflist")?
        .with_timeout(Duration::from_secs(30));
        let (mut adds, mut dels, mut both) = (Vec::new(), Vec::new(), Vec::new());
        // One warm-up pod creates the bridge and the plugin's chains outside the figures.
        for n in 0..=pods {
            let ns = Netns::new(format!("cbcni-{}-{i}-{n}", std::process::id()))?;
            let pod = PodNetwork {
                id: format!("cbcni{}{i}{n:04}", std::process::id()),
                netns: ns.path(),
                ifname: "eth0".into(),
                pod_name: format!("bench-{n}"),
                pod_namespace: "bench".into(),
                pod_uid: format!("uid-{n}"),
                port_mappings: vec![PortMapping {
                    host_port: 30000 + n as u16,
                    container_port: 8080,
                    protocol: "TCP".into(),
                    host_ip: String::new(),
                }],
                ..Default::default()
            };
            let t = Instant::now();
            rt.add(&pod)
                .with_context(|| format!("{}: ADD of pod {n}", side.name()))?;
            let added = t.elapsed();
            let t = Instant::now();
            rt.del(&pod)
                .with_context(|| format!("{}: DEL of pod {n}", side.name()))?;
            let deleted = t.elapsed();
            if n > 0 {
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                adds.push(ms(added));
                dels.push(ms(deleted));
                both.push(ms(added + deleted));
            }
        }
        out.push(CniFigures {
            side: side.name(),
            add_p50_ms: percentile(&adds, 50.0),
            del_p50_ms: percentile(&dels, 50.0),
            add_del_p50_ms: percentile(&both, 50.0),
            add_del_p99_ms: percentile(&both, 99.0),
        });
    }
    Ok(out)
}
