//! Setting limits on a pod-level cgroup (UpdatePodSandboxResources), through libcgroups as the
//! shim does for containers, so v1 and v2 (shares to weight, quota to `cpu.max`) are converted
//! the same way for both.

use super::{hierarchies, under, unified};
use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager, ControllerOpt};
use oci_spec::runtime::LinuxResources;
use std::path::PathBuf;

/// Applies `resources` (CPU and memory) to the cgroup `cgroup_path`, creating it in the
/// hierarchies those controllers live in where it does not exist yet (a pod whose first
/// container has not started). Never creates a v1 cpuset cgroup: a new one has no CPUs.
pub fn set(cgroup_path: &str, resources: &LinuxResources) -> Result<(), String> {
    for m in hierarchies() {
        let name = m.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let wanted = if unified() {
            true
        } else {
            name.split(',').any(|c| c == "cpu" || c == "memory")
        };
        if let Some(dir) = under(&m, cgroup_path).filter(|_| wanted) {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
    }
    let manager = create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroup_path),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| format!("cgroup {cgroup_path}: {e}"))?;
    manager
        .apply(&ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| format!("cgroup {cgroup_path}: {e}"))
}
