//! Image volumes (CRI `Mount.image`, KEP-4639 "OCI volume source"): an image's filesystem
//! mounted read-only into a container. kubelet pulls the image first and names it by the
//! `image_ref` PullImage returned.
//!
//! Each volume is a read-only overlay of the image's committed layers, attached under
//! `<bundle>/image-volumes/<n>` for the runtime to bind-mount; like every staged mount it is
//! released once the container's mount namespace holds its own (see `staged_mounts`). Nothing is
//! copied and nothing is writable.

use crate::error::{Error, Result};
use crate::image::ImageStore;
use crisp_snapshotter::{Digest, Snapshotter};
use k8s_cri::v1::Mount;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const DIR: &str = "image-volumes";

/// The image a mount asks for, if it is an image volume.
pub fn image_of(m: &Mount) -> Option<&str> {
    m.image
        .as_ref()
        .map(|i| i.image.as_str())
        .filter(|i| !i.is_empty())
}

/// Mounts the image volumes among `mounts`; returns their mount points by container path.
pub fn stage(
    mounts: &[Mount],
    images: &ImageStore,
    snapshotter: &Snapshotter,
    bundle: &Path,
) -> Result<HashMap<String, PathBuf>> {
    let mut out = HashMap::new();
    for (i, m) in mounts.iter().enumerate() {
        let Some(image) = image_of(m) else { continue };
        if !m.host_path.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "mount {}: host_path and image are mutually exclusive",
                m.container_path
            )));
        }
        let record = images.find(image).ok_or_else(|| {
            Error::NotFound(format!(
                "image {image:?} for the volume at {} not found: pull it first",
                m.container_path
            ))
        })?;
        let top = record
            .top_layer()
            .map(|t| Digest::parse(t))
            .transpose()
            .map_err(|e| Error::internal(format!("layers of image {image}"), e))?;
        let target = bundle.join(DIR).join(i.to_string());
        std::fs::create_dir_all(&target)
            .map_err(|e| Error::internal(format!("creating {}", target.display()), e))?;
        snapshotter
            .mount_readonly_view(top.as_ref(), &target)
            .map_err(|e| {
                Error::internal(
                    format!(
                        "mounting image {image} for the volume at {}",
                        m.container_path
                    ),
                    e,
                )
            })?;
        out.insert(m.container_path.clone(), target);
    }
    Ok(out)
}

/// Unmounts and removes the staged image volumes (see `staged_mounts::release`).
pub fn release(bundle: &Path) -> bool {
    super::staged_mounts::release(&bundle.join(DIR))
}
