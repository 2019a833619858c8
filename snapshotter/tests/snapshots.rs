mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::Arc;

use common::*;
use crisp_snapshotter::{chain_id, overlay, Error, Snapshotter};

fn store_layer(
    s: &Snapshotter,
    tar: &[u8],
) -> (crisp_snapshotter::Digest, crisp_snapshotter::Digest) {
    let gz = gzip(tar);
    let blob = sha(&gz);
    s.content()
        .ingest(&blob, Some(gz.len() as u64), &gz[..])
        .unwrap();
    (blob, sha(tar))
}

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[test]
fn commit_verifies_diff_id_and_is_idempotent() {
    if !is_root() {
        eprintln!("skipping commit_verifies_diff_id_and_is_idempotent: needs root (chown/mknod)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshotter::open(dir.path()).unwrap();
    let tar = layer_tar(&[E::Dir("a/"), E::File("a/f", b"hi")]);
    let (blob, diff) = store_layer(&s, &tar);

    let wrong = sha(b"not the diff id");
    let err = s.commit_layer(None, &blob, GZ, &wrong).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(!s.is_committed(&wrong));
    assert_eq!(
        fs::read_dir(dir.path().join("snapshots/tmp"))
            .unwrap()
            .count(),
        0
    );

    let c = s.commit_layer(None, &blob, GZ, &diff).unwrap();
    assert_eq!(c, diff);
    assert!(s.is_committed(&c));
    assert_eq!(s.commit_layer(None, &blob, GZ, &diff).unwrap(), c);
    assert_eq!(s.list_committed().unwrap(), vec![c.clone()]);
    let meta = s.committed_meta(&c).unwrap();
    assert_eq!(meta.parent, None);
    assert_eq!(meta.size, 2);

    // Uncompressed media type, and unknown media type (sniffed).
    let tar2 = layer_tar(&[E::File("g", b"x")]);
    let b2 = sha(&tar2);
    s.content().ingest(&b2, None, &tar2[..]).unwrap();
    let c2 = s
        .commit_layer(Some(&c), &b2, "application/vnd.oci.image.layer.v1.tar", &b2)
        .unwrap();
    assert_eq!(c2, chain_id(Some(&c), &b2));
    assert_eq!(s.committed_meta(&c2).unwrap().parent, Some(c.clone()));

    // zstd, unpacked to the same content as its uncompressed twin.
    let zst =
        ruzstd::encoding::compress_to_vec(&tar2[..], ruzstd::encoding::CompressionLevel::Fastest);
    let bz = sha(&zst);
    s.content().ingest(&bz, None, &zst[..]).unwrap();
    let cz = s
        .commit_layer(
            None,
            &bz,
            "application/vnd.oci.image.layer.v1.tar+zstd",
            &b2,
        )
        .unwrap();
    assert_eq!(fs::read(s.committed_fs(&cz).join("g")).unwrap(), b"x");
    s.remove_committed(&cz).unwrap();

    // Parent must exist.
    let ghost = sha(b"ghost");
    assert!(matches!(
        s.commit_layer(Some(&ghost), &b2, "x", &b2),
        Err(Error::NotCommitted(_))
    ));

    s.remove_committed(&c2).unwrap();
    s.remove_committed(&c2).unwrap();
    assert!(!s.is_committed(&c2));
}

#[test]
fn concurrent_commit_of_same_layer() {
    if !is_root() {
        eprintln!("skipping concurrent_commit_of_same_layer: needs root (chown/mknod)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Snapshotter::open(dir.path()).unwrap());
    let files: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("d/f{i}"), vec![b'x'; i * 10]))
        .collect();
    let mut entries = vec![E::Dir("d/")];
    entries.extend(files.iter().map(|(p, d)| E::File(p, d)));
    let tar = layer_tar(&entries);
    let (blob, diff) = store_layer(&s, &tar);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            let (blob, diff) = (blob.clone(), diff.clone());
            std::thread::spawn(move || s.commit_layer(None, &blob, GZ, &diff))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), diff);
    }
    assert_eq!(s.list_committed().unwrap(), vec![diff.clone()]);
    assert_eq!(
        fs::read_dir(s.committed_fs(&diff).join("d"))
            .unwrap()
            .count(),
        200
    );
    assert_eq!(
        fs::read_dir(dir.path().join("snapshots/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn active_keys_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshotter::open(dir.path()).unwrap();
    for bad in ["", ".", "..", "a/b", "../x", "a b", &"k".repeat(129)] {
        assert!(
            matches!(s.prepare_active(bad, None), Err(Error::InvalidKey { .. })),
            "{bad:?} accepted"
        );
        assert!(s.remove_active(bad).is_err());
    }
    let a = s.prepare_active("ctr-1_a.b", None).unwrap();
    assert!(a.upper.is_dir() && a.work.is_dir());
    assert_eq!(a.lowers.len(), 1);
    // Reuse is fine, but not on top of something else.
    assert_eq!(s.prepare_active("ctr-1_a.b", None).unwrap(), a);
    let ghost = sha(b"ghost");
    assert!(s.prepare_active("ctr-1_a.b", Some(&ghost)).is_err());
    assert!(matches!(
        s.prepare_active("other", Some(&ghost)),
        Err(Error::NotCommitted(_))
    ));
    assert_eq!(s.list_active().unwrap(), vec!["ctr-1_a.b".to_string()]);
    s.remove_active("ctr-1_a.b").unwrap();
    s.remove_active("ctr-1_a.b").unwrap();
    assert!(s.list_active().unwrap().is_empty());
}

#[test]
fn overlay_view_of_two_layers_with_whiteout() {
    if !is_root() {
        eprintln!("skipping overlay_view_of_two_layers_with_whiteout: needs root (chown/mknod)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshotter::open(dir.path()).unwrap();
    let bottom = layer_tar(&[
        E::Dir("etc/"),
        E::File("etc/keep", b"bottom"),
        E::File("etc/hidden", b"secret"),
        E::Dir("opq/"),
        E::File("opq/old", b"old"),
        E::File("over", b"bottom"),
    ]);
    let top = layer_tar(&[
        E::Dir("etc/"),
        E::File("etc/.wh.hidden", b""),
        E::Dir("opq/"),
        E::File("opq/.wh..wh..opq", b""),
        E::File("opq/new", b"new"),
        E::File("over", b"top"),
    ]);
    let (b1, d1) = store_layer(&s, &bottom);
    let (b2, d2) = store_layer(&s, &top);
    let c1 = s.commit_layer(None, &b1, GZ, &d1).unwrap();
    let c2 = s.commit_layer(Some(&c1), &b2, GZ, &d2).unwrap();

    let a = s.prepare_active("ctr", Some(&c2)).unwrap();
    assert_eq!(a.lowers, vec![s.committed_fs(&c2), s.committed_fs(&c1)]);
    let target = dir.path().join("rootfs");
    fs::create_dir(&target).unwrap();
    s.mount_active(&a, &target).unwrap();
    let view = || {
        assert_eq!(fs::read(target.join("etc/keep")).unwrap(), b"bottom");
        assert!(
            !target.join("etc/hidden").exists(),
            "whiteout must hide lower file"
        );
        assert_eq!(fs::read(target.join("over")).unwrap(), b"top");
        assert!(
            !target.join("opq/old").exists(),
            "opaque dir must hide lower entries"
        );
        assert_eq!(fs::read(target.join("opq/new")).unwrap(), b"new");
        fs::write(target.join("etc/written"), b"w").unwrap();
        fs::remove_file(target.join("etc/keep")).unwrap();
    };
    let r = std::panic::catch_unwind(view);
    overlay::unmount(&target).unwrap();
    overlay::unmount(&target).unwrap();
    r.unwrap();
    // Writes went to the upper dir only.
    assert_eq!(fs::read(a.upper.join("etc/written")).unwrap(), b"w");
    assert!(fs::symlink_metadata(a.upper.join("etc/keep"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        fs::read(s.committed_fs(&c1).join("etc/keep")).unwrap(),
        b"bottom"
    );

    // Empty rootfs works too.
    let e = s.prepare_active("empty", None).unwrap();
    s.mount_active(&e, &target).unwrap();
    let n = fs::read_dir(&target).unwrap().count();
    overlay::unmount(&target).unwrap();
    assert_eq!(n, 0);
    s.remove_active("ctr").unwrap();
    s.remove_active("empty").unwrap();
    assert_eq!(
        fs::metadata(s.committed_fs(&c1).join("etc/keep"))
            .unwrap()
            .nlink(),
        1
    );
}

/// Layers are published before their write-back; `sync_pending` makes them durable. One left
/// unsynced by a crash of this boot is synced at open; one from another boot (a crash took the
/// page cache) is dropped at open, with the layers built on it.
#[test]
fn unsynced_layers_after_restart_and_after_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshotter::open(dir.path()).unwrap();
    let (b1, d1) = store_layer(&s, &layer_tar(&[E::File("a", b"1")]));
    let (b2, d2) = store_layer(&s, &layer_tar(&[E::File("b", b"2")]));
    let c1 = s.commit_layer(None, &b1, GZ, &d1).unwrap();
    let c2 = s.commit_layer(Some(&c1), &b2, GZ, &d2).unwrap();
    assert!(s.committed_meta(&c1).unwrap().unsynced_boot.is_some());
    assert_eq!(s.sync_pending().unwrap(), 2);
    assert!(s.committed_meta(&c2).unwrap().unsynced_boot.is_none());
    assert_eq!(s.sync_pending().unwrap(), 0);

    // A crispd restart within this boot: still marked, synced at open, kept.
    let mark = |chain: &crisp_snapshotter::Digest, boot: &str| {
        let p = s.committed_fs(chain).parent().unwrap().join("meta.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        meta["unsynced_boot"] = boot.into();
        std::fs::write(&p, serde_json::to_vec(&meta).unwrap()).unwrap();
    };
    let this_boot = crisp_api::boot::boot_id().unwrap();
    mark(&c2, this_boot.trim());
    let s = Snapshotter::open(dir.path()).unwrap();
    assert!(s.is_committed(&c2));
    assert!(s.committed_meta(&c2).unwrap().unsynced_boot.is_none());

    // After a reboot: the unsynced bottom layer goes, and the one on top of it too.
    mark(&c1, "another-boot");
    let s = Snapshotter::open(dir.path()).unwrap();
    assert!(!s.is_committed(&c1));
    assert!(!s.is_committed(&c2));
}
