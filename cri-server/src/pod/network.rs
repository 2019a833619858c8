//! The pod network through CNI: the loaded network config (reloaded when the conf dir
//! changes, as containerd does), ADD at RunPodSandbox, DEL at StopPodSandbox and removal, and
//! the readiness crispd reports in `Status`.

use crate::error::{Error, Result};
use crisp_cni::runtime::{CniConfig, CniRuntime, PodNetwork, PortMapping};
use k8s_cri::v1::{PodSandboxConfig, Protocol};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub struct Network {
    cfg: CniConfig,
    loaded: Mutex<Loaded>,
}

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
        let net = Network {
            cfg,
            loaded: Mutex::new(Loaded {
                stamp: None,
                runtime: Err("not loaded yet".into()),
            }),
        };
        net.reload();
        net
    }

    fn reload(&self) {
        let stamp = dir_stamp(&self.cfg.conf_dir);
        let runtime = CniRuntime::load(self.cfg.clone())
            .map(Arc::new)
            .map_err(|e| e.to_string());
        match &runtime {
            Ok(r) if r.is_default() => tracing::info!(
                conf_dir = %self.cfg.conf_dir.display(),
                "no CNI config found: using the embedded default network (crisp-bridge, crisp0, 10.88.0.0/16)"
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

    /// CNI DEL; idempotent, works from the result cache after restarts. Blocking.
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
        rt.del(pod).map_err(|e| {
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
