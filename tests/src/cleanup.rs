//! Teardown steps for one test's crispd instance. Each step is best effort and
//! reports what it could not undo, because teardown also runs after failures,
//! when the runtime may have left anything behind.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{cgroups, mounts, procs};

const KILL_PATIENCE: Duration = Duration::from_secs(5);
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// SIGKILLs every process referring to `dir` (the per-test temp dir appears
/// in the shims' arguments or working directory), until none is left.
pub(crate) fn kill_processes_mentioning(dir: &Path) {
    retry_until_done(|| {
        let pids = procs::pids_referring_to(dir);
        for &pid in &pids {
            procs::signal(pid, Signal::SIGKILL);
        }
        pids.is_empty()
    });
}

/// SIGKILLs every process in a cgroup below the test's cgroup parent, in all
/// hierarchies, until they are empty.
pub(crate) fn kill_cgroup_processes(cgroup_name: &str) {
    retry_until_done(|| {
        let pids: Vec<i32> = cgroups::parent_dirs(cgroup_name)
            .iter()
            .flat_map(|dir| cgroups::procs_recursive(dir))
            .collect();
        for &pid in &pids {
            procs::signal(pid, Signal::SIGKILL);
        }
        pids.is_empty()
    });
}

/// Removes the test's cgroup parent and everything below it from every
/// hierarchy. Returns the directories that would not go away.
pub(crate) fn remove_cgroups(cgroup_name: &str) -> Vec<String> {
    let mut stuck = Vec::new();
    for parent in cgroups::parent_dirs(cgroup_name) {
        let mut dirs = cgroups::descendants(&parent);
        dirs.push(parent);
        for dir in dirs {
            // A cgroup whose last task just died can stay busy for a moment.
            let removed = retry_until_done(|| fs::remove_dir(&dir).is_ok() || !dir.exists());
            if !removed {
                stuck.push(dir.display().to_string());
            }
        }
    }
    stuck
}

/// Deletes `dir` recursively without crossing into other filesystems, so a
/// mount that could not be undone never gets its host content deleted.
pub(crate) fn remove_tree(dir: &Path) -> Vec<String> {
    let mut skipped = Vec::new();
    if let Ok(meta) = fs::symlink_metadata(dir) {
        remove_on_device(dir, meta.dev(), &mut skipped);
    }
    skipped
}

fn remove_on_device(path: &Path, device: u64, skipped: &mut Vec<String>) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.dev() != device {
        skipped.push(format!("{} (another filesystem)", path.display()));
        return;
    }
    let result = if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.filter_map(Result::ok) {
                remove_on_device(&entry.path(), device, skipped);
            }
        }
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    };
    if let Err(error) = result {
        skipped.push(format!("{}: {error}", path.display()));
    }
}

/// Unmounts everything under `dir`; returns what stayed mounted.
pub(crate) fn unmount_under(dir: &Path) -> Vec<String> {
    mounts::unmount_all_under(dir)
        .iter()
        .map(|mount| mount.display().to_string())
        .collect()
}

/// Runs `step` until it reports done or patience runs out; returns whether it
/// finished.
fn retry_until_done(mut step: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + KILL_PATIENCE;
    loop {
        if step() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// Tears down a scratch directory a test ran foreign daemons in (e.g. containerd): kills every
/// process that refers to it, unmounts everything below it, and removes it. Returns what could
/// not be undone.
pub fn teardown_dir(dir: &Path) -> Vec<String> {
    kill_processes_mentioning(dir);
    let mut left = unmount_under(dir);
    left.extend(remove_tree(dir));
    left
}
