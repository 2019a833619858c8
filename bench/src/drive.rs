//! The measurements: identical CRI request sequences against any CRI socket.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use crisp_client::cri::{ExecSyncRequest, ImageSpec, ImageStatusRequest};
use crisp_client::{connect, container_config, pod_config, CriClient};
use serde::Serialize;

use crate::procs;

/// How many clients the throughput phase runs at once.
pub const CONCURRENCY: usize = 10;
/// The pause before each timed ExecSync (see phase 3 of [`run`]).
const PROBE_GAP: Duration = Duration::from_millis(200);

/// One runtime under test.
pub struct Target<'a> {
    pub name: &'a str,
    pub socket: PathBuf,
    pub image: &'a str,
    /// Pod log directories go below this.
    pub log_dir: PathBuf,
    pub daemon_pid: i32,
    /// Basename of the shim binary whose processes are counted.
    pub shim_name: &'a str,
    /// A string the shims' command lines contain (the run's temp dir).
    pub shim_marker: &'a str,
}

/// What one runtime measured: the pod phases and the pull phase, each unless skipped.
/// Flattened, so bench.json keeps one flat object per runtime.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    #[serde(flatten)]
    pub pods: Option<PodMetrics>,
    #[serde(flatten)]
    pub pull: Option<crate::pull::PullMetrics>,
    /// Median ms per CRI call (the per-call phase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<crate::calls::CallMetrics>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PodMetrics {
    pub start_p50_ms: f64,
    pub start_p99_ms: f64,
    pub pods_per_s: f64,
    pub exec_p50_ms: f64,
    pub exec_p99_ms: f64,
    pub stop_remove_p50_ms: f64,
    pub daemon_rss_mib: f64,
    pub shim_count: usize,
    pub shim_rss_mib: f64,
    pub shim_rss_per_pod_mib: f64,
    /// Proportional set size of the shims, per pod (shared binary pages counted once).
    pub shim_pss_per_pod_mib: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of unsorted samples.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A started pod: its sandbox and its one container.
struct Pod {
    id: String,
    container: String,
}

async fn start_pod(client: &mut CriClient, target: &Target<'_>, name: &str) -> anyhow::Result<Pod> {
    let log_dir = target.log_dir.join(name);
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let pod = pod_config(name, "bench", &format!("uid-{name}"), &log_dir);
    let id = client
        .run_pod(&pod)
        .await
        .with_context(|| format!("{}: RunPodSandbox {name}", target.name))?;
    let container = container_config("sleep", target.image, &["sleep", "3600"], "sleep.log");
    let container = client
        .create_container(&id, container, &pod)
        .await
        .with_context(|| format!("{}: CreateContainer in {name}", target.name))?;
    client
        .start_container(&container)
        .await
        .with_context(|| format!("{}: StartContainer in {name}", target.name))?;
    Ok(Pod { id, container })
}

/// Checks that the image is present without pulling over the network:
/// crisp resolves a pull from its local import, containerd is only asked.
pub async fn ensure_image(target: &Target<'_>, pull: bool) -> anyhow::Result<()> {
    let mut client = connect(&target.socket).await?;
    if pull {
        client
            .pull(target.image)
            .await
            .with_context(|| format!("{}: PullImage {}", target.name, target.image))?;
    }
    let status = client
        .image
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: target.image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .with_context(|| format!("{}: ImageStatus {}", target.name, target.image))?
        .into_inner();
    if status.image.is_none() {
        anyhow::bail!("{}: image {} is not present", target.name, target.image);
    }
    Ok(())
}

/// Writes every dirty page back and lets the disk go quiet, so that no runtime's timings pay
/// for the write-back of what ran before (the other runtime's pulls, earlier phases): with
/// hundreds of MB dirty, every journal commit on the same file system waits behind it.
///
/// It also lets deletions age (the pull rounds delete the same thousands of files). ext4 does
/// not reuse an inode deleted in the last 5 s (300 s more while its inode table block is
/// dirty) and, without a journal (as on the machine the figures come from), scans past every
/// such inode on each create: a pull right after the deletions spends most of its time in that
/// scan (`recently_deleted` in perf), the benchmark's churn, not the runtime's. So: write
/// everything back, then wait out the 5 s.
pub async fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    tokio::task::spawn_blocking(|| unsafe { libc::sync() })
        .await
        .ok();
    tokio::time::sleep(Duration::from_secs(6)).await;
}

pub async fn run(target: &Target<'_>, pods: usize) -> anyhow::Result<PodMetrics> {
    settle().await;
    let mut client = connect(&target.socket).await?;
    let tag = &target.name[..1];

    // 1. Sequential start latency; the pods stay up for the next phases.
    eprintln!("[{}] starting {pods} pods sequentially", target.name);
    let mut started = Vec::with_capacity(pods);
    let mut start_ms = Vec::with_capacity(pods);
    for i in 0..pods {
        let begin = Instant::now();
        let pod = start_pod(&mut client, target, &format!("seq-{tag}-{i}")).await?;
        start_ms.push(ms(begin.elapsed()));
        started.push(pod);
    }

    // 2. Memory with all pods running (give daemons a moment to settle).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let daemon_rss = procs::rss_kib(target.daemon_pid).unwrap_or(0);
    let shims = procs::find(target.shim_name, target.shim_marker);
    let shim_rss: u64 = shims.iter().filter_map(|&p| procs::rss_kib(p)).sum();
    let shim_pss: u64 = shims.iter().filter_map(|&p| procs::pss_kib(p)).sum();
    eprintln!(
        "[{}] daemon RSS {} KiB, {} shim processes with {} KiB in total",
        target.name,
        daemon_rss,
        shims.len(),
        shim_rss
    );

    // 3. ExecSync latency, round-robin over the running containers, spaced like probes
    // (kubelet's come every few seconds, never back to back). Back-to-back calls would hide
    // costs that a real probe pays: the kernel keeps cgroup migration cheap for a grace
    // period after the last one, so only the first of a burst pays for the RCU grace period.
    eprintln!("[{}] {pods} x ExecSync true", target.name);
    let mut exec_ms = Vec::with_capacity(pods);
    for i in 0..pods {
        let container = &started[i % started.len()].container;
        tokio::time::sleep(PROBE_GAP).await;
        let begin = Instant::now();
        let response = client
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: container.clone(),
                cmd: vec!["true".to_string()],
                timeout: 10,
            })
            .await
            .with_context(|| format!("{}: ExecSync", target.name))?
            .into_inner();
        exec_ms.push(ms(begin.elapsed()));
        if response.exit_code != 0 {
            anyhow::bail!(
                "{}: ExecSync true exited {}: {}",
                target.name,
                response.exit_code,
                String::from_utf8_lossy(&response.stderr)
            );
        }
    }

    // 4. Stop + remove latency.
    eprintln!("[{}] stopping and removing {pods} pods", target.name);
    let mut stop_ms = Vec::with_capacity(pods);
    for pod in &started {
        let begin = Instant::now();
        client
            .stop_and_remove_pod(&pod.id)
            .await
            .with_context(|| format!("{}: stop+remove", target.name))?;
        stop_ms.push(ms(begin.elapsed()));
    }

    // 5. Throughput: CONCURRENCY clients, each on its own connection.
    eprintln!(
        "[{}] starting {pods} pods from {CONCURRENCY} concurrent clients",
        target.name
    );
    let mut clients = Vec::new();
    for _ in 0..CONCURRENCY {
        clients.push(connect(&target.socket).await?);
    }
    let begin = Instant::now();
    let lanes = clients
        .iter_mut()
        .enumerate()
        .map(|(k, client)| async move {
            let mut out = Vec::new();
            let mut i = k;
            while i < pods {
                let name = format!("par-{tag}-{i}");
                out.push(start_pod(client, target, &name).await.map(|pod| pod.id));
                i += CONCURRENCY;
            }
            out
        })
        .collect();
    let results: Vec<anyhow::Result<String>> =
        join_all(lanes).await.into_iter().flatten().collect();
    let elapsed = begin.elapsed();
    let mut ids = Vec::new();
    let mut first_error = None;
    for result in results {
        match result {
            Ok(id) => ids.push(id),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // Untimed teardown of the throughput pods.
    for id in &ids {
        client.stop_and_remove_pod(id).await?;
    }
    if let Some(e) = first_error {
        return Err(e);
    }

    Ok(PodMetrics {
        start_p50_ms: percentile(&start_ms, 50.0),
        start_p99_ms: percentile(&start_ms, 99.0),
        pods_per_s: pods as f64 / elapsed.as_secs_f64(),
        exec_p50_ms: percentile(&exec_ms, 50.0),
        exec_p99_ms: percentile(&exec_ms, 99.0),
        stop_remove_p50_ms: percentile(&stop_ms, 50.0),
        daemon_rss_mib: daemon_rss as f64 / 1024.0,
        shim_count: shims.len(),
        shim_rss_mib: shim_rss as f64 / 1024.0,
        shim_rss_per_pod_mib: shim_rss as f64 / 1024.0 / pods.max(1) as f64,
        shim_pss_per_pod_mib: shim_pss as f64 / 1024.0 / pods.max(1) as f64,
    })
}

/// A minimal join_all for futures on the current task (no extra crate).
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::pin::Pin;
    use std::task::Poll;

    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(outputs.iter_mut().map(|o| o.take().unwrap()).collect())
        }
    })
    .await
}

/// Removes every pod the runtime at `socket` knows of (best effort, bounded).
pub async fn remove_all_pods(socket: &Path) {
    let attempt = async {
        let mut client = connect(socket).await.ok()?;
        let pods = client
            .runtime
            .list_pod_sandbox(crisp_client::cri::ListPodSandboxRequest { filter: None })
            .await
            .ok()?
            .into_inner()
            .items;
        for pod in pods {
            let _ = client.stop_and_remove_pod(&pod.id).await;
        }
        Some(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), attempt).await;
}
