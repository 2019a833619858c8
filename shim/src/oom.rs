//! Was the container OOM-killed? Read from its cgroup, not guessed from the exit code: a child
//! killed by the OOM killer can leave the container's init exiting 0, and a 137 can be a plain
//! SIGKILL. Each container has a cgroup of its own, so any kill counted there is its.

use std::path::Path;

/// `oom_kill` events counted in the cgroup at `cgroups_path` (v1 `memory.oom_control`, v2
/// `memory.events`); 0 when the files are missing.
pub fn oom_kills(cgroups_path: &Path) -> u64 {
    let Some(dir) = crate::cgroup::dir(cgroups_path) else {
        return 0;
    };
    let rel = dir.strip_prefix("/").unwrap_or(&dir);
    let candidates = [
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ];
    candidates
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|text| counter(&text, "oom_kill"))
        .max()
        .unwrap_or(0)
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
