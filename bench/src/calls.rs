//! The per-call phase: each CRI call timed on its own, one at a time, so a call that is slower
//! than containerd's shows even where a whole lifecycle is faster. A small image (busybox plus
//! one ~1 MiB layer) is pulled from a local registry and removed, over and over; pods are run,
//! inspected, stopped and removed; containers are created, started, inspected, stopped and
//! removed in one pod. Medians per call, for the table next to the phase figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use crisp_client::cri::{
    ImageSpec, PodSandboxStatusRequest, RemoveContainerRequest, RemoveImageRequest,
    RemovePodSandboxRequest, StopContainerRequest, StopPodSandboxRequest,
};
use crisp_client::{connect, container_config, pod_config, CriClient};
use crisp_tests::{layered_image, pseudo_random, Entry, TestRegistry};

use crate::drive::{percentile, settle, Target};

const REPO_TAG: &str = "bench/small:v1";

/// The calls, in the order the table shows them.
pub const CALLS: &[&str] = &[
    "PullImage (small image)",
    "RemoveImage",
    "RunPodSandbox",
    "PodSandboxStatus",
    "StopPodSandbox",
    "RemovePodSandbox",
    "pod lifecycle (run, status, stop, remove)",
    "CreateContainer",
    "StartContainer",
    "ContainerStatus",
    "StopContainer",
    "RemoveContainer",
    "container lifecycle (create, start, status, stop, remove)",
];

/// Median milliseconds per call name.
pub type CallMetrics = BTreeMap<String, f64>;

/// The registry with the small image, and a hosts dir that sends its name there over HTTP.
pub struct CallsSetup {
    _registry: TestRegistry,
    pub image: String,
    pub hosts_dir: PathBuf,
}

impl CallsSetup {
    pub fn start(dir: &Path) -> anyhow::Result<CallsSetup> {
        let layout = dir.join("images/small");
        let files: Vec<(String, Vec<u8>)> = (0..16)
            .map(|i| {
                (
                    format!("app/bin/tool{i}"),
                    pseudo_random(i, 64 * 1024, false),
                )
            })
            .collect();
        let layer: Vec<Entry> = files
            .iter()
            .map(|(p, d)| Entry::File(p.as_str(), d.as_slice()))
            .collect();
        layered_image(&layout, "v1", &[layer]).context("building the small image")?;
        let registry = TestRegistry::start().context("starting docker-registry")?;
        registry
            .push(&format!("oci:{}:v1", layout.display()), REPO_TAG, &[])
            .context("pushing the small image")?;
        let hosts_dir = crate::pull::hosts_dir_for(&registry, &dir.join("certs.d-calls"))?;
        Ok(CallsSetup {
            image: format!("{}/{REPO_TAG}", registry.host()),
            _registry: registry,
            hosts_dir,
        })
    }
}

/// Samples per call name.
#[derive(Default)]
struct Samples(BTreeMap<&'static str, Vec<f64>>);

impl Samples {
    /// Runs `call` and keeps its time under `name`.
    async fn time<T, F: std::future::Future<Output = anyhow::Result<T>>>(
        &mut self,
        name: &'static str,
        call: F,
    ) -> anyhow::Result<(T, f64)> {
        let begin = Instant::now();
        let out = call.await.with_context(|| name.to_string())?;
        let ms = begin.elapsed().as_secs_f64() * 1000.0;
        self.0.entry(name).or_default().push(ms);
        Ok((out, ms))
    }

    fn add(&mut self, name: &'static str, ms: f64) {
        self.0.entry(name).or_default().push(ms);
    }

    fn medians(self) -> CallMetrics {
        self.0
            .into_iter()
            .map(|(k, v)| (k.to_string(), percentile(&v, 50.0)))
            .collect()
    }
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

pub async fn run(target: &Target<'_>, setup: &CallsSetup, n: usize) -> anyhow::Result<CallMetrics> {
    settle().await;
    let mut c = connect(&target.socket).await?;
    let mut s = Samples::default();
    let name = target.name;

    eprintln!("[{name}] {n} x PullImage + RemoveImage of {}", setup.image);
    for _ in 0..n {
        s.time(CALLS[0], async { Ok(c.pull(&setup.image).await?) })
            .await?;
        s.time(CALLS[1], async {
            Ok(c.image
                .remove_image(RemoveImageRequest {
                    image: spec(&setup.image),
                })
                .await?)
        })
        .await?;
    }

    eprintln!("[{name}] {n} x pod lifecycle");
    for i in 0..n {
        let (id, run_ms) = s
            .time(CALLS[2], run_pod(&mut c, target, &format!("calls-pod-{i}")))
            .await?;
        let (_, status_ms) = s
            .time(CALLS[3], async {
                Ok(c.runtime
                    .pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: id.clone(),
                        verbose: false,
                    })
                    .await?)
            })
            .await?;
        let (_, stop_ms) = s
            .time(CALLS[4], async {
                Ok(c.runtime
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await?)
            })
            .await?;
        let (_, remove_ms) = s
            .time(CALLS[5], async {
                Ok(c.runtime
                    .remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await?)
            })
            .await?;
        s.add(CALLS[6], run_ms + status_ms + stop_ms + remove_ms);
    }

    eprintln!("[{name}] {n} x container lifecycle in one pod");
    let pod_name = "calls-containers";
    let log_dir = target.log_dir.join(pod_name);
    std::fs::create_dir_all(&log_dir)?;
    let pod = pod_config(pod_name, "bench", "uid-calls-containers", &log_dir);
    let pod_id = c.run_pod(&pod).await.context("RunPodSandbox")?;
    for i in 0..n {
        let mut config = container_config(
            &format!("c{i}"),
            target.image,
            &["sleep", "3600"],
            &format!("c{i}.log"),
        );
        config.metadata = config.metadata.map(|mut m| {
            m.attempt = i as u32;
            m
        });
        let (id, create_ms) = s
            .time(CALLS[7], async {
                Ok(c.create_container(&pod_id, config, &pod).await?)
            })
            .await?;
        let (_, start_ms) = s
            .time(CALLS[8], async { Ok(c.start_container(&id).await?) })
            .await?;
        let (_, status_ms) = s
            .time(CALLS[9], async { Ok(c.container_status(&id).await?) })
            .await?;
        // No grace period: `sleep` as PID 1 ignores SIGTERM, and a wait would time that, not
        // the runtime.
        let (_, stop_ms) = s
            .time(CALLS[10], async {
                Ok(c.runtime
                    .stop_container(StopContainerRequest {
                        container_id: id.clone(),
                        timeout: 0,
                    })
                    .await?)
            })
            .await?;
        let (_, remove_ms) = s
            .time(CALLS[11], async {
                Ok(c.runtime
                    .remove_container(RemoveContainerRequest {
                        container_id: id.clone(),
                    })
                    .await?)
            })
            .await?;
        s.add(
            CALLS[12],
            create_ms + start_ms + status_ms + stop_ms + remove_ms,
        );
    }
    c.stop_and_remove_pod(&pod_id).await?;
    Ok(s.medians())
}

async fn run_pod(c: &mut CriClient, target: &Target<'_>, name: &str) -> anyhow::Result<String> {
    let log_dir = target.log_dir.join(name);
    std::fs::create_dir_all(&log_dir)?;
    let pod = pod_config(name, "bench", &format!("uid-{name}"), &log_dir);
    Ok(c.run_pod(&pod).await?)
}

/// The per-call table: median per call on each runtime and crisp's ratio.
pub fn table(crisp: Option<&CallMetrics>, containerd: Option<&CallMetrics>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<58} {:>10} {:>12} {:>7}",
        "CRI call (median, one at a time)", "crisp ms", "containerd ms", "ratio"
    );
    for name in CALLS {
        let a = crisp.and_then(|m| m.get(*name)).copied();
        let b = containerd.and_then(|m| m.get(*name)).copied();
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let ratio = match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        let _ = writeln!(out, "{name:<58} {:>10} {:>12} {ratio:>7}", cell(a), cell(b));
    }
    out
}
