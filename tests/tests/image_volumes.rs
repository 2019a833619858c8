//! Image volumes (CRI `Mount.image`, KEP-4639): an image's filesystem, whiteouts applied, mounted
//! read-only into a container, whole or an `image_sub_path` of it; `image_ref` in the status;
//! the CRI's rules for the fields; the image's layers outlive a RemoveImage while a container
//! still has them mounted; nothing stays mounted on the host.

use crisp_tests::cri::{ImageSpec, Mount, RemoveImageRequest};
use crisp_tests::{crispd_test, layered_image, sh, Crispd, Entry, TestPod, BUSYBOX};

crispd_test!(image_volumes, check);

fn image_mount(at: &str, image: &str) -> Mount {
    Mount {
        container_path: at.into(),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    // A data image: a second layer deletes one file of the first and adds another.
    let dir = tempfile::tempdir()?;
    let layout = dir.path().join("voldata");
    layered_image(
        &layout,
        "v1",
        &[
            vec![
                Entry::File("data/kept", b"first\n"),
                Entry::File("data/deleted", b"gone\n"),
            ],
            vec![
                Entry::Whiteout("data/deleted"),
                Entry::File("data/added", b"second\n"),
            ],
        ],
    )?;
    crispd.images_import(&layout)?;

    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let image_ref = client.pull("voldata:v1").await?;
    let pod = TestPod::start(&mut client, crispd, "imagevol").await?;

    let mut c = pod.container("reader", &["sleep", "3600"])?;
    c.mounts.push(image_mount("/vol", &image_ref));
    let reader = pod.create(&mut client, c).await?;
    client.start_container(&reader).await?;
    let (_, listing) = sh(
        &mut client,
        &reader,
        "ls /vol/data; cat /vol/data/kept /vol/data/added",
    )
    .await?;
    assert_eq!(
        listing.split_whitespace().collect::<Vec<_>>(),
        ["added", "kept", "first", "second"],
        "the image volume's contents"
    );
    let (code, err) = sh(&mut client, &reader, "touch /vol/new 2>&1").await?;
    assert!(
        code != 0 && err.contains("Read-only"),
        "an image volume must be read-only: {code} {err}"
    );
    // Mounted from the container's own namespace only: nothing staged stays on the host.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(
        !mounts.contains("image-volumes"),
        "staged image volume left mounted on the host:\n{mounts}"
    );

    // ContainerStatus names each volume's image by its id (kubelet shows it as the digest).
    let status = client.container_status(&reader).await?;
    let vol = status
        .mounts
        .iter()
        .find(|m| m.container_path == "/vol")
        .ok_or_else(|| anyhow::anyhow!("no /vol in the status mounts {:?}", status.mounts))?;
    let vol_ref = vol.image.as_ref().map(|i| i.image_ref.as_str());
    assert_eq!(vol_ref, Some(image_ref.as_str()), "image_ref of the volume");

    // image_sub_path: only that directory of the image, resolved inside it.
    let mut sub = pod.container("sub", &["sleep", "3600"])?;
    let mut m = image_mount("/sub", &image_ref);
    m.image_sub_path = "data".into();
    sub.mounts.push(m);
    let sub = pod.create(&mut client, sub).await?;
    client.start_container(&sub).await?;
    let (_, listing) = sh(&mut client, &sub, "ls /sub").await?;
    assert_eq!(
        listing.split_whitespace().collect::<Vec<_>>(),
        ["added", "kept"],
        "the sub path's contents"
    );
    for (path, code, what) in [
        (
            "data/nope",
            "NotFound",
            "a sub path the image does not have",
        ),
        ("../etc", "InvalidArgument", "a sub path with .."),
        ("/data", "InvalidArgument", "an absolute sub path"),
    ] {
        let mut c = pod.container("badsub", &["true"])?;
        let mut m = image_mount("/sub", &image_ref);
        m.image_sub_path = path.into();
        c.mounts.push(m);
        let e = pod.create(&mut client, c).await.expect_err(what);
        let e = format!("{e:#}");
        assert!(e.contains(code) && e.contains(path), "{what}: {e}");
    }

    // Removing the image keeps the layers the running container has mounted.
    client
        .image
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: image_ref.clone(),
                ..Default::default()
            }),
        })
        .await?;
    let (_, again) = sh(&mut client, &reader, "cat /vol/data/kept").await?;
    assert_eq!(again.trim(), "first");

    // The CRI's rules.
    let mut both = pod.container("both", &["true"])?;
    let mut m = image_mount("/vol", BUSYBOX);
    m.host_path = "/tmp".into();
    both.mounts.push(m);
    let e = pod
        .create(&mut client, both)
        .await
        .expect_err("host_path with image must be refused");
    assert!(
        format!("{e:#}").contains("InvalidArgument") && format!("{e:#}").contains("exclusive"),
        "{e:#}"
    );
    let mut missing = pod.container("missing", &["true"])?;
    missing
        .mounts
        .push(image_mount("/vol", "registry.invalid/never/pulled:1"));
    let e = pod
        .create(&mut client, missing)
        .await
        .expect_err("an image that is not pulled must be refused");
    assert!(format!("{e:#}").contains("NotFound"), "{e:#}");

    client.stop_and_remove_pod(&pod.id).await?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(
        !mounts.contains(&reader),
        "mounts of {reader} left:\n{mounts}"
    );
    Ok(())
}
