//! Prometheus metrics (opt-in, `[metrics] addr`): what a node operator graphs and alerts on.
//!
//! - `crisp_cri_request_duration_seconds{method}` and `crisp_cri_requests_total{method,code}`,
//!   recorded for every CRI call by a tower layer around the gRPC server ([`layer`]);
//! - `crisp_pods{state}`, `crisp_containers{state}` and `crisp_shims`, read from the runtime's
//!   objects when scraped.
//!
//! - `crisp_image_pulls_total`, `crisp_image_pull_bytes_total` (compressed size of the images
//!   pulled from registries) and `crisp_image_pull_duration_seconds`; failed pulls and their
//!   codes are in the `PullImage` method's figures.

pub mod layer;
pub mod server;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: String,
    /// The gRPC status code as grpc-go names it: `OK`, `NotFound`, `InvalidArgument`, ….
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// Every metric crispd exports, registered once.
pub struct Metrics {
    registry: Registry,
    latency: Family<MethodLabels, Histogram>,
    calls: Family<CallLabels, Counter>,
    pub pods: Family<StateLabels, Gauge>,
    pub containers: Family<StateLabels, Gauge>,
    pub shims: Gauge,
    pulls: Counter,
    pull_bytes: Counter,
    pull_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("crisp");
        // 0.5 ms … ~65 s: from a cached ImageStatus to a slow pull.
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 18))
        });
        let calls = Family::<CallLabels, Counter>::default();
        let pods = Family::<StateLabels, Gauge>::default();
        let containers = Family::<StateLabels, Gauge>::default();
        let shims = Gauge::default();
        let pulls = Counter::default();
        let pull_bytes = Counter::default();
        // 10 ms … ~5.5 min.
        let pull_duration = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "cri_request_duration_seconds",
            "CRI call latency by method",
            latency.clone(),
        );
        registry.register(
            "cri_requests",
            "CRI calls by method and gRPC status code",
            calls.clone(),
        );
        registry.register("pods", "Pod sandboxes by state", pods.clone());
        registry.register("containers", "Containers by state", containers.clone());
        registry.register("shims", "Running crisp-shim processes", shims.clone());
        registry.register(
            "image_pulls",
            "Images pulled from registries",
            pulls.clone(),
        );
        registry.register(
            "image_pull_bytes",
            "Compressed size of the images pulled from registries",
            pull_bytes.clone(),
        );
        registry.register(
            "image_pull_duration_seconds",
            "Time to pull an image from its registry",
            pull_duration.clone(),
        );
        Metrics {
            registry,
            latency,
            calls,
            pods,
            containers,
            shims,
            pulls,
            pull_bytes,
            pull_duration,
        }
    }
}

impl Metrics {
    pub fn observe_call(&self, method: &str, code: tonic::Code, took: Duration) {
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .observe(took.as_secs_f64());
        self.calls
            .get_or_create(&CallLabels {
                method: method.to_string(),
                // grpc-go's names, as go-grpc-prometheus's `grpc_code` uses them.
                code: match code {
                    tonic::Code::Ok => "OK".to_string(),
                    other => format!("{other:?}"),
                },
            })
            .inc();
    }

    pub fn observe_pull(&self, bytes: u64, took: Duration) {
        self.pulls.inc();
        self.pull_bytes.inc_by(bytes);
        self.pull_duration.observe(took.as_secs_f64());
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Object counts for the gauges, taken from the runtime at scrape time.
#[derive(Debug, Default)]
pub struct Census {
    pub pods: Vec<(&'static str, i64)>,
    pub containers: Vec<(&'static str, i64)>,
    pub shims: i64,
}

impl Metrics {
    pub fn set_census(&self, c: &Census) {
        self.pods.clear();
        for (state, n) in &c.pods {
            self.pods
                .get_or_create(&StateLabels {
                    state: state.to_string(),
                })
                .set(*n);
        }
        self.containers.clear();
        for (state, n) in &c.containers {
            self.containers
                .get_or_create(&StateLabels {
                    state: state.to_string(),
                })
                .set(*n);
        }
        self.shims.set(c.shims);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_calls_and_gauges() {
        let m = Metrics::default();
        m.observe_call("RunPodSandbox", tonic::Code::Ok, Duration::from_millis(3));
        m.observe_call(
            "RunPodSandbox",
            tonic::Code::InvalidArgument,
            Duration::from_millis(1),
        );
        m.pods
            .get_or_create(&StateLabels {
                state: "ready".into(),
            })
            .set(2);
        let text = m.encode();
        assert!(
            text.contains(
                r#"crisp_cri_requests_total{method="RunPodSandbox",code="InvalidArgument"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"crisp_cri_request_duration_seconds_count{method="RunPodSandbox"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"crisp_pods{state="ready"} 2"#), "{text}");
    }
}
