//! Builds test images as OCI layouts on top of the busybox test image: extra layers (files,
//! whiteouts) and multi-platform indexes, for pushing to a [`crate::TestRegistry`].

use std::fs;
use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::image::busybox_layout;

/// One entry of a layer tarball.
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    /// Deletes `path` from the layers below (an OCI `.wh.` whiteout).
    Whiteout(&'a str),
    /// Hides everything the layers below have in directory `path` (`.wh..wh..opq`).
    Opaque(&'a str),
}

/// Digests of an image written by [`layered_image`].
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: String,
    pub manifest_size: u64,
    pub config: String,
    /// Compressed layer blobs, bottom to top.
    pub layers: Vec<String>,
    /// Their sizes in bytes.
    pub layer_sizes: Vec<u64>,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Writes `bytes` into the layout's blob dir; returns `sha256:<hex>`.
fn put_blob(layout: &Path, bytes: &[u8]) -> anyhow::Result<String> {
    let hex = sha256_hex(bytes);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(&hex), bytes)?;
    Ok(format!("sha256:{hex}"))
}

fn read_blob(layout: &Path, digest: &str) -> anyhow::Result<Vec<u8>> {
    let p = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    fs::read(&p).with_context(|| format!("reading {}", p.display()))
}

fn layer_tar(entries: &[Entry]) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (path, data): (String, &[u8]) = match e {
            Entry::File(p, d) => (p.to_string(), d),
            Entry::Whiteout(p) => {
                let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
                let wh = if dir.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{dir}/.wh.{name}")
                };
                (wh, &[])
            }
            Entry::Opaque(dir) => (format!("{dir}/.wh..wh..opq"), &[]),
        };
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, &path, data)?;
    }
    Ok(b.into_inner()?)
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data)?;
    Ok(gz.finish()?)
}

fn copy_layout(from: &Path, to: &Path) -> anyhow::Result<()> {
    let blobs = to.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    for e in fs::read_dir(from.join("blobs/sha256"))? {
        let e = e?;
        fs::copy(e.path(), blobs.join(e.file_name()))?;
    }
    fs::write(to.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

fn write_index(layout: &Path, manifests: Vec<Value>) -> anyhow::Result<()> {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

/// The busybox test image's manifest (as JSON) in `layout`.
fn base_manifest(layout: &Path) -> anyhow::Result<Value> {
    let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let Some(d) = index["manifests"][0]["digest"].as_str() else {
        bail!("{}: index.json lists no manifest", layout.display());
    };
    Ok(serde_json::from_slice(&read_blob(layout, d)?)?)
}

/// Writes an OCI layout at `out`: busybox plus `layers` on top (gzip), tagged `tag`
/// (`skopeo copy oci:<out>:<tag> …` pushes it).
pub fn layered_image(out: &Path, tag: &str, layers: &[Vec<Entry>]) -> anyhow::Result<BuiltImage> {
    let base = busybox_layout();
    copy_layout(&base, out)?;
    let mut manifest = base_manifest(&base)?;
    let Some(cfg_digest) = manifest["config"]["digest"].as_str() else {
        bail!("busybox manifest has no config digest");
    };
    let mut config: Value = serde_json::from_slice(&read_blob(&base, cfg_digest)?)?;
    for entries in layers {
        let tar = layer_tar(entries)?;
        let diff_id = format!("sha256:{}", sha256_hex(&tar));
        let gz = gzip(&tar)?;
        let digest = put_blob(out, &gz)?;
        let Some(diff_ids) = config["rootfs"]["diff_ids"].as_array_mut() else {
            bail!("busybox config has no diff_ids");
        };
        diff_ids.push(json!(diff_id));
        let Some(ls) = manifest["layers"].as_array_mut() else {
            bail!("busybox manifest has no layers");
        };
        ls.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": gz.len(),
        }));
    }
    let cfg_bytes = serde_json::to_vec(&config)?;
    let config_digest = put_blob(out, &cfg_bytes)?;
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(cfg_bytes.len());
    let man_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = put_blob(out, &man_bytes)?;
    write_index(
        out,
        vec![json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": man_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })],
    )?;
    let descs = manifest["layers"].as_array().cloned().unwrap_or_default();
    Ok(BuiltImage {
        manifest: manifest_digest,
        manifest_size: man_bytes.len() as u64,
        config: config_digest,
        layers: descs
            .iter()
            .filter_map(|l| l["digest"].as_str().map(str::to_string))
            .collect(),
        layer_sizes: descs.iter().filter_map(|l| l["size"].as_u64()).collect(),
    })
}

/// `n` pseudo-random bytes (xorshift). `compressible`: every other 8-byte word is a run of
/// one byte, so gzip has work to do but cannot shrink them to nothing.
pub fn pseudo_random(seed: u64, n: usize, compressible: bool) -> Vec<u8> {
    // Odd and distinct per seed (xorshift must not start at 0).
    let mut x = seed.wrapping_mul(2).wrapping_add(1);
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if compressible && x % 2 == 1 {
            out.extend(std::iter::repeat_n((x >> 8) as u8, 8));
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(n);
    out
}

/// Writes an OCI layout at `out` whose index, tagged `tag`, lists `arm64` for linux/arm64/v8
/// (first, so picking the first entry would be wrong) and `amd64` for linux/amd64. Both images
/// must have been written by [`layered_image`] into `out` already.
pub fn multi_arch_index(
    out: &Path,
    tag: &str,
    amd64: &BuiltImage,
    arm64: &BuiltImage,
) -> anyhow::Result<()> {
    let entry = |img: &BuiltImage, arch: &str, variant: Option<&str>| {
        let mut platform = json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.manifest,
            "size": img.manifest_size,
            "platform": platform,
        })
    };
    let nested = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(arm64, "arm64", Some("v8")), entry(amd64, "amd64", None)],
    });
    let bytes = serde_json::to_vec(&nested)?;
    let digest = put_blob(out, &bytes)?;
    write_index(
        out,
        vec![json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })],
    )
}
