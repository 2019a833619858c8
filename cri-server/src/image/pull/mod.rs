//! Image pulls over the OCI distribution API.
//!
//! A pull resolves the reference to a manifest or index (keeping the index digest as the repo
//! digest, which kubelet matches on), picks the linux/amd64 manifest with the same code as
//! import, stores the config, then downloads the layers in parallel (at most
//! [`PARALLEL_DOWNLOADS`] per pull) straight into the content store, unpacks each into its
//! own staging dir as soon as it is in (a layer's files do not depend on the layers below),
//! and commits them bottom to top. Blob downloads and layer unpacks are keyed by
//! digest / chain id across all pulls, so two pulls sharing layers do the work once.
//!
//! Atomicity: blobs become visible only after digest and size verification, layers only after
//! a complete unpack (both by rename), and the caller records the image only once every layer
//! is committed. A failed pull leaves at most verified blobs and complete layers (reused by
//! the retry), never a partial file or an image record.
//!
//! Progress: each pull reports to its [`progress::Tracking`] (layers, bytes, states) for
//! watchers; see `progress.rs`.

pub mod auth;
mod clients;
pub mod hosts;
mod inflight;
mod ingest;
pub mod progress;
mod registry;
mod token;

use std::collections::BTreeMap;
use std::sync::Arc;

use crisp_snapshotter::image::parse_config;
use crisp_snapshotter::manifest::{
    is_index, is_manifest, media_type, require_platform, Document, LayerDesc, ManifestParts,
    PlatformSpec, MAX_INDEX_DEPTH, MAX_JSON,
};
use crisp_snapshotter::{chain_id, Digest, ImportedImage, Snapshotter, StagedLayer};
use oci_spec::image::ImageManifest;
use tokio::sync::{OwnedMutexGuard, Semaphore};
use tracing::Instrument;

use self::auth::Credentials;
use self::hosts::Hosts;
use self::inflight::KeyedLocks;
use self::progress::{LayerProgress, Progress, Tracking};
use self::registry::Session;
use super::reference::Reference;
use crate::api::images_v1::LayerState;
use crate::config::RegistryAuthConfig;
use crate::error::{Error, Result};

/// Layers downloading at once per pull: enough to fill a link, few enough not to starve the
/// first layer (which unpacking waits for) or trip registry rate limits.
pub const PARALLEL_DOWNLOADS: usize = 3;

pub struct Puller {
    snapshotter: Arc<Snapshotter>,
    hosts: Hosts,
    /// `[registry.auths]`: credentials for requests that bring none.
    auths: BTreeMap<String, RegistryAuthConfig>,
    locks: KeyedLocks,
    progress: Arc<Progress>,
    platform: PlatformSpec,
    clients: clients::ClientCache,
}

/// Aborts the layer tasks of a pull that is given up (error or cancelled RPC); an aborted
/// download or unpack leaves nothing behind (the content store drops its temp file, a
/// dropped staged layer its staging dir).
struct AbortOnDrop<T>(Vec<tokio::task::JoinHandle<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

impl Puller {
    pub fn new(
        snapshotter: Arc<Snapshotter>,
        hosts: Hosts,
        auths: BTreeMap<String, RegistryAuthConfig>,
    ) -> Puller {
        // reqwest is built without a default TLS crypto provider (to avoid aws-lc's C build);
        // install ring's once. An error only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Puller {
            snapshotter,
            hosts,
            auths,
            locks: KeyedLocks::default(),
            progress: Arc::default(),
            platform: PlatformSpec::default(),
            clients: clients::ClientCache::default(),
        }
    }

    /// What the pulls in flight are doing, for watchers.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Pulls `r` and commits its layers, reporting to `tracking`; the caller records the
    /// returned image.
    pub async fn pull(
        self: &Arc<Self>,
        r: &Reference,
        creds: &Credentials,
        tracking: &Tracking,
    ) -> Result<ImportedImage> {
        let (registry, repository) = r.repository.split_once('/').ok_or_else(|| {
            Error::InvalidArgument(format!(
                "image reference {} has no repository path",
                r.repository
            ))
        })?;
        let endpoints = self.hosts.endpoints(registry)?;
        // A request's own credentials win over the config's.
        let configured = if creds.is_empty() {
            Credentials::from_config(&self.auths, registry)?
        } else {
            None
        };
        let creds = configured.as_ref().unwrap_or(creds);
        let session =
            Arc::new(Session::new(registry, repository, endpoints, creds, &self.clients).await);
        let digest = r
            .digest
            .as_deref()
            .map(Digest::parse)
            .transpose()
            .map_err(|e| Error::InvalidArgument(format!("image reference digest: {e}")))?;

        let (repo_digest, manifest_digest, manifest) =
            self.resolve_manifest(&session, r, digest.as_ref()).await?;
        let what = format!("{}@{manifest_digest}", r.repository);
        let parts = ManifestParts::of(&manifest).map_err(|e| bad_image(&what, e))?;

        if parts.config_size > MAX_JSON {
            return Err(Error::FailedPrecondition(format!(
                "image {what}: config of {} bytes is too large",
                parts.config_size
            )));
        }
        self.fetch_blob(&session, &parts.config_digest, parts.config_size, None)
            .await?;
        let store = self.snapshotter.content().clone();
        let cd = parts.config_digest.clone();
        let cfg_bytes = tokio::task::spawn_blocking(move || store.read_to_vec(&cd))
            .await
            .map_err(|e| Error::internal("config read task", e))?
            .map_err(|e| Error::internal(format!("reading config of {what}"), e))?;
        let (config, diff_ids) = parse_config(&cfg_bytes).map_err(|e| bad_image(&what, e))?;
        parts
            .check_diff_ids(&manifest_digest, &diff_ids)
            .map_err(|e| bad_image(&what, e))?;

        let chain_ids = self
            .layers(&session, &what, &parts.layers, &diff_ids, tracking)
            .await?;
        Ok(ImportedImage {
            names: Vec::new(),
            repo_digest,
            manifest_digest,
            size: parts.size(),
            config_digest: parts.config_digest,
            config,
            diff_ids,
            chain_ids,
            layer_blobs: parts.layers.iter().map(|l| l.digest.clone()).collect(),
        })
    }

    /// Resolves the reference to its platform manifest, following indexes. Returns the repo
    /// digest (what the reference itself points at: the index, if any), the manifest's digest
    /// and the manifest. Every document fetched is stored.
    async fn resolve_manifest(
        &self,
        session: &Session,
        r: &Reference,
        digest: Option<&Digest>,
    ) -> Result<(Digest, Digest, Box<ImageManifest>)> {
        let top = session.resolve(r.tag.as_deref(), digest).await?;
        tracing::info!(digest = %top.digest, endpoint = %top.endpoint, "resolved");
        let repo_digest = top.digest.clone();
        self.store_bytes(&top.digest, &top.bytes).await?;
        let (mut doc_digest, mut bytes) = (top.digest, top.bytes);
        let mut depth = 0;
        let manifest = loop {
            let what = format!("{}@{doc_digest}", r.repository);
            match Document::parse(&bytes, &what, None).map_err(|e| bad_image(&what, e))? {
                Document::Manifest(m) => break m,
                Document::Index(index) => {
                    depth += 1;
                    if depth > MAX_INDEX_DEPTH {
                        return Err(Error::FailedPrecondition(format!(
                            "image {what}: indexes nested too deeply"
                        )));
                    }
                    let chosen = require_platform(&index, &doc_digest, &self.platform)
                        .map_err(|e| Error::NotFound(format!("image {}: {e}", r.repository)))?;
                    if !is_manifest(&chosen) && !is_index(&chosen) {
                        return Err(Error::FailedPrecondition(format!(
                            "image {what}: the {} entry has media type {}, not an image manifest",
                            self.platform,
                            media_type(&chosen)
                        )));
                    }
                    let d =
                        Digest::parse(chosen.digest().as_ref()).map_err(|e| bad_image(&what, e))?;
                    let next = session.resolve(None, Some(&d)).await?;
                    if next.bytes.len() as u64 != chosen.size() {
                        return Err(Error::DataLoss(format!(
                            "image {what}: manifest {d} from {} is {} bytes, the index says {}",
                            next.endpoint,
                            next.bytes.len(),
                            chosen.size()
                        )));
                    }
                    self.store_bytes(&d, &next.bytes).await?;
                    (doc_digest, bytes) = (d, next.bytes);
                }
            }
        };
        Ok((repo_digest, doc_digest, manifest))
    }

    /// Downloads and unpacks what is missing, layers in parallel (each into its own staging
    /// dir), and commits them bottom to top as they become ready.
    async fn layers(
        self: &Arc<Self>,
        session: &Arc<Session>,
        what: &str,
        layers: &[LayerDesc],
        diff_ids: &[Digest],
        tracking: &Tracking,
    ) -> Result<Vec<Digest>> {
        let mut chains: Vec<Digest> = Vec::with_capacity(layers.len());
        for d in diff_ids {
            chains.push(chain_id(chains.last(), d));
        }
        let counters: Vec<Arc<LayerProgress>> = layers
            .iter()
            .zip(&chains)
            .map(|(l, chain)| self.progress.layer(chain, &l.digest, l.size))
            .collect();
        tracking.set_layers(counters.clone());
        let permits = Arc::new(Semaphore::new(PARALLEL_DOWNLOADS));
        let mut tasks = AbortOnDrop(Vec::new());
        let mut slot: Vec<Option<usize>> = Vec::with_capacity(layers.len());
        for (((l, chain), diff_id), counter) in
            layers.iter().zip(&chains).zip(diff_ids).zip(&counters)
        {
            if self.snapshotter.is_committed(chain) {
                counter.exists();
                slot.push(None);
                continue;
            }
            let (me, s, p, c) = (
                self.clone(),
                session.clone(),
                permits.clone(),
                counter.clone(),
            );
            let (l, chain, diff_id, what) =
                (l.clone(), chain.clone(), diff_id.clone(), what.to_string());
            let span = tracing::debug_span!("layer", blob = %l.digest, size = l.size);
            slot.push(Some(tasks.0.len()));
            tasks.0.push(tokio::spawn(
                async move {
                    let _permit = p
                        .acquire_owned()
                        .await
                        .map_err(|e| Error::internal("download slot", e))?;
                    me.fetch_blob(&s, &l.digest, l.size, Some(&c)).await?;
                    let staged = me.stage(&what, &l, &chain, &diff_id, &c).await?;
                    c.set(if staged.is_some() {
                        LayerState::Unpacked
                    } else {
                        LayerState::Done
                    });
                    Ok(staged)
                }
                .instrument(span),
            ));
        }
        for (i, l) in layers.iter().enumerate() {
            let Some(k) = slot[i] else { continue };
            let staged = (&mut tasks.0[k]).await.map_err(|e| {
                Error::internal(format!("download task for blob {}", l.digest), e)
            })??;
            if let Some((staged, _lock)) = staged {
                let parent = i.checked_sub(1).map(|p| chains[p].clone());
                let snap = self.snapshotter.clone();
                tokio::task::spawn_blocking(move || snap.publish_layer(parent.as_ref(), staged))
                    .await
                    .map_err(|e| Error::internal("commit task", e))?
                    .map_err(|e| layer_error(what, &l.digest, e))?;
            }
            counters[i].set(LayerState::Done);
        }
        Ok(chains)
    }

    /// Downloads a blob unless the store has it, counting its bytes into `progress`;
    /// concurrent pulls of the same blob wait for the first instead of downloading it again.
    async fn fetch_blob(
        &self,
        session: &Session,
        digest: &Digest,
        size: u64,
        progress: Option<&LayerProgress>,
    ) -> Result<()> {
        let store = self.snapshotter.content();
        if !store.contains(digest) {
            let _g = self.locks.lock(&format!("blob {digest}")).await;
            if !store.contains(digest) {
                return session.fetch_blob(store, digest, size, progress).await;
            }
        }
        if let Some(p) = progress {
            p.blob_present();
        }
        Ok(())
    }

    /// Unpacks one layer into a staging dir (blocking work, off the async threads). Returns
    /// nothing if the layer is committed already. Otherwise the staged layer comes with the
    /// layer's lock, held until it is published, so a concurrent pull of the same layer
    /// waits and then finds it committed instead of unpacking it again.
    async fn stage(
        &self,
        what: &str,
        l: &LayerDesc,
        chain: &Digest,
        diff_id: &Digest,
        progress: &LayerProgress,
    ) -> Result<Option<(StagedLayer, OwnedMutexGuard<()>)>> {
        let lock = self.locks.lock(&format!("layer {chain}")).await;
        if self.snapshotter.is_committed(chain) {
            return Ok(None);
        }
        progress.set(LayerState::Unpacking);
        let (snap, l2, diff) = (self.snapshotter.clone(), l.clone(), diff_id.clone());
        let started = std::time::Instant::now();
        let staged = tokio::task::spawn_blocking(move || {
            snap.stage_layer(&l2.digest, &l2.media_type, &diff)
        })
        .await
        .map_err(|e| Error::internal("unpack task", e))?
        .map_err(|e| layer_error(what, &l.digest, e))?;
        tracing::debug!(layer = %l.digest, chain = %chain, ms = started.elapsed().as_millis() as u64, "unpacked");
        Ok(Some((staged, lock)))
    }

    /// Stores a manifest or index we fetched (already verified against its digest).
    async fn store_bytes(&self, digest: &Digest, bytes: &bytes::Bytes) -> Result<()> {
        let store = self.snapshotter.content().clone();
        let (d, b) = (digest.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || store.ingest(&d, Some(b.len() as u64), &b[..]))
            .await
            .map_err(|e| Error::internal("store task", e))?
            .map_err(|e| Error::internal(format!("storing manifest {digest}"), e))?;
        Ok(())
    }
}

/// A layer that would not unpack or commit: corrupt content, a local I/O problem, or a
/// malformed (e.g. hostile) layer.
fn layer_error(what: &str, blob: &Digest, e: crisp_snapshotter::Error) -> Error {
    let msg = format!("image {what}: unpacking layer {blob}: {e}");
    match e {
        crisp_snapshotter::Error::DigestMismatch { .. }
        | crisp_snapshotter::Error::SizeMismatch { .. } => Error::DataLoss(msg),
        crisp_snapshotter::Error::Io { .. } | crisp_snapshotter::Error::Sys { .. } => {
            Error::Internal(msg)
        }
        _ => Error::FailedPrecondition(msg),
    }
}

/// A malformed image: a registry-side problem that retrying will not fix.
fn bad_image(what: &str, e: crisp_snapshotter::Error) -> Error {
    Error::FailedPrecondition(format!("image {what}: {e}"))
}
