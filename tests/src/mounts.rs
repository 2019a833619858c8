//! Mounts of this process's mount namespace, as seen in /proc/self/mountinfo.

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

/// Every mount point currently in /proc/self/mountinfo (stacked mounts appear
/// once per layer).
pub(crate) fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        // Field 5 is the mount point: "id parent major:minor root mountpoint ...".
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .collect()
}

/// Mount points at or below `dir`.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mount_points()
        .into_iter()
        .filter(|mount| mount.starts_with(dir))
        .collect()
}

/// Lazily unmounts everything at or below `dir`, deepest first so parents are
/// not busy, repeating while that makes progress (stacked mounts need one
/// round per layer). Returns what is still mounted.
pub(crate) fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    let mut remaining = mounts_under(dir);
    while !remaining.is_empty() {
        let mut ordered = remaining.clone();
        ordered.sort_by_key(|mount| std::cmp::Reverse(mount.components().count()));
        for mount in &ordered {
            // Failures show up as a mount that is still listed below.
            let _ = umount2(mount.as_path(), MntFlags::MNT_DETACH);
        }
        let now = mounts_under(dir);
        if now.len() >= remaining.len() {
            return now;
        }
        remaining = now;
    }
    remaining
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal_sequences() {
        assert_eq!(unescape(r"/a\040b\134c"), PathBuf::from(r"/a b\c"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape(r"/trailing\04"), PathBuf::from(r"/trailing\04"));
    }
}
