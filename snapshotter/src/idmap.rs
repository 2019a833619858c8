//! Idmapped mounts (`mount_setattr` with `MOUNT_ATTR_IDMAP`), for pods in their own user
//! namespace.
//!
//! A pod whose root is host uid 100000 would see the image's files (owned by host uid 0) as
//! `nobody` and could not write its own rootfs. Instead of chowning a copy of every layer per pod
//! (containerd 1.7's cost), the layers are attached through mounts that shift ownership by the
//! pod's mapping: on-disk uid 0 reads as the pod's root, and nothing is copied. The same holds for
//! host directories bind-mounted into such a pod.
//!
//! nix 0.29 wraps none of these syscalls, hence the raw calls.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

use crate::error::{Error, Result};

// From <linux/mount.h>.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` (the kernel's MOUNT_ATTR_SIZE_VER0 layout).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::InvalidMountPath {
        path: p.to_path_buf(),
        reason: "contains a NUL byte",
    })
}

/// A detached copy of the mount tree at `source` (recursively with `recursive`), with every
/// mount in it idmapped through `userns`'s mapping. Attach it with [`attach`], or hand it to
/// overlayfs as a layer; dropping the fd unmounts it.
pub fn clone_idmapped(source: &Path, userns: BorrowedFd<'_>, recursive: bool) -> Result<OwnedFd> {
    let path = cstr(source)?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: a NUL-terminated path that outlives the call; the result is a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(Error::Sys {
            context: format!("cloning the mount at {}", source.display()),
            source: Errno::last(),
        });
    }
    // SAFETY: open_tree returned a descriptor nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    let at_flags = libc::AT_EMPTY_PATH as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: `tree` is a detached mount fd, `attr` a properly sized mount_attr that outlives
    // the call, and the empty path selects the fd itself (AT_EMPTY_PATH).
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            at_flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        let errno = Errno::last();
        return Err(Error::Sys {
            context: format!(
                "idmapping the mount at {}{}",
                source.display(),
                if errno == Errno::EINVAL {
                    " (its filesystem does not support idmapped mounts)"
                } else {
                    ""
                }
            ),
            source: errno,
        });
    }
    Ok(tree)
}

/// Attaches a detached mount tree at `target`.
pub fn attach(tree: OwnedFd, target: &Path) -> Result<()> {
    let to = cstr(target)?;
    let empty = c"";
    // SAFETY: a valid mount fd and NUL-terminated paths for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(Error::Sys {
            context: format!("attaching an idmapped mount at {}", target.display()),
            source: Errno::last(),
        });
    }
    Ok(())
}
