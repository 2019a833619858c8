//! Container and pod stats for kubelet's summary API and eviction: CPU (cumulative and
//! nano-cores over the last interval), memory, writable layer, processes and pod network.

use super::{now_ns, Runtime};
use crate::cgroups::driver::PodCgroup;
use crate::cgroups::psi::{Pressure, PsiLine};
use crate::cgroups::stats::{self, CgroupUsage};
use crate::container::ContainerRecord;
use crate::error::Result;
use crate::pod::SandboxRecord;
use crisp_cri_api::v1 as cri;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// The previous CPU sample per cgroup, to turn cumulative usage into nano-cores.
#[derive(Default)]
pub struct CpuSamples(Mutex<HashMap<String, (i64, u64)>>);

impl CpuSamples {
    fn nano_cores(&self, key: &str, at_ns: i64, usage_ns: u64) -> Option<u64> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let prev = m.insert(key.to_string(), (at_ns, usage_ns));
        let (t0, u0) = prev?;
        let dt = at_ns.checked_sub(t0).filter(|d| *d > 0)? as u128;
        let du = usage_ns.checked_sub(u0)? as u128;
        u64::try_from(du * 1_000_000_000 / dt).ok()
    }

    pub fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

fn v(x: Option<u64>) -> Option<cri::UInt64Value> {
    x.map(|value| cri::UInt64Value { value })
}

fn psi(p: Option<Pressure>) -> Option<cri::PsiStats> {
    let data = |l: PsiLine| cri::PsiData {
        total: l.total_us.saturating_mul(1000),
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    };
    p.map(|p| cri::PsiStats {
        full: p.full.map(data),
        some: Some(data(p.some)),
    })
}

fn io(u: &CgroupUsage, at: i64) -> Option<cri::IoUsage> {
    u.pressure.io.map(|p| cri::IoUsage {
        timestamp: at,
        psi: psi(Some(p)),
    })
}

impl Runtime {
    fn cpu_memory(&self, key: &str, u: &CgroupUsage, at: i64) -> (cri::CpuUsage, cri::MemoryUsage) {
        let cpu = cri::CpuUsage {
            timestamp: at,
            usage_core_nano_seconds: v(u.cpu_ns),
            usage_nano_cores: v(u
                .cpu_ns
                .and_then(|c| self.cpu_samples.nano_cores(key, at, c))),
            psi: psi(u.pressure.cpu),
        };
        let memory = cri::MemoryUsage {
            timestamp: at,
            working_set_bytes: v(u.memory_working_set),
            available_bytes: v(u
                .memory_limit
                .zip(u.memory_working_set)
                .map(|(l, w)| l.saturating_sub(w))),
            usage_bytes: v(u.memory_usage),
            rss_bytes: v(u.rss),
            page_faults: v(u.page_faults),
            major_page_faults: v(u.major_page_faults),
            psi: psi(u.pressure.memory),
        };
        (cpu, memory)
    }

    fn container_stats_of(
        &self,
        c: &ContainerRecord,
        pod: Option<&SandboxRecord>,
    ) -> cri::ContainerStats {
        let at = now_ns();
        let cgroup = pod.map(|p| PodCgroup::of(&p.cgroup_parent).child_dir(&c.id));
        let usage = cgroup.as_deref().map(stats::read).unwrap_or_default();
        let (cpu, memory) = self.cpu_memory(&c.id, &usage, at);
        let layer = self.snapshotter.active_usage(&c.id).unwrap_or_default();
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            cpu: Some(cpu),
            memory: Some(memory),
            writable_layer: Some(cri::FilesystemUsage {
                timestamp: at,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self.cfg.root.join("snapshots").display().to_string(),
                }),
                used_bytes: v(Some(layer.bytes)),
                inodes_used: v(Some(layer.inodes)),
            }),
            swap: None,
            io: io(&usage, at),
        }
    }

    pub async fn container_stats(&self, id: &str) -> Result<cri::ContainerStats> {
        let c = self.container(id)?;
        let pod = self.objects().pods.get(&c.pod_id).cloned();
        Ok(self.container_stats_of(&c, pod.as_ref()))
    }

    pub async fn list_container_stats(
        &self,
        f: Option<&cri::ContainerStatsFilter>,
    ) -> Vec<cri::ContainerStats> {
        let filter = f.map(|f| cri::ContainerFilter {
            id: f.id.clone(),
            pod_sandbox_id: f.pod_sandbox_id.clone(),
            label_selector: f.label_selector.clone(),
            state: None,
        });
        let pods = self.objects().pods.clone();
        self.list_containers(filter.as_ref())
            .iter()
            .filter(|c| c.state != crate::container::ContainerState::Exited)
            .map(|c| self.container_stats_of(c, pods.get(&c.pod_id)))
            .collect()
    }

    pub async fn pod_stats(&self, id: &str) -> Result<cri::PodSandboxStats> {
        let pod = self.pod(id)?;
        Ok(self.pod_stats_of(&pod).await)
    }

    pub async fn list_pod_stats(
        &self,
        f: Option<&cri::PodSandboxStatsFilter>,
    ) -> Vec<cri::PodSandboxStats> {
        let filter = f.map(|f| cri::PodSandboxFilter {
            id: f.id.clone(),
            label_selector: f.label_selector.clone(),
            state: None,
        });
        let mut out = Vec::new();
        for p in self.list_pods(filter.as_ref()) {
            out.push(self.pod_stats_of(&p).await);
        }
        out
    }

    async fn pod_stats_of(&self, pod: &SandboxRecord) -> cri::PodSandboxStats {
        let at = now_ns();
        let usage = stats::read(&PodCgroup::of(&pod.cgroup_parent).dir());
        let (cpu, memory) = self.cpu_memory(&format!("pod:{}", pod.id), &usage, at);
        let containers = self
            .list_container_stats(Some(&cri::ContainerStatsFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            }))
            .await;
        let network = pod_interfaces(pod.netns.clone())
            .await
            .map(|ifaces| network_usage(at, ifaces));
        cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: pod.config.metadata.clone(),
                labels: pod.config.labels.clone(),
                annotations: pod.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cpu),
                memory: Some(memory),
                network,
                process: Some(cri::ProcessUsage {
                    timestamp: at,
                    process_count: v(usage.pids),
                }),
                containers,
                io: io(&usage, at),
            }),
            windows: None,
        }
    }
}

impl Runtime {
    /// The figures behind ListPodSandboxMetrics, for every pod.
    pub async fn pod_samples(&self) -> Vec<PodSample> {
        let mut out = Vec::new();
        // Ready pods only: kubelet's next sandbox of a pod shares the old one's cgroup, whose
        // series would otherwise appear twice while the old one lingers.
        let ready = self
            .list_pods(None)
            .into_iter()
            .filter(|p| p.state == crate::pod::SandboxState::Ready);
        for pod in ready {
            let at = now_ns();
            let cgroup = PodCgroup::of(&pod.cgroup_parent).dir();
            let usage = stats::read(&cgroup);
            let interfaces = pod_interfaces(pod.netns.clone()).await.unwrap_or_default();
            let containers = self
                .list_containers(Some(&cri::ContainerFilter {
                    pod_sandbox_id: pod.id.clone(),
                    ..Default::default()
                }))
                .into_iter()
                .filter(|c| c.state == crate::container::ContainerState::Running)
                .map(|rec| {
                    let cgroup = format!("{}/{}", cgroup.trim_end_matches('/'), rec.id);
                    let layer = self.snapshotter.active_usage(&rec.id).unwrap_or_default();
                    ContainerSample {
                        usage: stats::read(&cgroup),
                        cgroup,
                        layer_bytes: layer.bytes,
                        layer_inodes: layer.inodes,
                        rec,
                    }
                })
                .collect();
            out.push(PodSample {
                pod,
                at,
                usage,
                cgroup,
                interfaces,
                containers,
            });
        }
        out
    }
}

/// One interface's counters from `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// One pod's figures for the CRI metrics (ListPodSandboxMetrics): its cgroup, its network
/// namespace's interfaces, and each running container's cgroup and writable layer.
pub struct PodSample {
    pub pod: SandboxRecord,
    pub at: i64,
    pub usage: CgroupUsage,
    pub cgroup: String,
    pub interfaces: Vec<Interface>,
    pub containers: Vec<ContainerSample>,
}

pub struct ContainerSample {
    pub rec: ContainerRecord,
    pub cgroup: String,
    pub usage: CgroupUsage,
    pub layer_bytes: u64,
    pub layer_inodes: u64,
}

fn parse_net_dev(text: &str) -> Vec<Interface> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            Some(Interface {
                name: name.trim().to_string(),
                rx_bytes: *f.first()?,
                rx_packets: *f.get(1)?,
                rx_errors: *f.get(2)?,
                rx_dropped: *f.get(3)?,
                tx_bytes: *f.get(8)?,
                tx_packets: *f.get(9)?,
                tx_errors: *f.get(10)?,
                tx_dropped: *f.get(11)?,
            })
        })
        .collect()
}

fn network_usage(at: i64, ifaces: Vec<Interface>) -> cri::NetworkUsage {
    let interfaces: Vec<cri::NetworkInterfaceUsage> = ifaces
        .into_iter()
        .map(|i| cri::NetworkInterfaceUsage {
            name: i.name,
            rx_bytes: v(Some(i.rx_bytes)),
            rx_errors: v(Some(i.rx_errors)),
            tx_bytes: v(Some(i.tx_bytes)),
            tx_errors: v(Some(i.tx_errors)),
        })
        .collect();
    cri::NetworkUsage {
        timestamp: at,
        default_interface: interfaces.iter().find(|i| i.name == "eth0").cloned(),
        interfaces,
    }
}

/// A pod's interfaces but loopback, from its network namespace (none for a host-network pod).
async fn pod_interfaces(netns: Option<std::path::PathBuf>) -> Option<Vec<Interface>> {
    let ns = netns?;
    let all = tokio::task::spawn_blocking(move || net_dev_in(&ns))
        .await
        .ok()
        .flatten()?;
    Some(all.into_iter().filter(|i| i.name != "lo").collect())
}

/// `/proc/net/dev` as seen inside the pod's network namespace. `setns` is per thread, so this
/// runs on a thread of its own that exits right after; no other thread changes namespace.
fn net_dev_in(netns: &Path) -> Option<Vec<Interface>> {
    let ns = std::fs::File::open(netns).ok()?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        let text = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
        Some(parse_net_dev(&text))
    })
    .join()
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    5000      10    2    0    0     0          0         0     3000       8    1    0    0     0       0          0\n";
        let v = parse_net_dev(text);
        assert_eq!(
            v[1],
            Interface {
                name: "eth0".into(),
                rx_bytes: 5000,
                rx_packets: 10,
                rx_errors: 2,
                rx_dropped: 0,
                tx_bytes: 3000,
                tx_packets: 8,
                tx_errors: 1,
                tx_dropped: 0,
            }
        );
    }

    #[test]
    fn nano_cores_from_two_samples() {
        let s = CpuSamples::default();
        assert_eq!(s.nano_cores("c", 1_000_000_000, 0), None);
        assert_eq!(
            s.nano_cores("c", 2_000_000_000, 500_000_000),
            Some(500_000_000)
        );
    }
}
