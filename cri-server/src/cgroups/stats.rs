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
    /// What kubelet's cAdvisor-named metrics add (ListPodSandboxMetrics).
    pub detail: UsageDetail,
}

/// The figures only the CRI metrics carry, in cAdvisor's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UsageDetail {
    pub cpu_user_ns: Option<u64>,
    pub cpu_system_ns: Option<u64>,
    /// CFS bandwidth: periods, periods throttled, and time throttled.
    pub cfs_periods: Option<u64>,
    pub cfs_throttled_periods: Option<u64>,
    pub cfs_throttled_ns: Option<u64>,
    /// Page cache, mapped files, swap in use.
    pub memory_cache: Option<u64>,
    pub memory_mapped_file: Option<u64>,
    pub memory_swap: Option<u64>,
    /// Times the limit was hit (v1 `memory.failcnt`, v2 `memory.events` max).
    pub memory_failcnt: Option<u64>,
    /// Peak usage (v1 `max_usage_in_bytes`, v2 `memory.peak`, 5.19+).
    pub memory_max_usage: Option<u64>,
    pub oom_kills: Option<u64>,
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
        detail: detail_v1(root, rel, &stat),
    }
}

fn detail_v1(root: &Path, rel: &Path, mem_stat: &[(String, u64)]) -> UsageDetail {
    let mem = root.join("memory").join(rel);
    // cpuacct.stat counts USER_HZ ticks (100 per second on Linux).
    let ticks = stat_map(&root.join("cpuacct").join(rel).join("cpuacct.stat"));
    let cpu = stat_map(&root.join("cpu").join(rel).join("cpu.stat"));
    UsageDetail {
        cpu_user_ns: get(&ticks, "user").map(|t| t * 10_000_000),
        cpu_system_ns: get(&ticks, "system").map(|t| t * 10_000_000),
        cfs_periods: get(&cpu, "nr_periods"),
        cfs_throttled_periods: get(&cpu, "nr_throttled"),
        cfs_throttled_ns: get(&cpu, "throttled_time"),
        memory_cache: get(mem_stat, "total_cache"),
        memory_mapped_file: get(mem_stat, "total_mapped_file"),
        memory_swap: get(mem_stat, "total_swap"),
        memory_failcnt: read_u64(&mem.join("memory.failcnt")),
        memory_max_usage: read_u64(&mem.join("memory.max_usage_in_bytes")),
        oom_kills: get(&stat_map(&mem.join("memory.oom_control")), "oom_kill"),
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
        detail: detail_v2(dir, &stat),
    }
}

fn detail_v2(dir: &Path, mem_stat: &[(String, u64)]) -> UsageDetail {
    let cpu = stat_map(&dir.join("cpu.stat"));
    let events = stat_map(&dir.join("memory.events"));
    let us = |k: &str| get(&cpu, k).map(|u| u * 1000);
    UsageDetail {
        cpu_user_ns: us("user_usec"),
        cpu_system_ns: us("system_usec"),
        cfs_periods: get(&cpu, "nr_periods"),
        cfs_throttled_periods: get(&cpu, "nr_throttled"),
        cfs_throttled_ns: us("throttled_usec"),
        memory_cache: get(mem_stat, "file"),
        memory_mapped_file: get(mem_stat, "file_mapped"),
        memory_swap: read_u64(&dir.join("memory.swap.current")),
        memory_failcnt: get(&events, "max"),
        memory_max_usage: read_u64(&dir.join("memory.peak")),
        oom_kills: get(&events, "oom_kill"),
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
