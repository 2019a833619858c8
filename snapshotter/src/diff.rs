//! A writable layer's changes as a tar, and such changes applied to a new writable layer: the
//! `rootfs-diff.tar` and `deleted.files` of a checkpoint archive (CRI-O's layout).
//!
//! The changes are read from the overlay upper directory itself, which holds exactly them:
//! whiteouts (character devices 0:0) become the list of deleted paths; an opaque directory
//! (its lower contents hidden) is written with an OCI opaque marker, which [`unpack_layer`]
//! turns back into one. Applying goes through [`unpack_layer`] for the same reason layers do:
//! an archive is input from outside, and nothing in it may write outside the layer.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{io_ctx, Error, Result};
use crate::unpack::unpack_layer;

const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Writes the upper directory's changes as a tar to `out`; returns the deleted paths (relative,
/// `/`-separated), which the tar does not carry.
pub fn write_upper_diff(upper: &Path, out: impl Write) -> Result<Vec<String>> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut deleted = Vec::new();
    walk(upper, Path::new(""), &mut tar, &mut deleted)?;
    tar.finish().map_err(io_ctx(|| {
        format!("finishing the diff of {}", upper.display())
    }))?;
    Ok(deleted)
}

fn walk<W: Write>(
    dir: &Path,
    rel: &Path,
    tar: &mut tar::Builder<W>,
    deleted: &mut Vec<String>,
) -> Result<()> {
    let here = dir.join(rel);
    let mut entries = fs::read_dir(&here)
        .map_err(io_ctx(|| format!("reading {}", here.display())))?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io_ctx(|| format!("reading {}", here.display())))?;
    // Sorted: the same changes give the same tar.
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = rel.join(entry.file_name());
        // The container runs while its diff is taken: what it deleted meanwhile is not an
        // error, and its unix sockets are not files to carry over (docker skips them too).
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_ctx(|| format!("reading {}", path.display()))(e)),
        };
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            deleted.push(name.to_string_lossy().into_owned());
            continue;
        }
        if ft.is_socket() {
            continue;
        }
        let added = if ft.is_file() {
            append_file(tar, &path, &name)
        } else {
            tar.append_path_with_name(&path, &name)
        };
        match added {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(io_ctx(|| format!("adding {} to the diff", path.display()))(
                    e,
                ))
            }
        }
        if ft.is_dir() {
            if is_opaque(&path) {
                tar.append_data(&mut marker(), name.join(OPAQUE_MARKER), std::io::empty())
                    .map_err(io_ctx(|| format!("marking {} opaque", path.display())))?;
            }
            walk(dir, &name, tar, deleted)?;
        }
    }
    Ok(())
}

/// A regular file with exactly the size its header says, however the file changes while it
/// is read (the tar crate pads to what it copied, which would misalign the archive).
fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
) -> std::io::Result<()> {
    let file = fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata(&meta);
    let size = meta.len();
    let exact = file.take(size).chain(std::io::repeat(0)).take(size);
    tar.append_data(&mut header, name, exact)
}

/// The header of an empty OCI marker entry (a whiteout or an opaque marker).
fn marker() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 4];
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let Ok(c_name) = std::ffi::CString::new(OVERLAY_OPAQUE_XATTR) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated and outlive the call; `buf` is writable for
    // its length, which is what we pass.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// Applies a diff tar (as [`write_upper_diff`] or CRI-O writes it) and then the deletions to
/// the (not mounted) upper directory of a new writable layer.
pub fn apply_upper_diff(upper: &Path, diff: Option<impl Read>, deleted: &[String]) -> Result<()> {
    if let Some(diff) = diff {
        unpack_layer(diff, upper)?;
    }
    if deleted.is_empty() {
        return Ok(());
    }
    // Deletions as OCI whiteouts, so that unpack_layer's checks apply to them too.
    let mut whiteouts = tar::Builder::new(Vec::new());
    for path in deleted {
        let path = Path::new(path.trim_start_matches('/'));
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Error::UnsafeEntry {
                path: path.display().to_string(),
                reason: "a deleted path names no file".into(),
            });
        };
        let mut wh = OsStr::new(".wh.").to_os_string();
        wh.push(name);
        whiteouts
            .append_data(&mut marker(), parent.join(wh), std::io::empty())
            .map_err(io_ctx(|| format!("whiteout for {}", path.display())))?;
    }
    let bytes = whiteouts
        .into_inner()
        .map_err(io_ctx(|| "building whiteouts".to_string()))?;
    unpack_layer(bytes.as_slice(), upper).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_round_trips_with_its_deletions() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("etc/app")).unwrap();
        fs::write(src.path().join("etc/app/conf"), b"x=1").unwrap();
        std::os::unix::fs::symlink("conf", src.path().join("etc/app/link")).unwrap();
        // A whiteout, as overlayfs leaves one for a deleted lower file.
        nix::sys::stat::mknod(
            &src.path().join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        // A running container's socket is not carried over (and does not fail the diff).
        let _sock =
            std::os::unix::net::UnixListener::bind(src.path().join("etc/app.sock")).unwrap();
        let mut tar = Vec::new();
        let deleted = write_upper_diff(src.path(), &mut tar).unwrap();
        assert_eq!(deleted, vec!["etc/gone".to_string()]);

        let dst = tempfile::tempdir().unwrap();
        apply_upper_diff(dst.path(), Some(tar.as_slice()), &deleted).unwrap();
        assert_eq!(fs::read(dst.path().join("etc/app/conf")).unwrap(), b"x=1");
        assert_eq!(
            fs::read_link(dst.path().join("etc/app/link")).unwrap(),
            Path::new("conf")
        );
        assert!(!dst.path().join("etc/app.sock").exists());
        let gone = fs::symlink_metadata(dst.path().join("etc/gone")).unwrap();
        assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
    }

    #[test]
    fn a_deleted_path_cannot_leave_the_layer() {
        let dst = tempfile::tempdir().unwrap();
        let r = apply_upper_diff(dst.path(), None::<&[u8]>, &["../../etc/passwd".to_string()]);
        assert!(r.is_err(), "{r:?}");
    }
}
