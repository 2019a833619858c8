//! The runtime's services: pods, containers and images as operations on typed records. The gRPC
//! layer (`crate::cri`) is a thin translation on top of these.

mod attach;
mod checkpoint;
mod containers;
mod events;
mod exec;
pub use pods::pod_state_to_cri;
mod images;
mod pod_resources;
mod pods;
mod recovery;
mod stats;
pub use stats::{ContainerSample, Interface, PodSample};
pub mod streaming;

use crate::config::Config;
use crate::container::shim_client::Shim;
use crate::container::ContainerRecord;
use crate::error::Result;
use crate::image::pulls::ImagePulls;
use crate::image::ImageStore;
use crate::pod::SandboxRecord;
use crate::store::RecordStore;
use crisp_snapshotter::Snapshotter;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// A container in memory: its record, its shim connection, and an exit signal.
struct ContainerEntry {
    rec: ContainerRecord,
    shim: Option<Shim>,
    /// Flips to `true` when the container has exited.
    exited: watch::Sender<bool>,
    /// Serialises lifecycle operations (start/stop/remove) on this container.
    op: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct Objects {
    pods: HashMap<String, SandboxRecord>,
    /// Pod ids with a lifecycle operation in flight (pod-level lock).
    containers: HashMap<String, ContainerEntry>,
}

pub struct Runtime {
    cfg: Config,
    shim_binary: PathBuf,
    /// What crispd exports to Prometheus (served only when `[metrics] addr` is set).
    pub metrics: Arc<crate::metrics::Metrics>,
    snapshotter: Arc<Snapshotter>,
    images: Arc<ImageStore>,
    /// PullImage, its progress, and the lock between pulls and RemoveImage.
    pulls: Arc<ImagePulls>,
    network: crate::pod::network::Network,
    cpu_samples: stats::CpuSamples,
    events: tokio::sync::broadcast::Sender<crisp_cri_api::v1::ContainerEventResponse>,
    /// Set once at startup, after the runtime exists (the server holds a weak reference back).
    streaming: std::sync::OnceLock<crisp_streaming::Server>,
    pod_store: RecordStore<SandboxRecord>,
    container_store: RecordStore<ContainerRecord>,
    objects: Mutex<Objects>,
    /// Whether pods may have user namespaces (probed once, see `pod::userns::probe`).
    userns_supported: std::sync::OnceLock<bool>,
}

pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

impl Runtime {
    /// Makes every record saved so far, and every pulled layer, durable (at shutdown). The pod
    /// and container stores share the image store's flusher.
    pub fn flush_to_disk(&self) {
        if let Err(e) = self.pulls.flush_to_disk() {
            tracing::warn!(error = %e, "syncing pulled layers");
        }
    }

    /// kubelet's cgroup driver, as configured.
    pub fn cgroup_driver(&self) -> crate::cgroups::driver::CgroupDriver {
        self.cfg.cgroup_driver
    }

    /// Opens the stores under the root dir and re-attaches to what an earlier crispd left.
    pub async fn open(cfg: Config, shim_binary: PathBuf) -> Result<Arc<Runtime>> {
        if cfg.cgroup_driver == crate::cgroups::driver::CgroupDriver::Systemd {
            crate::cgroups::systemd::check_available().map_err(|e| {
                crate::error::Error::FailedPrecondition(format!("cgroup_driver: {e}"))
            })?;
        }
        let flusher = crate::store::Flusher::default();
        tokio::spawn(flusher.clone().run());
        let pulls = Arc::new(ImagePulls::open(&cfg, flusher.clone())?);
        let (snapshotter, images) = (pulls.snapshotter().clone(), pulls.images().clone());
        let mut bin_dirs = cfg.cni.bin_dirs.clone();
        if let Some(dir) = shim_binary.parent() {
            bin_dirs.push(dir.to_path_buf());
        }
        let network = crate::pod::network::Network::new(crisp_cni::runtime::CniConfig {
            conf_dir: cfg.cni.conf_dir.clone(),
            bin_dirs,
            cache_dir: cfg.root.join("cni"),
        });
        let rt = Arc::new(Runtime {
            metrics: Arc::default(),
            network,
            cpu_samples: stats::CpuSamples::default(),
            events: events::channel(),
            streaming: std::sync::OnceLock::new(),
            pod_store: RecordStore::open(cfg.root.join("pods"), flusher.clone())?,
            container_store: RecordStore::open(cfg.root.join("containers"), flusher)?,
            cfg,
            shim_binary,
            snapshotter,
            images,
            pulls,
            objects: Mutex::new(Objects::default()),
            userns_supported: std::sync::OnceLock::new(),
        });
        rt.recover().await?;
        let s = rt.snapshotter.clone();
        match tokio::task::spawn_blocking(move || s.probe_overlay()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "overlay probe mount failed: containers cannot start")
            }
            Err(e) => tracing::warn!(error = %e, "overlay probe task"),
        }
        let r = rt.clone();
        tokio::task::spawn_blocking(move || r.user_namespaces_supported())
            .await
            .map_err(|e| crate::error::Error::internal("probing user namespaces", e))?;
        rt.pulls.scan_import_dir().await?;
        Ok(rt)
    }

    /// Starts the exec/port-forward server; the URLs of Exec and PortForward point at it.
    pub async fn start_streaming(self: &Arc<Self>) -> Result<std::net::SocketAddr> {
        let server = crisp_streaming::Server::start(
            crisp_streaming::Config {
                addr: self.cfg.streaming.addr,
                ..Default::default()
            },
            Arc::new(streaming::StreamRuntime(Arc::downgrade(self))),
        )
        .await
        .map_err(|e| crate::error::Error::internal("starting the streaming server", e))?;
        let addr = server.local_addr();
        let _ = self.streaming.set(server);
        Ok(addr)
    }

    pub fn streaming(&self) -> Result<&crisp_streaming::Server> {
        self.streaming.get().ok_or_else(|| {
            crate::error::Error::FailedPrecondition("the streaming server is not running".into())
        })
    }

    /// Whether pods can have their own user namespace here (for RunPodSandbox and the runtime
    /// handler features). The first call probes the kernel (a few milliseconds).
    pub fn user_namespaces_supported(&self) -> bool {
        *self.userns_supported.get_or_init(|| {
            crate::pod::userns::probe(
                &self.shim_binary,
                &self.cfg.state.join("userns-probe"),
                &self.cfg.root,
            )
        })
    }

    /// kubelet's pod CIDR for the embedded network (see `Network::set_pod_cidr`).
    pub fn set_pod_cidr(&self, cidrs: &str) -> Result<()> {
        self.network.set_pod_cidr(cidrs)
    }

    /// `Ok` when pods can get a network; the reason otherwise.
    pub fn network_ready(&self) -> std::result::Result<(), String> {
        self.network.ready()
    }

    /// Pods and containers by state, and live shims, for the metrics gauges.
    pub fn census(&self) -> crate::metrics::Census {
        use crate::container::ContainerState as C;
        use crate::pod::SandboxState as P;
        let objs = self.objects();
        let count_pods = |s: P| objs.pods.values().filter(|p| p.state == s).count() as i64;
        let count_containers = |s: C| {
            objs.containers
                .values()
                .filter(|c| c.rec.state == s)
                .count() as i64
        };
        crate::metrics::Census {
            pods: vec![
                ("creating", count_pods(P::Creating)),
                ("ready", count_pods(P::Ready)),
                ("notready", count_pods(P::NotReady)),
            ],
            containers: vec![
                ("creating", count_containers(C::Creating)),
                ("created", count_containers(C::Created)),
                ("running", count_containers(C::Running)),
                ("exited", count_containers(C::Exited)),
            ],
            shims: objs
                .containers
                .values()
                .filter(|c| c.shim.is_some())
                .count() as i64,
        }
    }

    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pod_dir(&self, id: &str) -> PathBuf {
        self.cfg.state.join("pods").join(id)
    }

    /// The OCI config a container was created with (its bundle's config.json), for verbose
    /// status; `None` once the bundle is gone.
    pub fn container_spec(&self, id: &str) -> Option<serde_json::Value> {
        let path = self.shim_dir(id).bundle().join("config.json");
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    fn shim_dir(&self, id: &str) -> crisp_api::ShimDir {
        crisp_api::ShimDir::under_state(&self.cfg.state, id)
    }
}
