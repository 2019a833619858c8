//! Running code inside another network namespace.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling *thread* only. So work in a pod's
//! namespace runs on a dedicated, short-lived thread that enters it and then ends; the calling
//! thread (and every other thread of the process) never changes namespace.

use std::fs::File;
use std::io;
use std::path::Path;

/// Opens the netns file (e.g. `/var/run/netns/<name>` or `/proc/<pid>/ns/net`).
pub fn open(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Runs `f` on a fresh thread that entered the network namespace at `path`.
pub fn run_in<T, F>(path: &Path, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns = open(path)?;
    run_in_file(&ns, f)
}

/// Like [`run_in`] with an already open netns file.
pub fn run_in_file<T, F>(ns: &File, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
