//! ListMetricDescriptors / ListPodSandboxMetrics (kubelet's `PodAndContainerStatsFromCRI`,
//! KEP-2371): the cAdvisor-named series kubelet's `/metrics/cadvisor` serves, per container and
//! per pod, built from the pod and container cgroups, the pod's network namespace and the
//! writable layers (`service::PodSample`).
//!
//! Labels as cAdvisor's: `container`, `id` (the cgroup), `image`, `name` (the runtime's name of
//! the container), `namespace`, `pod`, then the series' own (`cpu`, `interface`,
//! `failure_type`/`scope`, `device`). Values are `UInt64Value`s, so seconds are whole seconds,
//! as CRI-O reports them.

use crate::cgroups::stats::CgroupUsage;
use crate::service::{ContainerSample, Interface, PodSample};
use crisp_cri_api::v1 as cri;

const BASE: &[&str] = &["container", "id", "image", "name", "namespace", "pod"];

struct Series {
    name: &'static str,
    help: &'static str,
    counter: bool,
    labels: &'static [&'static str],
}

macro_rules! series {
    ($id:ident, $name:literal, $help:literal, $counter:literal, [$($l:literal),*]) => {
        const $id: Series = Series { name: $name, help: $help, counter: $counter, labels: &[$($l),*] };
    };
}

series!(
    CPU_USAGE,
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds.",
    true,
    ["cpu"]
);
series!(
    CPU_USER,
    "container_cpu_user_seconds_total",
    "Cumulative user cpu time consumed in seconds.",
    true,
    []
);
series!(
    CPU_SYSTEM,
    "container_cpu_system_seconds_total",
    "Cumulative system cpu time consumed in seconds.",
    true,
    []
);
series!(
    CFS_PERIODS,
    "container_cpu_cfs_periods_total",
    "Number of elapsed enforcement period intervals.",
    true,
    []
);
series!(
    CFS_THROTTLED_PERIODS,
    "container_cpu_cfs_throttled_periods_total",
    "Number of throttled period intervals.",
    true,
    []
);
series!(
    CFS_THROTTLED_SECONDS,
    "container_cpu_cfs_throttled_seconds_total",
    "Total time duration the container has been throttled.",
    true,
    []
);
series!(
    MEM_USAGE,
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed.",
    false,
    []
);
series!(
    MEM_WS,
    "container_memory_working_set_bytes",
    "Current working set in bytes.",
    false,
    []
);
series!(
    MEM_RSS,
    "container_memory_rss",
    "Size of RSS in bytes.",
    false,
    []
);
series!(
    MEM_CACHE,
    "container_memory_cache",
    "Number of bytes of page cache memory.",
    false,
    []
);
series!(
    MEM_MAPPED,
    "container_memory_mapped_file",
    "Size of memory mapped files in bytes.",
    false,
    []
);
series!(
    MEM_SWAP,
    "container_memory_swap",
    "Container swap usage in bytes.",
    false,
    []
);
series!(
    MEM_MAX,
    "container_memory_max_usage_bytes",
    "Maximum memory usage recorded in bytes.",
    false,
    []
);
series!(
    MEM_FAILCNT,
    "container_memory_failcnt",
    "Number of memory usage hits limits.",
    true,
    []
);
series!(
    MEM_FAILURES,
    "container_memory_failures_total",
    "Cumulative count of memory allocation failures.",
    true,
    ["failure_type", "scope"]
);
series!(
    OOM_EVENTS,
    "container_oom_events_total",
    "Count of out of memory events observed for the container.",
    true,
    []
);
series!(
    PROCESSES,
    "container_processes",
    "Number of processes running inside the container.",
    false,
    []
);
series!(
    THREADS,
    "container_threads",
    "Number of threads running inside the container.",
    false,
    []
);
series!(
    FS_USAGE,
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem.",
    false,
    ["device"]
);
series!(
    FS_INODES,
    "container_fs_inodes_total",
    "Number of inodes in use by the container on this filesystem.",
    false,
    ["device"]
);
series!(
    START_TIME,
    "container_start_time_seconds",
    "Start time of the container since unix epoch in seconds.",
    false,
    []
);
series!(
    LAST_SEEN,
    "container_last_seen",
    "Last time a container was seen by the exporter.",
    false,
    []
);
series!(
    RX_BYTES,
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received.",
    true,
    ["interface"]
);
series!(
    RX_PACKETS,
    "container_network_receive_packets_total",
    "Cumulative count of packets received.",
    true,
    ["interface"]
);
series!(
    RX_DROPPED,
    "container_network_receive_packets_dropped_total",
    "Cumulative count of packets dropped while receiving.",
    true,
    ["interface"]
);
series!(
    RX_ERRORS,
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving.",
    true,
    ["interface"]
);
series!(
    TX_BYTES,
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted.",
    true,
    ["interface"]
);
series!(
    TX_PACKETS,
    "container_network_transmit_packets_total",
    "Cumulative count of packets transmitted.",
    true,
    ["interface"]
);
series!(
    TX_DROPPED,
    "container_network_transmit_packets_dropped_total",
    "Cumulative count of packets dropped while transmitting.",
    true,
    ["interface"]
);
series!(
    TX_ERRORS,
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting.",
    true,
    ["interface"]
);

const ALL: &[&Series] = &[
    &CPU_USAGE,
    &CPU_USER,
    &CPU_SYSTEM,
    &CFS_PERIODS,
    &CFS_THROTTLED_PERIODS,
    &CFS_THROTTLED_SECONDS,
    &MEM_USAGE,
    &MEM_WS,
    &MEM_RSS,
    &MEM_CACHE,
    &MEM_MAPPED,
    &MEM_SWAP,
    &MEM_MAX,
    &MEM_FAILCNT,
    &MEM_FAILURES,
    &OOM_EVENTS,
    &PROCESSES,
    &THREADS,
    &FS_USAGE,
    &FS_INODES,
    &START_TIME,
    &LAST_SEEN,
    &RX_BYTES,
    &RX_PACKETS,
    &RX_DROPPED,
    &RX_ERRORS,
    &TX_BYTES,
    &TX_PACKETS,
    &TX_DROPPED,
    &TX_ERRORS,
];

pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    ALL.iter()
        .map(|s| cri::MetricDescriptor {
            name: s.name.into(),
            help: s.help.into(),
            label_keys: BASE.iter().chain(s.labels).map(|l| l.to_string()).collect(),
        })
        .collect()
}

/// Builds the metrics of one object: its base label values and a timestamp.
struct Emit<'a> {
    base: [&'a str; 6],
    at: i64,
    out: Vec<cri::Metric>,
}

impl Emit<'_> {
    fn put(&mut self, s: &Series, value: Option<u64>, extra: &[&str]) {
        let Some(value) = value else { return };
        debug_assert_eq!(extra.len(), s.labels.len(), "{}", s.name);
        self.out.push(cri::Metric {
            name: s.name.into(),
            timestamp: self.at,
            metric_type: if s.counter {
                cri::MetricType::Counter
            } else {
                cri::MetricType::Gauge
            } as i32,
            label_values: self
                .base
                .iter()
                .chain(extra)
                .map(|l| l.to_string())
                .collect(),
            value: Some(cri::UInt64Value { value }),
        });
    }

    fn cgroup(&mut self, u: &CgroupUsage) {
        let secs = |ns: Option<u64>| ns.map(|n| n / 1_000_000_000);
        let d = &u.detail;
        self.put(&CPU_USAGE, secs(u.cpu_ns), &["total"]);
        self.put(&CPU_USER, secs(d.cpu_user_ns), &[]);
        self.put(&CPU_SYSTEM, secs(d.cpu_system_ns), &[]);
        self.put(&CFS_PERIODS, d.cfs_periods, &[]);
        self.put(&CFS_THROTTLED_PERIODS, d.cfs_throttled_periods, &[]);
        self.put(&CFS_THROTTLED_SECONDS, secs(d.cfs_throttled_ns), &[]);
        self.put(&MEM_USAGE, u.memory_usage, &[]);
        self.put(&MEM_WS, u.memory_working_set, &[]);
        self.put(&MEM_RSS, u.rss, &[]);
        self.put(&MEM_CACHE, d.memory_cache, &[]);
        self.put(&MEM_MAPPED, d.memory_mapped_file, &[]);
        self.put(&MEM_SWAP, d.memory_swap, &[]);
        self.put(&MEM_MAX, d.memory_max_usage, &[]);
        self.put(&MEM_FAILCNT, d.memory_failcnt, &[]);
        // As cAdvisor: page faults are the "failures", minor (pgfault counts both) and major,
        // for the container ("container") and its cgroup tree ("hierarchy"), the same here.
        let minor = u
            .page_faults
            .map(|all| all.saturating_sub(u.major_page_faults.unwrap_or(0)));
        for scope in ["container", "hierarchy"] {
            self.put(&MEM_FAILURES, minor, &["pgfault", scope]);
            self.put(&MEM_FAILURES, u.major_page_faults, &["pgmajfault", scope]);
        }
        self.put(&OOM_EVENTS, d.oom_kills, &[]);
        // The pids controller counts tasks, that is threads.
        self.put(&THREADS, u.pids, &[]);
    }

    fn network(&mut self, interfaces: &[Interface]) {
        for i in interfaces {
            let n = [i.name.as_str()];
            self.put(&RX_BYTES, Some(i.rx_bytes), &n);
            self.put(&RX_PACKETS, Some(i.rx_packets), &n);
            self.put(&RX_DROPPED, Some(i.rx_dropped), &n);
            self.put(&RX_ERRORS, Some(i.rx_errors), &n);
            self.put(&TX_BYTES, Some(i.tx_bytes), &n);
            self.put(&TX_PACKETS, Some(i.tx_packets), &n);
            self.put(&TX_DROPPED, Some(i.tx_dropped), &n);
            self.put(&TX_ERRORS, Some(i.tx_errors), &n);
        }
    }
}

fn container(
    c: &ContainerSample,
    pod_name: &str,
    namespace: &str,
    at: i64,
) -> cri::ContainerMetrics {
    let name = c
        .rec
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .unwrap_or("");
    let mut e = Emit {
        base: [
            name,
            &c.cgroup,
            &c.rec.image_name,
            &c.rec.id,
            namespace,
            pod_name,
        ],
        at,
        out: Vec::new(),
    };
    e.cgroup(&c.usage);
    e.put(&PROCESSES, c.usage.pids, &[]);
    e.put(&FS_USAGE, Some(c.layer_bytes), &["rootfs"]);
    e.put(&FS_INODES, Some(c.layer_inodes), &["rootfs"]);
    let started = u64::try_from(c.rec.started_at_ns).ok().filter(|s| *s > 0);
    e.put(&START_TIME, started.map(|ns| ns / 1_000_000_000), &[]);
    e.put(&LAST_SEEN, u64::try_from(at / 1_000_000_000).ok(), &[]);
    cri::ContainerMetrics {
        container_id: c.rec.id.clone(),
        metrics: e.out,
    }
}

/// The metrics of one pod: its cgroup and network as the pod's (container label empty, as
/// cAdvisor labels a pod cgroup), and each running container's.
pub fn of_pod(s: &PodSample) -> cri::PodSandboxMetrics {
    let meta = s.pod.config.metadata.clone().unwrap_or_default();
    let mut e = Emit {
        base: ["", &s.cgroup, "", &s.pod.id, &meta.namespace, &meta.name],
        at: s.at,
        out: Vec::new(),
    };
    e.cgroup(&s.usage);
    e.network(&s.interfaces);
    e.put(&LAST_SEEN, u64::try_from(s.at / 1_000_000_000).ok(), &[]);
    cri::PodSandboxMetrics {
        pod_sandbox_id: s.pod.id.clone(),
        metrics: e.out,
        container_metrics: s
            .containers
            .iter()
            .map(|c| container(c, &meta.name, &meta.namespace, s.at))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_has_a_value_per_label_key() {
        let descriptors = descriptors();
        let mut e = Emit {
            base: ["c", "/cg", "img", "id", "ns", "pod"],
            at: 1,
            out: Vec::new(),
        };
        let mut u = CgroupUsage {
            cpu_ns: Some(3_000_000_000),
            page_faults: Some(10),
            major_page_faults: Some(4),
            pids: Some(2),
            ..Default::default()
        };
        u.detail.cfs_throttled_ns = Some(2_500_000_000);
        e.cgroup(&u);
        e.network(&[Interface {
            name: "eth0".into(),
            rx_bytes: 1,
            rx_packets: 1,
            rx_errors: 0,
            rx_dropped: 0,
            tx_bytes: 1,
            tx_packets: 1,
            tx_errors: 0,
            tx_dropped: 0,
        }]);
        assert!(!e.out.is_empty());
        for m in &e.out {
            let d = descriptors.iter().find(|d| d.name == m.name).unwrap();
            assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
        }
        let cpu = e.out.iter().find(|m| m.name == CPU_USAGE.name).unwrap();
        assert_eq!(cpu.value.as_ref().unwrap().value, 3);
        let minor = e
            .out
            .iter()
            .find(|m| m.name == MEM_FAILURES.name && m.label_values[6] == "pgfault")
            .unwrap();
        assert_eq!(minor.value.as_ref().unwrap().value, 6);
    }
}
