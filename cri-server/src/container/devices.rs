//! Device nodes in a container: the CRI's `devices` (a host device, or every device below a host
//! directory, as containerd does) and, for a privileged container, every device of the host (as
//! containerd and runc give one). Each gets a node in the container's /dev and a cgroup rule with
//! the asked permissions.

use crate::error::{Error, Result};
use crisp_cri_api::v1::Device;
use nix::sys::stat::{major, minor, SFlag};
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Nodes for the container's /dev and the cgroup rules that let it use them.
#[derive(Default)]
pub struct Devices {
    pub nodes: Vec<LinuxDevice>,
    pub rules: Vec<LinuxDeviceCgroup>,
}

/// Directories below /dev that hold no device of the host's own (containerd skips the same).
const SKIP_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// The CRI's `devices` of a container.
pub fn requested(devices: &[Device]) -> Result<Devices> {
    let mut out = Devices::default();
    for d in devices {
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(Error::InvalidArgument(format!(
                "device {}: permissions {access:?} must be letters of \"rwm\"",
                d.host_path
            )));
        }
        if !d.container_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "device {}: container path {:?} must be absolute",
                d.host_path, d.container_path
            )));
        }
        let host = Path::new(&d.host_path);
        // A symlink (e.g. /dev/disk/by-id/...) names the device it points at.
        let meta = std::fs::metadata(host)
            .map_err(|e| Error::InvalidArgument(format!("device {}: {e}", d.host_path)))?;
        let found = if meta.is_dir() {
            walk(host, Path::new(&d.container_path))?
        } else {
            let node = node(host, Path::new(&d.container_path))?.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "device {}: not a character or block device",
                    d.host_path
                ))
            })?;
            vec![node]
        };
        for n in found {
            out.rules.push(rule(&n, access)?);
            out.nodes.push(n);
        }
    }
    Ok(out)
}

/// Every device of the host, for a privileged container.
pub fn all_of_host() -> Result<Vec<LinuxDevice>> {
    walk(Path::new("/dev"), Path::new("/dev"))
}

fn walk(host_dir: &Path, container_dir: &Path) -> Result<Vec<LinuxDevice>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(host_dir)
        .map_err(|e| Error::internal(format!("reading {}", host_dir.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if SKIP_DIRS.iter().any(|s| name == *s) {
                continue;
            }
            out.extend(walk(&entry.path(), &container_dir.join(&name))?);
        } else if (kind.is_char_device() || kind.is_block_device()) && name != "console" {
            // A node that vanished since the listing is simply not there any more.
            if let Ok(Some(n)) = node(&entry.path(), &container_dir.join(&name)) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

fn node(host: &Path, container: &Path) -> Result<Option<LinuxDevice>> {
    let meta = std::fs::metadata(host)
        .map_err(|e| Error::InvalidArgument(format!("device {}: {e}", host.display())))?;
    let typ = match SFlag::from_bits_truncate(meta.mode() & SFlag::S_IFMT.bits()) {
        SFlag::S_IFCHR => LinuxDeviceType::C,
        SFlag::S_IFBLK => LinuxDeviceType::B,
        _ => return Ok(None),
    };
    let rdev = meta.rdev();
    LinuxDeviceBuilder::default()
        .path(PathBuf::from(container))
        .typ(typ)
        .major(major(rdev) as i64)
        .minor(minor(rdev) as i64)
        .file_mode(meta.mode() & 0o7777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()
        .map(Some)
        .map_err(|e| Error::internal("building a device entry", e))
}

fn rule(n: &LinuxDevice, access: &str) -> Result<LinuxDeviceCgroup> {
    LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(n.typ())
        .major(n.major())
        .minor(n.minor())
        .access(access)
        .build()
        .map_err(|e| Error::internal("building a device rule", e))
}
