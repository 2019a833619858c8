//! Image records and the name → image index.

use super::reference::Reference;
use crate::error::{Error, Result};
use crate::store::RecordStore;
use crisp_snapshotter::image::ImageConfig;
use crisp_snapshotter::import::ImportedImage;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<config digest>`.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub config: ImageConfig,
    /// Committed snapshot chain ids, bottom → top.
    pub chain_ids: Vec<String>,
    pub size: u64,
    /// Content-store blobs the image holds (index, manifest, config, layers): what RemoveImage
    /// may delete once no other image holds them. Empty in records of crisp before 0.2.
    #[serde(default)]
    pub blobs: Vec<String>,
}

impl ImageRecord {
    pub fn top_layer(&self) -> Option<&String> {
        self.chain_ids.last()
    }
}

pub struct ImageStore {
    records: RecordStore<ImageRecord>,
    images: RwLock<HashMap<String, ImageRecord>>,
}

impl ImageStore {
    pub fn open(dir: PathBuf, flusher: crate::store::Flusher) -> Result<ImageStore> {
        let records = RecordStore::<ImageRecord>::open(dir, flusher)?;
        let images = records
            .load_all()?
            .into_iter()
            .map(|(_, r)| (r.id.clone(), r))
            .collect();
        Ok(ImageStore {
            records,
            images: RwLock::new(images),
        })
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.images
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Finds an image by id, id prefix (≥ 12 hex digits, as `crictl` shows), tag or digest ref.
    pub fn find(&self, spec: &str) -> Option<ImageRecord> {
        let images = self.images.read().unwrap_or_else(|e| e.into_inner());
        let hexish = spec.strip_prefix("sha256:").unwrap_or(spec);
        if hexish.len() >= 12 && hexish.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut hits = images.values().filter(|r| {
                r.id.strip_prefix("sha256:")
                    .unwrap_or(&r.id)
                    .starts_with(hexish)
            });
            if let (Some(r), None) = (hits.next(), hits.next()) {
                return Some(r.clone());
            }
        }
        let r = Reference::parse(spec).ok()?;
        if let Some(d) = r.digested() {
            return images
                .values()
                .find(|i| i.repo_digests.contains(&d))
                .cloned();
        }
        let t = r.tagged()?;
        images.values().find(|i| i.repo_tags.contains(&t)).cloned()
    }

    /// Records an imported image under `names` (normalised references): a tag moves from
    /// whatever image held it before.
    pub fn add(&self, imported: &ImportedImage, names: &[Reference]) -> Result<ImageRecord> {
        let id = imported.config_digest.to_string();
        let mut images = self.images.write().unwrap_or_else(|e| e.into_inner());
        let mut rec = images.get(&id).cloned().unwrap_or_else(|| ImageRecord {
            id: id.clone(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            config: imported.config.clone(),
            chain_ids: imported.chain_ids.iter().map(|d| d.to_string()).collect(),
            size: imported.size,
            blobs: Vec::new(),
        });
        for b in [
            &imported.repo_digest,
            &imported.manifest_digest,
            &imported.config_digest,
        ]
        .into_iter()
        .chain(&imported.layer_blobs)
        {
            let b = b.to_string();
            if !rec.blobs.contains(&b) {
                rec.blobs.push(b);
            }
        }
        for n in names {
            if let Some(t) = n.tagged() {
                for other in images.values_mut().filter(|o| o.id != id) {
                    if let Some(pos) = other.repo_tags.iter().position(|x| *x == t) {
                        other.repo_tags.remove(pos);
                        self.records
                            .save(other.id.strip_prefix("sha256:").unwrap_or(&other.id), other)?;
                    }
                }
                if !rec.repo_tags.contains(&t) {
                    rec.repo_tags.push(t);
                }
            }
            let d = format!("{}@{}", n.repository, imported.repo_digest);
            if !rec.repo_digests.contains(&d) {
                rec.repo_digests.push(d);
            }
        }
        self.records
            .save(id.strip_prefix("sha256:").unwrap_or(&id), &rec)?;
        images.insert(id, rec.clone());
        Ok(rec)
    }

    pub fn get(&self, id: &str) -> Result<ImageRecord> {
        self.images
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("image {id} not found")))
    }
}

impl ImageStore {
    pub fn untag(&self, id: &str, tag: &str) -> Result<()> {
        let mut images = self.images.write().unwrap_or_else(|e| e.into_inner());
        if let Some(rec) = images.get_mut(id) {
            rec.repo_tags.retain(|t| t != tag);
            self.records
                .save(id.strip_prefix("sha256:").unwrap_or(id), rec)?;
        }
        Ok(())
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        let mut images = self.images.write().unwrap_or_else(|e| e.into_inner());
        self.records
            .remove(id.strip_prefix("sha256:").unwrap_or(id))?;
        images.remove(id);
        Ok(())
    }
}
