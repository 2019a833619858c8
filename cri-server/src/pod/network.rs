//! The pod network through CNI: the loaded network config (reloaded when the conf dir
//! changes, as containerd does), ADD at RunPodSandbox, DEL at StopPodSandbox and removal, and
//! the readiness crispd reports in `Status`.

use crate::error::{Error, Result};
use crisp_cni::ipam::Ipv4Net;
use crisp_cni::runtime::{CniConfig, CniRuntime, ConfList, PodNetwork, PortMapping};
use crisp_cri_api::v1::{PodSandboxConfig, Protocol};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub struct Network {
    cfg: CniConfig,
    loaded: Mutex<Loaded>,
    /// The node's pod CIDR from kubelet (UpdateRuntimeConfig), for the embedded network.
    pod_cidr: Mutex<Option<Ipv4Net>>,
}

/// Where the pod CIDR is kept across restarts (kubelet sends it once it knows it).
const POD_CIDR_FILE: &str = "pod-cidr";

struct Loaded {
    stamp: Option<DirStamp>,
    runtime: std::result::Result<Arc<CniRuntime>, String>,
}

/// What the conf dir holds: each entry's name, size and mtime. It changes whenever a config
/// is added, removed or rewritten in place (which leaves the directory's own mtime alone), even
/// within one tick of the filesystem clock.
type DirStamp = Vec<(std::ffi::OsString, u64, Option<SystemTime>)>;

fn dir_stamp(dir: &Path) -> Option<DirStamp> {
    let mut entries: DirStamp = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| {
            let meta = e.metadata().ok();
            (
                e.file_name(),
                meta.as_ref().map(|m| m.len()).unwrap_or(0),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect();
    entries.sort();
    Some(entries)
}

impl Network {
    pub fn new(cfg: CniConfig) -> Network {
        let pod_cidr = std::fs::read_to_string(cfg.cache_dir.join(POD_CIDR_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let net = Network {
            cfg,
            loaded: Mutex::new(Loaded {
                stamp: None,
                runtime: Err("not loaded yet".into()),
            }),
            pod_cidr: Mutex::new(pod_cidr),
        };
        net.reload();
        net
    }

    fn reload(&self) {
        let stamp = dir_stamp(&self.cfg.conf_dir);
        let cidr = *self.pod_cidr.lock().unwrap_or_else(|e| e.into_inner());
        let default = match cidr.map(ConfList::default_list_on) {
            Some(Ok(list)) => list,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "pod CIDR unusable; the embedded network keeps 10.88.0.0/16");
                ConfList::default_list()
            }
            None => ConfList::default_list(),
        };
        let runtime = CniRuntime::load_or(self.cfg.clone(), default)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        let subnet = cidr.map_or_else(|| "10.88.0.0/16".to_string(), |c| c.to_string());
        match &runtime {
            Ok(r) if r.is_default() => tracing::info!(
                conf_dir = %self.cfg.conf_dir.display(),
                %subnet,
                "no CNI config found: using the embedded default network (crisp-bridge, crisp0)"
            ),
            Ok(r) => tracing::info!(network = r.network_name(), "loaded CNI config"),
            Err(e) => tracing::warn!(error = %e, "CNI config unusable"),
        }
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = Loaded { stamp, runtime };
    }

    /// The current network, reloading it first if the conf dir changed.
    fn current(&self) -> std::result::Result<Arc<CniRuntime>, String> {
        let changed = {
            let l = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            l.stamp != dir_stamp(&self.cfg.conf_dir)
        };
        if changed {
            self.reload();
        }
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .runtime
            .clone()
    }

    /// kubelet's pod CIDR (`UpdateRuntimeConfig`; dual-stack lists are comma-separated): the
    /// embedded network takes its IPv4 range, so each node hands out its own addresses. A CNI
    /// config in the conf dir is used as it is, as containerd does without a template.
    pub fn set_pod_cidr(&self, cidrs: &str) -> Result<()> {
        let mut v4 = None;
        for c in cidrs.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if c.contains(':') {
                continue; // IPv6: the embedded network is IPv4-only.
            }
            let net: Ipv4Net = c
                .parse()
                .map_err(|e| Error::InvalidArgument(format!("pod CIDR: {e}")))?;
            ConfList::default_list_on(net)
                .map_err(|e| Error::InvalidArgument(format!("pod CIDR: {e}")))?;
            v4.get_or_insert(net);
        }
        let Some(net) = v4 else { return Ok(()) };
        {
            let mut cur = self.pod_cidr.lock().unwrap_or_else(|e| e.into_inner());
            if *cur == Some(net) {
                return Ok(());
            }
            *cur = Some(net);
        }
        let file = self.cfg.cache_dir.join(POD_CIDR_FILE);
        std::fs::create_dir_all(&self.cfg.cache_dir)
            .and_then(|_| crisp_api::atomic_file::write_atomic(&file, net.to_string().as_bytes()))
            .map_err(|e| Error::internal(format!("writing {}", file.display()), e))?;
        tracing::info!(pod_cidr = %net, "pod CIDR from kubelet");
        self.reload();
        Ok(())
    }

    /// `Ok` when pods can get a network; the reason otherwise (NetworkReady=false).
    pub fn ready(&self) -> std::result::Result<(), String> {
        self.current()?.status()
    }

    /// CNI ADD; returns the pod's IPs, primary first. Blocking.
    pub fn attach(&self, pod: &PodNetwork) -> Result<Vec<String>> {
        let rt = self
            .current()
            .map_err(|e| Error::FailedPrecondition(format!("pod network is not ready: {e}")))?;
        rt.status()
            .map_err(|e| Error::FailedPrecondition(format!("pod network is not ready: {e}")))?;
        let r = rt.add(pod).map_err(|e| {
            Error::Internal(format!("setting up the network of pod {}: {e}", pod.id))
        })?;
        Ok(r.ips.iter().map(|ip| ip.to_string()).collect())
    }

    /// CNI DEL; idempotent, works from the result cache after restarts. Blocking. The caller
    /// removes the pod's netns right after it (plugins are told so: a veth then goes with the
    /// netns, in the kernel's background cleanup, instead of on this call's time).
    pub fn detach(&self, pod: &PodNetwork) -> Result<()> {
        let rt = match self.current() {
            Ok(rt) => rt,
            // The cache still holds what ADD used; DEL needs only a runtime to run it.
            Err(_) => Arc::new(
                CniRuntime::load(CniConfig {
                    conf_dir: PathBuf::from("/nonexistent"),
                    ..self.cfg.clone()
                })
                .map_err(|e| Error::internal("loading CNI for DEL", e))?,
            ),
        };
        rt.del_before_netns_removal(pod).map_err(|e| {
            Error::Internal(format!("tearing down the network of pod {}: {e}", pod.id))
        })
    }
}

/// What CNI needs to know of a pod.
pub fn pod_network(id: &str, netns: &Path, config: &PodSandboxConfig) -> PodNetwork {
    let meta = config.metadata.clone().unwrap_or_default();
    PodNetwork {
        id: id.to_string(),
        netns: netns.to_path_buf(),
        ifname: "eth0".into(),
        pod_name: meta.name,
        pod_namespace: meta.namespace,
        pod_uid: meta.uid,
        port_mappings: config
            .port_mappings
            .iter()
            .filter(|p| {
                p.host_port > 0
                    && p.host_port <= 65535
                    && p.container_port > 0
                    && p.container_port <= 65535
            })
            .map(|p| PortMapping {
                host_port: p.host_port as u16,
                container_port: p.container_port as u16,
                protocol: match Protocol::try_from(p.protocol) {
                    Ok(Protocol::Udp) => "udp",
                    Ok(Protocol::Sctp) => "sctp",
                    _ => "tcp",
                }
                .into(),
                host_ip: p.host_ip.clone(),
            })
            .collect(),
        dns: None,
        bandwidth: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet_of(net: &Network) -> Option<String> {
        let rt = net.current().ok()?;
        rt.conf_list().plugins[0]["subnet"]
            .as_str()
            .map(str::to_string)
    }

    #[test]
    fn pod_cidr_from_kubelet_moves_the_embedded_network_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CniConfig {
            conf_dir: dir.path().join("net.d"),
            bin_dirs: vec![],
            cache_dir: dir.path().join("cni"),
        };
        let net = Network::new(cfg.clone());
        assert_eq!(subnet_of(&net).as_deref(), Some("10.88.0.0/16"));

        // Dual-stack: the IPv4 range is taken, host bits cleared.
        net.set_pod_cidr("fd00:1::/64, 10.244.3.7/24").unwrap();
        assert_eq!(subnet_of(&net).as_deref(), Some("10.244.3.0/24"));
        let rt = net.current().unwrap();
        assert_eq!(rt.conf_list().plugins[0]["gateway"], "10.244.3.1");

        // Kept across a restart.
        assert_eq!(
            subnet_of(&Network::new(cfg.clone())).as_deref(),
            Some("10.244.3.0/24")
        );
        // Bad input is refused and changes nothing; IPv6 alone or empty leaves it.
        for bad in ["10.244.3.0", "300.1.1.0/24", "10.1.1.0/31", "x/y"] {
            assert!(
                matches!(net.set_pod_cidr(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
        net.set_pod_cidr("fd00:2::/64").unwrap();
        net.set_pod_cidr("").unwrap();
        assert_eq!(subnet_of(&net).as_deref(), Some("10.244.3.0/24"));

        // A config in the conf dir wins, as it would without a pod CIDR.
        std::fs::create_dir_all(&cfg.conf_dir).unwrap();
        std::fs::write(
            cfg.conf_dir.join("10-mine.conflist"),
            r#"{"cniVersion":"1.0.0","name":"mine","plugins":[{"type":"bridge","subnet":"192.168.5.0/24"}]}"#,
        )
        .unwrap();
        assert_eq!(subnet_of(&net).as_deref(), Some("192.168.5.0/24"));
    }
}
