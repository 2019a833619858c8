use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::OnceLock;

use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle};
use procfs::ProcError;
use procfs::process::MountInfo;

use super::ControllerType;
use super::controller_type::CONTROLLERS;

#[derive(thiserror::Error, Debug)]
pub enum V1MountPointError {
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to get mountinfo: {0}")]
    MountInfo(ProcError),
    #[error("could not find mountpoint for {subsystem}")]
    NotFound { subsystem: ControllerType },
    #[error(transparent)]
    Pathrs(#[from] pathrs::error::Error),
}

/// crisp: the mount points a long-lived process read once for the processes it clones (the
/// shim's fork server, whose clones create a manager for every exec and container create:
/// mountinfo grows with every pod's mounts, and parsing it was the largest part of joining).
static PINNED_MOUNT_POINTS: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// Reads the subsystem mount points now and answers [`list_subsystem_mount_points`] from this
/// copy for the rest of this process's life and in every process it forks afterwards. For a
/// process whose cgroup mounts do not change while it lives (they do not on a node).
pub fn pin_subsystem_mount_points() -> Result<(), V1MountPointError> {
    let points = read_subsystem_mount_points()?;
    let _ = PINNED_MOUNT_POINTS.set(points);
    Ok(())
}

/// Like [`pin_subsystem_mount_points`], with a list the caller got elsewhere (a parent that read
/// mountinfo once for all its children). No effect once pinned.
pub fn pin_subsystem_mount_points_to(points: Vec<PathBuf>) {
    let _ = PINNED_MOUNT_POINTS.set(points);
}

/// List all cgroup v1 subsystem mount points on the system. This can include unsupported
/// subsystems, comounted controllers and named hierarchies.
pub fn list_subsystem_mount_points() -> Result<Vec<PathBuf>, V1MountPointError> {
    match PINNED_MOUNT_POINTS.get() {
        Some(points) => Ok(points.clone()),
        None => read_subsystem_mount_points(),
    }
}

fn read_subsystem_mount_points() -> Result<Vec<PathBuf>, V1MountPointError> {
    let reader = BufReader::new(ProcfsHandle::new()?.open(
        ProcfsBase::ProcSelf,
        "mountinfo",
        OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
    )?);

    reader
        .lines()
        .map(|lr| {
            lr.map_err(V1MountPointError::Io)
                .and_then(|line| MountInfo::from_line(&line).map_err(V1MountPointError::MountInfo))
        })
        .try_fold(Vec::new(), |mut mount_points, r| {
            r.map(|m| {
                if m.fs_type == "cgroup" {
                    mount_points.push(m.mount_point);
                }
                mount_points
            })
        })
}

/// List the mount points of all currently supported cgroup subsystems.
pub fn list_supported_mount_points() -> Result<HashMap<ControllerType, PathBuf>, V1MountPointError>
{
    let mut mount_paths = HashMap::with_capacity(CONTROLLERS.len());
    // crisp: mountinfo read once, not once per controller.
    let mount_points = list_subsystem_mount_points().unwrap_or_default();
    for controller in CONTROLLERS {
        if let Ok(mount_point) = subsystem_mount_point_in(controller, &mount_points) {
            mount_paths.insert(controller.to_owned(), mount_point);
        }
    }

    Ok(mount_paths)
}

pub fn get_subsystem_mount_point(subsystem: &ControllerType) -> Result<PathBuf, V1MountPointError> {
    subsystem_mount_point_in(subsystem, &list_subsystem_mount_points()?)
}

/// The mount point serving `subsystem` among `mount_points` (all cgroup v1 mounts), so that a
/// caller looking up every subsystem reads mountinfo once rather than once per subsystem.
pub fn subsystem_mount_point_in(
    subsystem: &ControllerType,
    mount_points: &[PathBuf],
) -> Result<PathBuf, V1MountPointError> {
    let subsystem_name = subsystem.to_string();
    mount_points
        .iter()
        .find(|mount_point| {
            // Some systems mount net_prio and net_cls in the same directory
            // other systems mount them in their own directories. This
            // should handle both cases.
            match subsystem_name.as_str() {
                "net_cls" => ["net_cls,net_prio", "net_prio,net_cls", "net_cls"]
                    .iter()
                    .any(|s| mount_point.ends_with(s)),
                "net_prio" => ["net_cls,net_prio", "net_prio,net_cls", "net_prio"]
                    .iter()
                    .any(|s| mount_point.ends_with(s)),
                "cpu" => ["cpu,cpuacct", "cpu"]
                    .iter()
                    .any(|s| mount_point.ends_with(s)),
                "cpuacct" => ["cpu,cpuacct", "cpuacct"]
                    .iter()
                    .any(|s| mount_point.ends_with(s)),
                _ => mount_point.ends_with(&subsystem_name),
            }
        })
        .cloned()
        .ok_or(V1MountPointError::NotFound {
            subsystem: *subsystem,
        })
}
