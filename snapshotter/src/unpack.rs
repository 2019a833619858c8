//! Safe extraction of one (uncompressed) layer tarball into a directory.
//!
//! Layers come from untrusted images, so nothing here trusts a path from the
//! archive. Every parent directory is resolved with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` relative to an `O_PATH` fd of
//! the layer root, and every leaf is created with `*at` calls on that parent
//! fd without following a symlink at the leaf. A symlink that points outside
//! the root therefore makes the kernel fail the lookup with `EXDEV` instead
//! of letting us write through it. `tar`'s own `unpack` is not used because
//! it resolves paths with ordinary (symlink-following) syscalls.
//!
//! OCI whiteouts are converted to the overlayfs form while extracting, so a
//! committed layer directory can be used directly as an overlay lowerdir.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode,
    SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::error::{Error, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// xattrs in this namespace steer overlayfs (redirects, metacopy, opaque);
/// an image must not be able to set them, only our whiteout conversion may.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Number of archive entries applied (including whiteouts).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Extracts the uncompressed tar stream `reader` into the existing directory
/// `dest`. The whole stream is consumed (including padding after the end of
/// archive marker) so a caller hashing the stream sees every byte.
pub fn unpack_layer(reader: impl Read, dest: &Path) -> Result<UnpackStats> {
    let root = open_root(dest)?;
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    let mut dir_times: Vec<(Vec<OsString>, TimeSpec)> = Vec::new();

    let entries = archive.entries().map_err(|e| Error::Io {
        context: format!("reading layer tar for {}", dest.display()),
        source: e,
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::Io {
            context: format!("reading layer tar entry header for {}", dest.display()),
            source: e,
        })?;
        let applied = apply_entry(&root, &mut entry, &mut dir_times, &mut stats)?;
        if applied {
            stats.entries += 1;
        }
    }

    // Directory mtimes last: creating entries inside a directory bumps it.
    for (comps, mtime) in &dir_times {
        let display = display_comps(comps);
        let (parent, name) = split_leaf(comps);
        let pfd = open_dir_beneath(&root, parent, false, &display)?;
        utimensat(
            Some(pfd.as_raw_fd()),
            name,
            mtime,
            mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(entry_sys(&display, "setting directory mtime"))?;
    }

    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| Error::Io {
        context: format!("reading layer tar trailer for {}", dest.display()),
        source: e,
    })?;
    Ok(stats)
}

fn open_root(dest: &Path) -> Result<OwnedFd> {
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC);
    let fd = openat2(libc::AT_FDCWD, dest, how).map_err(|e| Error::Sys {
        context: format!("opening layer root {}", dest.display()),
        source: e,
    })?;
    // SAFETY: openat2 just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What the entry turns into on disk.
enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    HardLink(Vec<OsString>),
    Device(SFlag, u64),
    Fifo,
    Whiteout,
    Opaque,
}

/// Metadata applied to created entries.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn apply_entry<R: Read>(
    root: &OwnedFd,
    entry: &mut tar::Entry<'_, R>,
    dir_times: &mut Vec<(Vec<OsString>, TimeSpec)>,
    stats: &mut UnpackStats,
) -> Result<bool> {
    let raw_path = entry.path_bytes().into_owned();
    let display = String::from_utf8_lossy(&raw_path).into_owned();
    let etype = entry.header().entry_type();

    use tar::EntryType as T;
    // Headers that only carry metadata for other entries; the tar crate
    // folds the per-entry ones into the next entry, global ones we ignore.
    if matches!(
        etype,
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
    ) {
        return Ok(false);
    }

    let mut comps = normalize(&raw_path).map_err(|reason| Error::UnsafeEntry {
        path: display.clone(),
        reason: reason.to_string(),
    })?;

    let mut kind = match etype {
        T::Regular | T::Continuous | T::GNUSparse => Kind::File,
        T::Directory => Kind::Dir,
        T::Symlink => {
            let target = entry
                .link_name_bytes()
                .map(|c| c.into_owned())
                .unwrap_or_default();
            if target.is_empty() {
                return Err(Error::UnsafeEntry {
                    path: display,
                    reason: "symlink with an empty target".into(),
                });
            }
            Kind::Symlink(target)
        }
        T::Link => {
            let target = entry
                .link_name_bytes()
                .map(|c| c.into_owned())
                .unwrap_or_default();
            let tcomps = normalize(&target).map_err(|reason| Error::UnsafeEntry {
                path: display.clone(),
                reason: format!(
                    "hard link target {:?}: {reason}",
                    String::from_utf8_lossy(&target)
                ),
            })?;
            if tcomps.is_empty() {
                return Err(Error::UnsafeEntry {
                    path: display,
                    reason: "hard link to the layer root".into(),
                });
            }
            Kind::HardLink(tcomps)
        }
        T::Char | T::Block => {
            let h = entry.header();
            let major = h.device_major().ok().flatten().unwrap_or(0);
            let minor = h.device_minor().ok().flatten().unwrap_or(0);
            let flag = if etype == T::Char {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            Kind::Device(flag, makedev(major.into(), minor.into()))
        }
        T::Fifo => Kind::Fifo,
        other => {
            return Err(Error::UnsupportedEntryType {
                path: display,
                kind: format!("{other:?}"),
            })
        }
    };

    // Whiteouts are recognised by name whatever their tar type.
    if let Some(last) = comps.last() {
        let name = last.as_bytes();
        if name == OPAQUE_MARKER.as_bytes() {
            comps.pop();
            kind = Kind::Opaque;
        } else if name.starts_with(b".wh..wh.") {
            // Other aufs metadata (.wh..wh.plnk, .wh..wh.aufs) has no
            // meaning for overlayfs.
            return Ok(false);
        } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(Error::UnsafeEntry {
                    path: display,
                    reason: "whiteout of an invalid name".into(),
                });
            }
            let hidden = OsString::from_vec(hidden.to_vec());
            if let Some(l) = comps.last_mut() {
                *l = hidden;
            }
            kind = Kind::Whiteout;
        }
    }

    let meta = read_meta(entry, &display)?;

    if comps.is_empty() {
        // The archive root ("./"): only directory metadata makes sense.
        return match kind {
            Kind::Dir => {
                apply_dir_meta(root.as_raw_fd(), OsStr::new("."), &meta, &display)?;
                dir_times.push((Vec::new(), meta.mtime));
                Ok(true)
            }
            Kind::Opaque => {
                set_xattr_at(
                    root.as_raw_fd(),
                    OsStr::new("."),
                    OVERLAY_OPAQUE_XATTR,
                    b"y",
                    &display,
                )?;
                Ok(true)
            }
            _ => Err(Error::UnsafeEntry {
                path: display,
                reason: "non-directory entry for the layer root".into(),
            }),
        };
    }

    if let Kind::Opaque = kind {
        let dir = open_dir_beneath(root, &comps, true, &display)?;
        set_xattr_at(
            dir.as_raw_fd(),
            OsStr::new("."),
            OVERLAY_OPAQUE_XATTR,
            b"y",
            &display,
        )?;
        return Ok(true);
    }

    let (parent_comps, name) = split_leaf(&comps);
    let parent = open_dir_beneath(root, parent_comps, true, &display)?;
    let pfd = parent.as_raw_fd();

    let is_dir = matches!(kind, Kind::Dir);
    if prepare_leaf(pfd, name, is_dir, &display)? && is_dir {
        // Existing directory is kept; only its metadata is updated.
        apply_dir_meta(pfd, name, &meta, &display)?;
        dir_times.push((comps, meta.mtime));
        return Ok(true);
    }

    match kind {
        Kind::File => {
            let file = create_file(pfd, name, &display)?;
            let n = write_file(file, entry, &meta, &display)?;
            stats.bytes += n;
        }
        Kind::Dir => {
            mkdirat(Some(pfd), name, Mode::from_bits_truncate(0o700))
                .map_err(entry_sys(&display, "mkdirat"))?;
            apply_dir_meta(pfd, name, &meta, &display)?;
            dir_times.push((comps, meta.mtime));
        }
        Kind::Symlink(target) => {
            let target = OsString::from_vec(target);
            symlinkat(target.as_os_str(), Some(pfd), name)
                .map_err(entry_sys(&display, "symlinkat"))?;
            apply_owner_times(pfd, name, &meta, &display)?;
            apply_xattrs(pfd, name, &meta, &display)?;
        }
        Kind::HardLink(tcomps) => {
            let (tparent_comps, tname) = split_leaf(&tcomps);
            let tparent = open_dir_beneath(root, tparent_comps, false, &display)?;
            // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink
            // itself, never what it points at.
            linkat(
                Some(tparent.as_raw_fd()),
                tname,
                Some(pfd),
                name,
                AtFlags::empty(),
            )
            .map_err(|e| match e {
                Errno::ENOENT => Error::UnsafeEntry {
                    path: display.clone(),
                    reason: format!(
                        "hard link target {} does not exist in the layer",
                        display_comps(&tcomps)
                    ),
                },
                e => Error::EntrySys {
                    path: display.clone(),
                    context: format!("linkat to {}", display_comps(&tcomps)),
                    source: e,
                },
            })?;
        }
        Kind::Device(flag, dev) => {
            mknodat(Some(pfd), name, flag, Mode::from_bits_truncate(0o600), dev)
                .map_err(entry_sys(&display, "mknodat"))?;
            apply_node_meta(pfd, name, &meta, &display)?;
        }
        Kind::Fifo => {
            mknodat(
                Some(pfd),
                name,
                SFlag::S_IFIFO,
                Mode::from_bits_truncate(0o600),
                0,
            )
            .map_err(entry_sys(&display, "mkfifo"))?;
            apply_node_meta(pfd, name, &meta, &display)?;
        }
        Kind::Whiteout => {
            mknodat(
                Some(pfd),
                name,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o000),
                makedev(0, 0),
            )
            .map_err(entry_sys(&display, "creating overlay whiteout device"))?;
        }
        Kind::Opaque => {}
    }
    Ok(true)
}

/// Lexically normalises an archive path into components below the root.
/// `.` and empty components are dropped; `..` may only cancel a previous
/// component. Absolute paths are refused rather than silently rebased so a
/// malformed layer is noticed.
fn normalize(raw: &[u8]) -> std::result::Result<Vec<OsString>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out: Vec<OsString> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("path escapes the layer root through ..");
                }
            }
            c => out.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(out)
}

fn split_leaf(comps: &[OsString]) -> (&[OsString], &OsStr) {
    match comps.split_last() {
        Some((last, parent)) => (parent, last.as_os_str()),
        None => (&[], OsStr::new(".")),
    }
}

fn join(comps: &[OsString]) -> PathBuf {
    let mut bytes = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(c.as_bytes());
    }
    PathBuf::from(OsString::from_vec(bytes))
}

fn display_comps(comps: &[OsString]) -> String {
    join(comps).to_string_lossy().into_owned()
}

fn entry_sys<'a>(path: &'a str, context: &'a str) -> impl FnOnce(Errno) -> Error + 'a {
    move |source| Error::EntrySys {
        path: path.to_string(),
        context: context.to_string(),
        source,
    }
}

fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

fn openat2_owned(dirfd: RawFd, path: &Path, how: OpenHow) -> nix::Result<OwnedFd> {
    let fd = openat2(dirfd, path, how)?;
    // SAFETY: openat2 just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory `comps` beneath `root` as an `O_PATH` fd, creating
/// missing components one at a time when `create` is set. Each component is
/// re-resolved from the root with `RESOLVE_BENEATH`, so a symlink planted by
/// an earlier entry can never lead outside.
fn open_dir_beneath(
    root: &OwnedFd,
    comps: &[OsString],
    create: bool,
    entry: &str,
) -> Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(beneath());
    if comps.is_empty() {
        return root.try_clone().map_err(|e| Error::Entry {
            path: entry.to_string(),
            context: "duplicating layer root fd".into(),
            source: e,
        });
    }
    let map_err = |e: Errno, at: &[OsString]| -> Error {
        let at = display_comps(at);
        match e {
            Errno::EXDEV => Error::UnsafeEntry {
                path: entry.to_string(),
                reason: format!("{at} resolves outside the layer root"),
            },
            Errno::ENOTDIR => Error::UnsafeEntry {
                path: entry.to_string(),
                reason: format!("{at} is not a directory"),
            },
            Errno::ENOENT => Error::UnsafeEntry {
                path: entry.to_string(),
                reason: format!("{at} does not exist"),
            },
            e => Error::EntrySys {
                path: entry.to_string(),
                context: format!("resolving {at}"),
                source: e,
            },
        }
    };
    // Fast path: the parent usually exists already.
    match openat2_owned(root.as_raw_fd(), &join(comps), how) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) if create => {}
        Err(e) => return Err(map_err(e, comps)),
    }
    let mut cur = root.try_clone().map_err(|e| Error::Entry {
        path: entry.to_string(),
        context: "duplicating layer root fd".into(),
        source: e,
    })?;
    for i in 1..=comps.len() {
        let prefix = &comps[..i];
        let p = join(prefix);
        let fd = match openat2_owned(root.as_raw_fd(), &p, how) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                // `cur` was itself resolved beneath the root, and mkdirat
                // never follows a symlink in the final component.
                match mkdirat(
                    Some(cur.as_raw_fd()),
                    comps[i - 1].as_os_str(),
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) => {
                        // mkdirat's mode is reduced by the umask; implicit
                        // parents must be 0755 regardless.
                        fchmodat(
                            Some(cur.as_raw_fd()),
                            comps[i - 1].as_os_str(),
                            Mode::from_bits_truncate(0o755),
                            FchmodatFlags::FollowSymlink,
                        )
                        .map_err(|e| map_err(e, prefix))?;
                    }
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(map_err(e, prefix)),
                }
                openat2_owned(root.as_raw_fd(), &p, how).map_err(|e| map_err(e, prefix))?
            }
            Err(e) => return Err(map_err(e, prefix)),
        };
        cur = fd;
    }
    Ok(cur)
}

/// Clears the way for a new leaf. Returns true if an existing directory was
/// kept (only when the new entry is a directory too).
fn prepare_leaf(pfd: RawFd, name: &OsStr, new_is_dir: bool, entry: &str) -> Result<bool> {
    let st = match fstatat(Some(pfd), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(entry_sys(entry, "fstatat existing entry")(e)),
    };
    let existing_is_dir = (st.st_mode & libc::S_IFMT) == libc::S_IFDIR;
    if existing_is_dir && new_is_dir {
        return Ok(true);
    }
    if existing_is_dir {
        remove_tree_at(pfd, name, entry)?;
    } else {
        unlinkat(Some(pfd), name, UnlinkatFlags::NoRemoveDir)
            .map_err(entry_sys(entry, "removing existing entry"))?;
    }
    Ok(false)
}

/// Removes directory `name` in `pfd` recursively. Goes through the parent's
/// /proc/self/fd magic link so the lookup starts from an fd we resolved
/// beneath the root; std's remove_dir_all does not follow symlinks inside.
fn remove_tree_at(pfd: RawFd, name: &OsStr, entry: &str) -> Result<()> {
    let mut p = PathBuf::from(format!("/proc/self/fd/{pfd}"));
    p.push(name);
    std::fs::remove_dir_all(&p).map_err(|e| Error::Entry {
        path: entry.to_string(),
        context: "removing existing directory replaced by a non-directory".into(),
        source: e,
    })
}

fn create_file(pfd: RawFd, name: &OsStr, entry: &str) -> Result<File> {
    let how = OpenHow::new()
        .flags(
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        )
        .mode(Mode::from_bits_truncate(0o600))
        .resolve(beneath());
    let fd = openat2_owned(pfd, Path::new(name), how).map_err(entry_sys(entry, "creating file"))?;
    Ok(File::from(fd))
}

fn write_file<R: Read>(
    mut file: File,
    entry: &mut tar::Entry<'_, R>,
    meta: &Meta,
    display: &str,
) -> Result<u64> {
    let n = io::copy(entry, &mut file).map_err(|e| Error::Entry {
        path: display.to_string(),
        context: "writing file content".into(),
        source: e,
    })?;
    let fd = file.as_raw_fd();
    // Owner before mode: chown clears setuid/setgid bits.
    fchown(
        fd,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )
    .map_err(entry_sys(display, "fchown"))?;
    fchmod(fd, Mode::from_bits_truncate(meta.mode)).map_err(entry_sys(display, "fchmod"))?;
    // After chown, which would drop security.capability.
    for (k, v) in &meta.xattrs {
        fset_xattr(fd, k, v, display)?;
    }
    futimens(fd, &meta.mtime, &meta.mtime).map_err(entry_sys(display, "futimens"))?;
    Ok(n)
}

fn apply_dir_meta(pfd: RawFd, name: &OsStr, meta: &Meta, display: &str) -> Result<()> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(beneath());
    let dir = openat2_owned(pfd, Path::new(name), how)
        .map_err(entry_sys(display, "opening directory"))?;
    let fd = dir.as_raw_fd();
    fchown(
        fd,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )
    .map_err(entry_sys(display, "fchown"))?;
    fchmod(fd, Mode::from_bits_truncate(meta.mode)).map_err(entry_sys(display, "fchmod"))?;
    for (k, v) in &meta.xattrs {
        fset_xattr(fd, k, v, display)?;
    }
    Ok(())
}

/// Devices and fifos: we just created `name`, so it is not a symlink and
/// the by-name chmod below cannot be redirected.
fn apply_node_meta(pfd: RawFd, name: &OsStr, meta: &Meta, display: &str) -> Result<()> {
    fchownat(
        Some(pfd),
        name,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(entry_sys(display, "fchownat"))?;
    fchmodat(
        Some(pfd),
        name,
        Mode::from_bits_truncate(meta.mode),
        FchmodatFlags::FollowSymlink,
    )
    .map_err(entry_sys(display, "fchmodat"))?;
    apply_xattrs(pfd, name, meta, display)?;
    utimensat(
        Some(pfd),
        name,
        &meta.mtime,
        &meta.mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(entry_sys(display, "utimensat"))?;
    Ok(())
}

fn apply_owner_times(pfd: RawFd, name: &OsStr, meta: &Meta, display: &str) -> Result<()> {
    fchownat(
        Some(pfd),
        name,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(entry_sys(display, "fchownat"))?;
    utimensat(
        Some(pfd),
        name,
        &meta.mtime,
        &meta.mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(entry_sys(display, "utimensat"))?;
    Ok(())
}

fn apply_xattrs(pfd: RawFd, name: &OsStr, meta: &Meta, display: &str) -> Result<()> {
    for (k, v) in &meta.xattrs {
        set_xattr_at(pfd, name, k, v, display)?;
    }
    Ok(())
}

fn xattr_result(rc: libc::c_int, key: &str, display: &str) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let errno = Errno::last();
    if errno == Errno::EOPNOTSUPP {
        // The filesystem under the snapshot dir cannot store this xattr
        // namespace; losing e.g. a user.* xattr is better than failing the
        // whole image.
        {
            let shown: &str = display;
            tracing::warn!(
                entry = shown,
                xattr = key,
                "xattr not supported by filesystem, skipped"
            );
        }
        return Ok(());
    }
    Err(Error::EntrySys {
        path: display.to_string(),
        context: format!("setting xattr {key}"),
        source: errno,
    })
}

fn cstring(bytes: &[u8], display: &str, what: &str) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::UnsafeEntry {
        path: display.to_string(),
        reason: format!("{what} contains a NUL byte"),
    })
}

fn fset_xattr(fd: RawFd, key: &str, value: &[u8], display: &str) -> Result<()> {
    let k = cstring(key.as_bytes(), display, "xattr name")?;
    // SAFETY: `k` is a valid NUL-terminated string and `value` a live slice
    // whose pointer/length pair is passed unchanged; fd is open.
    let rc = unsafe { libc::fsetxattr(fd, k.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    xattr_result(rc, key, display)
}

/// Sets an xattr on `name` inside directory fd `pfd` without following a
/// symlink at `name`. There is no `lsetxattrat`, so the lookup goes through
/// the fd's /proc magic link, which pins it to the directory we resolved
/// beneath the root.
fn set_xattr_at(pfd: RawFd, name: &OsStr, key: &str, value: &[u8], display: &str) -> Result<()> {
    let mut p = format!("/proc/self/fd/{pfd}/").into_bytes();
    p.extend_from_slice(name.as_bytes());
    let path = cstring(&p, display, "path")?;
    let k = cstring(key.as_bytes(), display, "xattr name")?;
    // SAFETY: both strings are valid and NUL-terminated; `value` is a live
    // slice passed with its own length.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    xattr_result(rc, key, display)
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, display: &str) -> Result<Meta> {
    let h = entry.header();
    let bad = |what: &str, e: io::Error| Error::Entry {
        path: display.to_string(),
        context: format!("invalid {what} in header"),
        source: e,
    };
    let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
    let mut uid = h.uid().map_err(|e| bad("uid", e))?;
    let mut gid = h.gid().map_err(|e| bad("gid", e))?;
    let mut mtime = TimeSpec::new(
        i64::try_from(h.mtime().map_err(|e| bad("mtime", e))?).unwrap_or(i64::MAX),
        0,
    );
    let mut xattrs = Vec::new();

    let pax = entry.pax_extensions().map_err(|e| bad("PAX header", e))?;
    if let Some(exts) = pax {
        for ext in exts {
            let ext = ext.map_err(|e| bad("PAX record", e))?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            match key {
                "uid" => uid = parse_num(value).unwrap_or(uid),
                "gid" => gid = parse_num(value).unwrap_or(gid),
                "mtime" => {
                    if let Some(t) = parse_pax_time(value) {
                        mtime = t;
                    }
                }
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        if name.starts_with(OVERLAY_XATTR_PREFIX) {
                            {
                                let shown: &str = display;
                                tracing::warn!(
                                    entry = shown,
                                    xattr = name,
                                    "ignoring overlay xattr from image"
                                );
                            }
                        } else {
                            xattrs.push((name.to_string(), value.to_vec()));
                        }
                    }
                }
            }
        }
    }
    let id = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| Error::UnsafeEntry {
            path: display.to_string(),
            reason: format!("{what} {v} out of range"),
        })
    };
    Ok(Meta {
        mode,
        uid: id(uid, "uid")?,
        gid: id(gid, "gid")?,
        mtime,
        xattrs,
    })
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX times are decimal seconds with an optional fraction ("1700000000.5").
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        let d = c.to_digit(10)? as i64;
        nanos += d * 10i64.pow(8 - i as u32);
    }
    if secs < 0 && nanos > 0 {
        // "-1.5" means 1.5s before the epoch.
        return Some(TimeSpec::new(secs - 1, 1_000_000_000 - nanos));
    }
    Some(TimeSpec::new(secs, nanos))
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
