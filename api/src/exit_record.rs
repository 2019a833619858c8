//! The container's exit, as the shim persists it. crispd reads it after a restart when the shim
//! is gone, so an exit is never lost even if nobody was listening when it happened.

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub pid: u32,
    /// Docker convention: the exit status, or 128 + signal number when killed by a signal.
    pub exit_code: i32,
    /// Nanoseconds since the Unix epoch.
    pub exited_at_ns: i64,
    /// The cgroup's OOM killer fired while the container ran.
    pub oom_killed: bool,
}

impl ExitRecord {
    pub fn load(path: &Path) -> std::io::Result<Option<ExitRecord>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        // In the state dir: it has to outlive the shim and crispd, not the machine.
        crate::atomic_file::replace(path, &bytes)
    }
}

/// Maps a wait status to the exit code Docker and Kubernetes report.
pub fn exit_code_from_signal(signal: i32) -> i32 {
    128 + signal
}
