//! The iptables side of `crisp-bridge`: masquerade, hostPort DNAT and forward-accept rules.
//!
//! Uses the host's `iptables-save`/`iptables-restore` binaries (either backend: with
//! `iptables-nft` the rules land in nftables' `ip nat`/`ip filter` tables). Layout:
//!
//! - shared chains, created on first use and never removed (like the reference plugins'):
//!   `nat CRISP-POSTROUTING` (jumped to from `POSTROUTING`), `nat CRISP-HOSTPORTS` (from
//!   `PREROUTING` and `OUTPUT` for local destinations), `filter CRISP-FORWARD` (from `FORWARD`);
//! - per-network rules (masquerade for traffic leaving the subnet, forward-accept to and from
//!   it), tagged `crisp:<network>:subnet:<cidr>`: installed by the network's first ADD and
//!   removed by the DEL that releases its last address. A stamp file in the network's IPAM
//!   directory (boot id + the rules) tells later ADDs they are in place, so a pod without
//!   hostPorts runs no iptables at all: each run costs milliseconds of exec and the dump grows
//!   with every rule, which made iptables most of a pod's start. (An operator who flushes the
//!   host's tables by hand while pods run removes their masquerade too; CNI CHECK reports it
//!   and the network's next first ADD puts it back.)
//! - per-pod rules, only for hostPorts (DNAT and the masquerades that loopback and hairpin
//!   connections need), each tagged `crisp:<network>:<container id>:<ifname>` so DEL deletes
//!   exactly them.
//!
//! Every change is one `iptables-restore --noflush` transaction; all of them run under an
//! exclusive `flock` on [`LOCK_PATH`], which serialises concurrent plugin runs (chain creation
//! is check-then-create).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::ipam::Ipv4Net;

pub const NAT_POSTROUTING: &str = "CRISP-POSTROUTING";
pub const NAT_HOSTPORTS: &str = "CRISP-HOSTPORTS";
pub const FILTER_FORWARD: &str = "CRISP-FORWARD";
pub const LOCK_PATH: &str = "/run/crisp-cni-iptables.lock";

/// A hostPort mapping of the pod (IPv4 only; see [`pod_rules`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMap {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

fn tcp() -> String {
    "tcp".into()
}

/// The comment that tags a pod's rules.
pub fn tag(network: &str, id: &str, ifname: &str) -> String {
    format!("crisp:{network}:{id}:{ifname}")
}

/// The tag of a network's own rules for `subnet`.
pub fn network_tag(network: &str, subnet: Ipv4Net) -> String {
    format!("{}{subnet}", network_tag_prefix(network))
}

/// What the tags of a network's own rules start with, whatever their subnet (the network may
/// have moved to another range while pods of the old one ran).
fn network_tag_prefix(network: &str) -> String {
    format!("crisp:{network}:subnet:")
}

/// The network's own rules as `iptables-restore` lines per table: (nat, filter).
pub fn network_rules(tag: &str, subnet: Ipv4Net, masq: bool) -> (Vec<String>, Vec<String>) {
    let c = format!("-m comment --comment {tag}");
    let mut nat = Vec::new();
    if masq {
        nat.push(format!(
            "-A {NAT_POSTROUTING} -s {subnet} ! -d {subnet} {c} -j MASQUERADE"
        ));
    }
    let filter = vec![
        format!("-A {FILTER_FORWARD} -s {subnet} {c} -j ACCEPT"),
        format!("-A {FILTER_FORWARD} -d {subnet} {c} -j ACCEPT"),
    ];
    (nat, filter)
}

/// The pod's own rules (`nat` lines; none without hostPorts). An error names a bad mapping.
pub fn pod_rules(tag: &str, ip: Ipv4Addr, ports: &[PortMap]) -> Result<Vec<String>, String> {
    let c = format!("-m comment --comment {tag}");
    let mut nat = Vec::new();
    let mut any_port = false;
    for p in ports {
        let proto = p.protocol.to_ascii_lowercase();
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(format!(
                "hostPort {}: unknown protocol {:?}",
                p.host_port, p.protocol
            ));
        }
        if p.host_port == 0 || p.container_port == 0 {
            return Err(format!(
                "port mapping {}:{} has a zero port",
                p.host_port, p.container_port
            ));
        }
        let dst = match p.host_ip.as_str() {
            "" | "0.0.0.0" => String::new(),
            h => match h.parse::<Ipv4Addr>() {
                Ok(a) => format!("-d {a}/32 "),
                // An IPv6 host IP cannot be served by an IPv4-only pod network.
                Err(_) if h.contains(':') => continue,
                Err(_) => return Err(format!("hostIP {h:?} is not an IP address")),
            },
        };
        any_port = true;
        nat.push(format!(
            "-A {NAT_HOSTPORTS} {dst}-p {proto} -m {proto} --dport {} {c} -j DNAT --to-destination {ip}:{}",
            p.host_port, p.container_port
        ));
    }
    if any_port {
        // Connections to a hostPort on 127.0.0.1 leave with a loopback source; rewrite it (with
        // route_localnet on the bridge) like the reference portmap. And hairpin: the pod
        // reaching itself through its hostPort.
        nat.push(format!(
            "-A {NAT_POSTROUTING} -s 127.0.0.0/8 -d {ip}/32 {c} -j MASQUERADE"
        ));
        nat.push(format!(
            "-A {NAT_POSTROUTING} -s {ip}/32 -d {ip}/32 {c} -j MASQUERADE"
        ));
    }
    Ok(nat)
}

struct Lock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

fn lock() -> Result<Lock, String> {
    crate::ipam::lock_file(std::path::Path::new(LOCK_PATH))
        .map(Lock)
        .map_err(|e| format!("locking {LOCK_PATH}: {e}"))
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {cmd}: {e} (is iptables installed?)"))?;
    if let Some(input) = stdin {
        let mut s = child.stdin.take().expect("piped stdin");
        s.write_all(input.as_bytes())
            .map_err(|e| format!("writing to {cmd}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdin.map(|s| format!("\ninput:\n{s}")).unwrap_or_default()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn save(table: &str) -> Result<String, String> {
    run("iptables-save", &["-t", table], None)
}

fn restore(script: &str) -> Result<(), String> {
    run("iptables-restore", &["-w", "--noflush"], Some(script)).map(drop)
}

/// Adds shared chains/jumps that are missing to the restore script of `table`.
fn ensure_shared(table: &str, saved: &str, chains: &[(&str, &str, &str)], script: &mut String) {
    let lines: Vec<&str> = saved.lines().map(str::trim).collect();
    let mut body = String::new();
    for (chain, parent, matcher) in chains {
        if !lines
            .iter()
            .any(|l| l.split_whitespace().next() == Some(&format!(":{chain}")))
        {
            body.push_str(&format!(":{chain} - [0:0]\n"));
        }
        let jump = format!("-A {parent} {matcher}-j {chain}");
        if !lines.iter().any(|l| *l == jump) {
            body.push_str(&format!("-I {parent} 1 {matcher}-j {chain}\n"));
        }
    }
    if !body.is_empty() {
        script.push_str(&format!("*{table}\n{body}COMMIT\n"));
    }
}

/// Installs the rules tagged `tag` (and the shared chains if missing). Rules left over with the
/// same tag are replaced, so a retried ADD does not duplicate them.
pub fn install(tag: &str, nat: &[String], filter: &[String]) -> Result<(), String> {
    let _l = lock()?;
    install_locked(tag, nat, filter)
}

fn install_locked(tag: &str, nat: &[String], filter: &[String]) -> Result<(), String> {
    // A table with no rules to add is not read at all: a pod's hostPort rules are nat only,
    // and the filter table can be large on a node with kube-proxy.
    let saved = |table: &str, rules: &[String]| -> Result<String, String> {
        if rules.is_empty() {
            Ok(String::new())
        } else {
            save(table)
        }
    };
    let saved_nat = saved("nat", nat)?;
    let saved_filter = saved("filter", filter)?;
    let mut setup = String::new();
    if !nat.is_empty() {
        ensure_shared(
            "nat",
            &saved_nat,
            &[
                (NAT_POSTROUTING, "POSTROUTING", ""),
                (NAT_HOSTPORTS, "PREROUTING", "-m addrtype --dst-type LOCAL "),
                (NAT_HOSTPORTS, "OUTPUT", "-m addrtype --dst-type LOCAL "),
            ],
            &mut setup,
        );
    }
    if !filter.is_empty() {
        ensure_shared(
            "filter",
            &saved_filter,
            &[(FILTER_FORWARD, "FORWARD", "")],
            &mut setup,
        );
    }
    if !setup.is_empty() {
        restore(&setup)?;
    }
    let mut script = String::new();
    for (table, saved, rules) in [("nat", &saved_nat, nat), ("filter", &saved_filter, filter)] {
        let mut body = String::new();
        for stale in tagged(saved, |t| t == tag) {
            body.push_str(&format!("-D{}\n", &stale[2..]));
        }
        for r in rules {
            body.push_str(r);
            body.push('\n');
        }
        if !body.is_empty() {
            script.push_str(&format!("*{table}\n{body}COMMIT\n"));
        }
    }
    if !script.is_empty() {
        restore(&script)?;
    }
    Ok(())
}

/// The network's rules, installed unless `stamp` says this boot already has exactly them.
pub fn ensure_network(
    stamp: &Path,
    tag: &str,
    nat: &[String],
    filter: &[String],
) -> Result<(), String> {
    let boot = crisp_api::boot::boot_id().map_err(|e| format!("reading the boot id: {e}"))?;
    let _l = lock()?;
    let (mut have_nat, mut have_filter) = std::fs::read_to_string(stamp)
        .ok()
        .and_then(|text| parse_stamp(&text, &boot))
        .unwrap_or_default();
    let missing = |want: &[String], have: &[String]| want.iter().any(|r| !have.contains(r));
    if !missing(nat, &have_nat) && !missing(filter, &have_filter) {
        return Ok(());
    }
    install_locked(tag, nat, filter)?;
    // The stamp keeps the rules of earlier configurations of this boot too (a subnet that
    // changed while its pods run keeps their rules): the last DEL deletes them all.
    for (have, want) in [(&mut have_nat, nat), (&mut have_filter, filter)] {
        for r in want {
            if !have.contains(r) {
                have.push(r.clone());
            }
        }
    }
    let text = stamp_text(&boot, &have_nat, &have_filter);
    crisp_api::atomic_file::replace(stamp, text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", stamp.display()))
}

/// A network's stamp: the boot it is from and its rules, by table.
fn stamp_text(boot: &str, nat: &[String], filter: &[String]) -> String {
    let mut text = format!("{boot}\n");
    for (table, rules) in [("nat", nat), ("filter", filter)] {
        text.push_str(&format!("*{table}\n"));
        for r in rules {
            text.push_str(r);
            text.push('\n');
        }
    }
    text
}

/// The rules a stamp of boot `boot` lists, (nat, filter); None for a stamp of another boot
/// (its rules went with it) or of another format.
fn parse_stamp(stamp: &str, boot: &str) -> Option<(Vec<String>, Vec<String>)> {
    let mut lines = stamp.lines();
    if lines.next()? != boot {
        return None;
    }
    let (mut nat, mut filter) = (Vec::new(), Vec::new());
    let mut table: Option<&mut Vec<String>> = None;
    for line in lines {
        match line {
            "*nat" => table = Some(&mut nat),
            "*filter" => table = Some(&mut filter),
            rule if rule.starts_with("-A ") => table.as_mut()?.push(rule.to_string()),
            _ => return None,
        }
    }
    Some((nat, filter))
}

/// The `iptables-restore` script that deletes `nat` and `filter` rules (`-A` lines).
fn delete_script(nat: &[String], filter: &[String]) -> String {
    let mut script = String::new();
    for (table, rules) in [("nat", nat), ("filter", filter)] {
        if rules.is_empty() {
            continue;
        }
        script.push_str(&format!("*{table}\n"));
        for r in rules {
            script.push_str(&format!("-D {}\n", &r[3..]));
        }
        script.push_str("COMMIT\n");
    }
    script
}

/// Removes every rule of `network` (all its subnets) and the stamp, if `unused()` says no pod
/// is left. Asked under the lock, so an ADD racing with this either finds the rules gone and
/// puts them back, or made its lease first and keeps them.
///
/// The stamp lists the rules this boot installed: deleting exactly them is one
/// `iptables-restore` (a network's last DEL was three iptables runs, two of them dumps of whole
/// tables). If that fails (someone removed a rule by hand) the tables are searched for the
/// network's tag instead.
pub fn remove_network_if_unused(
    stamp: &Path,
    network: &str,
    unused: impl FnOnce() -> Result<bool, String>,
) -> Result<(), String> {
    let _l = lock()?;
    if !unused()? {
        return Ok(());
    }
    let listed = crisp_api::boot::boot_id()
        .ok()
        .and_then(|boot| parse_stamp(&std::fs::read_to_string(stamp).ok()?, &boot));
    let deleted = listed.is_some_and(|(nat, filter)| {
        nat.is_empty() && filter.is_empty() || restore(&delete_script(&nat, &filter)).is_ok()
    });
    if !deleted {
        let prefix = network_tag_prefix(network);
        remove_locked(|t| t.starts_with(&prefix))?;
    }
    match std::fs::remove_file(stamp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", stamp.display()))
        }
        _ => Ok(()),
    }
}

/// The `-A` lines of an `iptables-save` dump whose comment `matches`.
fn tagged(saved: &str, matches: impl Fn(&str) -> bool) -> Vec<&str> {
    saved
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("-A "))
        .filter(|l| {
            let toks: Vec<&str> = l.split_whitespace().collect();
            toks.windows(2)
                .any(|w| w[0] == "--comment" && matches(w[1].trim_matches('"')))
        })
        .collect()
}

/// Deletes every rule tagged with `tag`; none is fine.
pub fn remove_pod(tag: &str) -> Result<(), String> {
    let _l = lock()?;
    remove_locked(|t| t == tag)
}

fn remove_locked(matches: impl Fn(&str) -> bool) -> Result<(), String> {
    let mut script = String::new();
    for table in ["nat", "filter"] {
        let saved = save(table)?;
        let lines = tagged(&saved, &matches);
        if lines.is_empty() {
            continue;
        }
        script.push_str(&format!("*{table}\n"));
        for l in lines {
            script.push_str(&format!("-D{}\n", &l[2..]));
        }
        script.push_str("COMMIT\n");
    }
    if !script.is_empty() {
        restore(&script)?;
    }
    Ok(())
}

/// Whether any rule tagged `tag` exists in `table` (for CHECK).
pub fn has_rules(table: &str, tag: &str) -> Result<bool, String> {
    let _l = lock()?;
    Ok(!tagged(&save(table)?, |t| t == tag).is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_rules() {
        let ports = vec![
            PortMap {
                host_port: 8080,
                container_port: 80,
                protocol: "TCP".into(),
                host_ip: "".into(),
            },
            PortMap {
                host_port: 5353,
                container_port: 53,
                protocol: "udp".into(),
                host_ip: "127.0.0.1".into(),
            },
            PortMap {
                host_port: 9,
                container_port: 9,
                protocol: "tcp".into(),
                host_ip: "::1".into(),
            },
        ];
        let nat = pod_rules("crisp:n:abc:eth0", "10.99.0.5".parse().unwrap(), &ports).unwrap();
        assert_eq!(nat.len(), 4, "{nat:#?}");
        assert!(nat[0].contains("-p tcp -m tcp --dport 8080"));
        assert!(nat[0].ends_with("--to-destination 10.99.0.5:80"));
        assert!(nat[1].contains("-d 127.0.0.1/32 -p udp"));
        assert!(nat[2].contains("-s 127.0.0.0/8 -d 10.99.0.5/32"));
        assert!(pod_rules("t", "10.99.0.5".parse().unwrap(), &[])
            .unwrap()
            .is_empty());
        assert!(pod_rules(
            "t",
            "10.99.0.5".parse().unwrap(),
            &[PortMap {
                host_port: 1,
                container_port: 1,
                protocol: "icmp".into(),
                host_ip: String::new()
            }]
        )
        .is_err());
    }

    #[test]
    fn a_stamp_lists_the_rules_to_delete() {
        let subnet = "10.99.0.0/24".parse().unwrap();
        let (nat, filter) = network_rules(&network_tag("n", subnet), subnet, true);
        let stamp = stamp_text("boot-1", &nat, &filter);
        let (n, f) = parse_stamp(&stamp, "boot-1").unwrap();
        assert_eq!((&n, &f), (&nat, &filter));
        let script = delete_script(&n, &f);
        assert_eq!(script.matches("COMMIT").count(), 2, "{script}");
        assert!(
            script.starts_with("*nat\n-D CRISP-POSTROUTING -s 10.99.0.0/24"),
            "{script}"
        );
        assert_eq!(script.matches("-D CRISP-FORWARD").count(), 2, "{script}");
        assert!(parse_stamp(&stamp, "boot-2").is_none());
        // A stamp of the format before tables were named in it.
        assert!(parse_stamp("boot-1\n-A X -j ACCEPT\n", "boot-1").is_none());
    }

    #[test]
    fn builds_network_rules() {
        let subnet = "10.99.0.0/24".parse().unwrap();
        let tag = network_tag("n", subnet);
        assert_eq!(tag, "crisp:n:subnet:10.99.0.0/24");
        let (nat, filter) = network_rules(&tag, subnet, true);
        assert_eq!(nat.len(), 1);
        assert!(nat[0].contains("-s 10.99.0.0/24 ! -d 10.99.0.0/24"));
        assert_eq!(filter.len(), 2);
        assert!(network_rules(&tag, subnet, false).0.is_empty());
    }

    #[test]
    fn finds_tagged_lines_exactly() {
        let saved = "*nat\n:CRISP-POSTROUTING - [0:0]\n-A CRISP-POSTROUTING -s 10.0.0.2/32 -m comment --comment crisp:n:abc:eth0 -j MASQUERADE\n-A CRISP-POSTROUTING -s 10.0.0.3/32 -m comment --comment crisp:n:abcd:eth0 -j MASQUERADE\nCOMMIT\n";
        let t = tagged(saved, |t| t == "crisp:n:abc:eth0");
        assert_eq!(t.len(), 1);
        assert!(t[0].contains("10.0.0.2"));
        let saved = "-A CRISP-FORWARD -s 10.0.0.0/24 -m comment --comment crisp:n:subnet:10.0.0.0/24 -j ACCEPT\n-A CRISP-FORWARD -s 10.1.0.0/24 -m comment --comment crisp:n:subnet:10.1.0.0/24 -j ACCEPT\n-A CRISP-FORWARD -s 10.2.0.0/24 -m comment --comment crisp:nn:subnet:10.2.0.0/24 -j ACCEPT\n";
        let prefix = network_tag_prefix("n");
        assert_eq!(tagged(saved, |t| t.starts_with(&prefix)).len(), 2);
    }
}
