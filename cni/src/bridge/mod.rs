//! `crisp-bridge`: one CNI plugin doing what the reference `bridge` + `host-local` + `portmap`
//! plugins do together, for IPv4.
//!
//! What ADD changes on the host:
//! - creates the bridge (if missing), sets it up and assigns it the gateway address;
//! - sets `net.ipv4.ip_forward=1`, and `net.ipv4.conf.<bridge>.route_localnet=1` when the pod
//!   has hostPorts (so hostPorts answer on 127.0.0.1);
//! - creates a veth pair: the host end `veth<8 hex>` is attached to the bridge (hairpin mode
//!   on), the other end is created directly in the pod's netns as `CNI_IFNAME` with the address
//!   and a default route via the gateway; `lo` in the pod is set up;
//! - leases an address in the IPAM store (see [`crate::ipam`]);
//! - adds per-pod iptables rules (masquerade, hostPort DNAT, forward accept; see [`iptables`]),
//!   creating the shared chains on first use.
//!
//! DEL undoes the per-pod parts: the rules, the veth, the lease. The bridge, its address, the
//! sysctls and the shared chains stay (as with the reference plugins): other pods use them.

pub mod iptables;

use std::fs::File;
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::ipam::{Ipam, Ipv4Net};
use crate::netlink::{format_mac, Link, Netlink};
use crate::types::{codes, CniResult, DnsResult, ErrorResult, Interface, IpConfig, Route};
use iptables::PortMap;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/crisp/cni/networks";

/// The plugin's network configuration (its stdin).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default = "default_subnet")]
    pub subnet: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    #[serde(default = "yes")]
    pub hairpin_mode: bool,
    #[serde(default = "yes")]
    pub ip_masq: bool,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// Passed through to the result's `dns`.
    #[serde(default)]
    pub dns: Option<DnsResult>,
    #[serde(default)]
    pub prev_result: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMap>,
}

fn default_bridge() -> String {
    "crisp0".into()
}
fn default_subnet() -> String {
    "10.88.0.0/16".into()
}
fn default_mtu() -> u32 {
    1500
}
fn yes() -> bool {
    true
}

/// A plugin failure: becomes the `{"code","msg","details"}` on stdout.
#[derive(Debug, Clone)]
pub struct PluginError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl PluginError {
    fn new(code: u32, msg: impl Into<String>) -> Self {
        PluginError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    fn generic(msg: impl Into<String>) -> Self {
        Self::new(codes::GENERIC, msg)
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

/// The CNI_* environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Args {
    pub command: String,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub cni_args: String,
}

impl Args {
    pub fn from_env() -> Args {
        let v = |k: &str| std::env::var(k).unwrap_or_default();
        Args {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: std::env::var_os("CNI_NETNS")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            ifname: v("CNI_IFNAME"),
            cni_args: v("CNI_ARGS"),
        }
    }

    /// The value of `key` in CNI_ARGS (`K1=V1;K2=V2`).
    fn cni_arg(&self, key: &str) -> Option<&str> {
        self.cni_args
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// The runtime removes the netns right after this DEL (see `NETNS_TEARDOWN_ARG`).
    fn netns_removed_after(&self) -> bool {
        self.netns.is_some() && self.cni_arg(crate::runtime::NETNS_TEARDOWN_ARG) == Some("true")
    }
}

/// Host-side veth name: `veth` + 8 hex digits of sha256(id + ifname).
pub fn host_veth_name(id: &str, ifname: &str) -> String {
    let h = Sha256::digest(format!("{id}{ifname}").as_bytes());
    format!(
        "veth{}",
        h[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

struct Resolved {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    data_dir: PathBuf,
}

fn resolve(conf: &NetConf) -> Result<Resolved, PluginError> {
    let subnet: Ipv4Net = conf
        .subnet
        .parse()
        .map_err(|e| PluginError::new(codes::INVALID_CONFIG, format!("subnet: {e}")))?;
    let gateway = match &conf.gateway {
        Some(g) if !g.is_empty() => g.parse::<Ipv4Addr>().map_err(|_| {
            PluginError::new(codes::INVALID_CONFIG, format!("gateway {g:?} is not IPv4"))
        })?,
        _ => Ipv4Addr::from(u32::from(subnet.network()) + 1),
    };
    if !subnet.contains(gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
        return Err(PluginError::new(
            codes::INVALID_CONFIG,
            format!("gateway {gateway} is not a host address of {subnet}"),
        ));
    }
    if conf.bridge.is_empty() || conf.bridge.len() > 15 || conf.bridge.contains('/') {
        return Err(PluginError::new(
            codes::INVALID_CONFIG,
            format!("bad bridge name {:?}", conf.bridge),
        ));
    }
    if !(68..=65535).contains(&conf.mtu) {
        return Err(PluginError::new(
            codes::INVALID_CONFIG,
            format!("bad mtu {}", conf.mtu),
        ));
    }
    Ok(Resolved {
        subnet,
        gateway,
        data_dir: conf
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
    })
}

fn io_fail(what: &str) -> impl FnOnce(std::io::Error) -> PluginError + '_ {
    move |e| PluginError::new(codes::IO_FAILURE, format!("{what}: {e}"))
}

fn write_sysctl(path: &str, value: &str) -> Result<(), PluginError> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(io_fail(&format!("setting {path}")))
}

/// Looks the bridge up, creating it if missing; sets it up and makes sure it has the gateway
/// address.
fn ensure_bridge(nl: &mut Netlink, conf: &NetConf, r: &Resolved) -> Result<Link, PluginError> {
    let name = &conf.bridge;
    let link = match nl
        .link_by_name(name)
        .map_err(io_fail(&format!("looking up bridge {name}")))?
    {
        Some(l) => l,
        None => {
            match nl.create_bridge(name, Some(conf.mtu)) {
                Ok(()) => {}
                // Another plugin run created it meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(io_fail(&format!("creating bridge {name}"))(e)),
            }
            nl.link_by_name(name)
                .map_err(io_fail(&format!("looking up bridge {name}")))?
                .ok_or_else(|| PluginError::generic(format!("bridge {name} vanished")))?
        }
    };
    if link.kind.as_deref().is_some_and(|k| k != "bridge") {
        return Err(PluginError::generic(format!(
            "{name} exists and is a {} device, not a bridge",
            link.kind.as_deref().unwrap_or("?")
        )));
    }
    nl.add_address(link.index, r.gateway, r.subnet.prefix)
        .map_err(io_fail(&format!(
            "adding {}/{} to {name}",
            r.gateway, r.subnet.prefix
        )))?;
    if !link.up {
        nl.set_up(link.index)
            .map_err(io_fail(&format!("setting {name} up")))?;
    }
    Ok(link)
}

fn version_ips(conf: &NetConf) -> Option<String> {
    (!crate::types::version_at_least(&conf.cni_version, "1.0.0")).then(|| "4".to_string())
}

fn check_version(conf: &NetConf) -> Result<(), PluginError> {
    if crate::types::SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        Ok(())
    } else {
        Err(PluginError::new(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "crisp-bridge does not support CNI version {:?} (supported: {})",
                conf.cni_version,
                crate::types::SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

fn require_netns(args: &Args) -> Result<&Path, PluginError> {
    args.netns
        .as_deref()
        .ok_or_else(|| PluginError::new(codes::INVALID_ENV, "CNI_NETNS is not set"))
}

fn require_basic(args: &Args) -> Result<(), PluginError> {
    if args.container_id.is_empty() {
        return Err(PluginError::new(
            codes::INVALID_ENV,
            "CNI_CONTAINERID is not set",
        ));
    }
    if args.ifname.is_empty() || args.ifname.len() > 15 || args.ifname.contains('/') {
        return Err(PluginError::new(
            codes::INVALID_ENV,
            format!("bad CNI_IFNAME {:?}", args.ifname),
        ));
    }
    Ok(())
}

/// One attachment (container id + ifname) of a network: its lock file, which also records
/// whether the attachment has per-pod iptables rules.
struct Attachment {
    lock: nix::fcntl::Flock<File>,
    /// The lock file existed before this run: an earlier ADD that no DEL followed.
    existed: bool,
}

/// What the attachment's lock file says about its per-pod rules.
const NO_POD_RULES: &str = "no-pod-rules\n";
const POD_RULES: &str = "pod-rules\n";

impl Attachment {
    /// Serialises ADD, CHECK and DEL of one attachment across plugin processes. A runtime
    /// killed during ADD leaves the plugin running; its successor's DEL must not run beside
    /// that ADD (it would remove the rules before the ADD writes them, leaking them).
    fn lock(r: &Resolved, conf: &NetConf, args: &Args) -> Result<Attachment, PluginError> {
        let dir = r.data_dir.join(&conf.name).join("attachments");
        std::fs::create_dir_all(&dir).map_err(io_fail(&format!("creating {}", dir.display())))?;
        let path = dir.join(host_veth_name(&args.container_id, &args.ifname));
        let existed = path.exists();
        let lock = crate::ipam::lock_file(&path)
            .map_err(io_fail(&format!("locking {}", path.display())))?;
        Ok(Attachment { lock, existed })
    }

    /// Whether the attachment is known to have no per-pod rules. Anything else (a pod with
    /// hostPorts, an ADD that died half-way, an attachment made by an older crisp-bridge,
    /// which tagged every pod's rules) means DEL must look for them.
    fn has_no_pod_rules(&self) -> bool {
        let mut buf = [0u8; 32];
        self.lock
            .read_at(&mut buf, 0)
            .is_ok_and(|n| &buf[..n] == NO_POD_RULES.as_bytes())
    }

    /// Records what the attachment has; written before the rules go in, so a crash in between
    /// leaves DEL looking for rules rather than skipping them.
    fn record(&self, what: &str) -> Result<(), PluginError> {
        let f: &File = &self.lock;
        f.set_len(0)
            .and_then(|()| f.write_all_at(what.as_bytes(), 0))
            .map_err(io_fail("recording the attachment's rules"))
    }
}

/// ADD.
pub fn cmd_add(args: &Args, conf: &NetConf) -> Result<CniResult, PluginError> {
    check_version(conf)?;
    require_basic(args)?;
    let r = resolve(conf)?;
    let attachment = Attachment::lock(&r, conf, args)?;
    let netns_path = require_netns(args)?;
    let ns = File::open(netns_path).map_err(|e| {
        PluginError::new(
            codes::INVALID_ENV,
            format!("opening netns {}: {e}", netns_path.display()),
        )
    })?;
    let ports = &conf.runtime_config.port_mappings;
    // Validate the port mappings before changing anything.
    let tag = iptables::tag(&conf.name, &args.container_id, &args.ifname);
    iptables::pod_rules(&tag, Ipv4Addr::UNSPECIFIED, ports)
        .map_err(|e| PluginError::new(codes::INVALID_CONFIG, e))?;

    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    let mut nl = Netlink::new().map_err(io_fail("opening netlink"))?;
    let bridge = ensure_bridge(&mut nl, conf, &r)?;

    let ipam = Ipam::new(&r.data_dir, &conf.name, r.subnet, r.gateway)
        .map_err(|e| PluginError::generic(e.to_string()))?;
    let ip = ipam
        .allocate(&args.container_id, &args.ifname)
        .map_err(|e| PluginError::generic(format!("allocating an address: {e}")))?;

    let pod = PodAttachment {
        args,
        conf,
        r: &r,
        attachment: &attachment,
        tag: &tag,
    };
    match setup_pod(&pod, &mut nl, &bridge, &ns, ip) {
        Ok(res) => Ok(res),
        Err(e) => {
            // Leave nothing behind for a failed ADD (the runtime may not call DEL).
            if !attachment.has_no_pod_rules() {
                let _ = iptables::remove_pod(&tag);
            }
            let host = host_veth_name(&args.container_id, &args.ifname);
            if let Ok(Some(l)) = nl.link_by_name(&host) {
                let _ = nl.delete_link(l.index);
            }
            let _ = ipam.release(&args.container_id, Some(&args.ifname));
            let _ = remove_network_rules_if_unused(&r, conf, &ipam);
            Err(e)
        }
    }
}

/// What `setup_pod` works on.
struct PodAttachment<'a> {
    args: &'a Args,
    conf: &'a NetConf,
    r: &'a Resolved,
    attachment: &'a Attachment,
    /// The comment on the pod's own rules.
    tag: &'a str,
}

/// Where a network records that this boot has its rules (see [`iptables`]): next to its
/// leases.
fn network_rules_stamp(r: &Resolved, conf: &NetConf) -> PathBuf {
    r.data_dir.join(&conf.name).join("iptables.stamp")
}

/// The network's own rules go once its last address is released.
fn remove_network_rules_if_unused(
    r: &Resolved,
    conf: &NetConf,
    ipam: &Ipam,
) -> Result<(), PluginError> {
    iptables::remove_network_if_unused(&network_rules_stamp(r, conf), &conf.name, || {
        ipam.is_empty().map_err(|e| e.to_string())
    })
    .map_err(PluginError::generic)
}

fn setup_pod(
    pod: &PodAttachment<'_>,
    nl: &mut Netlink,
    bridge: &Link,
    ns: &File,
    ip: Ipv4Addr,
) -> Result<CniResult, PluginError> {
    let PodAttachment {
        args,
        conf,
        r,
        attachment,
        tag,
    } = *pod;
    let host = host_veth_name(&args.container_id, &args.ifname);
    // A host end left by an earlier, interrupted ADD of this pod: start over.
    if let Some(stale) = nl
        .link_by_name(&host)
        .map_err(io_fail(&format!("looking up {host}")))?
    {
        nl.delete_link(stale.index)
            .map_err(io_fail(&format!("deleting stale {host}")))?;
    }
    nl.create_veth(&host, &args.ifname, ns.as_raw_fd(), conf.mtu)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EEXIST) {
                PluginError::generic(format!(
                    "creating veth {host}/{}: an interface of that name already exists in the \
                     pod namespace or on the host",
                    args.ifname
                ))
            } else {
                io_fail(&format!("creating veth {host}/{}", args.ifname))(e)
            }
        })?;
    let hlink = nl
        .link_by_name(&host)
        .map_err(io_fail(&format!("looking up {host}")))?
        .ok_or_else(|| PluginError::generic(format!("{host} vanished after creation")))?;
    nl.set_master(hlink.index, bridge.index)
        .map_err(io_fail(&format!("attaching {host} to {}", conf.bridge)))?;
    if conf.hairpin_mode {
        write_sysctl(&format!("/sys/class/net/{host}/brport/hairpin_mode"), "1")?;
    }
    nl.set_up(hlink.index)
        .map_err(io_fail(&format!("setting {host} up")))?;

    // Inside the pod.
    let ifname = args.ifname.clone();
    let (prefix, gw) = (r.subnet.prefix, r.gateway);
    let pod_mac = crate::netns::run_in_file(ns, move || -> Result<String, PluginError> {
        crate::loopback::set_up_in_current_netns()
            .map_err(|e| PluginError::generic(format!("setting lo up in the pod: {e}")))?;
        let mut pnl = Netlink::new().map_err(io_fail("opening netlink in the pod"))?;
        let link = pnl
            .link_by_name(&ifname)
            .map_err(io_fail(&format!("looking up {ifname} in the pod")))?
            .ok_or_else(|| PluginError::generic(format!("{ifname} missing in the pod netns")))?;
        pnl.add_address(link.index, ip, prefix)
            .map_err(io_fail(&format!("adding {ip}/{prefix} to {ifname}")))?;
        pnl.set_up(link.index)
            .map_err(io_fail(&format!("setting {ifname} up")))?;
        pnl.add_route(Ipv4Addr::UNSPECIFIED, 0, Some(gw), link.index)
            .map_err(io_fail(&format!("adding the default route via {gw}")))?;
        Ok(link.mac.as_ref().map(format_mac).unwrap_or_default())
    })
    .map_err(io_fail("entering the pod netns"))??;

    // iptables: the network's rules (usually in place already), then the pod's own, if any.
    let ntag = iptables::network_tag(&conf.name, r.subnet);
    let (nat, filter) = iptables::network_rules(&ntag, r.subnet, conf.ip_masq);
    iptables::ensure_network(&network_rules_stamp(r, conf), &ntag, &nat, &filter)
        .map_err(PluginError::generic)?;
    let ports = &conf.runtime_config.port_mappings;
    let pod_nat = iptables::pod_rules(tag, ip, ports)
        .map_err(|e| PluginError::new(codes::INVALID_CONFIG, e))?;
    if pod_nat.is_empty() {
        if attachment.existed && !attachment.has_no_pod_rules() {
            // An earlier ADD of this attachment, never deleted, may have left some.
            iptables::remove_pod(tag).map_err(PluginError::generic)?;
        }
        attachment.record(NO_POD_RULES)?;
    } else {
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", conf.bridge),
            "1",
        )?;
        attachment.record(POD_RULES)?;
        iptables::install(tag, &pod_nat, &[]).map_err(PluginError::generic)?;
    }

    let hlink = nl
        .link_by_name(&host)
        .map_err(io_fail(&format!("looking up {host}")))?
        .unwrap_or(hlink);
    let netns = args
        .netns
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Ok(CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: conf.bridge.clone(),
                mac: bridge.mac.as_ref().map(format_mac).unwrap_or_default(),
                ..Default::default()
            },
            Interface {
                name: host,
                mac: hlink.mac.as_ref().map(format_mac).unwrap_or_default(),
                ..Default::default()
            },
            Interface {
                name: args.ifname.clone(),
                mac: pod_mac,
                sandbox: netns,
                ..Default::default()
            },
        ],
        ips: vec![IpConfig {
            version: version_ips(conf),
            address: format!("{ip}/{}", r.subnet.prefix),
            gateway: Some(r.gateway.to_string()),
            interface: Some(2),
        }],
        routes: vec![Route {
            dst: "0.0.0.0/0".into(),
            gw: Some(r.gateway.to_string()),
        }],
        dns: conf.dns.clone().unwrap_or_default(),
    })
}

/// DEL: idempotent; the netns may be gone.
pub fn cmd_del(args: &Args, conf: &NetConf) -> Result<(), PluginError> {
    require_basic(args)?;
    let r = resolve(conf)?;
    let attachment = Attachment::lock(&r, conf, args)?;
    if !attachment.has_no_pod_rules() {
        let tag = iptables::tag(&conf.name, &args.container_id, &args.ifname);
        iptables::remove_pod(&tag).map_err(PluginError::generic)?;
    }

    // The veth is deleted through its host end, whose name is derived from this attachment's
    // id+ifname: deleting one end of a pair deletes both, so the pod end goes too, and an
    // interface in the netns that belongs to someone else (same ifname, other id) is never
    // touched. If the netns is gone, the pair went with it and there is nothing to do; the
    // netns need not be entered at all.
    //
    // Deleting a veth waits in the kernel for RCU grace periods (about 20 ms here, most of a
    // pod's stop). When the runtime removes the netns right after this DEL, the kernel's netns
    // cleanup deletes the pair in the background instead; the host end only leaves the bridge
    // and goes down now, so that nothing reaches the address released below, which another
    // pod may get at once.
    let host = host_veth_name(&args.container_id, &args.ifname);
    let mut nl = Netlink::new().map_err(io_fail("opening netlink"))?;
    if let Some(l) = nl
        .link_by_name(&host)
        .map_err(io_fail(&format!("looking up {host}")))?
    {
        let (done, what) = if args.netns_removed_after() {
            mark_detached(&r, conf, &host);
            (nl.detach_and_set_down(l.index), "detaching")
        } else {
            (nl.delete_link(l.index), "deleting")
        };
        match done {
            Err(e) if e.raw_os_error() != Some(libc::ENODEV) => {
                return Err(io_fail(&format!("{what} {host}"))(e))
            }
            _ => {}
        }
    }

    sweep_detached(&r, conf, &mut nl);

    let ipam_dir = r.data_dir.join(&conf.name);
    if ipam_dir.exists() {
        let ipam = Ipam::new(&r.data_dir, &conf.name, r.subnet, r.gateway)
            .map_err(|e| PluginError::generic(e.to_string()))?;
        ipam.release(&args.container_id, Some(&args.ifname))
            .map_err(|e| PluginError::generic(format!("releasing the address: {e}")))?;
        remove_network_rules_if_unused(&r, conf, &ipam)?;
    }
    // The attachment is gone: so goes its lock file (a DEL waiting on it finds nothing to do).
    let _ = std::fs::remove_file(r.data_dir.join(&conf.name).join("attachments").join(&host));
    drop(attachment);
    Ok(())
}

/// How long a veth a DEL left to the kernel's netns cleanup may stay before a later DEL
/// deletes it: the cleanup runs within milliseconds unless something else holds the netns.
const DETACHED_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Host veths that DELs left to the netns the runtime removes (`Args::netns_removed_after`),
/// an empty file each.
fn detached_dir(r: &Resolved, conf: &NetConf) -> PathBuf {
    r.data_dir.join(&conf.name).join("detached")
}

fn mark_detached(r: &Resolved, conf: &NetConf, host: &str) {
    let dir = detached_dir(r, conf);
    let _ = std::fs::create_dir_all(&dir).and_then(|()| File::create(dir.join(host)));
}

/// Deletes the veths DELs detached more than `DETACHED_GRACE` ago that are still there: their
/// netns outlived the runtime's pin (a copy of the mount in another mount namespace, a process
/// holding it), and the pair would otherwise stay as long. One still (or again) on a bridge
/// belongs to a later ADD of the same attachment and stays. Best effort: runs at every DEL on
/// the network (not on ADD: a pod's start need not pay for it), reading a directory that is
/// almost always empty.
fn sweep_detached(r: &Resolved, conf: &NetConf, nl: &mut Netlink) {
    let Ok(entries) = std::fs::read_dir(detached_dir(r, conf)) else {
        return;
    };
    for entry in entries.flatten() {
        let old_enough = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= DETACHED_GRACE);
        if !old_enough {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            if let Ok(Some(l)) = nl.link_by_name(name) {
                if l.master.is_none() {
                    let _ = nl.delete_link(l.index);
                }
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

/// CHECK: the lease, the host veth on the bridge, the pod interface with its address, the
/// rules.
pub fn cmd_check(args: &Args, conf: &NetConf) -> Result<(), PluginError> {
    check_version(conf)?;
    require_basic(args)?;
    let r = resolve(conf)?;
    let netns_path = require_netns(args)?;
    let ipam = Ipam::new(&r.data_dir, &conf.name, r.subnet, r.gateway)
        .map_err(|e| PluginError::generic(e.to_string()))?;
    let ip = ipam
        .get(&args.container_id, &args.ifname)
        .map_err(|e| PluginError::generic(e.to_string()))?
        .ok_or_else(|| {
            PluginError::generic(format!(
                "no address leased to {}/{}",
                args.container_id, args.ifname
            ))
        })?;
    if let Some(prev) = &conf.prev_result {
        let want = format!("{ip}/{}", r.subnet.prefix);
        let listed = prev
            .get("ips")
            .and_then(|v| v.as_array())
            .is_some_and(|ips| {
                ips.iter()
                    .any(|i| i.get("address").and_then(|a| a.as_str()) == Some(want.as_str()))
            });
        if !listed {
            return Err(PluginError::generic(format!(
                "prevResult does not list the leased address {want}"
            )));
        }
    }
    let mut nl = Netlink::new().map_err(io_fail("opening netlink"))?;
    let bridge = nl
        .link_by_name(&conf.bridge)
        .map_err(io_fail("looking up the bridge"))?
        .ok_or_else(|| PluginError::generic(format!("bridge {} is missing", conf.bridge)))?;
    let host = host_veth_name(&args.container_id, &args.ifname);
    let hl = nl
        .link_by_name(&host)
        .map_err(io_fail("looking up the host veth"))?
        .ok_or_else(|| PluginError::generic(format!("host veth {host} is missing")))?;
    if hl.master != Some(bridge.index) {
        return Err(PluginError::generic(format!(
            "{host} is not attached to {}",
            conf.bridge
        )));
    }
    let ifname = args.ifname.clone();
    crate::netns::run_in(netns_path, move || -> Result<(), PluginError> {
        let mut pnl = Netlink::new().map_err(io_fail("opening netlink in the pod"))?;
        let l = pnl
            .link_by_name(&ifname)
            .map_err(io_fail("looking up the pod interface"))?
            .ok_or_else(|| PluginError::generic(format!("{ifname} is missing in the pod")))?;
        let addrs = pnl
            .addresses(l.index)
            .map_err(io_fail("listing pod addresses"))?;
        if !addrs.iter().any(|(a, _)| *a == ip) {
            return Err(PluginError::generic(format!("{ifname} does not have {ip}")));
        }
        Ok(())
    })
    .map_err(io_fail("entering the pod netns"))??;
    let ntag = iptables::network_tag(&conf.name, r.subnet);
    if !iptables::has_rules("filter", &ntag).map_err(PluginError::generic)? {
        return Err(PluginError::generic(format!(
            "the iptables rules of network {} are missing",
            conf.name
        )));
    }
    let tag = iptables::tag(&conf.name, &args.container_id, &args.ifname);
    if !conf.runtime_config.port_mappings.is_empty()
        && !iptables::has_rules("nat", &tag).map_err(PluginError::generic)?
    {
        return Err(PluginError::generic("the pod's hostPort rules are missing"));
    }
    Ok(())
}

/// Runs the plugin: reads the env and stdin, dispatches, prints the result or the error.
/// Returns the process exit code.
pub fn plugin_main() -> i32 {
    let argv: Vec<String> = std::env::args().collect();
    if argv.iter().skip(1).any(|a| a == "--version" || a == "-v") {
        println!(
            "crisp-bridge {} (CNI {})",
            env!("CARGO_PKG_VERSION"),
            crate::types::SUPPORTED_VERSIONS.join(", ")
        );
        return 0;
    }
    let args = Args::from_env();
    let mut input = Vec::new();
    let fail = |version: &str, e: PluginError| {
        let out = ErrorResult {
            cni_version: if version.is_empty() {
                "1.0.0".into()
            } else {
                version.into()
            },
            code: e.code,
            msg: e.msg,
            details: e.details,
        };
        println!(
            "{}",
            serde_json::to_string(&out).unwrap_or_else(|_| "{}".into())
        );
        1
    };
    if args.command == "VERSION" {
        let _ = std::io::stdin().read_to_end(&mut input);
        let v = serde_json::from_slice::<serde_json::Value>(&input)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(String::from))
            .unwrap_or_else(|| "1.0.0".into());
        println!(
            "{}",
            serde_json::json!({"cniVersion": v, "supportedVersions": crate::types::SUPPORTED_VERSIONS})
        );
        return 0;
    }
    if args.command.is_empty() {
        eprintln!(
            "crisp-bridge {}: a CNI plugin; run it through a CNI runtime (CNI_COMMAND is not set)",
            env!("CARGO_PKG_VERSION")
        );
        return fail(
            "",
            PluginError::new(codes::INVALID_ENV, "CNI_COMMAND is not set"),
        );
    }
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        return fail(
            "",
            PluginError::new(codes::IO_FAILURE, format!("reading stdin: {e}")),
        );
    }
    let conf: NetConf = match serde_json::from_slice(&input) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                "",
                PluginError::new(
                    codes::DECODE_FAILURE,
                    format!("decoding the network config: {e}"),
                ),
            )
        }
    };
    let res = match args.command.as_str() {
        "ADD" => cmd_add(&args, &conf).map(Some),
        "DEL" => cmd_del(&args, &conf).map(|()| None),
        "CHECK" => cmd_check(&args, &conf).map(|()| None),
        other => Err(PluginError::new(
            codes::INVALID_ENV,
            format!("unknown CNI_COMMAND {other:?}"),
        )),
    };
    match res {
        Ok(Some(result)) => {
            println!(
                "{}",
                serde_json::to_string(&result).unwrap_or_else(|_| "{}".into())
            );
            0
        }
        Ok(None) => 0,
        Err(e) => fail(&conf.cni_version, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DEL of a pod without hostPorts must find the ADD's record and run no iptables (the lock
    /// file was opened write-only, so the record never read back: every DEL ran two
    /// iptables-save, 17 ms, found profiling crisp-bench's StopPodSandbox).
    #[test]
    fn an_attachment_record_reads_back_through_the_next_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("veth0");
        let first = Attachment {
            lock: crate::ipam::lock_file(&path).unwrap(),
            existed: false,
        };
        first.record(NO_POD_RULES).unwrap();
        drop(first);
        let next = Attachment {
            lock: crate::ipam::lock_file(&path).unwrap(),
            existed: true,
        };
        assert!(next.has_no_pod_rules());
        next.record(POD_RULES).unwrap();
        assert!(!next.has_no_pod_rules());
    }

    #[test]
    fn veth_name_is_stable_and_short() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth"));
    }

    #[test]
    fn config_defaults() {
        let c: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"crisp","type":"crisp-bridge",
                "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.bridge, "crisp0");
        assert_eq!(c.mtu, 1500);
        assert!(c.ip_masq && c.hairpin_mode);
        let r = resolve(&c).unwrap();
        assert_eq!(r.gateway, Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(r.subnet.prefix, 16);
        assert_eq!(c.runtime_config.port_mappings[0].host_ip, "127.0.0.1");
        let bad: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"x","subnet":"10.1.0.0/24","gateway":"10.2.0.1"}"#,
        )
        .unwrap();
        assert_eq!(resolve(&bad).err().unwrap().code, codes::INVALID_CONFIG);
    }
}
