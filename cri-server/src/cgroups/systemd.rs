//! What crispd itself asks of systemd with the `systemd` driver (containers' scopes are the
//! shim's, through libcontainer): a scope for a pod's pause process, and stopping the slices
//! of the pods it made. Through libcgroups' systemd manager, the same D-Bus client the shim
//! uses (systemd's private socket when no bus daemon runs), so crispd links no second one.

use libcgroups::common::{CgroupManager, DEFAULT_CGROUP_ROOT};
use libcgroups::systemd::manager::{Manager, PROCESS_IN_CGROUP_TIMEOUT_DURATION};
use std::path::PathBuf;

/// Whether this host can run the systemd driver; the reason when not.
pub fn check_available() -> Result<(), String> {
    if !libcgroups::systemd::booted() {
        return Err(
            "the systemd cgroup driver needs systemd as the init system \
                    (no /run/systemd/system)"
                .into(),
        );
    }
    if !super::unified() {
        // libcgroups' systemd manager drives the unified hierarchy only; kubelet 1.35+ itself
        // refuses cgroup v1 unless told otherwise.
        return Err(
            "the systemd cgroup driver needs cgroup v2 (the unified hierarchy at \
                    /sys/fs/cgroup); use the cgroupfs driver on cgroup v1"
                .into(),
        );
    }
    Ok(())
}

fn manager(cgroups_path: &str, name: &str) -> Result<Manager, String> {
    Manager::new(
        PathBuf::from(DEFAULT_CGROUP_ROOT),
        PathBuf::from(cgroups_path),
        name.to_string(),
        true,
        PROCESS_IN_CGROUP_TIMEOUT_DURATION,
    )
    .map_err(|e| format!("connecting to systemd for {cgroups_path}: {e}"))
}

/// Starts the transient scope named by `cgroups_path` (`slice:prefix:name`) holding `pid`.
pub fn start_scope(cgroups_path: &str, name: &str, pid: u32) -> Result<(), String> {
    manager(cgroups_path, name)?
        .add_task(nix::unistd::Pid::from_raw(pid as i32))
        .map_err(|e| format!("starting the scope {cgroups_path} for pid {pid}: {e}"))
}

/// Stops the unit `cgroups_path` (`slice:prefix:name`) names, if systemd has it loaded.
pub fn stop_scope(cgroups_path: &str) -> Result<(), String> {
    manager(cgroups_path, "")?
        .remove()
        .map_err(|e| format!("stopping {cgroups_path}: {e}"))
}

/// Stops the slice `slice` and everything left in it, if systemd has it loaded.
pub fn stop_slice(slice: &str) -> Result<(), String> {
    // A `.slice` name is the unit itself to libcgroups; its parent only places the (unused)
    // cgroup path.
    stop_scope(&format!(
        "-.slice:{}:{slice}",
        crisp_api::cgroups_path::SCOPE_PREFIX
    ))
}
