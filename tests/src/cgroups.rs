//! The cgroup directories a test's crispd may create, on cgroup v1 (one
//! hierarchy per controller) and v2 (one unified hierarchy).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether the host runs cgroup v2 only (unified): containers then get their own cgroup
/// namespace, and see their cgroup as `0::/`.
pub fn is_v2() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").is_file()
}

/// Roots of every mounted hierarchy: the unified root on v2; on v1 each
/// controller directory (plus `unified`/`systemd` on hybrid hosts).
fn hierarchy_roots() -> Vec<PathBuf> {
    if is_v2() {
        return vec![PathBuf::from(CGROUP_ROOT)];
    }
    let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    // `cpu` and `cpuacct` are usually symlinks to `cpu,cpuacct`; visiting
    // the real directory once is enough.
    let unique: BTreeSet<PathBuf> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.path().canonicalize().ok())
        .filter(|path| path.is_dir())
        .collect();
    unique.into_iter().collect()
}

/// `<hierarchy>/<name>` in every hierarchy where it exists.
pub(crate) fn parent_dirs(name: &str) -> Vec<PathBuf> {
    hierarchy_roots()
        .into_iter()
        .map(|root| root.join(name))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// The directory whose `cgroup.procs` lists a container's processes for
/// sure: the memory controller on v1, the unified tree on v2.
pub(crate) fn primary_parent_dir(name: &str) -> PathBuf {
    if is_v2() {
        Path::new(CGROUP_ROOT).join(name)
    } else {
        Path::new(CGROUP_ROOT).join("memory").join(name)
    }
}

/// All cgroups strictly below `dir`, deepest first (the order rmdir needs).
pub(crate) fn descendants(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    collect_subdirs(dir, &mut found);
    found.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    found
}

fn collect_subdirs(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            let path = entry.path();
            collect_subdirs(&path, found);
            found.push(path);
        }
    }
}

/// PIDs listed in `dir`'s own `cgroup.procs`.
pub(crate) fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| {
            text.lines()
                .filter_map(|line| line.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// PIDs in `dir` or any cgroup below it.
pub(crate) fn procs_recursive(dir: &Path) -> Vec<i32> {
    let mut pids = procs(dir);
    for child in descendants(dir) {
        pids.extend(procs(&child));
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}
