//! Image import from an OCI layout directory, an OCI archive tar, or a
//! `docker save` tar (optionally gzip-compressed). Every blob is verified
//! against its digest and size on its way into the content store, and every
//! layer is committed, before an image is reported as imported.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::content::{put_bytes, ContentStore};
use crate::digest::Digest;
use crate::error::{io_ctx, Error, Result};
use crate::image::{parse_config, ImageConfig};
pub use crate::manifest::PlatformSpec;
use crate::manifest::{
    commit_layers, desc_digest, is_index, is_manifest, media_type, oci_err, platform_matches,
    require_platform, LayerDesc, ManifestParts, MAX_INDEX_DEPTH, MAX_JSON, MT_OCI_CONFIG,
    MT_OCI_LAYER, MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD, MT_OCI_MANIFEST,
};
use crate::snapshots::{Compression, Snapshotter};

pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportedImage {
    /// Raw names: `io.containerd.image.name` if present, else
    /// `org.opencontainers.image.ref.name` (may be just a tag), or docker
    /// save `RepoTags`. Not normalised.
    pub names: Vec<String>,
    /// What a registry would show: the outermost nested index digest if the
    /// image was reached through one, else the manifest digest.
    pub repo_digest: Digest,
    pub manifest_digest: Digest,
    /// The image ID.
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub diff_ids: Vec<Digest>,
    /// Bottom → top, all committed.
    pub chain_ids: Vec<Digest>,
    /// The compressed layer blobs in the content store, bottom → top.
    pub layer_blobs: Vec<Digest>,
    /// Compressed layer sizes plus config size.
    pub size: u64,
}

/// Imports every image found at `path` for linux/amd64.
pub fn import_path(snap: &Snapshotter, path: &Path) -> Result<Vec<ImportedImage>> {
    import_path_for(snap, path, &PlatformSpec::default())
}

pub fn import_path_for(
    snap: &Snapshotter,
    path: &Path,
    platform: &PlatformSpec,
) -> Result<Vec<ImportedImage>> {
    let md = fs::metadata(path).map_err(io_ctx(|| format!("stat {}", path.display())))?;
    if md.is_dir() {
        import_oci_dir(snap, path, platform)
    } else {
        import_tar(snap, path, platform)
    }
}

/// Where blobs come from while walking manifests.
trait BlobSource {
    /// Makes sure `digest` is in the content store with exactly `size` bytes.
    fn fetch(&mut self, store: &ContentStore, digest: &Digest, size: u64) -> Result<()>;
}

/// An OCI layout directory: blobs are ingested (and verified) on demand.
struct DirSource {
    root: PathBuf,
}

impl BlobSource for DirSource {
    fn fetch(&mut self, store: &ContentStore, digest: &Digest, size: u64) -> Result<()> {
        if !store.contains(digest) {
            let p = self.root.join("blobs").join("sha256").join(digest.hex());
            let f = File::open(&p).map_err(io_ctx(|| {
                format!("opening blob {digest} in OCI layout ({})", p.display())
            }))?;
            store.ingest(digest, Some(size), BufReader::new(f))?;
        }
        check_size(store, digest, size)
    }
}

/// A tar archive: all blobs were ingested (and verified against their file
/// names) while streaming the archive, so only presence and size remain.
struct StoredSource;

impl BlobSource for StoredSource {
    fn fetch(&mut self, store: &ContentStore, digest: &Digest, size: u64) -> Result<()> {
        check_size(store, digest, size)
    }
}

fn check_size(store: &ContentStore, digest: &Digest, size: u64) -> Result<()> {
    let actual = store.size(digest)?;
    if actual != size {
        return Err(Error::SizeMismatch {
            what: format!("blob {digest}"),
            expected: size,
            actual,
        });
    }
    Ok(())
}

fn import_oci_dir(
    snap: &Snapshotter,
    dir: &Path,
    platform: &PlatformSpec,
) -> Result<Vec<ImportedImage>> {
    let layout = dir.join("oci-layout");
    match fs::read(&layout) {
        Ok(b) => check_oci_layout(&b)?,
        Err(e) => {
            return Err(Error::Io {
                context: format!("{} is not an OCI layout: reading oci-layout", dir.display()),
                source: e,
            })
        }
    }
    let index_path = dir.join("index.json");
    let index =
        fs::read(&index_path).map_err(io_ctx(|| format!("reading {}", index_path.display())))?;
    let mut ctx = Importer {
        snap,
        platform,
        referenced: HashSet::new(),
    };
    ctx.import_oci(
        &index,
        &mut DirSource {
            root: dir.to_path_buf(),
        },
    )
}

fn check_oci_layout(bytes: &[u8]) -> Result<()> {
    #[derive(Deserialize)]
    struct Layout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let l: Layout = serde_json::from_slice(bytes).map_err(|e| Error::Json {
        what: "oci-layout".into(),
        source: e,
    })?;
    if !l.version.starts_with("1.") {
        return Err(Error::Unsupported(format!(
            "OCI layout version {:?}",
            l.version
        )));
    }
    Ok(())
}

/// What streaming a tar archive produced.
#[derive(Default)]
struct TarContents {
    /// Small metadata files kept in memory, by archive path.
    docs: HashMap<String, Vec<u8>>,
    /// Every other regular file, ingested into the content store.
    files: HashMap<String, (Digest, u64)>,
    /// Symlinks and hard links: archive path → archive path of the target.
    links: HashMap<String, String>,
    /// Blobs this import added to the store (candidates for cleanup).
    added: Vec<Digest>,
}

impl TarContents {
    fn lookup(&self, path: &str) -> Option<&(Digest, u64)> {
        let mut p = normalize_archive_path(path)?;
        // docker save links identical layers to each other; bound the walk
        // so a link cycle cannot hang us.
        for _ in 0..16 {
            if let Some(f) = self.files.get(&p) {
                return Some(f);
            }
            p = self.links.get(&p)?.clone();
        }
        None
    }
}

const DOC_NAMES: [&str; 4] = ["index.json", "oci-layout", "manifest.json", "repositories"];

fn import_tar(
    snap: &Snapshotter,
    path: &Path,
    platform: &PlatformSpec,
) -> Result<Vec<ImportedImage>> {
    let store = snap.content();
    let mut head = [0u8; 2];
    let mut f = File::open(path).map_err(io_ctx(|| format!("opening {}", path.display())))?;
    let n = f
        .read(&mut head)
        .map_err(io_ctx(|| format!("reading {}", path.display())))?;
    let f = File::open(path).map_err(io_ctx(|| format!("opening {}", path.display())))?;
    let reader: Box<dyn Read> = if Compression::sniff(&head[..n]) == Compression::Gzip {
        Box::new(GzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::new(f))
    };

    let mut contents = TarContents::default();
    let streamed = stream_tar(store, reader, path, &mut contents);
    let mut ctx = Importer {
        snap,
        platform,
        referenced: HashSet::new(),
    };
    let result = streamed.and_then(|()| {
        if let Some(index) = contents.docs.get("index.json") {
            if let Some(layout) = contents.docs.get("oci-layout") {
                check_oci_layout(layout)?;
            }
            ctx.import_oci(index, &mut StoredSource)
        } else if let Some(manifest) = contents.docs.get("manifest.json") {
            ctx.import_docker(manifest, &contents)
        } else {
            Err(Error::InvalidImage {
                what: path.display().to_string(),
                reason:
                    "neither an OCI archive (index.json) nor a docker save archive (manifest.json)"
                        .into(),
            })
        }
    });
    // Drop blobs that came with the archive but belong to no imported image
    // (other platforms, docker save metadata files).
    for d in &contents.added {
        if !ctx.referenced.contains(d) {
            if let Err(e) = store.remove(d) {
                tracing::warn!(blob = %d, error = %e, "cannot remove unreferenced blob");
            }
        }
    }
    result
}

fn normalize_archive_path(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

fn stream_tar(
    store: &ContentStore,
    reader: Box<dyn Read>,
    path: &Path,
    out: &mut TarContents,
) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(io_ctx(|| format!("reading archive {}", path.display())))?;
    for entry in entries {
        let mut entry = entry.map_err(io_ctx(|| format!("reading archive {}", path.display())))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(name) = normalize_archive_path(&raw) else {
            return Err(Error::UnsafeEntry {
                path: raw,
                reason: "path escapes the archive root through ..".into(),
            });
        };
        let ctx = || format!("archive {} entry {raw:?}", path.display());
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink => {
                if let Some(target) = entry.link_name_bytes() {
                    let target = String::from_utf8_lossy(&target).into_owned();
                    // Symlink targets are relative to the link's directory.
                    let base = name.rsplit_once('/').map_or("", |(d, _)| d);
                    if let Some(t) = normalize_archive_path(&format!("{base}/{target}")) {
                        out.links.insert(name, t);
                    }
                }
                continue;
            }
            tar::EntryType::Link => {
                if let Some(target) = entry.link_name_bytes() {
                    if let Some(t) = normalize_archive_path(&String::from_utf8_lossy(&target)) {
                        out.links.insert(name, t);
                    }
                }
                continue;
            }
            _ => continue,
        }
        let size = entry.size();
        if DOC_NAMES.contains(&name.as_str()) {
            if size > MAX_JSON {
                return Err(Error::InvalidImage {
                    what: ctx(),
                    reason: format!("{size} bytes is too large for a metadata file"),
                });
            }
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(io_ctx(ctx))?;
            out.docs.insert(name, buf);
            continue;
        }
        let named = name
            .strip_prefix("blobs/sha256/")
            .map(Digest::from_hex)
            .transpose()?;
        let (digest, actual) = match named {
            Some(d) => {
                let had = store.contains(&d);
                store.ingest(&d, Some(size), &mut entry)?;
                if !had {
                    out.added.push(d.clone());
                }
                (d, size)
            }
            None => {
                let (d, n, new) = store.ingest_unknown_tracked(&mut entry)?;
                if new {
                    out.added.push(d.clone());
                }
                (d, n)
            }
        };
        out.files.insert(name, (digest, actual));
    }
    Ok(())
}

struct Importer<'a> {
    snap: &'a Snapshotter,
    platform: &'a PlatformSpec,
    /// Blobs belonging to imported images.
    referenced: HashSet<Digest>,
}

/// A manifest found by walking an index, with how it was reached.
struct Found {
    manifest: Descriptor,
    manifest_digest: Digest,
    repo_digest: Digest,
    names: Vec<String>,
}

impl Importer<'_> {
    fn store(&self) -> &ContentStore {
        self.snap.content()
    }

    fn fetch_json(
        &mut self,
        src: &mut dyn BlobSource,
        d: &Digest,
        size: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        if size > MAX_JSON {
            return Err(Error::InvalidImage {
                what: format!("{what} {d}"),
                reason: format!("{size} bytes is too large"),
            });
        }
        src.fetch(self.store(), d, size)?;
        self.referenced.insert(d.clone());
        self.store().read_to_vec(d)
    }

    fn import_oci(
        &mut self,
        index_json: &[u8],
        src: &mut dyn BlobSource,
    ) -> Result<Vec<ImportedImage>> {
        let index = ImageIndex::from_reader(index_json).map_err(oci_err("index.json".into()))?;
        let mut found: Vec<Found> = Vec::new();
        for desc in index.manifests() {
            if let Some(p) = desc.platform() {
                if !platform_matches(p, self.platform) {
                    continue;
                }
            }
            let names: Vec<String> = desc
                .annotations()
                .as_ref()
                .and_then(|a| {
                    a.get(ANNOTATION_CONTAINERD_NAME)
                        .or_else(|| a.get(ANNOTATION_REF_NAME))
                })
                .cloned()
                .into_iter()
                .collect();
            let Some((manifest, repo)) = self.resolve(desc, None, src, 0)? else {
                continue;
            };
            let manifest_digest = desc_digest(&manifest)?;
            if let Some(f) = found
                .iter_mut()
                .find(|f| f.manifest_digest == manifest_digest)
            {
                for n in names {
                    if !f.names.contains(&n) {
                        f.names.push(n);
                    }
                }
                continue;
            }
            found.push(Found {
                repo_digest: repo.unwrap_or_else(|| manifest_digest.clone()),
                manifest_digest,
                manifest,
                names,
            });
        }
        if found.is_empty() {
            return Err(Error::InvalidImage {
                what: "index.json".into(),
                reason: format!(
                    "no image manifest for {}/{}",
                    self.platform.os, self.platform.architecture
                ),
            });
        }
        found
            .into_iter()
            .map(|f| self.import_manifest(f, src))
            .collect()
    }

    /// Follows `desc` through nested indexes to a manifest for our
    /// platform. `Ok(None)` for descriptors that are not images (e.g.
    /// attestations or other artifacts).
    fn resolve(
        &mut self,
        desc: &Descriptor,
        outer_index: Option<Digest>,
        src: &mut dyn BlobSource,
        depth: usize,
    ) -> Result<Option<(Descriptor, Option<Digest>)>> {
        let digest = desc_digest(desc)?;
        if is_manifest(desc) {
            return Ok(Some((desc.clone(), outer_index)));
        }
        if !is_index(desc) {
            tracing::warn!(digest = %digest, media_type = %media_type(desc), "skipping non-image descriptor");
            return Ok(None);
        }
        if depth >= MAX_INDEX_DEPTH {
            return Err(Error::InvalidImage {
                what: format!("index {digest}"),
                reason: "indexes nested too deeply".into(),
            });
        }
        let bytes = self.fetch_json(src, &digest, desc.size(), "index")?;
        let index =
            ImageIndex::from_reader(&bytes[..]).map_err(oci_err(format!("index {digest}")))?;
        let chosen = require_platform(&index, &digest, self.platform)?;
        let outer = outer_index.or(Some(digest));
        self.resolve(&chosen, outer, src, depth + 1)
    }

    fn import_manifest(&mut self, f: Found, src: &mut dyn BlobSource) -> Result<ImportedImage> {
        let md = &f.manifest_digest;
        let bytes = self.fetch_json(src, md, f.manifest.size(), "manifest")?;
        let manifest =
            ImageManifest::from_reader(&bytes[..]).map_err(oci_err(format!("manifest {md}")))?;
        let parts = ManifestParts::of(&manifest)?;
        let cfg_bytes = self.fetch_json(src, &parts.config_digest, parts.config_size, "config")?;
        let (config, diff_ids) = parse_config(&cfg_bytes)?;
        parts.check_diff_ids(md, &diff_ids)?;
        for l in &parts.layers {
            src.fetch(self.store(), &l.digest, l.size)?;
            self.referenced.insert(l.digest.clone());
        }
        let chain_ids = commit_layers(self.snap, md, &parts.layers, &diff_ids)?;
        Ok(ImportedImage {
            names: f.names,
            repo_digest: f.repo_digest,
            manifest_digest: md.clone(),
            size: parts.size(),
            config_digest: parts.config_digest,
            config,
            diff_ids,
            chain_ids,
            layer_blobs: parts.layers.iter().map(|l| l.digest.clone()).collect(),
        })
    }

    fn import_docker(
        &mut self,
        manifest_json: &[u8],
        contents: &TarContents,
    ) -> Result<Vec<ImportedImage>> {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "Config")]
            config: String,
            #[serde(rename = "RepoTags", default)]
            repo_tags: Option<Vec<String>>,
            #[serde(rename = "Layers", default)]
            layers: Option<Vec<String>>,
        }
        let entries: Vec<Entry> =
            serde_json::from_slice(manifest_json).map_err(|e| Error::Json {
                what: "docker save manifest.json".into(),
                source: e,
            })?;
        let missing = |p: &str| Error::InvalidImage {
            what: "docker save archive".into(),
            reason: format!("{p} is listed in manifest.json but missing from the archive"),
        };
        let mut out = Vec::new();
        for e in entries {
            let (config_digest, config_size) = contents
                .lookup(&e.config)
                .ok_or_else(|| missing(&e.config))?
                .clone();
            // The config file is named after its digest; a mismatch means a
            // tampered or corrupted archive.
            let stem = e
                .config
                .rsplit('/')
                .next()
                .unwrap_or("")
                .trim_end_matches(".json");
            if let Ok(named) = Digest::from_hex(stem) {
                if named != config_digest {
                    return Err(Error::DigestMismatch {
                        what: format!("docker save config {}", e.config),
                        expected: named,
                        actual: config_digest,
                    });
                }
            }
            self.referenced.insert(config_digest.clone());
            let cfg_bytes = self.store().read_to_vec(&config_digest)?;
            let (config, diff_ids) = parse_config(&cfg_bytes)?;

            let mut layers = Vec::new();
            let mut size = config_size;
            for l in e.layers.unwrap_or_default() {
                let (d, s) = contents.lookup(&l).ok_or_else(|| missing(&l))?.clone();
                let mt = match self.sniff(&d)? {
                    Compression::Gzip => MT_OCI_LAYER_GZIP,
                    Compression::Zstd => MT_OCI_LAYER_ZSTD,
                    Compression::None => MT_OCI_LAYER,
                };
                self.referenced.insert(d.clone());
                size += s;
                layers.push(LayerDesc {
                    digest: d,
                    size: s,
                    media_type: mt.to_string(),
                });
            }

            // docker save has no manifest blob; synthesise the OCI manifest
            // a registry push would produce so the image has a stable
            // manifest digest like any other.
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MT_OCI_MANIFEST,
                "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size},
                "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size})).collect::<Vec<_>>(),
            });
            let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Json {
                what: "synthesised manifest".into(),
                source: e,
            })?;
            let manifest_digest = put_bytes(self.store(), &manifest_bytes)?;
            self.referenced.insert(manifest_digest.clone());

            let chain_ids = commit_layers(self.snap, &manifest_digest, &layers, &diff_ids)?;
            out.push(ImportedImage {
                names: e.repo_tags.unwrap_or_default(),
                repo_digest: manifest_digest.clone(),
                manifest_digest,
                config_digest,
                config,
                diff_ids,
                chain_ids,
                layer_blobs: layers.iter().map(|l| l.digest.clone()).collect(),
                size,
            });
        }
        if out.is_empty() {
            return Err(Error::InvalidImage {
                what: "docker save manifest.json".into(),
                reason: "lists no images".into(),
            });
        }
        Ok(out)
    }

    fn sniff(&self, d: &Digest) -> Result<Compression> {
        let mut f = self.store().open_blob(d)?;
        let mut head = [0u8; 4];
        let mut n = 0;
        while n < head.len() {
            let k = f
                .read(&mut head[n..])
                .map_err(io_ctx(|| format!("reading blob {d}")))?;
            if k == 0 {
                break;
            }
            n += k;
        }
        Ok(Compression::sniff(&head[..n]))
    }
}
