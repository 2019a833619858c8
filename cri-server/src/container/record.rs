//! A container as persisted, and its typed state machine:
//!
//! ```text
//! Creating ──▶ Created ──(Start)──▶ Running ──(exit)──▶ Exited
//!     │            └──────────(killed before start)───────▲
//!     └──(crash or error: cleaned away)
//! ```

use crate::error::{Error, Result};
use crisp_cri_api::v1::ContainerConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Creating,
    Created,
    Running,
    Exited,
}

impl ContainerState {
    pub fn transition(self, to: ContainerState) -> Result<ContainerState> {
        use ContainerState::*;
        match (self, to) {
            (Creating, Created) | (Created, Running) | (Created, Exited) | (Running, Exited) => {
                Ok(to)
            }
            _ => Err(Error::FailedPrecondition(format!(
                "container cannot go from {self:?} to {to:?}"
            ))),
        }
    }

    pub fn to_cri(self) -> crisp_cri_api::v1::ContainerState {
        use crisp_cri_api::v1::ContainerState as C;
        match self {
            ContainerState::Creating | ContainerState::Created => C::ContainerCreated,
            ContainerState::Running => C::ContainerRunning,
            ContainerState::Exited => C::ContainerExited,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub config: ContainerConfig,
    pub state: ContainerState,
    /// The image as the request named it, and its resolved id.
    pub image_name: String,
    pub image_id: String,
    /// The signal `StopContainer` sends first (`container::stop_signal::effective`).
    pub stop_signal: i32,
    /// Full path of the CRI log file, if the pod asked for logs.
    pub log_path: Option<PathBuf>,
    pub pid: u32,
    pub created_at_ns: i64,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// Who the container's first process starts as; absent in records of older versions.
    #[serde(default)]
    pub user: Option<ProcessUser>,
}

/// The identity a container's first process starts with (CRI `ContainerStatus.user`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

impl ProcessUser {
    pub fn of_spec(spec: &oci_spec::runtime::Spec) -> Option<ProcessUser> {
        let u = spec.process().as_ref()?.user();
        Some(ProcessUser {
            uid: u.uid(),
            gid: u.gid(),
            additional_gids: u.additional_gids().clone().unwrap_or_default(),
        })
    }

    /// The CRI form, whose supplemental groups include the primary group (as `id -G` lists
    /// it and containerd reports it).
    pub fn to_cri(&self) -> crisp_cri_api::v1::ContainerUser {
        let mut groups = vec![i64::from(self.gid)];
        for g in &self.additional_gids {
            if !groups.contains(&i64::from(*g)) {
                groups.push(i64::from(*g));
            }
        }
        crisp_cri_api::v1::ContainerUser {
            linux: Some(crisp_cri_api::v1::LinuxContainerUser {
                uid: i64::from(self.uid),
                gid: i64::from(self.gid),
                supplemental_groups: groups,
            }),
        }
    }
}

impl ContainerRecord {
    /// Records the exit, with the reason kubelet shows (`Completed`, `Error`, `OOMKilled`).
    pub fn exited(&mut self, exit_code: i32, at_ns: i64, oom: bool, message: String) -> Result<()> {
        self.state = self.state.transition(ContainerState::Exited)?;
        self.exit_code = exit_code;
        self.finished_at_ns = at_ns;
        self.reason = if oom {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string();
        self.message = message;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ContainerState::*;

    #[test]
    fn only_forward_transitions() {
        assert!(Creating.transition(Created).is_ok());
        assert!(Created.transition(Running).is_ok());
        assert!(Running.transition(Exited).is_ok());
        assert!(Exited.transition(Running).is_err());
        assert!(Running.transition(Created).is_err());
        assert!(Creating.transition(Running).is_err());
    }
}
