mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;
use crisp_snapshotter::{import_path, Digest, Error, Snapshotter};

fn two_layers() -> Vec<Vec<u8>> {
    vec![
        layer_tar(&[
            E::Dir("bin/"),
            E::File("bin/a", b"a"),
            E::Link("bin/b", "bin/a"),
        ]),
        layer_tar(&[E::File("bin/.wh.a", b""), E::File("etc", b"e")]),
    ]
}

#[test]
fn oci_layout_with_nested_index() {
    if !is_root() {
        eprintln!("skipping oci_layout_with_nested_index: needs root (chown/mknod)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lay_dir = dir.path().join("layout");
    let lay = Layout::new(&lay_dir);
    let (amd_m, amd_s, amd_cfg, diff_ids) = lay.image(&two_layers(), "amd");
    let (arm_m, arm_s, _, _) = lay.image(&[layer_tar(&[E::File("arm", b"x")])], "arm");
    let list = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":arm_m.to_string(),"size":arm_s,
             "platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":amd_m.to_string(),"size":amd_s,
             "platform":{"architecture":"amd64","os":"linux"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":arm_m.to_string(),"size":arm_s,
             "platform":{"architecture":"unknown","os":"unknown"}}
        ]
    });
    let (idx_d, idx_s) = lay.blob(&serde_json::to_vec(&list).unwrap());
    lay.index(serde_json::json!([
        {"mediaType":"application/vnd.oci.image.index.v1+json","digest":idx_d.to_string(),"size":idx_s,
         "annotations":{"io.containerd.image.name":"example.com/multi:1","org.opencontainers.image.ref.name":"1"}},
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":amd_m.to_string(),"size":amd_s,
         "annotations":{"org.opencontainers.image.ref.name":"direct"}}
    ]));

    let s = Snapshotter::open(&dir.path().join("root")).unwrap();
    let imgs = import_path(&s, &lay_dir).unwrap();
    assert_eq!(imgs.len(), 1, "same manifest reached twice is one image");
    let img = &imgs[0];
    assert_eq!(
        img.names,
        vec!["example.com/multi:1".to_string(), "direct".to_string()]
    );
    assert_eq!(img.repo_digest, idx_d);
    assert_eq!(img.manifest_digest, amd_m);
    assert_eq!(img.config_digest, amd_cfg);
    assert_eq!(img.config.cmd, vec!["amd"]);
    assert_eq!(img.diff_ids, diff_ids);
    assert_eq!(img.chain_ids.len(), 2);
    assert_eq!(img.chain_ids[0], diff_ids[0]);
    for c in &img.chain_ids {
        assert!(s.is_committed(c));
    }
    let bottom = s.committed_fs(&img.chain_ids[0]);
    assert_eq!(
        fs::metadata(bottom.join("bin/a")).unwrap().ino(),
        fs::metadata(bottom.join("bin/b")).unwrap().ino()
    );
    assert!(s.content().contains(&amd_m));
    assert!(
        !s.content().contains(&arm_m),
        "other platforms are not fetched"
    );
    // Importing again is a no-op that gives the same answer.
    let again = import_path(&s, &lay_dir).unwrap();
    assert_eq!(again[0].chain_ids, img.chain_ids);
    assert_eq!(again[0].size, img.size);
}

#[test]
fn tampered_blob_is_rejected() {
    if !is_root() {
        eprintln!("skipping tampered_blob_is_rejected: needs root (chown/mknod)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lay_dir = dir.path().join("layout");
    let lay = Layout::new(&lay_dir);
    let layers = vec![layer_tar(&[E::File("f", b"1")])];
    let (m, ms, _, _) = lay.image(&layers, "x");
    lay.index(serde_json::json!([{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":m.to_string(),"size":ms}]));
    // Corrupt the layer blob in place.
    let layer_blob = sha(&gzip(&layers[0]));
    fs::write(lay_dir.join("blobs/sha256").join(layer_blob.hex()), b"evil").unwrap();
    let s = Snapshotter::open(&dir.path().join("root")).unwrap();
    let err = import_path(&s, &lay_dir).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SizeMismatch { .. } | Error::DigestMismatch { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(layer_blob.hex()), "{err}");
    assert!(!s.content().contains(&layer_blob));
    assert!(s.list_committed().unwrap().is_empty());
}

/// Tars up `dir` (contents at the archive root), optionally gzipped.
fn tar_dir(dir: &Path, out: &Path, gz: bool) {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    let data = b.into_inner().unwrap();
    fs::write(out, if gz { gzip(&data) } else { data }).unwrap();
}

#[test]
fn oci_archive_gzipped() {
    if !is_root() {
        eprintln!("skipping oci_archive_gzipped: needs root (chown/mknod)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lay_dir = dir.path().join("layout");
    let lay = Layout::new(&lay_dir);
    let (m, ms, cfg, _) = lay.image(&two_layers(), "x");
    // An unreferenced blob in the archive must not stay in the store.
    let (junk, _) = lay.blob(b"junk");
    lay.index(serde_json::json!([{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":m.to_string(),"size":ms,
        "annotations":{"org.opencontainers.image.ref.name":"latest"}}]));
    let archive = dir.path().join("img.tar.gz");
    tar_dir(&lay_dir, &archive, true);
    let s = Snapshotter::open(&dir.path().join("root")).unwrap();
    let imgs = import_path(&s, &archive).unwrap();
    assert_eq!(imgs.len(), 1);
    assert_eq!(imgs[0].names, vec!["latest".to_string()]);
    assert_eq!(imgs[0].repo_digest, m);
    assert_eq!(imgs[0].config_digest, cfg);
    assert!(s.is_committed(&imgs[0].chain_ids[1]));
    assert!(!s.content().contains(&junk));
    assert!(s.content().contains(&cfg));
}

#[test]
fn docker_save_archive() {
    if !is_root() {
        eprintln!("skipping docker_save_archive: needs root (chown/mknod)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("save");
    let layers = two_layers();
    let diff_ids: Vec<Digest> = layers.iter().map(|l| sha(l)).collect();
    let config = serde_json::json!({
        "architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/a"],"Cmd":null,"Labels":{"k":"v"}},
        "rootfs":{"type":"layers","diff_ids":diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()}
    });
    let cfg_bytes = serde_json::to_vec(&config).unwrap();
    let cfg = sha(&cfg_bytes);
    fs::create_dir_all(src.join("l1")).unwrap();
    fs::create_dir_all(src.join("l2")).unwrap();
    fs::create_dir_all(src.join("l3")).unwrap();
    fs::write(src.join(format!("{}.json", cfg.hex())), &cfg_bytes).unwrap();
    fs::write(src.join("l1/layer.tar"), &layers[0]).unwrap();
    fs::write(src.join("l2/layer.tar"), &layers[1]).unwrap();
    fs::write(src.join("l1/VERSION"), b"1.0").unwrap();
    // docker save links identical layers; exercise that path.
    std::os::unix::fs::symlink("../l2/layer.tar", src.join("l3/layer.tar")).unwrap();
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", cfg.hex()),
        "RepoTags": ["example.com/app:v1", "app:latest"],
        "Layers": ["l1/layer.tar", "l3/layer.tar"]
    }]);
    fs::write(
        src.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let archive = dir.path().join("save.tar");
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", &src).unwrap();
    fs::write(&archive, b.into_inner().unwrap()).unwrap();

    let s = Snapshotter::open(&dir.path().join("root")).unwrap();
    let imgs = import_path(&s, &archive).unwrap();
    assert_eq!(imgs.len(), 1);
    let img = &imgs[0];
    assert_eq!(
        img.names,
        vec!["example.com/app:v1".to_string(), "app:latest".to_string()]
    );
    assert_eq!(img.config_digest, cfg);
    assert_eq!(img.config.entrypoint, vec!["/bin/a"]);
    assert_eq!(img.config.labels.get("k").map(String::as_str), Some("v"));
    assert_eq!(img.diff_ids, diff_ids);
    assert_eq!(img.repo_digest, img.manifest_digest);
    let manifest: serde_json::Value =
        serde_json::from_slice(&s.content().read_to_vec(&img.manifest_digest).unwrap()).unwrap();
    assert_eq!(manifest["config"]["digest"], cfg.to_string());
    assert_eq!(
        img.size,
        (cfg_bytes.len() + layers[0].len() + layers[1].len()) as u64
    );
    for c in &img.chain_ids {
        assert!(s.is_committed(c));
    }
    assert!(
        !s.content().contains(&sha(b"1.0")),
        "docker save metadata files are not kept"
    );
}

#[test]
fn busybox_script_image_imports() {
    if !is_root() {
        eprintln!("skipping busybox_script_image_imports: needs root (chown/mknod)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("busybox");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/images/build-busybox.sh");
    let st = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "build-busybox.sh failed");
    let s = Snapshotter::open(&dir.path().join("root")).unwrap();
    let imgs = import_path(&s, &out).unwrap();
    assert_eq!(imgs.len(), 1);
    let img = &imgs[0];
    assert_eq!(
        img.names,
        vec!["docker.io/library/busybox:latest".to_string()]
    );
    assert_eq!(img.config.cmd, vec!["sh"]);
    assert_eq!(img.config.architecture, "amd64");
    assert_eq!(img.chain_ids.len(), 1);
    assert!(s.is_committed(&img.chain_ids[0]));
    let fs_dir = s.committed_fs(&img.chain_ids[0]);
    let sh = fs::metadata(fs_dir.join("bin/sh")).unwrap();
    let bb = fs::metadata(fs_dir.join("bin/busybox")).unwrap();
    assert_eq!(sh.ino(), bb.ino(), "applets must be hard links to busybox");
    assert!(sh.nlink() > 100);
    assert_eq!(
        fs::metadata(fs_dir.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    let passwd = fs::read_to_string(fs_dir.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"));
}
