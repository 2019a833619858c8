//! Reading usage from a cgroup, on v1 (one hierarchy per controller) and v2 (unified).
//! crispd reads cgroupfs directly rather than asking each shim: ListContainerStats runs every
//! few seconds per node and file reads are far cheaper than an RPC per container.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    pub memory_working_set: Option<u64>,
    pub memory_limit: Option<u64>,
    pub rss: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    pub pids: Option<u64>,
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
    }
}

/// Per-interface counters from a `/proc/net/dev` text: (name, rx_bytes, rx_errs, tx_bytes, tx_errs).
pub fn parse_net_dev(text: &str) -> Vec<(String, u64, u64, u64, u64)> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            Some((
                name.trim().to_string(),
                *f.first()?,
                *f.get(2)?,
                *f.get(8)?,
                *f.get(10)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    5000      10    2    0    0     0          0         0     3000       8    1    0    0     0       0          0\n";
        let v = parse_net_dev(text);
        assert_eq!(v[1], ("eth0".to_string(), 5000, 2, 3000, 1));
    }

    #[test]
    fn escapes_are_refused() {
        assert_eq!(read("/../../etc"), CgroupUsage::default());
    }
}
