//! CheckpointContainer (kubelet's forensic container checkpointing, KEP-2008) and restoring a
//! container from such a checkpoint, as CRI-O does: CreateContainer whose image is the archive.
//!
//! Checkpoint: the shim dumps the running container with CRIU (it keeps running), crispd adds
//! the spec, identity, bind mounts and the writable layer's diff, and tars it all into the
//! requested location (`container::checkpoint` has the layout). CRIU must work on the node:
//! crispd runs `criu check` first and answers FAILED_PRECONDITION with CRIU's own words where
//! it does not (Debian's CRIU 3.17 refuses kernel 6.18: "Unexpected rt vDSO area bounds").
//!
//! Restore: CreateContainer unpacks the archive into the new container's directory, builds the
//! container on the checkpointed image with the writable layer's diff applied, and creates it
//! in its shim as one to restore; StartContainer has CRIU restore the process tree into it.

use super::Runtime;
use crate::container::checkpoint::{self, ConfigDump, Unpacked};
use crate::container::{image_volumes, ContainerState};
use crate::error::{Error, Result};
use crate::pod::SandboxRecord;
use crisp_cri_api::v1::{ContainerConfig, KeyValue};
use std::path::Path;
use std::time::Duration;

/// CRIU's dump when kubelet gives no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

impl Runtime {
    pub async fn checkpoint_container(
        &self,
        id: &str,
        location: &str,
        timeout_s: i64,
    ) -> Result<()> {
        let id = self.resolve_container(id)?;
        let view = self.entry_parts(&id)?;
        let location = Path::new(location);
        if location.as_os_str().is_empty() || !location.is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "checkpoint location {} of container {id} must be an absolute path",
                location.display()
            )));
        }
        match location.parent() {
            Some(dir) if dir.is_dir() => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "checkpoint location {} of container {id}: its directory does not exist",
                    location.display()
                )))
            }
        }
        // Held throughout: no stop or removal while CRIU reads the container.
        let _guard = view.op.lock().await;
        let rec = self.entry_parts(&id)?.rec;
        if rec.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is {:?}: only a running container can be checkpointed",
                rec.state
            )));
        }
        let shim = view
            .shim
            .ok_or_else(|| Error::Internal(format!("container {id} has no shim")))?;
        criu_works().await?;

        let dir = self.shim_dir(&id);
        let work = dir.checkpoint_work();
        let images = work.join(checkpoint::IMAGES_DIR);
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&images)
            .map_err(|e| Error::internal(format!("creating {}", images.display()), e))?;
        let timeout = match timeout_s {
            t if t > 0 => Duration::from_secs(t as u64),
            _ => DEFAULT_TIMEOUT,
        };
        let result = async {
            shim.checkpoint(&images, timeout).await?;
            let config = ConfigDump {
                id: rec.id.clone(),
                name: rec
                    .config
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                rootfs_image: rec.image_name.clone(),
                rootfs_image_ref: rec.image_id.clone(),
                rootfs_image_name: rec.image_name.clone(),
                runtime: "crisp".into(),
                created_time: checkpoint::go_time(rec.created_at_ns),
                checkpointed_time: checkpoint::go_time(super::now_ns()),
                restored_time: checkpoint::GO_ZERO_TIME.into(),
                restored: false,
            };
            let upper = self
                .snapshotter
                .active_upper(&id)
                .map_err(|e| Error::internal(format!("writable layer of {id}"), e))?;
            let (work2, spec, location) = (
                work.clone(),
                dir.bundle().join("config.json"),
                location.to_path_buf(),
            );
            tokio::task::spawn_blocking(move || {
                checkpoint::complete(&work2, &config, &spec, &upper)?;
                checkpoint::pack(&work2, &location)
            })
            .await
            .map_err(|e| Error::internal("writing the checkpoint archive", e))?
        }
        .await;
        let _ = std::fs::remove_dir_all(&work);
        result?;
        tracing::info!(container = %id, location = %location.display(), "container checkpointed");
        Ok(())
    }

    /// For CreateContainer from a checkpoint archive (not in a pod with a user namespace, not
    /// with image volumes): unpacks it into the new container's
    /// directory and makes `config` the checkpointed container's (its image, and its process
    /// where the request leaves it open: kubelet sends none for a restore).
    pub(super) async fn restore_config(
        &self,
        archive: &Path,
        id: &str,
        pod: &SandboxRecord,
        config: &mut ContainerConfig,
    ) -> Result<Unpacked> {
        if config.tty {
            return Err(Error::InvalidArgument(format!(
                "restoring checkpoint {}: a container with a terminal cannot be restored",
                archive.display()
            )));
        }
        // Their staged mounts are released once a created container holds them, which a
        // container restored at start does not yet: refused rather than restored without.
        if pod.userns.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "restoring checkpoint {} into pod {}: pods with a user namespace are not supported",
                archive.display(),
                pod.id
            )));
        }
        if config
            .mounts
            .iter()
            .any(|m| image_volumes::image_of(m).is_some())
        {
            return Err(Error::FailedPrecondition(format!(
                "restoring checkpoint {}: containers with image volumes are not supported",
                archive.display()
            )));
        }
        let dest = self.shim_dir(id).restore_from();
        let archive2 = archive.to_path_buf();
        let unpacked = tokio::task::spawn_blocking(move || checkpoint::unpack(&archive2, &dest))
            .await
            .map_err(|e| Error::internal("unpacking the checkpoint archive", e))??;
        // By name as the checkpointed container was created from (CRI-O restores from
        // rootfsImageName), else by id.
        let image = [
            &unpacked.config.rootfs_image_name,
            &unpacked.config.rootfs_image,
            &unpacked.config.rootfs_image_ref,
        ]
        .into_iter()
        .find(|i| !i.is_empty() && self.images.find(i).is_some())
        .or_else(|| {
            [
                &unpacked.config.rootfs_image_name,
                &unpacked.config.rootfs_image,
            ]
            .into_iter()
            .find(|i| !i.is_empty())
        })
        .cloned()
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "checkpoint archive {} names no image",
                archive.display()
            ))
        })?;
        if self.images.find(&image).is_none() {
            return Err(Error::NotFound(format!(
                "image {image:?} of checkpoint archive {} not found: pull it first",
                archive.display()
            )));
        }
        if let Some(i) = config.image.as_mut() {
            i.image = image;
        }
        if let Some(process) = unpacked.spec.process() {
            if config.command.is_empty() && config.args.is_empty() {
                config.command = process.args().clone().unwrap_or_default();
            }
            if config.working_dir.is_empty() {
                config.working_dir = process.cwd().display().to_string();
            }
            if config.envs.is_empty() {
                config.envs = process
                    .env()
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|e| e.split_once('='))
                    .map(|(k, v)| KeyValue {
                        key: k.to_string(),
                        value: v.as_bytes().to_vec(),
                    })
                    .collect();
            }
        }
        Ok(unpacked)
    }
}

/// `criu check`: Ok if CRIU can checkpoint on this kernel, else why not.
async fn criu_works() -> Result<()> {
    let run = tokio::process::Command::new("criu")
        .arg("check")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .map_err(|_| Error::Unavailable("`criu check` did not finish within 30 s".into()))?
        .map_err(|e| {
            Error::FailedPrecondition(format!(
                "checkpointing needs CRIU, and running `criu check` failed: {e} (install criu)"
            ))
        })?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let said = said
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::FailedPrecondition(format!(
        "checkpointing needs CRIU, which does not work on this kernel: `criu check` says: {said}"
    )))
}
