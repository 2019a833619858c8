//! Pulled layers are published before their write-back and synced right after; a layer that a
//! crash (a reboot) may have torn is dropped at the next start with its image, so nothing half
//! written is ever used, and kubelet pulls the image again.

use crisp_tests::cri::{ImageSpec, ImageStatusRequest};
use crisp_tests::{layered_image, require_root, wait_until, Crispd, Entry};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_durability() {
    if !require_root() {
        return;
    }
    let mut crispd = Crispd::start().await.expect("starting crispd");
    let result = check(&mut crispd).await;
    crispd.expect_ok(result);
}

fn metas(crispd: &Crispd) -> anyhow::Result<Vec<(std::path::PathBuf, serde_json::Value)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(crispd.root().join("snapshots/committed"))? {
        let p = e?.path().join("meta.json");
        out.push((p.clone(), serde_json::from_slice(&std::fs::read(&p)?)?));
    }
    Ok(out)
}

async fn check(crispd: &mut Crispd) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let layout = dir.path().join("durable");
    layered_image(&layout, "v1", &[vec![Entry::File("etc/durable", b"x\n")]])?;
    crispd.images_import(&layout)?;
    let mut client = crispd.client().await?;
    let id = client.pull("durable:v1").await?;

    // Every layer loses its "not yet synced" mark once the import is done.
    wait_until("layers synced", Duration::from_secs(10), || {
        metas(crispd)
            .ok()
            .filter(|m| m.iter().all(|(_, v)| v.get("unsynced_boot").is_none()))
    })
    .await?;

    // As if a crash had come before the sync, in an earlier boot: the top layer is suspect.
    // (Without the import dir's copy, which would bring the image straight back.)
    crispd.stop().await?;
    for e in std::fs::read_dir(crispd.root().join("import"))? {
        let p = e?.path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("durable"))
        {
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
    }
    let (top, mut meta) = metas(crispd)?
        .into_iter()
        .find(|(_, v)| !v["parent"].is_null())
        .ok_or_else(|| anyhow::anyhow!("no layer with a parent"))?;
    meta["unsynced_boot"] = "an-earlier-boot".into();
    std::fs::write(&top, serde_json::to_vec(&meta)?)?;
    crispd.restart().await?;

    let mut client = crispd.client().await?;
    let status = client
        .image
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: id.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await?
        .into_inner();
    assert!(status.image.is_none(), "an image with a torn layer is gone");
    assert!(!top.exists(), "the torn layer is gone");
    // The base layer was synced: it stays for the next pull.
    assert!(!metas(crispd)?.is_empty());
    Ok(())
}
