//! The overlay2 snapshotter: committed (read-only, unpacked) layers keyed by
//! chain id, and active (writable) snapshots keyed by a caller-chosen key.
//!
//! Layout under the root:
//! - `content/…`                                 blobs, see [`ContentStore`]
//! - `snapshots/committed/<chain-hex>/{fs,meta.json}`
//! - `snapshots/active/<key>/{upper,work,meta.json}`
//! - `snapshots/tmp/`    staging for unpacks and removals (renamed in/out
//!   atomically, so a crash never leaves a half-written committed layer)
//! - `snapshots/empty/`  always-empty lowerdir for images with no layers

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};

use crate::content::ContentStore;
use crate::digest::{chain_id, Digest, HashingReader};
use crate::error::{io_ctx, Error, Result};
use crate::overlay;
use crate::tmpname::unique_name;
use crate::unpack::unpack_layer;
use crate::zstd::ZstdDecoder;

/// overlayfs refuses more lower layers than this anyway.
const MAX_CHAIN: usize = 500;

#[derive(Debug)]
pub struct Snapshotter {
    content: ContentStore,
    committed: PathBuf,
    active: PathBuf,
    tmp: PathBuf,
    empty: PathBuf,
    /// This boot's id: layers published but not yet synced carry it (see `sync_pending`).
    boot_id: String,
    /// One `sync_pending` at a time (they rewrite the same meta files).
    sync_lock: std::sync::Mutex<()>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSnapshot {
    pub key: String,
    /// Lower directories, top first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// `meta.json` of a committed layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommittedMeta {
    pub parent: Option<Digest>,
    pub diff_id: Digest,
    /// Bytes of regular file content in the unpacked layer.
    pub size: u64,
    /// Set while the layer's files may not be on disk yet: the boot it was published in.
    /// Cleared by [`Snapshotter::sync_pending`]; a layer still carrying an earlier boot's id
    /// after a reboot may have lost data and is dropped at open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsynced_boot: Option<String>,
}

/// A layer unpacked into a staging dir, not yet committed (see
/// [`Snapshotter::stage_layer`]). Dropping it removes the staging dir.
#[derive(Debug)]
pub struct StagedLayer {
    dir: Option<PathBuf>,
    blob: Digest,
    diff_id: Digest,
    size: u64,
}

impl Drop for StagedLayer {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            if let Err(e) = remove_any(&d) {
                tracing::warn!(path = %d.display(), error = %e, "cannot remove staged layer");
            }
        }
    }
}

/// `meta.json` of an active snapshot: what it was prepared on top of.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActiveMeta {
    top: Option<Digest>,
}

/// How a layer blob is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a layer media type; `None` for types we do not recognise, in
    /// which case the caller sniffs the content.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        let base = media_type.split(';').next().unwrap_or("").trim();
        if base.ends_with("+gzip") || base.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if base.ends_with("+zstd") || base.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else if base.ends_with(".tar") || base.ends_with(".diff.tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// From the first bytes of a blob.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

impl Snapshotter {
    /// Opens (creating if needed) the snapshotter at `root` and clears
    /// staging leftovers of a previous crash. Only one `Snapshotter` may be
    /// open on a root at a time.
    pub fn open(root: &Path) -> Result<Snapshotter> {
        let content = ContentStore::open(&root.join("content"))?;
        let snaps = root.join("snapshots");
        let s = Snapshotter {
            content,
            committed: snaps.join("committed"),
            active: snaps.join("active"),
            tmp: snaps.join("tmp"),
            empty: snaps.join("empty"),
            boot_id: crisp_api::boot::boot_id().unwrap_or_default(),
            sync_lock: std::sync::Mutex::new(()),
        };
        for d in [&s.committed, &s.active, &s.tmp, &s.empty] {
            fs::create_dir_all(d).map_err(io_ctx(|| format!("creating {}", d.display())))?;
        }
        s.content.clean_ingest()?;
        let entries =
            fs::read_dir(&s.tmp).map_err(io_ctx(|| format!("reading {}", s.tmp.display())))?;
        for e in entries.flatten() {
            let p = e.path();
            if let Err(err) = remove_any(&p) {
                tracing::warn!(path = %p.display(), error = %err, "cannot remove stale staging dir");
            }
        }
        s.recover_unsynced()?;
        Ok(s)
    }

    /// Learns how this kernel takes overlay layers with a throwaway mount on the layers'
    /// filesystem (see [`crate::overlay::probe`]).
    pub fn probe_overlay(&self) -> Result<crate::overlay::LayerPassing> {
        crate::overlay::probe(&self.tmp.join("overlay-probe"))
    }

    /// Layers published without a sync: from this boot (crispd restarted, the page cache
    /// still holds them) they are synced now; from an earlier boot they may have lost data in
    /// the crash, so they go, with every layer built on them. Returns the dropped chains (their
    /// images must be pulled again).
    fn recover_unsynced(&self) -> Result<Vec<Digest>> {
        let mut dropped = Vec::new();
        for chain in self.list_committed()? {
            let Ok(meta) = self.committed_meta(&chain) else {
                continue;
            };
            match meta.unsynced_boot {
                Some(b) if b != self.boot_id || self.boot_id.is_empty() => {
                    tracing::warn!(layer = %chain, "layer not synced before a reboot: dropped");
                    self.remove_committed(&chain)?;
                    dropped.push(chain);
                }
                _ => {}
            }
        }
        // Layers whose parent went are no chain any more.
        loop {
            let mut orphans = Vec::new();
            for chain in self.list_committed()? {
                if let Ok(CommittedMeta {
                    parent: Some(p), ..
                }) = self.committed_meta(&chain)
                {
                    if !self.is_committed(&p) {
                        orphans.push(chain);
                    }
                }
            }
            if orphans.is_empty() {
                break;
            }
            for o in orphans {
                self.remove_committed(&o)?;
                dropped.push(o);
            }
        }
        self.sync_pending()?;
        Ok(dropped)
    }

    /// Makes every layer published without a sync durable: one `syncfs` for all of them, then
    /// their markers go. Pulls call it after returning, so the write-back of a freshly unpacked
    /// image is not on the pull's path (containerd does not sync unpacked layers at all).
    /// Returns how many layers it covered.
    pub fn sync_pending(&self) -> Result<usize> {
        let _one = self.sync_lock.lock().unwrap_or_else(|e| e.into_inner());
        let pending: Vec<(Digest, CommittedMeta)> = self
            .list_committed()?
            .into_iter()
            .filter_map(|c| self.committed_meta(&c).ok().map(|m| (c, m)))
            .filter(|(_, m)| m.unsynced_boot.is_some())
            .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        syncfs(&self.committed)?;
        for (chain, mut meta) in pending.iter().cloned() {
            meta.unsynced_boot = None;
            self.write_meta(&self.committed_dir(&chain), &meta)?;
        }
        Ok(pending.len())
    }

    /// Writes `dir/meta.json` atomically and durably.
    fn write_meta(&self, dir: &Path, meta: &CommittedMeta) -> Result<()> {
        let json = serde_json::to_vec(meta).map_err(|e| Error::Json {
            what: format!("meta in {}", dir.display()),
            source: e,
        })?;
        let tmp = dir.join(".meta.json.tmp");
        File::create(&tmp)
            .and_then(|mut f| {
                io::Write::write_all(&mut f, &json)?;
                f.sync_all()
            })
            .and_then(|_| fs::rename(&tmp, dir.join("meta.json")))
            .map_err(io_ctx(|| format!("writing {}/meta.json", dir.display())))?;
        sync_dir(dir);
        Ok(())
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    fn committed_dir(&self, chain: &Digest) -> PathBuf {
        self.committed.join(chain.hex())
    }

    /// The unpacked filesystem of a committed layer.
    pub fn committed_fs(&self, chain: &Digest) -> PathBuf {
        self.committed_dir(chain).join("fs")
    }

    pub fn is_committed(&self, chain_id: &Digest) -> bool {
        self.committed_dir(chain_id).join("meta.json").is_file()
    }

    pub fn committed_meta(&self, chain: &Digest) -> Result<CommittedMeta> {
        let p = self.committed_dir(chain).join("meta.json");
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotCommitted(chain.clone()))
            }
            Err(e) => {
                return Err(Error::Io {
                    context: format!("reading {}", p.display()),
                    source: e,
                })
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::Json {
            what: p.display().to_string(),
            source: e,
        })
    }

    /// Unpacks layer blob `blob` on top of `parent` and returns its chain id.
    /// Idempotent, and safe to call concurrently for the same layer: each
    /// caller unpacks into its own staging dir and the first rename wins.
    pub fn commit_layer(
        &self,
        parent: Option<&Digest>,
        blob: &Digest,
        media_type: &str,
        diff_id: &Digest,
    ) -> Result<Digest> {
        let chain = chain_id(parent, diff_id);
        if self.is_committed(&chain) {
            return Ok(chain);
        }
        if let Some(p) = parent {
            if !self.is_committed(p) {
                return Err(Error::NotCommitted(p.clone()));
            }
        }
        let staged = self.stage_layer(blob, media_type, diff_id)?;
        self.publish_layer(parent, staged)
    }

    /// Unpacks and verifies layer blob `blob` into a private staging dir. A layer's files do
    /// not depend on the layers below it (whiteouts are only markers), so layers of one
    /// image can be staged in parallel and published in order with
    /// [`publish_layer`](Self::publish_layer). Dropping the result removes the staging dir.
    pub fn stage_layer(
        &self,
        blob: &Digest,
        media_type: &str,
        diff_id: &Digest,
    ) -> Result<StagedLayer> {
        let staging = self.tmp.join(unique_name("commit"));
        let fs_dir = staging.join("fs");
        fs::create_dir_all(&fs_dir).map_err(io_ctx(|| format!("creating {}", fs_dir.display())))?;
        // Owned from here: a failed unpack drops it, which removes the staging dir.
        let mut staged = StagedLayer {
            dir: Some(staging),
            blob: blob.clone(),
            diff_id: diff_id.clone(),
            size: 0,
        };
        staged.size = self.unpack_into(&fs_dir, blob, media_type, diff_id)?;
        Ok(staged)
    }

    /// Makes a staged layer the committed layer on top of `parent` (which must be committed)
    /// and returns its chain id. If a concurrent caller committed it first, theirs is kept.
    pub fn publish_layer(
        &self,
        parent: Option<&Digest>,
        mut staged: StagedLayer,
    ) -> Result<Digest> {
        let chain = chain_id(parent, &staged.diff_id);
        if self.is_committed(&chain) {
            return Ok(chain);
        }
        if let Some(p) = parent {
            if !self.is_committed(p) {
                return Err(Error::NotCommitted(p.clone()));
            }
        }
        let Some(staging) = staged.dir.clone() else {
            return Err(Error::InvalidImage {
                what: format!("layer {}", staged.blob),
                reason: "staged layer already published".into(),
            });
        };
        let blob = staged.blob.clone();
        // Published before its files are on disk, marked with this boot: `sync_pending`
        // (after the pull) makes it durable, and a crash before that drops it at the next
        // start (see `recover_unsynced`), so no torn layer is ever used.
        let meta = CommittedMeta {
            parent: parent.cloned(),
            diff_id: staged.diff_id.clone(),
            size: staged.size,
            unsynced_boot: Some(self.boot_id.clone()),
        };
        self.write_meta(&staging, &meta)?;
        let dest = self.committed_dir(&chain);
        match fs::rename(&staging, &dest) {
            Ok(()) => {
                staged.dir = None;
                sync_dir(&self.committed);
                tracing::debug!(chain = %chain, blob = %blob, "committed layer");
                Ok(chain)
            }
            Err(e) if self.is_committed(&chain) => {
                // Lost the race against a concurrent commit of the same
                // layer (rename onto a non-empty dir fails); theirs is
                // equivalent, drop ours.
                tracing::debug!(chain = %chain, error = %e, "layer committed concurrently");
                Ok(chain)
            }
            Err(e) => Err(Error::Io {
                context: format!("renaming staged layer {blob} to {}", dest.display()),
                source: e,
            }),
        }
    }

    /// Unpacks and verifies a layer blob into `fs_dir`; returns the unpacked size.
    fn unpack_into(
        &self,
        fs_dir: &Path,
        blob: &Digest,
        media_type: &str,
        diff_id: &Digest,
    ) -> Result<u64> {
        let file = self.content.open_blob(blob)?;
        let mut compressed = HashingReader::new(BufReader::new(file));
        let compression = match Compression::from_media_type(media_type) {
            Some(c) => c,
            None => {
                let mut head = [0u8; 4];
                let mut f = self.content.open_blob(blob)?;
                let n = read_up_to(&mut f, &mut head)
                    .map_err(io_ctx(|| format!("reading layer blob {blob}")))?;
                Compression::sniff(&head[..n])
            }
        };
        let stats;
        let (actual_diff, _) = match compression {
            Compression::Zstd => {
                let mut zst = HashingReader::new(ZstdDecoder::new(BufReader::new(&mut compressed)));
                stats = unpack_layer(&mut zst, fs_dir)?;
                zst.drain()
                    .map_err(io_ctx(|| format!("decompressing layer blob {blob}")))?;
                zst.finish()
            }
            Compression::Gzip => {
                let mut gz = HashingReader::new(GzDecoder::new(&mut compressed));
                stats = unpack_layer(&mut gz, fs_dir)?;
                gz.drain()
                    .map_err(io_ctx(|| format!("decompressing layer blob {blob}")))?;
                gz.finish()
            }
            Compression::None => {
                let mut plain = HashingReader::new(&mut compressed);
                stats = unpack_layer(&mut plain, fs_dir)?;
                plain
                    .drain()
                    .map_err(io_ctx(|| format!("reading layer blob {blob}")))?;
                plain.finish()
            }
        };
        // The gzip decoder may stop at the end of the gzip member; the blob
        // digest must cover the whole file.
        compressed
            .drain()
            .map_err(io_ctx(|| format!("reading layer blob {blob}")))?;
        let (blob_actual, _) = compressed.finish();
        if &blob_actual != blob {
            return Err(Error::DigestMismatch {
                what: format!("stored layer blob {blob} (corrupted on disk)"),
                expected: blob.clone(),
                actual: blob_actual,
            });
        }
        if &actual_diff != diff_id {
            return Err(Error::DigestMismatch {
                what: format!("uncompressed content (diff id) of layer blob {blob}"),
                expected: diff_id.clone(),
                actual: actual_diff,
            });
        }
        Ok(stats.bytes)
    }

    /// Lower dirs (top first) of the chain whose top layer is `top`.
    pub fn chain_lowers(&self, top: Option<&Digest>) -> Result<Vec<PathBuf>> {
        let Some(top) = top else {
            return Ok(vec![self.empty.clone()]);
        };
        let mut lowers = Vec::new();
        let mut cur = Some(top.clone());
        while let Some(c) = cur {
            if lowers.len() >= MAX_CHAIN {
                return Err(Error::ChainTooLong(top.clone(), MAX_CHAIN));
            }
            let meta = self.committed_meta(&c)?;
            lowers.push(self.committed_fs(&c));
            cur = meta.parent;
        }
        Ok(lowers)
    }

    pub fn prepare_active(&self, key: &str, top: Option<&Digest>) -> Result<ActiveSnapshot> {
        validate_key(key)?;
        let lowers = self.chain_lowers(top)?;
        let dir = self.active.join(key);
        let meta_path = dir.join("meta.json");
        let snap = ActiveSnapshot {
            key: key.to_string(),
            lowers,
            upper: dir.join("upper"),
            work: dir.join("work"),
        };
        if meta_path.is_file() {
            let existing: ActiveMeta = fs::read(&meta_path)
                .map_err(io_ctx(|| format!("reading {}", meta_path.display())))
                .and_then(|b| {
                    serde_json::from_slice(&b).map_err(|e| Error::Json {
                        what: meta_path.display().to_string(),
                        source: e,
                    })
                })?;
            if existing.top.as_ref() != top {
                let show =
                    |d: Option<&Digest>| d.map_or("an empty rootfs".to_string(), |d| d.to_string());
                return Err(Error::ActiveParentMismatch {
                    key: key.to_string(),
                    existing: show(existing.top.as_ref()),
                    requested: show(top),
                });
            }
            return Ok(snap);
        }

        // Build in staging and rename so a half-created snapshot is never
        // visible under active/.
        let staging = self.tmp.join(unique_name("active"));
        let build = || -> Result<()> {
            for d in ["upper", "work"] {
                let p = staging.join(d);
                fs::create_dir_all(&p).map_err(io_ctx(|| format!("creating {}", p.display())))?;
            }
            let json =
                serde_json::to_vec(&ActiveMeta { top: top.cloned() }).map_err(|e| Error::Json {
                    what: format!("meta for active snapshot {key}"),
                    source: e,
                })?;
            let p = staging.join("meta.json");
            fs::write(&p, json).map_err(io_ctx(|| format!("writing {}", p.display())))
        };
        if let Err(e) = build() {
            let _ = remove_any(&staging);
            return Err(e);
        }
        match fs::rename(&staging, &dir) {
            Ok(()) => Ok(snap),
            Err(_) if meta_path.is_file() => {
                // Created concurrently; re-validate against theirs.
                let _ = remove_any(&staging);
                self.prepare_active(key, top)
            }
            Err(e) => {
                let _ = remove_any(&staging);
                Err(Error::Io {
                    context: format!("creating active snapshot {}", dir.display()),
                    source: e,
                })
            }
        }
    }

    /// The upper directory of an existing writable layer: its changes (see [`crate::diff`]).
    pub fn active_upper(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        let upper = self.active.join(key).join("upper");
        if upper.is_dir() {
            Ok(upper)
        } else {
            Err(Error::Io {
                context: format!("writable layer {key}"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        }
    }

    pub fn mount_active(&self, active: &ActiveSnapshot, target: &Path) -> Result<()> {
        overlay::mount_overlay(&active.lowers, &active.upper, &active.work, target)
    }

    /// As [`Self::mount_active`], for a container in the user namespace `userns` whose root is
    /// `owner` on the host (see [`overlay::mount_overlay_idmapped`]).
    pub fn mount_active_idmapped(
        &self,
        active: &ActiveSnapshot,
        target: &Path,
        userns: std::os::fd::BorrowedFd<'_>,
        owner: (u32, u32),
    ) -> Result<()> {
        overlay::mount_overlay_idmapped(
            &active.lowers,
            &active.upper,
            &active.work,
            target,
            userns,
            owner,
        )
    }

    /// Mounts the layers up to `top` read-only at `target` (image volumes). The empty layer at
    /// the bottom makes at least the two lowers overlayfs needs without an upper layer.
    pub fn mount_readonly_view(&self, top: Option<&Digest>, target: &Path) -> Result<()> {
        let mut lowers = self.chain_lowers(top)?;
        // Without layers `chain_lowers` gives the empty layer alone, which stays one lower:
        // such an image cannot be viewed (mount_readonly says so).
        if top.is_some() {
            lowers.push(self.empty.clone());
        }
        overlay::mount_readonly(&lowers, target)
    }

    /// Removes an active snapshot (missing is fine). It must not be mounted.
    pub fn remove_active(&self, key: &str) -> Result<()> {
        match self.detach_active(key)? {
            Some(detached) => {
                remove_any(&detached).map_err(io_ctx(|| format!("removing {}", detached.display())))
            }
            None => Ok(()),
        }
    }

    /// Takes a writable layer out of `active/` (one rename into staging) and returns where it
    /// went, for the caller to delete off its critical path; None if there was none. What a
    /// crash leaves in staging, the next start deletes.
    pub fn detach_active(&self, key: &str) -> Result<Option<PathBuf>> {
        validate_key(key)?;
        let dir = self.active.join(key);
        let staging = self.tmp.join(unique_name("remove"));
        match fs::rename(&dir, &staging) {
            Ok(()) => Ok(Some(staging)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                context: format!("removing {}", dir.display()),
                source: e,
            }),
        }
    }

    /// Removes a committed layer (missing is fine). The caller guarantees no
    /// active snapshot or child layer still uses it.
    pub fn remove_committed(&self, chain_id: &Digest) -> Result<()> {
        self.remove_dir_atomically(&self.committed_dir(chain_id))
    }

    /// Renames into staging first so a partial delete is never visible.
    fn remove_dir_atomically(&self, dir: &Path) -> Result<()> {
        let staging = self.tmp.join(unique_name("remove"));
        match fs::rename(dir, &staging) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(Error::Io {
                    context: format!("removing {}", dir.display()),
                    source: e,
                })
            }
        }
        remove_any(&staging).map_err(io_ctx(|| format!("removing {}", staging.display())))
    }

    /// What a container's writable layer holds on disk.
    pub fn active_usage(&self, key: &str) -> Result<crate::usage::Usage> {
        validate_key(key)?;
        Ok(crate::usage::disk_usage(
            &self.active.join(key).join("upper"),
        ))
    }

    /// What the committed (image) layers hold on disk.
    pub fn committed_usage(&self) -> crate::usage::Usage {
        crate::usage::disk_usage(&self.committed)
    }

    pub fn list_active(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = read_names(&self.active)?
            .into_iter()
            .filter(|n| validate_key(n).is_ok())
            .collect();
        out.sort();
        Ok(out)
    }

    pub fn list_committed(&self) -> Result<Vec<Digest>> {
        let mut out: Vec<Digest> = read_names(&self.committed)?
            .into_iter()
            .filter_map(|n| Digest::from_hex(&n).ok())
            .filter(|d| self.is_committed(d))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Keys become directory names: keep them to a portable, traversal-free set.
pub fn validate_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() || key.len() > 128 {
        Some("must be 1 to 128 characters")
    } else if key == "." || key == ".." {
        Some("must not be . or ..")
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some("only A-Z a-z 0-9 _ . - are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidKey {
            key: key.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn read_names(dir: &Path) -> Result<Vec<String>> {
    let entries = fs::read_dir(dir).map_err(io_ctx(|| format!("reading {}", dir.display())))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io_ctx(|| format!("reading {}", dir.display())))?;
        if let Ok(n) = e.file_name().into_string() {
            out.push(n);
        }
    }
    Ok(out)
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn syncfs(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(io_ctx(|| format!("opening {}", dir.display())))?;
    // SAFETY: syncfs only reads the fd, which `f` keeps open for the call.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(Error::Io {
            context: format!("syncfs {}", dir.display()),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}
