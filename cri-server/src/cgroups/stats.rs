//! Reading usage from a cgroup, on v1 (one hierarchy per controller) and v2 (unified).
//! crispd reads cgroupfs directly rather than asking each shim: ListContainerStats runs every
//! few seconds per node and file reads are far cheaper than an RPC per container.

use super::psi::{self, CgroupPressure};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupUsage {
    pub cpu_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    pub memory_working_set: Option<u64>,
    pub memory_limit: Option<u64>,
    pub rss: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    pub pids: Option<u64>,
    /// v2 only.
    pub pressure: CgroupPressure,
}

fn rel(path: &str) -> Option<PathBuf> {
    let r = path.trim_start_matches('/');
    if r.split('/').any(|c| c == ".." || c == ".") {
        return None;
    }
    Some(PathBuf::from(r))
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_map(p: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn get(m: &[(String, u64)], key: &str) -> Option<u64> {
    m.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// Usage of the cgroup at `path` (a cgroupfs path like `/crisp/pod-…/<id>`).
pub fn read(path: &str) -> CgroupUsage {
    let Some(rel) = rel(path) else {
        return CgroupUsage::default();
    };
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        read_v2(&root.join(&rel))
    } else {
        read_v1(root, &rel)
    }
}

fn read_v1(root: &Path, rel: &Path) -> CgroupUsage {
    let mem = root.join("memory").join(rel);
    let stat = stat_map(&mem.join("memory.stat"));
    let usage = read_u64(&mem.join("memory.usage_in_bytes"));
    let inactive = get(&stat, "total_inactive_file").unwrap_or(0);
    // The v1 "no limit" value is a page-rounded i64::MAX: report no limit rather than exabytes.
    let limit = read_u64(&mem.join("memory.limit_in_bytes")).filter(|l| *l < (1 << 60));
    CgroupUsage {
        cpu_ns: read_u64(&root.join("cpuacct").join(rel).join("cpuacct.usage")),
        memory_usage: usage,
        memory_working_set: usage.map(|u| u.saturating_sub(inactive)),
        memory_limit: limit,
        rss: get(&stat, "total_rss"),
        page_faults: get(&stat, "total_pgfault"),
        major_page_faults: get(&stat, "total_pgmajfault"),
        pids: read_u64(&root.join("pids").join(rel).join("pids.current")),
        pressure: CgroupPressure::default(),
    }
}

fn read_v2(dir: &Path) -> CgroupUsage {
    let stat = stat_map(&dir.join("memory.stat"));
    let usage = read_u64(&dir.join("memory.current"));
    let inactive = get(&stat, "inactive_file").unwrap_or(0);
    CgroupUsage {
        cpu_ns: get(&stat_map(&dir.join("cpu.stat")), "usage_usec").map(|u| u * 1000),
        memory_usage: usage,
        memory_working_set: usage.map(|u| u.saturating_sub(inactive)),
        memory_limit: read_u64(&dir.join("memory.max")),
        rss: get(&stat, "anon"),
        page_faults: get(&stat, "pgfault"),
        major_page_faults: get(&stat, "pgmajfault"),
        pids: read_u64(&dir.join("pids.current")),
        pressure: psi::read(dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_refused() {
        assert_eq!(read("/../../etc"), CgroupUsage::default());
    }
}
