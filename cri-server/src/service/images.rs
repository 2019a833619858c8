//! Image operations.

use super::Runtime;
use crate::api::images_v1::PullStatus;
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

    /// Pulls an image (see `ImagePulls::pull`).
    pub async fn pull_image(
        self: &Arc<Self>,
        spec: &str,
        creds: &Credentials,
    ) -> Result<ImageRecord> {
        let pulled = self.pulls.pull(spec, creds).await?;
        if let Some((bytes, took)) = pulled.fetched {
            self.metrics.observe_pull(bytes, took);
        }
        Ok(pulled.record)
    }

    /// Snapshots of the pulls of `spec`, for `crisp.images.v1.PullProgress/Watch`.
    pub fn watch_pull(
        &self,
        spec: &str,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<PullStatus>>> {
        self.pulls.watch(spec)
    }

    /// Removes an image (or only one of its tags, when it has several); its layers go when no
    /// other image and no container still uses them.
    pub async fn remove_image(self: &Arc<Self>, spec: &str) -> Result<()> {
        // No pull may be between finding a layer or blob present and recording its image while
        // this decides what is unused and deletes it.
        let _gc = self.pulls.gc.write().await;
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
