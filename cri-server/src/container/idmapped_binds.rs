//! Bind mounts of a container whose pod has its own user namespace.
//!
//! Host files and directories (kubelet's volumes, the pod's hostname/resolv.conf/hosts) are owned
//! by host ids the pod's root cannot act as. Each bind source is replaced by an idmapped copy
//! attached under `<bundle>/idmap/<n>`, which the runtime bind-mounts as usual, so on-disk uid 0
//! reads as the pod's root. The copies are only needed while the runtime builds the container's
//! mount namespace (which keeps its own), see `staged_mounts`.

use crate::error::{Error, Result};
use oci_spec::runtime::Spec;
use std::os::fd::AsFd;
use std::path::Path;

const DIR: &str = "idmap";

/// Points every bind mount of `spec` at an idmapped copy of its source, through the user
/// namespace pinned at `userns`.
pub fn stage(spec: &mut Spec, bundle: &Path, userns: &Path) -> Result<()> {
    let ns = std::fs::File::open(userns)
        .map_err(|e| Error::internal(format!("opening {}", userns.display()), e))?;
    let dir = bundle.join(DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::internal(format!("creating {}", dir.display()), e))?;
    let Some(mut mounts) = spec.mounts().clone() else {
        return Ok(());
    };
    for (i, m) in mounts.iter_mut().enumerate() {
        let opts = m.options().clone().unwrap_or_default();
        let is_bind =
            m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind");
        let Some(source) = m.source().clone().filter(|_| is_bind) else {
            continue;
        };
        let recursive = opts.iter().any(|o| o == "rbind");
        let tree = match crisp_snapshotter::idmap::clone_idmapped(&source, ns.as_fd(), recursive) {
            Ok(t) => t,
            Err(crisp_snapshotter::Error::Sys {
                source: nix::errno::Errno::EINVAL,
                ..
            }) => {
                // A filesystem without idmapped mounts (procfs, sysfs, some network
                // filesystems): the container sees its files under overflow ids, as it would
                // with any runtime that cannot idmap them.
                tracing::warn!(source = %source.display(), "cannot idmap this mount source; bound as is");
                continue;
            }
            Err(e) => {
                return Err(Error::internal(
                    format!("idmapping mount source {}", source.display()),
                    e,
                ))
            }
        };
        let target = dir.join(i.to_string());
        let made = if source.is_dir() {
            std::fs::create_dir(&target)
        } else {
            std::fs::File::create(&target).map(drop)
        };
        made.map_err(|e| Error::internal(format!("creating {}", target.display()), e))?;
        crisp_snapshotter::idmap::attach(tree, &target).map_err(|e| {
            Error::internal(
                format!("mounting {} for the container", source.display()),
                e,
            )
        })?;
        m.set_source(Some(target));
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Unmounts and removes the staged copies (see [`super::staged_mounts::release`]).
pub fn release(bundle: &Path) -> bool {
    super::staged_mounts::release(&bundle.join(DIR))
}
