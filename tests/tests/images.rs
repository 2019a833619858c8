//! Image service: busybox from the import dir can be pulled, listed and
//! inspected; unknown images are absent, not errors, except when pulled.

use anyhow::Context;
use crisp_tests::cri::{ImageSpec, ImageStatusRequest, ListImagesRequest};
use crisp_tests::{crispd_test, Crispd, BUSYBOX};

const BUSYBOX_TAG: &str = "docker.io/library/busybox:latest";

crispd_test!(images, check);

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;

    let image_ref = client.pull(BUSYBOX).await?;
    assert!(
        !image_ref.is_empty(),
        "PullImage returned an empty image ref"
    );

    let images = client
        .image
        .list_images(ListImagesRequest { filter: None })
        .await?
        .into_inner()
        .images;
    assert!(
        images
            .iter()
            .any(|image| image.repo_tags.iter().any(|tag| tag == BUSYBOX_TAG)),
        "{BUSYBOX_TAG} missing from {images:?}"
    );

    let status = client
        .image
        .image_status(ImageStatusRequest {
            image: spec(BUSYBOX),
            verbose: false,
        })
        .await?
        .into_inner();
    let image = status.image.context("ImageStatus(busybox) has no image")?;
    assert!(image.id.starts_with("sha256:"), "image id {:?}", image.id);
    assert!(
        image.repo_tags.iter().any(|tag| tag == BUSYBOX_TAG),
        "{image:?}"
    );

    // The CRI: an image that is not present is a nil image, not an error.
    let missing = client
        .image
        .image_status(ImageStatusRequest {
            image: spec("nosuch:latest"),
            verbose: false,
        })
        .await?
        .into_inner();
    assert!(missing.image.is_none(), "nosuch:latest found: {missing:?}");

    let error = client
        .pull("nosuch/image:v1")
        .await
        .err()
        .context("pulling nosuch/image:v1 succeeded")?;
    let status = error
        .status()
        .context("pull failed without a gRPC status")?;
    assert!(
        status.message().contains("nosuch/image"),
        "error does not name the image: {status}"
    );
    assert_ne!(status.code(), tonic::Code::Ok);
    Ok(())
}
