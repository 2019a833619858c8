//! Was the container OOM-killed? Read from its cgroup, not guessed from the exit code: a child
//! killed by the OOM killer can leave the container's init exiting 0, and a 137 can be a plain
//! SIGKILL. Each container has a cgroup of its own, so any kill counted there is its.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts the OOM kills of a systemd scope while its container runs: systemd removes an emptied
/// scope's cgroup as soon as its last process is gone, before the exit could be read from it
/// (containerd's shim watches `memory.events` the same way). A cgroupfs cgroup stays until the
/// shim deletes it, and is read at exit alone.
pub struct Watch {
    kills: Arc<AtomicU64>,
    /// Disconnected when the watching thread ends.
    ended: std::sync::mpsc::Receiver<()>,
}

impl Watch {
    /// Starts watching the cgroup `cgroups_path` if systemd owns it (a thread until the cgroup
    /// is removed); `None` otherwise, or where inotify fails (then only the exit's read counts).
    pub fn start(cgroups_path: &Path) -> Option<Watch> {
        if !crate::cgroup::is_systemd(cgroups_path) {
            return None;
        }
        let [_, file] = counter_files(cgroups_path)?;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).ok()?;
        // kernfs notifies a modification of memory.events at every event it counts; the
        // watch ends (IN_IGNORED) when the cgroup is removed.
        inotify.add_watch(&file, AddWatchFlags::IN_MODIFY).ok()?;
        let kills = Arc::new(AtomicU64::new(0));
        let seen = kills.clone();
        let (end, ended) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("oom-watch".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let _end = end;
                watch(inotify, file, seen)
            })
            .ok()?;
        Some(Watch { kills, ended })
    }

    /// The kills counted, once the container's init has exited: the watch ends when systemd
    /// removes the emptied scope (its last read then done), or after `grace` if the scope
    /// stays (other processes left in it), where a read at exit still finds it.
    pub fn finish(self, grace: std::time::Duration) -> u64 {
        let _ = self.ended.recv_timeout(grace);
        self.kills.load(Ordering::Relaxed)
    }
}

fn watch(inotify: Inotify, file: PathBuf, seen: Arc<AtomicU64>) {
    loop {
        if let Some(n) = oom_kill_count(&file) {
            seen.fetch_max(n, Ordering::Relaxed);
        }
        match inotify.read_events() {
            Ok(events)
                if events
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED)) =>
            {
                return
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// `oom_kill` events counted in the cgroup at `cgroups_path` (v1 `memory.oom_control`, v2
/// `memory.events`); 0 when the files are missing.
pub fn oom_kills(cgroups_path: &Path) -> u64 {
    counter_files(cgroups_path)
        .into_iter()
        .flatten()
        .filter_map(|f| oom_kill_count(&f))
        .max()
        .unwrap_or(0)
}

/// The files that count the cgroup's OOM kills: v1's `memory.oom_control`, v2's
/// `memory.events`.
fn counter_files(cgroups_path: &Path) -> Option<[PathBuf; 2]> {
    let dir = crate::cgroup::dir(cgroups_path)?;
    let rel = dir.strip_prefix("/").unwrap_or(&dir);
    Some([
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ])
}

fn oom_kill_count(file: &Path) -> Option<u64> {
    counter(&std::fs::read_to_string(file).ok()?, "oom_kill")
}

fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_layouts() {
        assert_eq!(
            counter("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"),
            Some(2)
        );
        assert_eq!(
            counter("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
        assert_eq!(counter("oom_kill_disable 0\n", "oom_kill"), None);
    }
}
