//! Helpers shared by the integration tests: build layers and image layouts.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::Path;

use crisp_snapshotter::Digest;
use flate2::write::GzEncoder;
use flate2::Compression;
use tar::{EntryType, Header};

pub enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
}

pub fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match e {
            E::Dir(p) => {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, data) => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Link(p, target) => {
                h.set_entry_type(EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut g = GzEncoder::new(Vec::new(), Compression::fast());
    g.write_all(data).unwrap();
    g.finish().unwrap()
}

pub fn sha(data: &[u8]) -> Digest {
    Digest::sha256_of(data)
}

/// A blob directory being assembled into an OCI layout.
pub struct Layout<'a> {
    pub dir: &'a Path,
}

impl Layout<'_> {
    pub fn new(dir: &Path) -> Layout<'_> {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir }
    }

    pub fn blob(&self, data: &[u8]) -> (Digest, u64) {
        let d = sha(data);
        fs::write(self.dir.join("blobs/sha256").join(d.hex()), data).unwrap();
        (d, data.len() as u64)
    }

    /// Writes config + manifest for gzip layers built from `layers`; returns
    /// (manifest digest, manifest size, config digest, diff ids).
    pub fn image(&self, layers: &[Vec<u8>], cmd: &str) -> (Digest, u64, Digest, Vec<Digest>) {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| sha(l)).collect();
        let mut descs = Vec::new();
        for l in layers {
            let (d, s) = self.blob(&gzip(l));
            descs.push(serde_json::json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d.to_string(),"size":s}));
        }
        let config = serde_json::json!({
            "architecture":"amd64","os":"linux",
            "config":{"Cmd":[cmd],"Env":["PATH=/bin"]},
            "rootfs":{"type":"layers","diff_ids":diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()}
        });
        let (cd, cs) = self.blob(&serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd.to_string(),"size":cs},
            "layers":descs
        });
        let (md, ms) = self.blob(&serde_json::to_vec(&manifest).unwrap());
        (md, ms, cd, diff_ids)
    }

    pub fn index(&self, manifests: serde_json::Value) {
        let idx = serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":manifests});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&idx).unwrap(),
        )
        .unwrap();
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
