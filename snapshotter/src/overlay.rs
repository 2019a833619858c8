//! overlayfs mount/unmount through the legacy mount(2) API.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

/// mount(2) copies at most one page of option data, including the NUL.
const MAX_OPTIONS_LEN: usize = 4096;

/// Builds the `lowerdir=..,upperdir=..,workdir=..` option string.
pub fn overlay_options(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<String> {
    if lowers.is_empty() {
        return Err(Error::InvalidMountPath {
            path: target.to_path_buf(),
            reason: "overlay needs at least one lower directory",
        });
    }
    for p in lowers.iter().map(PathBuf::as_path).chain([upper, work]) {
        check_path(p)?;
    }
    let lower = lowers
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.to_string_lossy(),
        work.to_string_lossy()
    );
    if opts.len() + 1 > MAX_OPTIONS_LEN {
        return Err(Error::MountOptionsTooLong {
            target: target.to_path_buf(),
            len: opts.len(),
        });
    }
    Ok(opts)
}

/// The legacy option string cannot carry these characters unescaped: `,`
/// separates options, `:` separates lowerdirs, and non-UTF-8 would be
/// mangled by the lossy conversion above.
fn check_path(p: &Path) -> Result<()> {
    let bytes = p.as_os_str().as_bytes();
    let reason = if bytes.contains(&b',') {
        Some("contains ','")
    } else if bytes.contains(&b':') {
        Some("contains ':'")
    } else if bytes.contains(&b'\\') {
        Some("contains '\\'")
    } else if std::str::from_utf8(bytes).is_err() {
        Some("is not valid UTF-8")
    } else if !p.is_absolute() {
        Some("is not absolute")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidMountPath {
            path: p.to_path_buf(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Mounts an overlay at `target`. `lowers` are top first, as overlayfs wants.
pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let opts = overlay_options(lowers, upper, work, target)?;
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| Error::Sys {
        context: format!("mounting overlay on {} ({opts})", target.display()),
        source: e,
    })
}

/// Unmounts `target`. Not being a mount point (EINVAL) or not existing is
/// success, so callers can use this for cleanup unconditionally. A busy
/// mount is detached lazily as a last resort so teardown always progresses.
pub fn unmount(target: &Path) -> Result<()> {
    // Loop: something may be stacked on the same point (e.g. a retried
    // mount); stop at the first "not a mount point".
    for _ in 0..16 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) => {
                tracing::warn!(target = %target.display(), "mount busy, detaching lazily");
                umount2(target, MntFlags::MNT_DETACH).map_err(|e| Error::Sys {
                    context: format!("lazily unmounting {}", target.display()),
                    source: e,
                })?;
            }
            Err(e) => {
                return Err(Error::Sys {
                    context: format!("unmounting {}", target.display()),
                    source: e,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_limits() {
        let o = overlay_options(
            &[PathBuf::from("/a"), PathBuf::from("/b")],
            Path::new("/u"),
            Path::new("/w"),
            Path::new("/t"),
        )
        .unwrap();
        assert_eq!(o, "lowerdir=/a:/b,upperdir=/u,workdir=/w");
        let many: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/crisp/snapshots/committed/{i:064}/fs")))
            .collect();
        let err =
            overlay_options(&many, Path::new("/u"), Path::new("/w"), Path::new("/t")).unwrap_err();
        assert!(matches!(err, Error::MountOptionsTooLong { .. }), "{err}");
        assert!(overlay_options(
            &[PathBuf::from("/a,b")],
            Path::new("/u"),
            Path::new("/w"),
            Path::new("/t")
        )
        .is_err());
        assert!(overlay_options(&[], Path::new("/u"), Path::new("/w"), Path::new("/t")).is_err());
    }

    #[test]
    fn unmount_not_mounted_is_ok() {
        let d = tempfile::tempdir().unwrap();
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        unmount(d.path()).unwrap();
        unmount(&d.path().join("missing")).unwrap();
    }
}
