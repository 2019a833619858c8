//! PullImage around the registry pull: what is present, the import dir, the registry, the
//! image record, and the pull's progress for watchers. crispd's image service and
//! `crispd images pull` without a running crispd both pull through this.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crisp_snapshotter::Snapshotter;
use futures_util::stream::BoxStream;

use super::import_dir::ImportDir;
use super::pull::auth::Credentials;
use super::pull::hosts::Hosts;
use super::pull::progress::Progress;
use super::pull::Puller;
use super::reference::Reference;
use super::{ImageRecord, ImageStore};
use crate::api::images_v1::PullStatus;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::Flusher;

pub struct ImagePulls {
    snapshotter: Arc<Snapshotter>,
    images: Arc<ImageStore>,
    import_dir: Arc<ImportDir>,
    puller: Arc<Puller>,
    /// Pulls hold it shared, RemoveImage's deletion of layers and blobs exclusively.
    pub gc: tokio::sync::RwLock<()>,
    layer_sync: LayerSync,
    /// Batches the records' fsyncs (shared with every other record store of the process).
    flusher: Flusher,
}

/// How long after the last pull its layers are written back.
///
/// The kernel writes dirty pages back on its own after 30 s (`vm.dirty_expire_centisecs`), so
/// a sync this much later finds little left to write. Syncing at once made a pull's hundreds
/// of MB of unpacked files one big write-back that every fsync meanwhile waited behind: the
/// next pull's blobs, crispd's records (an image sharing the first one's base took 5x
/// containerd's time). A crash before the sync loses the pull: its layers are dropped at the
/// next start and kubelet pulls again.
const LAYER_SYNC_DELAY: Duration = Duration::from_secs(35);

/// Runs `Snapshotter::sync_pending` [`LAYER_SYNC_DELAY`] after the last request (a task on the
/// caller's async runtime; the CLI's direct pull syncs itself before its runtime ends).
struct LayerSync {
    wake: Arc<tokio::sync::Notify>,
}

impl LayerSync {
    fn start(snapshotter: Arc<Snapshotter>) -> LayerSync {
        let wake = Arc::new(tokio::sync::Notify::new());
        let requests = wake.clone();
        tokio::spawn(async move {
            loop {
                requests.notified().await;
                // Each later pull restarts the wait: the sync comes after the last one.
                while tokio::time::timeout(LAYER_SYNC_DELAY, requests.notified())
                    .await
                    .is_ok()
                {}
                let snap = snapshotter.clone();
                match tokio::task::spawn_blocking(move || snap.sync_pending()).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "syncing pulled layers"),
                    Err(e) => tracing::warn!(error = %e, "layer sync task"),
                    Ok(Ok(_)) => {}
                }
            }
        });
        LayerSync { wake }
    }

    fn request(&self) {
        self.wake.notify_one();
    }
}

/// A pull's image, and what it fetched.
pub struct Pulled {
    pub record: ImageRecord,
    /// The image's size and how long the registry pull took, when it came from a registry.
    pub fetched: Option<(u64, Duration)>,
}

impl ImagePulls {
    /// Opens the content store, the layers and the image records under `cfg.root` (records
    /// fsynced through `flusher`). Layers a crash took (see `Snapshotter::open`) take their
    /// images with them: kubelet pulls them again.
    pub fn open(cfg: &Config, flusher: Flusher) -> Result<ImagePulls> {
        let snapshotter = Arc::new(
            Snapshotter::open(&cfg.root)
                .map_err(|e| Error::internal("opening the snapshotter", e))?,
        );
        let images = Arc::new(ImageStore::open(cfg.root.join("images"), flusher.clone())?);
        let snapshotter_for_sync = snapshotter.clone();
        for img in images.list() {
            let missing = img.chain_ids.iter().find(|c| {
                crisp_snapshotter::Digest::parse(c).map_or(true, |d| !snapshotter.is_committed(&d))
            });
            if let Some(layer) = missing {
                tracing::warn!(image = %img.id, %layer, "image lost a layer in a crash: removed");
                images.remove(&img.id)?;
            }
        }
        let puller = Arc::new(Puller::new(
            snapshotter.clone(),
            Hosts::new(cfg.registry.config_path.clone()),
            cfg.registry.auths.clone(),
        ));
        Ok(ImagePulls {
            snapshotter,
            images,
            import_dir: Arc::new(ImportDir::new(cfg.import_dir())),
            puller,
            gc: tokio::sync::RwLock::new(()),
            layer_sync: LayerSync::start(snapshotter_for_sync),
            flusher,
        })
    }

    /// Makes every record saved through the flusher so far (the images' and those of the stores
    /// sharing it) and every pulled layer durable now, instead of when the background syncs
    /// would: at crispd's shutdown, and at the end of `crispd images pull`.
    pub fn flush_to_disk(&self) -> crisp_snapshotter::Result<()> {
        self.flusher.flush_now();
        self.snapshotter.sync_pending().map(drop)
    }

    pub fn snapshotter(&self) -> &Arc<Snapshotter> {
        &self.snapshotter
    }

    pub fn images(&self) -> &Arc<ImageStore> {
        &self.images
    }

    pub fn progress(&self) -> &Arc<Progress> {
        self.puller.progress()
    }

    /// Imports what is new in the import dir (blocking work, off the async threads).
    pub async fn scan_import_dir(&self) -> Result<usize> {
        let (dir, snap, images) = (
            self.import_dir.clone(),
            self.snapshotter.clone(),
            self.images.clone(),
        );
        tokio::task::spawn_blocking(move || dir.scan(&snap, &images))
            .await
            .map_err(|e| Error::internal("import task", e))
    }

    /// Snapshots of the pulls of `spec` (see [`Progress::watch`]).
    pub fn watch(&self, spec: &str) -> Result<BoxStream<'static, Result<PullStatus>>> {
        Ok(self.progress().watch(&Reference::parse(spec)?))
    }

    /// Pulls an image. Order:
    /// 1. a digest reference already present is the answer (its content cannot change);
    /// 2. the import directory (new files are imported): an image an admin dropped on the
    ///    node is used without touching the network, which keeps air-gapped nodes fast;
    /// 3. the registry (mirrors from hosts.toml first). For a tag already present, an unreachable
    ///    registry falls back to the local image, so kubelet's `Always` policy follows a moved
    ///    tag when the registry is up and keeps working when it is not.
    pub async fn pull(&self, spec: &str, creds: &Credentials) -> Result<Pulled> {
        let reference = Reference::parse(spec)?;
        let tracking = self.progress().begin(&reference);
        let result = self.pull_tracked(spec, &reference, creds, &tracking).await;
        tracking.finish(result.as_ref().map(|p| p.record.id.as_str()));
        result
    }

    async fn pull_tracked(
        &self,
        spec: &str,
        reference: &Reference,
        creds: &Credentials,
        tracking: &super::pull::progress::Tracking,
    ) -> Result<Pulled> {
        let local = |record| Pulled {
            record,
            fetched: None,
        };
        let present = self.images.find(spec);
        if let (Some(img), Some(_)) = (&present, &reference.digest) {
            return Ok(local(img.clone()));
        }
        // Layers and blobs this pull finds present stay so until it has recorded its image.
        let _pulling = self.gc.read().await;
        if present.is_none() {
            self.scan_import_dir().await?;
            if let Some(img) = self.images.find(spec) {
                return Ok(local(img));
            }
        }
        let started = Instant::now();
        match self.puller.pull(reference, creds, tracking).await {
            Ok(pulled) => {
                let rec = self.images.add(&pulled, std::slice::from_ref(reference))?;
                // The layers' write-back happens well after the pull returns (see
                // `LayerSync`); a crash before it drops them at the next start.
                self.layer_sync.request();
                tracing::info!(
                    image = %rec.id,
                    repo_digest = %pulled.repo_digest,
                    layers = pulled.chain_ids.len(),
                    bytes = pulled.size,
                    ms = started.elapsed().as_millis() as u64,
                    "pulled image"
                );
                Ok(Pulled {
                    record: rec,
                    fetched: Some((pulled.size, started.elapsed())),
                })
            }
            // Only an unreachable registry falls back: an auth failure must fail, or a pod
            // without the pull secret could use a private image another pod pulled.
            Err(e @ Error::Unavailable(_)) => match present {
                Some(img) => {
                    tracing::warn!(image = %img.id, error = %e, "registry unreachable or refused; using the local image");
                    Ok(local(img))
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}
