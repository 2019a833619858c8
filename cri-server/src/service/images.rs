//! Image operations.

use super::Runtime;
use crate::container::ContainerState;
use crate::error::{Error, Result};
use crate::image::pull::auth::Credentials;
use crate::image::reference::Reference;
use crate::image::ImageRecord;
use std::collections::HashSet;
use std::sync::Arc;

impl Runtime {
    pub fn list_images(&self) -> Vec<ImageRecord> {
        self.images.list()
    }

    pub fn image_status(&self, spec: &str) -> Option<ImageRecord> {
        self.images.find(spec)
    }

    /// Pulls an image. Order:
    /// 1. a digest reference already present is the answer (its content cannot change);
    /// 2. the import directory (new files are imported): an image an admin dropped on the
    ///    node is used without touching the network, which keeps air-gapped nodes fast;
    /// 3. the registry (mirrors from hosts.toml first). For a tag already present, an unreachable
    ///    registry falls back to the local image, so kubelet's `Always` policy follows a moved
    ///    tag when the registry is up and keeps working when it is not.
    pub async fn pull_image(
        self: &Arc<Self>,
        spec: &str,
        creds: &Credentials,
    ) -> Result<ImageRecord> {
        let reference = Reference::parse(spec)?;
        let present = self.images.find(spec);
        if let (Some(img), Some(_)) = (&present, &reference.digest) {
            return Ok(img.clone());
        }
        // Layers and blobs this pull finds present stay so until it has recorded its image.
        let _pulling = self.image_gc.read().await;
        if present.is_none() {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.import_dir.scan(&me.snapshotter, &me.images))
                .await
                .map_err(|e| Error::internal("import task", e))?;
            if let Some(img) = self.images.find(spec) {
                return Ok(img);
            }
        }
        let started = std::time::Instant::now();
        match self.puller.pull(&reference, creds).await {
            Ok(pulled) => {
                self.metrics.observe_pull(pulled.size, started.elapsed());
                let rec = self.images.add(&pulled, std::slice::from_ref(&reference))?;
                // The layers' write-back happens after the pull returns (see
                // `Snapshotter::sync_pending`); a crash before it drops them at the next start.
                let snap = self.snapshotter.clone();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = snap.sync_pending() {
                        tracing::warn!(error = %e, "syncing pulled layers");
                    }
                });
                tracing::info!(
                    image = %rec.id,
                    repo_digest = %pulled.repo_digest,
                    layers = pulled.chain_ids.len(),
                    bytes = pulled.size,
                    ms = started.elapsed().as_millis() as u64,
                    "pulled image"
                );
                Ok(rec)
            }
            // Only an unreachable registry falls back: an auth failure must fail, or a pod
            // without the pull secret could use a private image another pod pulled.
            Err(e @ Error::Unavailable(_)) => match present {
                Some(img) => {
                    tracing::warn!(image = %img.id, error = %e, "registry unreachable or refused; using the local image");
                    Ok(img)
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Removes an image (or only one of its tags, when it has several); its layers go when no
    /// other image and no container still uses them.
    pub async fn remove_image(self: &Arc<Self>, spec: &str) -> Result<()> {
        // No pull may be between finding a layer or blob present and recording its image while
        // this decides what is unused and deletes it.
        let _gc = self.image_gc.write().await;
        let Some(img) = self.images.find(spec) else {
            return Ok(());
        };
        if let Ok(r) = Reference::parse(spec) {
            if let Some(tag) = r
                .tagged()
                .filter(|t| img.repo_tags.contains(t) && img.repo_tags.len() > 1)
            {
                return self.images.untag(&img.id, &tag);
            }
        }
        let in_use: HashSet<String> = self
            .objects()
            .containers
            .values()
            .filter(|c| c.rec.state != ContainerState::Exited || c.rec.image_id == img.id)
            .flat_map(|c| {
                // Its image, and those of its image volumes (mounted from the layers).
                let volumes = c
                    .rec
                    .config
                    .mounts
                    .iter()
                    .filter_map(crate::container::image_volumes::image_of)
                    .filter_map(|i| self.images.find(i));
                self.images
                    .get(&c.rec.image_id)
                    .ok()
                    .into_iter()
                    .chain(volumes)
            })
            .chain(self.images.list().into_iter().filter(|i| i.id != img.id))
            .flat_map(|i| i.chain_ids)
            .collect();
        self.images.remove(&img.id)?;
        let unused: Vec<String> = img
            .chain_ids
            .into_iter()
            .filter(|c| !in_use.contains(c))
            .collect();
        // Blobs go when no image left holds them (a container runs from the layers, not
        // the blobs).
        let held: HashSet<String> = self
            .images
            .list()
            .into_iter()
            .flat_map(|i| i.blobs)
            .collect();
        let unheld: Vec<String> = img
            .blobs
            .into_iter()
            .filter(|b| !held.contains(b))
            .collect();
        let snapshotter = self.snapshotter.clone();
        tokio::task::spawn_blocking(move || {
            for c in unused {
                if let Ok(d) = crisp_snapshotter::digest::Digest::parse(&c) {
                    if let Err(e) = snapshotter.remove_committed(&d) {
                        tracing::warn!(layer = %c, error = %e, "removing layer");
                    }
                }
            }
            for b in unheld {
                if let Ok(d) = crisp_snapshotter::digest::Digest::parse(&b) {
                    if let Err(e) = snapshotter.content().remove(&d) {
                        tracing::warn!(blob = %b, error = %e, "removing blob");
                    }
                }
            }
        })
        .await
        .map_err(|e| Error::internal("layer removal task", e))?;
        Ok(())
    }

    /// Bytes and inodes of the image layers.
    pub async fn image_fs_usage(&self) -> (std::path::PathBuf, u64, u64) {
        let snapshotter = self.snapshotter.clone();
        let u = tokio::task::spawn_blocking(move || snapshotter.committed_usage())
            .await
            .unwrap_or_default();
        (self.cfg.root.join("snapshots"), u.bytes, u.inodes)
    }
}
