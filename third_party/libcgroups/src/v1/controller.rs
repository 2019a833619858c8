use std::fs;
use std::path::Path;

use nix::unistd::Pid;

use crate::common::{self, CGROUP_PROCS, ControllerOpt, WrapIoResult, WrappedIoError};

/// The v1 file that moves a single thread.
const CGROUP_TASKS: &str = "tasks";

pub(super) trait Controller {
    type Error: From<WrappedIoError>;
    type Resource;

    /// Adds a new task specified by its pid to the cgroup
    fn add_task(pid: Pid, cgroup_path: &Path) -> Result<(), Self::Error> {
        fs::create_dir_all(cgroup_path).wrap_create_dir(cgroup_path)?;
        write_task(pid, cgroup_path)?;
        Ok(())
    }

    /// Applies resource restrictions to the cgroup
    fn apply(controller_opt: &ControllerOpt, cgroup_root: &Path) -> Result<(), Self::Error>;

    /// Checks if the controller needs to handle this request
    fn needs_to_handle<'a>(controller_opt: &'a ControllerOpt) -> Option<&'a Self::Resource>;
}

/// Moves `pid` into the cgroup at `cgroup_path`.
///
/// A process moving itself while it has a single thread writes `0` to `tasks` instead of its pid
/// to `cgroup.procs`. Both move the whole process then, but only the first lets the kernel
/// (6.0 and later, "cgroup: Optimize single thread migration") skip the global
/// `cgroup_threadgroup_rwsem` write lock, whose every acquisition waits for an RCU grace period
/// (~7 ms measured, paid by every exec and container start). Older kernels take the lock either
/// way, so nothing is lost there.
pub(super) fn write_task(pid: Pid, cgroup_path: &Path) -> Result<(), WrappedIoError> {
    if pid == nix::unistd::getpid() && single_threaded() {
        common::write_cgroup_file_str(cgroup_path.join(CGROUP_TASKS), "0")
    } else {
        common::write_cgroup_file(cgroup_path.join(CGROUP_PROCS), pid)
    }
}

/// `/proc/self/task` links one entry per thread besides `.` and `..` (procfs has counted them
/// this way since 2.6): one `stat` instead of rendering all of `/proc/self/status`, and this
/// runs once per hierarchy for every exec.
fn single_threaded() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/task")
        .map(|m| m.nlink() == 3)
        .unwrap_or(false)
}
