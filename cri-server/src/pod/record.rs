//! A sandbox as persisted, and its typed state machine:
//!
//! ```text
//! Creating ──(namespaces, files ready)──▶ Ready ──(StopPodSandbox)──▶ NotReady
//!     └──(crash or error: cleaned away at startup / on the spot)
//! ```
//! `RemovePodSandbox` deletes the record from either Ready or NotReady.

use crate::error::{Error, Result};
use crisp_cri_api::v1::PodSandboxConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Creating,
    Ready,
    NotReady,
}

impl SandboxState {
    pub fn transition(self, to: SandboxState) -> Result<SandboxState> {
        use SandboxState::*;
        match (self, to) {
            (Creating, Ready) | (Ready, NotReady) | (NotReady, NotReady) | (Creating, NotReady) => {
                Ok(to)
            }
            _ => Err(Error::FailedPrecondition(format!(
                "pod sandbox cannot go from {self:?} to {to:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub config: PodSandboxConfig,
    pub state: SandboxState,
    pub created_at_ns: i64,
    pub runtime_handler: String,
    /// The pod's directory in the state dir (namespace pins, hostname, resolv.conf, hosts).
    pub dir: PathBuf,
    /// Pinned namespaces; `None` where the pod uses the host's.
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    /// The shared PID namespace's pin and its pause process (pid mode POD only).
    #[serde(default)]
    pub pidns: Option<PathBuf>,
    #[serde(default)]
    pub pause_pid: u32,
    /// The pod's own user namespace (`userns_options` mode POD with mappings): its pin and
    /// mappings. `None`: the host's.
    #[serde(default)]
    pub userns: Option<PathBuf>,
    #[serde(default)]
    pub idmap: Option<super::userns::IdMap>,
    /// cgroupfs path the pod's containers go under.
    pub cgroup_parent: String,
    /// Whether crisp created that cgroup (and so removes it), or kubelet did.
    pub owns_cgroup: bool,
    /// The pod's IPs from CNI, primary first (empty for host-network pods).
    #[serde(default)]
    pub ips: Vec<String>,
}

impl SandboxRecord {
    /// FAILED_PRECONDITION unless the pod is Ready: `what` needs its namespaces, which a
    /// stopped pod no longer has (its netns is removed at StopPodSandbox).
    pub fn require_ready(&self, what: &str) -> crate::error::Result<()> {
        if self.state == SandboxState::Ready {
            Ok(())
        } else {
            Err(crate::error::Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready ({:?}): {what} needs a running pod",
                self.id, self.state
            )))
        }
    }

    /// Where the pod's netns is (or was) pinned; also for a record saved before the pin was
    /// recorded (`Creating`).
    pub fn net_pin(&self) -> PathBuf {
        self.netns
            .clone()
            .unwrap_or_else(|| self.dir.join("ns/net"))
    }

    pub fn name_key(config: &PodSandboxConfig) -> Option<(String, String, String, u32)> {
        config.metadata.as_ref().map(|m| {
            (
                m.name.clone(),
                m.namespace.clone(),
                m.uid.clone(),
                m.attempt,
            )
        })
    }
}
