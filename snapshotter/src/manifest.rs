//! Image manifests and indexes, wherever they come from (an OCI layout, an archive, a
//! registry): media types, telling an index from a manifest, picking the platform's manifest
//! out of an index, and committing a manifest's layers in order. Import and registry pulls
//! both go through here so the two cannot disagree about what an image is.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::snapshots::Snapshotter;

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The manifest media types a pull asks a registry for (its `Accept` header), indexes first.
pub const ACCEPTED_MANIFESTS: [&str; 4] = [
    MT_OCI_INDEX,
    MT_DOCKER_LIST,
    MT_OCI_MANIFEST,
    MT_DOCKER_MANIFEST,
];

/// Manifests, indexes and configs are small; refuse to buffer huge ones.
pub const MAX_JSON: u64 = 16 << 20;
/// Nested indexes deeper than this are certainly malformed.
pub const MAX_INDEX_DEPTH: usize = 8;

/// The platform to pick from image indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    /// If set, only entries with exactly this variant match.
    pub variant: Option<String>,
}

impl Default for PlatformSpec {
    fn default() -> Self {
        PlatformSpec {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// A manifest-like document: what a registry returns for a tag or a digest.
pub enum Document {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

impl Document {
    /// Parses `bytes` as an index or a manifest. The media type (a registry's `Content-Type`,
    /// or the document's own `mediaType`) decides; a document without either is an index if it
    /// lists `manifests` (the OCI spec makes `mediaType` optional in both).
    pub fn parse(bytes: &[u8], what: &str, content_type: Option<&str>) -> Result<Document> {
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
            #[serde(rename = "schemaVersion")]
            schema_version: Option<u32>,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| Error::Json {
            what: what.to_string(),
            source: e,
        })?;
        if probe.schema_version == Some(1) {
            return Err(Error::Unsupported(format!(
                "{what} is a Docker schema 1 manifest (deprecated; re-push the image)"
            )));
        }
        let mt = probe
            .media_type
            .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or("").trim().into()));
        let is_index = match mt.as_deref() {
            Some(MT_OCI_INDEX | MT_DOCKER_LIST) => true,
            Some(MT_OCI_MANIFEST | MT_DOCKER_MANIFEST) => false,
            _ => probe.manifests.is_some(),
        };
        if is_index {
            ImageIndex::from_reader(bytes)
                .map(|i| Document::Index(Box::new(i)))
                .map_err(oci_err(what.to_string()))
        } else {
            ImageManifest::from_reader(bytes)
                .map(|m| Document::Manifest(Box::new(m)))
                .map_err(oci_err(what.to_string()))
        }
    }
}

/// A layer as a manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDesc {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// What an image manifest points at.
#[derive(Debug, Clone)]
pub struct ManifestParts {
    pub config_digest: Digest,
    pub config_size: u64,
    pub layers: Vec<LayerDesc>,
}

impl ManifestParts {
    pub fn of(manifest: &ImageManifest) -> Result<ManifestParts> {
        let cfg = manifest.config();
        Ok(ManifestParts {
            config_digest: desc_digest(cfg)?,
            config_size: cfg.size(),
            layers: manifest
                .layers()
                .iter()
                .map(|l| {
                    Ok(LayerDesc {
                        digest: desc_digest(l)?,
                        size: l.size(),
                        media_type: media_type(l),
                    })
                })
                .collect::<Result<_>>()?,
        })
    }

    /// Compressed layer sizes plus the config's: the image size CRI reports.
    pub fn size(&self) -> u64 {
        self.layers
            .iter()
            .fold(self.config_size, |n, l| n.saturating_add(l.size))
    }

    /// The config's diff ids must pair up with the layers one to one.
    pub fn check_diff_ids(&self, manifest: &Digest, diff_ids: &[Digest]) -> Result<()> {
        check_pairing(manifest, &self.layers, diff_ids)
    }
}

fn check_pairing(manifest: &Digest, layers: &[LayerDesc], diff_ids: &[Digest]) -> Result<()> {
    if layers.len() != diff_ids.len() {
        return Err(Error::InvalidImage {
            what: format!("manifest {manifest}"),
            reason: format!(
                "{} layers but the config lists {} diff ids",
                layers.len(),
                diff_ids.len()
            ),
        });
    }
    Ok(())
}

/// Unpacks `layers` (all in the content store) bottom to top; returns their chain ids.
pub fn commit_layers(
    snap: &Snapshotter,
    manifest: &Digest,
    layers: &[LayerDesc],
    diff_ids: &[Digest],
) -> Result<Vec<Digest>> {
    check_pairing(manifest, layers, diff_ids)?;
    let mut chain_ids: Vec<Digest> = Vec::with_capacity(layers.len());
    for (l, diff_id) in layers.iter().zip(diff_ids) {
        let chain = snap.commit_layer(chain_ids.last(), &l.digest, &l.media_type, diff_id)?;
        chain_ids.push(chain);
    }
    // Imports are not on a pod's start path: make the layers durable before returning.
    snap.sync_pending()?;
    Ok(chain_ids)
}

pub fn desc_digest(d: &Descriptor) -> Result<Digest> {
    Digest::parse(d.digest().as_ref())
}

pub fn media_type(d: &Descriptor) -> String {
    d.media_type().to_string()
}

pub(crate) fn oci_err(what: String) -> impl FnOnce(oci_spec::OciSpecError) -> Error {
    move |e| Error::InvalidImage {
        what,
        reason: e.to_string(),
    }
}

/// Whether `desc` is a manifest (not an index, not some other artifact).
pub fn is_manifest(desc: &Descriptor) -> bool {
    matches!(
        media_type(desc).as_str(),
        MT_OCI_MANIFEST | MT_DOCKER_MANIFEST
    )
}

/// Whether `desc` is an index or manifest list.
pub fn is_index(desc: &Descriptor) -> bool {
    matches!(media_type(desc).as_str(), MT_OCI_INDEX | MT_DOCKER_LIST)
}

pub fn platform_matches(p: &oci_spec::image::Platform, want: &PlatformSpec) -> bool {
    if p.os().to_string() != want.os || p.architecture().to_string() != want.architecture {
        return false;
    }
    match &want.variant {
        Some(v) => p.variant().as_deref() == Some(v.as_str()),
        None => true,
    }
}

/// Picks the manifest for `want` from an index. Without a requested variant,
/// an entry without variant is preferred over one with. An index whose only
/// entry has no platform at all is taken as is.
pub fn select_platform(index: &ImageIndex, want: &PlatformSpec) -> Option<Descriptor> {
    let mut best: Option<&Descriptor> = None;
    for d in index.manifests() {
        let Some(p) = d.platform() else { continue };
        if !platform_matches(p, want) {
            continue;
        }
        if p.variant().is_none() {
            return Some(d.clone());
        }
        best = best.or(Some(d));
    }
    if best.is_none() {
        let unplatformed: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| d.platform().is_none())
            .collect();
        if let [only] = unplatformed.as_slice() {
            return Some((*only).clone());
        }
    }
    best.cloned()
}

/// [`select_platform`], or an error naming the index and the platform.
pub fn require_platform(
    index: &ImageIndex,
    index_digest: &Digest,
    want: &PlatformSpec,
) -> Result<Descriptor> {
    select_platform(index, want).ok_or_else(|| Error::InvalidImage {
        what: format!("index {index_digest}"),
        reason: format!("no manifest for platform {want}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_indexes_from_manifests() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            Document::parse(idx, "x", None).unwrap(),
            Document::Index(_)
        ));
        let man = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
        assert!(matches!(
            Document::parse(man, "x", None).unwrap(),
            Document::Manifest(_)
        ));
        let v1 = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(matches!(
            Document::parse(v1, "x", None),
            Err(Error::Unsupported(_))
        ));
    }
}
