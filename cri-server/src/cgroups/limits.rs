//! Setting CPU and memory limits on a pod-level cgroup crispd made itself
//! (UpdatePodSandboxResources for a pod without kubelet's cgroup parent). Only the four files
//! a pod resize changes are written, on v1 or v2: libcgroups' managers would also apply their
//! defaults for other controllers (device rules, the OOM killer switch) to the pod cgroup.

use super::{hierarchies, under, unified};
use std::path::Path;

/// A pod's limits; 0 means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodLimits {
    pub cpu_period: u64,
    pub cpu_quota: u64,
    pub cpu_shares: u64,
    pub memory: u64,
}

/// Writes `limits` to the cgroup `cgroup_path` (which crispd owns: the CPU and memory
/// hierarchies' directories are made where missing, as for a pod whose first container has not
/// started; never a v1 cpuset one, which would start without CPUs).
pub fn set(cgroup_path: &str, limits: PodLimits) -> Result<(), String> {
    let period = if limits.cpu_period > 0 {
        limits.cpu_period
    } else {
        100_000
    };
    let mut writes: Vec<(std::path::PathBuf, String)> = Vec::new();
    if unified() {
        let dir = under(Path::new("/sys/fs/cgroup"), cgroup_path)
            .ok_or_else(|| format!("cgroup path {cgroup_path:?}"))?;
        mkdir(&dir)?;
        let quota = if limits.cpu_quota > 0 {
            limits.cpu_quota.to_string()
        } else {
            "max".into()
        };
        writes.push((dir.join("cpu.max"), format!("{quota} {period}")));
        if limits.cpu_shares > 0 {
            writes.push((
                dir.join("cpu.weight"),
                shares_to_weight(limits.cpu_shares).to_string(),
            ));
        }
        let memory = if limits.memory > 0 {
            limits.memory.to_string()
        } else {
            "max".into()
        };
        writes.push((dir.join("memory.max"), memory));
    } else {
        for m in hierarchies() {
            let name = m
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            let controllers: Vec<&str> = name.split(',').collect();
            let Some(dir) = under(&m, cgroup_path) else {
                continue;
            };
            if controllers.contains(&"cpu") {
                mkdir(&dir)?;
                let quota = if limits.cpu_quota > 0 {
                    limits.cpu_quota.to_string()
                } else {
                    "-1".into()
                };
                writes.push((dir.join("cpu.cfs_period_us"), period.to_string()));
                writes.push((dir.join("cpu.cfs_quota_us"), quota));
                if limits.cpu_shares > 0 {
                    writes.push((dir.join("cpu.shares"), limits.cpu_shares.to_string()));
                }
            }
            if controllers.contains(&"memory") {
                mkdir(&dir)?;
                let memory = if limits.memory > 0 {
                    limits.memory.to_string()
                } else {
                    "-1".into()
                };
                writes.push((dir.join("memory.limit_in_bytes"), memory));
            }
        }
    }
    for (file, value) in writes {
        std::fs::write(&file, &value)
            .map_err(|e| format!("writing {value} to {}: {e}", file.display()))?;
    }
    Ok(())
}

fn mkdir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
}

/// cgroup v1 shares (2..262144) to v2 weight (1..10000), as runc and kubelet convert them.
fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
