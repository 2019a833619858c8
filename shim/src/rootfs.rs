//! The container's root filesystem when the caller passes it as mounts (containerd does, in
//! `CreateTaskRequest.rootfs`; crispd mounts the rootfs itself and passes none).

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("mounting the rootfs ({typ} from {source_path}) on {target}: {errno}")]
pub struct MountError {
    typ: String,
    source_path: String,
    target: String,
    errno: nix::Error,
}

/// Splits fstab-style options into mount flags and the filesystem's own data string.
fn split_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags -= MsFlags::MS_RDONLY,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Mounts each of `mounts` (type, source, options) on `target`, in order.
pub fn mount_all(
    mounts: &[(String, String, Vec<String>)],
    target: &Path,
) -> Result<(), MountError> {
    for (typ, source, options) in mounts {
        let (flags, data) = split_options(options);
        let fail = |errno| MountError {
            typ: typ.clone(),
            source_path: source.clone(),
            target: target.display().to_string(),
            errno,
        };
        std::fs::create_dir_all(target)
            .map_err(|e| fail(nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))?;
        let fstype = (!flags.contains(MsFlags::MS_BIND)).then_some(typ.as_str());
        mount(
            Some(source.as_str()),
            target,
            fstype,
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(fail)?;
    }
    Ok(())
}

/// Unmounts whatever `mount_all` stacked on `target`. Idempotent.
pub fn unmount_all(target: &Path) {
    for _ in 0..8 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EBUSY) => {
                let _ = umount2(target, MntFlags::MNT_DETACH);
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let (f, d) = split_options(&[
            "ro".into(),
            "lowerdir=/a:/b".into(),
            "index=off".into(),
            "nosuid".into(),
        ]);
        assert!(f.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID));
        assert_eq!(d, "lowerdir=/a:/b,index=off");
        let (f, d) = split_options(&["rbind".into()]);
        assert!(f.contains(MsFlags::MS_BIND | MsFlags::MS_REC));
        assert!(d.is_empty());
    }
}
