//! A scratch directory to unpack one layer into, and the check that the unpacker wrote nothing
//! outside the layer root. Layout, under `$CRISP_FUZZ_TMP` (or the temp dir):
//!
//! ```text
//! crisp-fuzz-unpack-<pid>/
//!   outside/canary    a file an escape could overwrite, chmod, or hard link to
//!   root/layer/       the layer root handed to unpack_layer
//! ```
//!
//! `root/layer` sits two levels down so that `../..`-style escapes land in this directory,
//! where they are seen, and not somewhere on the host.

use crisp_snapshotter::{unpack_layer, UnpackStats};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const CANARY: &[u8] = b"canary\n";

pub struct Sandbox {
    pub base: PathBuf,
    pub outside: PathBuf,
    root: PathBuf,
    pub layer: PathBuf,
}

/// What must not change: type and permissions, owner, times, link count, xattrs.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    xattrs: Vec<u8>,
}

fn stamp(p: &Path) -> Stamp {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{} vanished: {e}", p.display()));
    Stamp {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        nlink: m.nlink(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        ino: m.ino(),
        xattrs: xattr_names(p),
    }
}

fn xattr_names(p: &Path) -> Vec<u8> {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        panic!("sandbox path {} has a NUL", p.display());
    };
    let mut buf = vec![0u8; 4096];
    // SAFETY: `c` is NUL-terminated and `buf` is a live buffer of the length passed.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    // A filesystem without xattrs says ENOTSUP: nothing to compare then.
    buf.truncate(usize::try_from(n).unwrap_or(0));
    buf
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| match e {
            Ok(e) => e.file_name().to_string_lossy().into_owned(),
            Err(e) => panic!("reading {}: {e}", dir.display()),
        })
        .collect();
    v.sort();
    v
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let tmp = std::env::var_os("CRISP_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let base = tmp.join(format!("crisp-fuzz-unpack-{}", std::process::id()));
        // Left over from an earlier run of this pid (a crash does not clean up).
        let _ = fs::remove_dir_all(&base);
        let outside = base.join("outside");
        let root = base.join("root");
        let layer = root.join("layer");
        fs::create_dir_all(&outside).expect("creating the sandbox");
        fs::create_dir_all(&root).expect("creating the sandbox");
        fs::write(outside.join("canary"), CANARY).expect("creating the canary");
        Sandbox {
            base,
            outside,
            root,
            layer,
        }
    }

    /// Unpacks `tar` into a fresh `root/layer`, checks that nothing outside it changed, and
    /// removes it again. Panics (a fuzz finding) on an escape.
    pub fn unpack(&self, tar: &[u8]) -> crisp_snapshotter::Result<UnpackStats> {
        fs::create_dir(&self.layer).expect("creating the layer root");
        let watched = [
            self.base.clone(),
            self.outside.clone(),
            self.outside.join("canary"),
            self.root.clone(),
        ];
        let before: Vec<Stamp> = watched.iter().map(|p| stamp(p)).collect();

        let result = unpack_layer(tar, &self.layer);

        let after: Vec<Stamp> = watched.iter().map(|p| stamp(p)).collect();
        for ((p, b), a) in watched.iter().zip(&before).zip(&after) {
            assert_eq!(b, a, "{} changed while unpacking ({result:?})", p.display());
        }
        assert_eq!(names(&self.base), ["outside", "root"], "{result:?}");
        assert_eq!(names(&self.outside), ["canary"], "{result:?}");
        assert_eq!(names(&self.root), ["layer"], "{result:?}");
        let canary = fs::read(self.outside.join("canary")).expect("reading the canary");
        assert_eq!(canary, CANARY, "canary overwritten ({result:?})");

        fs::remove_dir_all(&self.layer).expect("removing the layer root");
        result
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}
