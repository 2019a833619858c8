//! The container's cgroup as libcgroups opens it: the bundle's `cgroupsPath` says which driver
//! made it (`crisp_api::cgroups_path`), and a systemd path must go through systemd's manager
//! (a transient scope, changed over D-Bus) or libcgroups would read `slice:prefix:name` as a
//! directory name.

use crisp_api::cgroups_path::CgroupsPath;
use libcgroups::common::CgroupConfig;
use std::path::Path;

/// Whether the spec's `cgroupsPath` names a systemd scope.
pub fn is_systemd(cgroups_path: &Path) -> bool {
    cgroups_path
        .to_str()
        .is_some_and(|p| CgroupsPath::parse(p).is_systemd())
}

/// What libcgroups' `create_cgroup_manager` needs to open container `id`'s cgroup.
pub fn config(cgroups_path: &Path, id: &str) -> CgroupConfig {
    CgroupConfig {
        cgroup_path: cgroups_path.to_path_buf(),
        systemd_cgroup: is_systemd(cgroups_path),
        container_name: id.to_string(),
    }
}

/// The `cgroupsPath` of the bundle's spec, if it has one.
pub fn of_bundle(bundle: &Path) -> Option<std::path::PathBuf> {
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).ok()?;
    spec.linux().as_ref().and_then(|l| l.cgroups_path().clone())
}

/// The cgroup's directory below the cgroup mount (a systemd scope's, from its slice).
pub fn dir(cgroups_path: &Path) -> Option<std::path::PathBuf> {
    let p = cgroups_path.to_str()?;
    CgroupsPath::parse(p).dir().ok().map(Into::into)
}

/// Pins the cgroup v1 mount points in libcgroups for this process and the processes it forks
/// afterwards: those crispd passed ([`crisp_api::cgroup_mounts`]), or else mountinfo's, read
/// once here instead of at every cgroup manager libcgroups builds.
pub fn pin_v1_mounts() {
    match crisp_api::cgroup_mounts::from_env() {
        Some(points) => libcgroups::v1::util::pin_subsystem_mount_points_to(points),
        None => {
            if let Err(e) = libcgroups::v1::util::pin_subsystem_mount_points() {
                eprintln!("cgroup mount points not pinned: {e}");
            }
        }
    }
}
