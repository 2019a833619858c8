//! The per-container directory a shim owns. crispd creates it (under its state dir) and hands
//! its path to the shim; both sides derive every file name from here.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimDir(PathBuf);

impl ShimDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ShimDir(path.into())
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// The ttrpc socket of the Task API.
    pub fn socket(&self) -> PathBuf {
        self.0.join("shim.sock")
    }
    /// The `ttrpc` address form of [`Self::socket`].
    pub fn address(&self) -> String {
        format!("unix://{}", self.socket().display())
    }
    pub fn exit_record(&self) -> PathBuf {
        self.0.join("exit.json")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.0.join("shim.pid")
    }
    /// The OCI bundle: `config.json` and the `rootfs` mount point.
    pub fn bundle(&self) -> PathBuf {
        self.0.join("bundle")
    }
    /// libcontainer's state root (it keeps `<root>/<id>/state.json` there).
    pub fn runtime_root(&self) -> PathBuf {
        self.0.join("runtime")
    }
    /// The shim's own diagnostics (not the container's output).
    pub fn shim_log(&self) -> PathBuf {
        self.0.join("shim.log")
    }
}

/// Names the containerd Task service is registered under. containerd 1.6 dials v2; the protos
/// crate (0.12) generates only v3; the shim serves identical handlers under both.
pub const TASK_SERVICE_V3: &str = "containerd.task.v3.Task";
pub const TASK_SERVICE_V2: &str = "containerd.task.v2.Task";
