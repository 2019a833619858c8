//! ListMetricDescriptors / ListPodSandboxMetrics (kubelet's `PodAndContainerStatsFromCRI`):
//! the cAdvisor-named series kubelet would otherwise scrape from cAdvisor, built from the same
//! cgroup and pod-netns figures as the CRI stats calls.
//!
//! Values are `UInt64Value`s, so CPU time is whole seconds, as CRI-O reports it.

use crisp_cri_api::v1 as cri;

struct Series {
    name: &'static str,
    help: &'static str,
    counter: bool,
    labels: &'static [&'static str],
}

const CPU: Series = Series {
    name: "container_cpu_usage_seconds_total",
    help: "Cumulative cpu time consumed in seconds.",
    counter: true,
    labels: &[],
};
const MEM_USAGE: Series = Series {
    name: "container_memory_usage_bytes",
    help: "Current memory usage in bytes, including all memory regardless of when it was accessed.",
    counter: false,
    labels: &[],
};
const MEM_WS: Series = Series {
    name: "container_memory_working_set_bytes",
    help: "Current working set in bytes.",
    counter: false,
    labels: &[],
};
const MEM_RSS: Series = Series {
    name: "container_memory_rss",
    help: "Size of RSS in bytes.",
    counter: false,
    labels: &[],
};
const PROCESSES: Series = Series {
    name: "container_processes",
    help: "Number of processes running inside the container.",
    counter: false,
    labels: &[],
};
const RX: Series = Series {
    name: "container_network_receive_bytes_total",
    help: "Cumulative count of bytes received.",
    counter: true,
    labels: &["interface"],
};
const TX: Series = Series {
    name: "container_network_transmit_bytes_total",
    help: "Cumulative count of bytes transmitted.",
    counter: true,
    labels: &["interface"],
};
const ALL: &[&Series] = &[&CPU, &MEM_USAGE, &MEM_WS, &MEM_RSS, &PROCESSES, &RX, &TX];

pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    ALL.iter()
        .map(|s| cri::MetricDescriptor {
            name: s.name.into(),
            help: s.help.into(),
            label_keys: s.labels.iter().map(|l| l.to_string()).collect(),
        })
        .collect()
}

fn metric(s: &Series, at: i64, value: Option<u64>, labels: &[&str]) -> Option<cri::Metric> {
    Some(cri::Metric {
        name: s.name.into(),
        timestamp: at,
        metric_type: if s.counter {
            cri::MetricType::Counter
        } else {
            cri::MetricType::Gauge
        } as i32,
        label_values: labels.iter().map(|l| l.to_string()).collect(),
        value: Some(cri::UInt64Value { value: value? }),
    })
}

fn cpu_memory(
    cpu: Option<&cri::CpuUsage>,
    memory: Option<&cri::MemoryUsage>,
    processes: Option<u64>,
) -> Vec<cri::Metric> {
    let at = cpu.map(|c| c.timestamp).unwrap_or_default();
    let v = |x: &Option<cri::UInt64Value>| x.as_ref().map(|v| v.value);
    [
        metric(
            &CPU,
            at,
            cpu.and_then(|c| v(&c.usage_core_nano_seconds))
                .map(|ns| ns / 1_000_000_000),
            &[],
        ),
        metric(&MEM_USAGE, at, memory.and_then(|m| v(&m.usage_bytes)), &[]),
        metric(
            &MEM_WS,
            at,
            memory.and_then(|m| v(&m.working_set_bytes)),
            &[],
        ),
        metric(&MEM_RSS, at, memory.and_then(|m| v(&m.rss_bytes)), &[]),
        metric(&PROCESSES, at, processes, &[]),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The metrics of one pod from its CRI stats.
pub fn of_pod(stats: &cri::PodSandboxStats) -> cri::PodSandboxMetrics {
    let id = stats
        .attributes
        .as_ref()
        .map(|a| a.id.clone())
        .unwrap_or_default();
    let Some(linux) = &stats.linux else {
        return cri::PodSandboxMetrics {
            pod_sandbox_id: id,
            ..Default::default()
        };
    };
    let mut metrics = cpu_memory(
        linux.cpu.as_ref(),
        linux.memory.as_ref(),
        linux
            .process
            .as_ref()
            .and_then(|p| p.process_count.as_ref())
            .map(|c| c.value),
    );
    if let Some(net) = &linux.network {
        for i in net.default_interface.iter().chain(&net.interfaces) {
            let name = i.name.as_str();
            metrics.extend(metric(
                &RX,
                net.timestamp,
                i.rx_bytes.as_ref().map(|b| b.value),
                &[name],
            ));
            metrics.extend(metric(
                &TX,
                net.timestamp,
                i.tx_bytes.as_ref().map(|b| b.value),
                &[name],
            ));
        }
    }
    let container_metrics = linux
        .containers
        .iter()
        .map(|c| cri::ContainerMetrics {
            container_id: c
                .attributes
                .as_ref()
                .map(|a| a.id.clone())
                .unwrap_or_default(),
            metrics: cpu_memory(c.cpu.as_ref(), c.memory.as_ref(), None),
        })
        .collect();
    cri::PodSandboxMetrics {
        pod_sandbox_id: id,
        metrics,
        container_metrics,
    }
}
