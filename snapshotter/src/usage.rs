//! Disk usage of snapshot trees, for kubelet's eviction signals (ImageFsInfo, container
//! writable-layer stats).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes (st_blocks × 512): what the disk really holds, sparse files included.
    pub bytes: u64,
    pub inodes: u64,
}

/// Walks `dir` without following symlinks; a hard-linked inode is counted once.
pub fn disk_usage(dir: &Path) -> Usage {
    let mut usage = Usage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            usage.bytes += m.blocks() * 512;
            usage.inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hard_links_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), vec![1u8; 8192]).unwrap();
        std::fs::hard_link(d.path().join("a"), d.path().join("b")).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let u = disk_usage(d.path());
        assert_eq!(u.inodes, 2);
        assert!(u.bytes >= 8192);
    }
}
