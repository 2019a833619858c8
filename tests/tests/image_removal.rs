//! RemoveImage frees the disk kubelet's image GC asks for: the image's blobs (manifest, config,
//! layers) and unpacked layers go, except what another image still holds.

use crisp_tests::cri::{ImageSpec, RemoveImageRequest};
use crisp_tests::{crispd_test, layered_image, Crispd, Entry, BUSYBOX};
use std::collections::HashSet;

crispd_test!(image_removal, check);

fn names(dir: &std::path::Path) -> anyhow::Result<HashSet<String>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let blobs_dir = crispd.root().join("content/blobs/sha256");
    let layers_dir = crispd.root().join("snapshots/committed");
    let (blobs_before, layers_before) = (names(&blobs_dir)?, names(&layers_dir)?);

    // busybox plus one layer: shares busybox's base layer.
    let dir = tempfile::tempdir()?;
    let layout = dir.path().join("removable");
    let built = layered_image(&layout, "v1", &[vec![Entry::File("etc/removable", b"x\n")]])?;
    crispd.images_import(&layout)?;
    let id = client.pull("removable:v1").await?;
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let top_blob = hex(built.layers.last().map(String::as_str).unwrap_or_default());
    assert!(
        names(&blobs_dir)?.contains(&top_blob),
        "the new layer's blob is stored"
    );
    assert!(names(&layers_dir)?.len() > layers_before.len());

    client
        .image
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: id,
                ..Default::default()
            }),
        })
        .await?;
    let blobs_after = names(&blobs_dir)?;
    for gone in [&top_blob, &hex(&built.config), &hex(&built.manifest)] {
        assert!(
            !blobs_after.contains(gone),
            "blob {gone} left after RemoveImage"
        );
    }
    assert_eq!(
        names(&layers_dir)?,
        layers_before,
        "only the removed image's own layer goes"
    );
    assert!(
        blobs_before.is_subset(&blobs_after),
        "busybox's blobs (the shared base layer among them) stay"
    );
    Ok(())
}
