//! Pod-level cgroups. Container cgroups are created, limited and removed
//! by libcontainer inside the shim (through libcgroups); crispd decides where they go, sets the
//! limits of a pod cgroup it made when the pod is resized ([`limits`]) and removes the pod-level directory it
//! made once its containers are gone.
//!
//! Both layouts are handled by walking every mounted cgroup hierarchy: cgroup v1 (one mount per
//! controller, as on this CI host) and v2 (a single unified mount). Both drivers too
//! ([`driver`]): the functions here take directories below the cgroup mount, which a systemd
//! slice or scope also has.

pub mod driver;
pub mod limits;
pub mod psi;
pub mod stats;
pub mod systemd;

use std::path::{Path, PathBuf};

/// Mount points of every cgroup hierarchy (v1 controllers and the v2 unified tree).
pub fn hierarchies() -> Vec<PathBuf> {
    mounts_of(&["cgroup", "cgroup2"])
}

/// Mount points of the filesystems of the types `fstypes`.
fn mounts_of(fstypes: &[&str]) -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|l| {
            // mountinfo: id parent maj:min root mountpoint opts... - fstype source superopts
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            if !fstypes.contains(&fstype) {
                return None;
            }
            pre.split(' ').nth(4).map(PathBuf::from)
        })
        .collect()
}

/// The cgroup v1 hierarchies' mount points as crispd found them at start, for the shims
/// (`crisp_api::cgroup_mounts`); empty on a cgroup v2 node. `None` if a mount point is not
/// UTF-8: the variable would then reach libcontainer's environment handling, which panics on
/// such a value, so the shims read mountinfo themselves instead.
pub fn v1_mounts_for_shims() -> Option<&'static std::ffi::OsStr> {
    static ENCODED: std::sync::OnceLock<Option<std::ffi::OsString>> = std::sync::OnceLock::new();
    ENCODED
        .get_or_init(|| {
            let v1 = mounts_of(&["cgroup"]);
            v1.iter()
                .all(|p| p.to_str().is_some())
                .then(|| crisp_api::cgroup_mounts::encode(&v1))
        })
        .as_deref()
}

/// Whether the node runs cgroup v2 alone (the unified hierarchy at /sys/fs/cgroup).
pub fn unified() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Whether crispd itself runs in `cgroup_path` or below it (in the unified hierarchy), where a
/// `cgroup.kill` would take it down too.
fn holds_crispd(cgroup_path: &str) -> bool {
    let target = cgroup_path.trim_end_matches('/');
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("0::"))
        .any(|own| own == target || own.starts_with(&format!("{target}/")))
}

/// Whether libcgroups can set hugepage limits here: always on a cgroup v2 host; on cgroup v1
/// only if a v1 hierarchy has the hugetlb controller (a hybrid host may have it in its cgroup2
/// tree alone, where the v1 manager cannot use it and refuses the limits).
pub fn hugetlb_controllable() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return true;
        };
        let mut v1 = false;
        let mut v1_hugetlb = false;
        for l in mounts.lines() {
            let Some((pre, post)) = l.split_once(" - ") else {
                continue;
            };
            let mut fields = post.split(' ');
            match fields.next() {
                Some("cgroup") => {
                    v1 = true;
                    let superopts = fields.nth(1).unwrap_or("");
                    v1_hugetlb |= superopts.split(',').any(|o| o == "hugetlb");
                }
                Some("cgroup2") if pre.split(' ').nth(4) == Some("/sys/fs/cgroup") => {
                    return true;
                }
                _ => {}
            }
        }
        !v1 || v1_hugetlb
    })
}

/// `cgroup_path` joined onto `mount`, refusing anything that would climb out of it.
fn under(mount: &Path, cgroup_path: &str) -> Option<PathBuf> {
    let rel = cgroup_path.trim_start_matches('/');
    if rel.split('/').any(|c| c == ".." || c == ".") {
        return None;
    }
    Some(mount.join(rel))
}

/// Removes the cgroup `cgroup_path` and every (empty) cgroup below it in all hierarchies.
/// Returns the directories that could not be removed (still holding processes).
pub fn remove_tree(cgroup_path: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for m in hierarchies() {
        let Some(dir) = under(&m, cgroup_path) else {
            continue;
        };
        if dir == m {
            continue;
        }
        remove_dir_deepest_first(&dir, &mut left);
    }
    left
}

/// Kills every process left in the cgroup `cgroup_path` (and below it, in all hierarchies),
/// then removes it as [`remove_tree`] does, waiting up to a second for the killed to go.
///
/// For a container whose shim could not delete it: a create that a crash of crispd and the
/// shim interrupted leaves libcontainer's init waiting in the container's cgroup for a start
/// that never comes, and nothing else would ever end it.
pub fn kill_and_remove_tree(cgroup_path: &str) -> Vec<PathBuf> {
    const ATTEMPTS: u32 = 50;
    // Usually the shim's delete emptied it: then this is `remove_tree` and nothing more.
    let mut left = remove_tree(cgroup_path);
    if left.is_empty() {
        return left;
    }
    // cgroup v2 (5.14+): one write kills the whole subtree, forks in flight included; never
    // where crispd itself runs (the pid walk below spares it).
    let kill_files: Vec<PathBuf> = if holds_crispd(cgroup_path) {
        Vec::new()
    } else {
        hierarchies()
            .into_iter()
            .filter_map(|m| under(&m, cgroup_path).filter(|d| *d != m))
            .map(|d| d.join("cgroup.kill"))
            .filter(|k| k.is_file())
            .collect()
    };
    for _ in 0..ATTEMPTS {
        if left.is_empty() {
            break;
        }
        for kill in &kill_files {
            let _ = std::fs::write(kill, "1");
        }
        for pid in procs_in_tree(cgroup_path) {
            // Only pids read from the container's own cgroup; a process that exited in between
            // is ESRCH, which is fine.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        left = remove_tree(cgroup_path);
    }
    left
}

/// The processes in `cgroup_path` and the cgroups below it, in any hierarchy.
fn procs_in_tree(cgroup_path: &str) -> std::collections::BTreeSet<i32> {
    fn walk(dir: &Path, out: &mut std::collections::BTreeSet<i32>) {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    for m in hierarchies() {
        match under(&m, cgroup_path) {
            Some(dir) if dir != m => walk(&dir, &mut out),
            _ => {}
        }
    }
    // Never ourselves, whatever a misconfigured parent puts where.
    out.remove(&(std::process::id() as i32));
    out
}

fn remove_dir_deepest_first(dir: &Path, left: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dir_deepest_first(&e.path(), left);
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => left.push(dir.to_path_buf()),
    }
}

/// Moves `pid` into the cgroup `cgroup_path` of every hierarchy, creating it where missing.
/// Returns the hierarchies where that failed (e.g. a v1 cpuset cgroup with no cpus assigned
/// yet), which callers log: the process then stays where it was in those.
pub fn add_process(cgroup_path: &str, pid: u32) -> Vec<(PathBuf, std::io::Error)> {
    let mut failed = Vec::new();
    for m in hierarchies() {
        let Some(dir) = under(&m, cgroup_path) else {
            continue;
        };
        let r = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("cgroup.procs"), pid.to_string()));
        if let Err(e) = r {
            failed.push((dir, e));
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape() {
        assert!(under(Path::new("/sys/fs/cgroup/memory"), "/a/../../x").is_none());
        assert_eq!(
            under(Path::new("/sys/fs/cgroup/memory"), "/crisp/pod").unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/crisp/pod")
        );
    }

    #[test]
    fn finds_hierarchies() {
        // Every Linux CI host mounts at least one cgroup hierarchy.
        assert!(!hierarchies().is_empty());
    }
}
