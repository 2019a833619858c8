//! Mounts crispd attaches under a container's bundle only while the runtime builds the
//! container's mount namespace (which keeps its own references): idmapped copies of bind sources
//! and image volumes. They are released right after creation and again, idempotently, when the
//! container is removed.

use nix::mount::{umount2, MntFlags};
use std::path::{Path, PathBuf};

/// Unmounts and removes every entry of `dir`, then `dir`. `false` if something is still
/// mounted, in which case the bundle must not be removed recursively (that would descend into
/// a host directory or an image's layers).
pub fn release(dir: &Path) -> bool {
    let entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return true,
    };
    let mut clean = true;
    for p in entries {
        loop {
            match umount2(&p, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "unmounting a staged mount");
                    clean = false;
                    break;
                }
            }
        }
        // Never recursive: an entry still mounted is someone else's tree.
        let removed = if p.is_dir() {
            std::fs::remove_dir(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(e) = removed {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %p.display(), error = %e, "removing a staged mount point");
                clean = false;
            }
        }
    }
    clean && std::fs::remove_dir(dir).is_ok()
}
