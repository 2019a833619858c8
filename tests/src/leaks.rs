use std::path::Path;
use std::time::{Duration, Instant};

use crate::{cgroups, mounts, procs, Crispd};

/// Teardown in crispd may finish a moment after the CRI call returns (a shim
/// exiting after it answered); that is not a leak, so checks are retried.
const LEAK_GRACE: Duration = Duration::from_secs(5);

impl Crispd {
    /// Asserts that nothing is left of pods and containers removed through the
    /// CRI: no mounts under root/state, no cgroups below the cgroup parent, no
    /// process referring to the state dir (besides crispd) and no per-pod or
    /// per-container state directories.
    pub fn assert_no_leaks(&self) {
        let deadline = Instant::now() + LEAK_GRACE;
        loop {
            let leaks = self.leaks();
            if leaks.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "crispd {} leaked after {LEAK_GRACE:?}:\n  {}",
                    self.id(),
                    leaks.join("\n  ")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        for dir in [self.root(), self.state()] {
            leaks.extend(
                mounts::mounts_under(&dir)
                    .into_iter()
                    // The harness's own tmpfs under a small root is not crispd's.
                    .filter(|mount| !(self.root_on_tmpfs() && *mount == self.root()))
                    .map(|mount| format!("mount {}", mount.display())),
            );
        }
        for parent in cgroups::parent_dirs(&self.cgroup_name()) {
            leaks.extend(
                cgroups::descendants(&parent)
                    .into_iter()
                    .map(|dir| format!("cgroup {}", dir.display())),
            );
        }
        let crispd = self.pid();
        leaks.extend(
            procs::pids_referring_to(&self.state())
                .into_iter()
                .filter(|&pid| Some(pid) != crispd)
                .map(|pid| format!("process {pid}: {}", procs::cmdline(pid))),
        );
        leaks.extend(
            self.network()
                .iptables_rules()
                .into_iter()
                .map(|(table, rule)| format!("iptables -t {table} {rule}")),
        );
        let brif = format!("/sys/class/net/{}/brif", self.network().bridge);
        leaks.extend(
            entries(Path::new(&brif))
                .into_iter()
                .map(|port| format!("veth {port}")),
        );
        for kind in ["pods", "containers"] {
            leaks.extend(
                entries(&self.state().join(kind))
                    .into_iter()
                    .map(|entry| format!("state {entry}")),
            );
        }
        leaks
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path().display().to_string())
        .collect()
}
