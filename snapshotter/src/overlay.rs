//! overlayfs mount/unmount.
//!
//! Mounts go through the new mount API (fsopen/fsconfig/fsmount/move_mount) with one
//! `lowerdir+` per layer: the legacy mount(2) option string is cut at one page, which a deep image
//! (about 50 layers under crisp's root) already exceeds. Kernels without `lowerdir+` (before 6.8)
//! or without the new API fall back to the legacy string, which works while it fits.
//!
//! Which of the two a kernel takes is learnt from the first mount that succeeds (crispd makes
//! one at start, [`probe`]) and kept for the process: before 6.5 overlayfs did not parse the
//! new API's keys itself, so `fsconfig` put `lowerdir+` into a legacy option page and only
//! `FSCONFIG_CMD_CREATE` refused it (EINVAL), or `fsconfig` did once that page was full.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{io_ctx, Error, Result};

/// mount(2) copies at most one page of option data, including the NUL.
const MAX_OPTIONS_LEN: usize = 4096;

/// Builds the `lowerdir=..,upperdir=..,workdir=..` option string.
pub fn overlay_options(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<String> {
    options(lowers, Some((upper, work)), target)
}

/// The option string; without an upper and work dir, a read-only overlay of the lowers.
fn options(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<String> {
    if lowers.is_empty() {
        return Err(Error::InvalidMountPath {
            path: target.to_path_buf(),
            reason: "overlay needs at least one lower directory",
        });
    }
    let extra: Vec<&Path> = upper_work.map(|(u, w)| vec![u, w]).unwrap_or_default();
    for p in lowers.iter().map(PathBuf::as_path).chain(extra) {
        check_path(p)?;
    }
    let lower = lowers
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let opts = match upper_work {
        Some((upper, work)) => format!(
            "lowerdir={lower},upperdir={},workdir={}",
            upper.to_string_lossy(),
            work.to_string_lossy()
        ),
        None => format!("lowerdir={lower}"),
    };
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

/// How this kernel takes an overlay's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerPassing {
    /// The new mount API, one `lowerdir+` per layer (Linux 6.8+): any depth.
    LowerdirPlus,
    /// The legacy `lowerdir=a:b:..` string (older kernels): as many layers as fit one page.
    OptionString,
}

static PASSING: OnceLock<LayerPassing> = OnceLock::new();

/// Whether writable overlays are mounted `volatile` (Linux 5.10+), learnt by [`probe`].
///
/// Without it, the last unmount of an overlay syncs its upper filesystem (`sync_fs` of the
/// whole filesystem under crisp's root, with a device cache flush): every container's stop
/// waited for all the node's dirty data. A container's writable layer never outlives its
/// container, and a container never outlives a reboot (crispd then tears it down and never
/// mounts that upper dir again), so its writes need not be synced: `volatile` skips the
/// unmount's sync and the container's own sync calls on its root filesystem, whose contents a
/// machine crash makes unreachable anyway. Volumes are bind mounts, not overlays, and keep
/// their sync semantics.
static VOLATILE: OnceLock<bool> = OnceLock::new();

fn volatile() -> bool {
    VOLATILE.get().copied().unwrap_or(false)
}

/// How layers are passed, once a mount has succeeded.
pub fn layer_passing() -> Option<LayerPassing> {
    PASSING.get().copied()
}

fn learnt(p: LayerPassing) {
    if PASSING.set(p).is_ok() {
        tracing::info!(passing = ?p, "overlay layers are passed this way on this kernel");
    }
}

/// Mounts a throwaway overlay in `scratch` (a directory on the filesystem the layers live on,
/// created and removed here) to learn how this kernel takes layers.
pub fn probe(scratch: &Path) -> Result<LayerPassing> {
    // upper2 and work2: for the attempt without `volatile` (a refusal after the filesystem
    // was made may have left the volatile marker in the first work dir).
    let dirs: Vec<PathBuf> = ["l1", "l2", "upper", "work", "merged", "upper2", "work2"]
        .iter()
        .map(|d| scratch.join(d))
        .collect();
    // A probe a crash interrupted may have left its mount, and a volatile mount leaves a
    // marker in its work dir that refuses any later mount of it: start from nothing.
    let _ = umount2(&dirs[4], MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(scratch);
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(io_ctx(|| {
            format!("preparing the overlay probe in {}", d.display())
        }))?;
    }
    // First with `volatile`: a kernel before 5.10 refuses it, and then mounts without.
    let mut mounted = mount_either(&dirs[..2], Some((&dirs[2], &dirs[3])), true, &dirs[4]);
    let takes_volatile = mounted.is_ok();
    if !takes_volatile {
        mounted = mount_either(&dirs[..2], Some((&dirs[5], &dirs[6])), false, &dirs[4]);
    }
    if mounted.is_ok() && VOLATILE.set(takes_volatile).is_ok() {
        tracing::info!(volatile = takes_volatile, "writable overlays");
    }
    // Never walk into a mount that is still there.
    if mounted.is_err() || unmount(&dirs[4]).is_ok() {
        let _ = std::fs::remove_dir_all(scratch);
    }
    mounted?;
    layer_passing().ok_or(Error::Unsupported(
        "the overlay probe mounted without learning how".into(),
    ))
}

/// Mounts an overlay at `target`. `lowers` are top first, as overlayfs wants.
pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    if lowers.is_empty() {
        return Err(Error::InvalidMountPath {
            path: target.to_path_buf(),
            reason: "overlay needs at least one lower directory",
        });
    }
    mount_either(lowers, Some((upper, work)), volatile(), target)
}

/// Mounts a read-only overlay of `lowers` (top first; at least two, as overlayfs wants without
/// an upper layer) at `target`: an image's filesystem as it is, for an image volume.
pub fn mount_readonly(lowers: &[PathBuf], target: &Path) -> Result<()> {
    if lowers.len() < 2 {
        return Err(Error::InvalidMountPath {
            path: target.to_path_buf(),
            reason: "a read-only overlay needs at least two lower directories",
        });
    }
    mount_either(lowers, None, false, target)
}

/// Through the new API with `lowerdir+` unless this kernel is known not to take it; a first
/// refusal that the legacy string then gets past teaches that it does not.
fn mount_either(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    volatile: bool,
    target: &Path,
) -> Result<()> {
    if layer_passing() == Some(LayerPassing::OptionString) {
        return mount_legacy(lowers, upper_work, volatile, target);
    }
    let refused = match new_api::mount(lowers, upper_work, volatile, target, None) {
        Ok(()) => {
            learnt(LayerPassing::LowerdirPlus);
            return Ok(());
        }
        // No new mount API, or no `lowerdir+` (EINVAL from fsconfig).
        Err(new_api::Failure::Unsupported) => None,
        // Before 6.5 the keys went into a legacy option page: refused once it is full, or
        // (`lowerdir+` unknown) at creation.
        Err(
            f @ new_api::Failure::Failed {
                errno: Errno::EINVAL,
                ..
            },
        ) if layer_passing().is_none() => Some(f),
        Err(f) => return Err(f.into_error(target, lowers.len())),
    };
    match (mount_legacy(lowers, upper_work, volatile, target), refused) {
        (Ok(()), _) => {
            learnt(LayerPassing::OptionString);
            Ok(())
        }
        // Too many layers for the string: the image is too deep for this kernel.
        (Err(e @ Error::MountOptionsTooLong { .. }), _) => Err(e),
        // Both refused: the overlay itself is at fault, as the new API's message tells best.
        (Err(_), Some(f)) => Err(f.into_error(target, lowers.len())),
        (Err(e), None) => Err(e),
    }
}

/// Mounts an overlay at `target` whose lower layers are idmapped through `userns` (see
/// [`crate::idmap`]), for a container in that user namespace; `owner` (the host ids of the
/// namespace's root) gets the upper directory's root, so the container's root owns `/`.
///
/// The upper layer itself is not idmapped: overlayfs creates its work files as the mounter (host
/// root), which an idmapped upper could not represent. Files the container writes land there
/// under its host ids, as with containerd 2's idmapped snapshots. Needs layers passed by fd
/// (`lowerdir+` with FSCONFIG_SET_FD, Linux 6.13+); there is no legacy fallback.
pub fn mount_overlay_idmapped(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
    owner: (u32, u32),
) -> Result<()> {
    if lowers.is_empty() {
        return Err(Error::InvalidMountPath {
            path: target.to_path_buf(),
            reason: "overlay needs at least one lower directory",
        });
    }
    nix::unistd::chown(
        upper,
        Some(nix::unistd::Uid::from_raw(owner.0)),
        Some(nix::unistd::Gid::from_raw(owner.1)),
    )
    .map_err(|e| Error::Sys {
        context: format!(
            "handing {} to uid {} gid {}",
            upper.display(),
            owner.0,
            owner.1
        ),
        source: e,
    })?;
    match new_api::mount(
        lowers,
        Some((upper, work)),
        volatile(),
        target,
        Some(userns),
    ) {
        Ok(()) => Ok(()),
        Err(new_api::Failure::Unsupported) => Err(Error::Unsupported(
            "idmapped overlay layers: this kernel cannot take overlayfs layers by file \
             descriptor (Linux 6.13 or later needed)"
                .into(),
        )),
        Err(f) => Err(f.into_error(target, lowers.len())),
    }
}

fn mount_legacy(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    volatile: bool,
    target: &Path,
) -> Result<()> {
    let mut opts = options(lowers, upper_work, target)?;
    if volatile && upper_work.is_some() {
        opts.push_str(",volatile");
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        if upper_work.is_some() {
            MsFlags::empty()
        } else {
            MsFlags::MS_RDONLY
        },
        Some(opts.as_str()),
    )
    .map_err(|e| Error::Sys {
        context: format!("mounting overlay on {} ({opts})", target.display()),
        source: e,
    })
}

/// Whether this kernel can mount an overlay over `layer` idmapped through `userns`: the
/// filesystem under the layers supports idmapped mounts and overlayfs takes layers by fd.
/// Nothing is mounted.
pub fn idmapped_layers_supported(layer: &Path, userns: BorrowedFd<'_>) -> bool {
    new_api::accepts_idmapped_lower(layer, userns)
}

/// The new mount API, through raw syscalls (nix 0.29 does not wrap them).
mod new_api {
    use super::*;

    // From <linux/mount.h>; libc carries the syscall numbers but not these flags.
    const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

    const FSCONFIG_SET_FD: libc::c_uint = 5;

    pub enum Failure {
        Unsupported,
        Failed {
            step: String,
            errno: Errno,
            /// What the filesystem wrote to the context's message log.
            log: String,
        },
    }

    impl Failure {
        pub fn into_error(self, target: &Path, lowers: usize) -> Error {
            match self {
                Failure::Unsupported => Error::Unsupported(format!(
                    "mounting overlay on {}: no new mount API",
                    target.display()
                )),
                Failure::Failed { step, errno, log } => Error::Sys {
                    context: format!(
                        "mounting overlay on {} ({lowers} lowers; {step}{})",
                        target.display(),
                        if log.is_empty() {
                            String::new()
                        } else {
                            format!(": {log}")
                        }
                    ),
                    source: errno,
                },
            }
        }
    }

    fn fsconfig_fd(fs: &OwnedFd, key: &str, fd: BorrowedFd<'_>) -> std::result::Result<(), Errno> {
        let k = cstr(key.as_bytes());
        // SAFETY: a NUL-terminated key that outlives the call; `fs` is an open fs context and
        // `fd` an open descriptor (the kernel takes its own reference).
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_FD,
                k.as_ptr(),
                std::ptr::null::<libc::c_char>(),
                fd.as_raw_fd(),
            )
        };
        if r < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    }

    fn cstr(s: &[u8]) -> CString {
        // Paths come from the snapshotter's own directories; a NUL cannot occur in them.
        CString::new(s).unwrap_or_default()
    }

    fn fsconfig(fs: &OwnedFd, key: &str, value: &[u8]) -> std::result::Result<(), Errno> {
        fsconfig_set(fs, FSCONFIG_SET_STRING, key, Some(&cstr(value)))
    }

    /// A flag option (no value), e.g. `volatile`.
    fn fsconfig_flag(fs: &OwnedFd, key: &str) -> std::result::Result<(), Errno> {
        fsconfig_set(fs, FSCONFIG_SET_FLAG, key, None)
    }

    fn fsconfig_set(
        fs: &OwnedFd,
        cmd: libc::c_uint,
        key: &str,
        value: Option<&CString>,
    ) -> std::result::Result<(), Errno> {
        let k = cstr(key.as_bytes());
        let v = value.map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: the key is a NUL-terminated string and the value one or null (SET_FLAG takes
        // null), both outliving the call; `fs` is an open fs context.
        let r = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k.as_ptr(), v, 0) };
        if r < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    }

    pub fn accepts_idmapped_lower(layer: &Path, userns: BorrowedFd<'_>) -> bool {
        let Ok(tree) = crate::idmap::clone_idmapped(layer, userns, false) else {
            return false;
        };
        let fs_type = cstr(b"overlay");
        // SAFETY: a NUL-terminated name and flags; the result is a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_fsopen, fs_type.as_ptr(), FSOPEN_CLOEXEC) };
        if fd < 0 {
            return false;
        }
        // SAFETY: fsopen returned a descriptor nothing else owns.
        let fs = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        fsconfig_fd(&fs, "lowerdir+", tree.as_fd()).is_ok()
    }

    /// Messages the kernel queued on the context ("e: ..." lines), for error reports.
    fn read_log(fs: &OwnedFd) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..8 {
            match nix::unistd::read(fs.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                _ => break,
            }
        }
        out.join("; ")
    }

    pub fn mount(
        lowers: &[PathBuf],
        upper_work: Option<(&Path, &Path)>,
        volatile: bool,
        target: &Path,
        idmap: Option<BorrowedFd<'_>>,
    ) -> std::result::Result<(), Failure> {
        let fs_type = cstr(b"overlay");
        // SAFETY: a NUL-terminated name and flags; the result is a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_fsopen, fs_type.as_ptr(), FSOPEN_CLOEXEC) };
        if fd < 0 {
            return Err(Failure::Unsupported);
        }
        // SAFETY: fsopen returned a descriptor nothing else owns.
        let fs = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let failed = |step: String, errno: Errno, fs: &OwnedFd| Failure::Failed {
            step,
            errno,
            log: read_log(fs),
        };
        // Idmapped layers are detached mounts, unmounted when their fd closes: overlayfs
        // clones them only at CMD_CREATE, so they stay open until then.
        let mut held: Vec<OwnedFd> = Vec::new();
        for (i, l) in lowers.iter().enumerate() {
            let added = match idmap {
                None => fsconfig(&fs, "lowerdir+", l.as_os_str().as_bytes()),
                Some(userns) => {
                    let layer = crate::idmap::clone_idmapped(l, userns, false).map_err(|e| {
                        Failure::Failed {
                            step: e.to_string(),
                            errno: match e {
                                Error::Sys { source, .. } => source,
                                _ => Errno::EINVAL,
                            },
                            log: String::new(),
                        }
                    })?;
                    let r = fsconfig_fd(&fs, "lowerdir+", layer.as_fd());
                    held.push(layer);
                    r
                }
            };
            match added {
                Ok(()) => {}
                Err(Errno::EINVAL) if i == 0 => return Err(Failure::Unsupported),
                Err(e) => return Err(failed(format!("lower {}", l.display()), e, &fs)),
            }
        }
        let writable = upper_work.is_some();
        let upper_work: Vec<(&str, &Path)> = upper_work
            .map(|(u, w)| vec![("upperdir", u), ("workdir", w)])
            .unwrap_or_default();
        for (key, p) in upper_work {
            let set = match idmap {
                None => fsconfig(&fs, key, p.as_os_str().as_bytes()),
                // overlayfs refuses to mix layers given by fd with layers given by path.
                Some(_) => std::fs::File::open(p)
                    .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
                    .and_then(|dir| {
                        let r = fsconfig_fd(&fs, key, dir.as_fd());
                        held.push(dir.into());
                        r
                    }),
            };
            set.map_err(|e| failed(format!("{key} {}", p.display()), e, &fs))?;
        }
        if writable && volatile {
            fsconfig_flag(&fs, "volatile").map_err(|e| failed("volatile".into(), e, &fs))?;
        }
        // SAFETY: `fs` is an fs context; the null key/value are what CMD_CREATE takes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        if r < 0 {
            return Err(failed("creating the filesystem".into(), Errno::last(), &fs));
        }
        drop(held);
        // SAFETY: `fs` is a created context; the result is a new fd or -1.
        let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
        if m < 0 {
            return Err(failed("fsmount".into(), Errno::last(), &fs));
        }
        // SAFETY: fsmount returned a descriptor nothing else owns.
        let mnt = unsafe { OwnedFd::from_raw_fd(m as i32) };
        let to = cstr(target.as_os_str().as_bytes());
        let empty = cstr(b"");
        // SAFETY: valid fds and NUL-terminated paths for the duration of the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mnt.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(failed(
                format!("attaching at {}", target.display()),
                Errno::last(),
                &fs,
            ));
        }
        // Both fds close here: a held mount fd would keep the mount busy at unmount time.
        drop(mnt);
        drop(fs);
        Ok(())
    }
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

    /// 120 lowers: far past the legacy option string's one page, fine with `lowerdir+`.
    #[test]
    fn mounts_many_lowers() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let long = d.path().join("l".repeat(40));
        let lowers: Vec<PathBuf> = (0..120)
            .map(|i| {
                let p = long.join(format!("layer-{i:03}-{}", "x".repeat(20)));
                std::fs::create_dir_all(&p).unwrap();
                std::fs::write(p.join(format!("f{i}")), format!("{i}")).unwrap();
                p
            })
            .collect();
        let (upper, work, target) = (d.path().join("u"), d.path().join("w"), d.path().join("t"));
        for p in [&upper, &work, &target] {
            std::fs::create_dir_all(p).unwrap();
        }
        assert!(overlay_options(&lowers, &upper, &work, &target).is_err());
        match mount_overlay(&lowers, &upper, &work, &target) {
            Ok(()) => {}
            // A kernel before 6.8 has no `lowerdir+`; the legacy string cannot carry 120.
            Err(Error::MountOptionsTooLong { .. }) => {
                eprintln!("skipping: no lowerdir+ on this kernel");
                return;
            }
            Err(e) => panic!("{e}"),
        }
        let seen = (0..120).all(|i| target.join(format!("f{i}")).exists());
        unmount(&target).unwrap();
        assert!(seen, "a lower is missing from the merged view");
        assert!(!target.join("f0").exists());
    }

    /// The probe mounts on every kernel and learns how; later mounts go the same way.
    #[test]
    fn probe_learns_the_layer_passing() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let passing = probe(&d.path().join("probe")).unwrap();
        assert_eq!(layer_passing(), Some(passing));
        assert!(!d.path().join("probe").exists());
        let (l, u, w, t) = (
            d.path().join("l"),
            d.path().join("u"),
            d.path().join("w"),
            d.path().join("t"),
        );
        for p in [&l, &u, &w, &t] {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::write(l.join("f"), "x").unwrap();
        mount_overlay(std::slice::from_ref(&l), &u, &w, &t).unwrap();
        let seen = t.join("f").exists();
        unmount(&t).unwrap();
        assert!(seen);
        eprintln!("this kernel: {passing:?}");
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
