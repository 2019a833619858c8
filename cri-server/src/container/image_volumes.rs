//! Image volumes (CRI `Mount.image`, KEP-4639 "OCI volume source"): an image's filesystem
//! mounted read-only into a container. kubelet pulls the image first and names it by the
//! `image_ref` PullImage returned.
//!
//! Each volume is a read-only overlay of the image's committed layers, attached under
//! `<bundle>/image-volumes/<n>` for the runtime to bind-mount (the whole image, or its
//! `image_sub_path`, resolved inside the image); like every staged mount it is released once the
//! container's mount namespace holds its own (see `staged_mounts`). Nothing is copied and
//! nothing is writable. The container's record keeps each volume's image id in
//! `ImageSpec.image_ref` (ContainerStatus shows it); a RemoveImage meanwhile removes the image's
//! name but not the layers the container has mounted.

use crate::error::{Error, Result};
use crate::image::ImageStore;
use crisp_cri_api::v1::Mount;
use crisp_snapshotter::{Digest, Snapshotter};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const DIR: &str = "image-volumes";

/// The image a mount asks for, if it is an image volume.
pub fn image_of(m: &Mount) -> Option<&str> {
    m.image
        .as_ref()
        .map(|i| i.image.as_str())
        .filter(|i| !i.is_empty())
}

/// At CreateContainer, before anything is mounted: every image volume's image is present and
/// its sub path well formed; each mount's `image.image_ref` is set to its image's id.
pub fn resolve(mounts: &mut [Mount], images: &ImageStore) -> Result<()> {
    for m in mounts.iter_mut() {
        let Some(image) = image_of(m) else { continue };
        let record = images.find(image).ok_or_else(|| {
            Error::NotFound(format!(
                "image {image:?} for the volume at {} not found: pull it first",
                m.container_path
            ))
        })?;
        check_sub_path(&m.image_sub_path, &m.container_path)?;
        if let Some(spec) = m.image.as_mut() {
            spec.image_ref = record.id.clone();
        }
    }
    Ok(())
}

/// kubelet's own rule for `subPath`: relative, and no `..` component.
fn check_sub_path(sub: &str, container_path: &str) -> Result<()> {
    if sub.starts_with('/') || sub.contains('\0') || sub.split('/').any(|c| c == "..") {
        return Err(Error::InvalidArgument(format!(
            "image_sub_path {sub:?} of the volume at {container_path} must be a relative path \
             without \"..\""
        )));
    }
    Ok(())
}

/// The host path of `sub` inside the mounted image at `root`, every symlink resolved inside
/// the image (an image's `/x -> /etc` is its own /etc, never the host's).
fn sub_path_in(root: &Path, sub: &str, image: &str, container_path: &str) -> Result<PathBuf> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let sub = sub.trim_matches('/');
    if sub.is_empty() {
        return Ok(root.to_path_buf());
    }
    let dir = std::fs::File::open(root)
        .map_err(|e| Error::internal(format!("opening {}", root.display()), e))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(dir.as_raw_fd(), sub, how).map_err(|e| match e {
        nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => Error::NotFound(format!(
            "image_sub_path {sub:?} does not exist in image {image} (the volume at \
             {container_path})"
        )),
        e => Error::internal(format!("image_sub_path {sub:?} in image {image}"), e),
    })?;
    // SAFETY: openat2 returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Both paths as the kernel spells them (the configured state dir may not be canonical):
    // where the resolution ended, which RESOLVE_IN_ROOT keeps below the root.
    let path_of = |raw: i32| {
        std::fs::read_link(format!("/proc/self/fd/{raw}"))
            .map_err(|e| Error::internal(format!("image_sub_path {sub:?} in image {image}"), e))
    };
    let root_real = path_of(dir.as_raw_fd())?;
    let resolved = path_of(fd.as_raw_fd())?;
    if !resolved.starts_with(&root_real) {
        return Err(Error::InvalidArgument(format!(
            "image_sub_path {sub:?} of image {image} resolves outside the image"
        )));
    }
    Ok(resolved)
}

/// Mounts the image volumes among `mounts`; returns what to bind (the image's root or its sub
/// path) by container path.
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
        // By the id `resolve` recorded: a tag moved since must not change what is mounted.
        let wanted = m
            .image
            .as_ref()
            .map(|i| i.image_ref.as_str())
            .filter(|r| !r.is_empty())
            .unwrap_or(image);
        let record = images.find(wanted).ok_or_else(|| {
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
        let source = sub_path_in(&target, &m.image_sub_path, image, &m.container_path)?;
        out.insert(m.container_path.clone(), source);
    }
    Ok(out)
}

/// Unmounts and removes the staged image volumes (see `staged_mounts::release`).
pub fn release(bundle: &Path) -> bool {
    super::staged_mounts::release(&bundle.join(DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_are_relative_without_dot_dot() {
        for ok in ["", "a", "a/b", "./a", "a/./b", "a..b"] {
            assert!(check_sub_path(ok, "/v").is_ok(), "{ok:?}");
        }
        for bad in ["/etc", "..", "a/../b", "a/.."] {
            assert!(check_sub_path(bad, "/v").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_image() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        std::fs::create_dir_all(root_path.join("etc/conf")).unwrap();
        std::os::unix::fs::symlink("/etc", root_path.join("abs")).unwrap();
        assert_eq!(
            sub_path_in(&root_path, "abs/conf", "img", "/v").unwrap(),
            root_path.join("etc/conf")
        );
        let missing = sub_path_in(&root_path, "nope", "img", "/v").unwrap_err();
        assert!(
            matches!(missing, Error::NotFound(ref m) if m.contains("nope")),
            "{missing}"
        );
    }
}
