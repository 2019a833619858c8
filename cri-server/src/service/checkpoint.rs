//! CheckpointContainer (kubelet's forensic container checkpointing, KEP-2008). Checkpointing
//! runs CRIU; crispd checks first that CRIU works on this node (`criu check`: the binary is
//! there and understands the running kernel), and answers FAILED_PRECONDITION with CRIU's own
//! words where it does not. Debian's CRIU 3.17, for one, refuses kernel 6.18 ("Unexpected rt
//! vDSO area bounds").
//!
//! Writing the checkpoint archive itself (CRIU images, the spec, the rootfs diff, in the
//! layout kubelet and CRI-O use) is not implemented yet: on a node where CRIU works the call
//! is UNIMPLEMENTED, which kubelet reports to the user as such.

use super::Runtime;
use crate::container::ContainerState;
use crate::error::{Error, Result};
use std::path::Path;

impl Runtime {
    pub async fn checkpoint_container(&self, id: &str, location: &str) -> Result<()> {
        let c = self.container(id)?;
        if c.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}: only a running container can be checkpointed",
                c.id, c.state
            )));
        }
        if location.is_empty() || !Path::new(location).is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "checkpoint location {location:?} of container {} must be an absolute path",
                c.id
            )));
        }
        criu_works().await?;
        Err(Error::Unimplemented(format!(
            "checkpointing container {}: CRIU works here, but crisp does not write checkpoint \
             archives yet",
            c.id
        )))
    }
}

/// `criu check`: Ok if CRIU can checkpoint on this kernel, else why not.
async fn criu_works() -> Result<()> {
    let run = tokio::process::Command::new("criu")
        .arg("check")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .map_err(|_| Error::Unavailable("`criu check` did not finish within 30 s".into()))?
        .map_err(|e| {
            Error::FailedPrecondition(format!(
                "checkpointing needs CRIU, and running `criu check` failed: {e} (install criu)"
            ))
        })?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let said = said
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::FailedPrecondition(format!(
        "checkpointing needs CRIU, which does not work on this kernel: `criu check` says: {said}"
    )))
}
