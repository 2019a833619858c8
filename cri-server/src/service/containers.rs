//! Container operations.

use super::{now_ns, ContainerEntry, Runtime};
use crate::cgroups::driver::PodCgroup;
use crate::container::shim_client::{Exit, Shim, TaskStdio};
use crate::container::spec::{self, SpecInput};
use crate::container::{checkpoint, idmapped_binds, image_volumes};
use crate::container::{ContainerRecord, ContainerState, ProcessUser};
use crate::error::{ok_if_gone, Error, Result};
use crate::ids;
use crisp_api::{ShimDir, StdioTarget};
use crisp_cri_api::v1::{ContainerConfig, ContainerEventType, ContainerFilter, NamespaceMode};
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A snapshot of a container entry, taken under the objects lock and used without it.
pub(super) struct EntryView {
    pub(super) rec: ContainerRecord,
    pub(super) shim: Option<Shim>,
    pub(super) op: Arc<tokio::sync::Mutex<()>>,
    pub(super) exited: watch::Receiver<bool>,
}

/// A container's directory holding an unpacked checkpoint archive, removed if CreateContainer
/// fails before the container is recorded (after that, its teardown removes it).
struct UnpackedDir(Option<PathBuf>);

impl UnpackedDir {
    fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for UnpackedDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Refuses a second container of the same name and attempt in a pod (kubelet's rule).
fn name_free(
    containers: &std::collections::HashMap<String, ContainerEntry>,
    pod_id: &str,
    meta: &crisp_cri_api::v1::ContainerMetadata,
) -> Result<()> {
    match containers.values().find(|c| {
        c.rec.pod_id == pod_id
            && c.rec.config.metadata.as_ref().map(|m| (&m.name, m.attempt))
                == Some((&meta.name, meta.attempt))
    }) {
        Some(other) => Err(Error::AlreadyExists(format!(
            "container {:?} (attempt {}) already exists in pod {pod_id} as {}",
            meta.name, meta.attempt, other.rec.id
        ))),
        None => Ok(()),
    }
}

/// How long to wait for a container to die after SIGKILL before giving up on it.
const KILL_GRACE: Duration = Duration::from_secs(10);

impl Runtime {
    pub async fn create_container(
        self: &Arc<Self>,
        pod_id: &str,
        mut config: ContainerConfig,
    ) -> Result<String> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("container config has no metadata".into()))?;
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument(
                "container name must not be empty".into(),
            ));
        }
        let mut image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "container {:?} names no image",
                meta.name
            )));
        }
        let pod = self.pod(pod_id)?;
        pod.require_ready(&format!("adding container {:?}", meta.name))?;
        let id = ids::new_id();
        let dir = self.shim_dir(&id);
        // CRI-O's convention: an image that is a file on the node is a checkpoint archive to
        // restore the container from.
        let mut unpacked_dir = None;
        let restore = match checkpoint::archive_of(&image_name) {
            Some(archive) => {
                // A kubelet retrying a name that exists must not unpack the archive again.
                name_free(&self.objects().containers, &pod.id, &meta)?;
                unpacked_dir = Some(UnpackedDir(Some(dir.path().to_path_buf())));
                let unpacked = self.restore_config(&archive, &id, &pod, &mut config).await;
                image_name = config
                    .image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_default();
                Some(unpacked?)
            }
            None => None,
        };
        let image = self.images.find(&image_name).ok_or_else(|| {
            Error::NotFound(format!("image {image_name:?} not found: pull it first"))
        })?;
        let log_path = log_path(&pod.config.log_directory, &config.log_path)?;
        image_volumes::resolve(&mut config.mounts, &self.images)?;
        let mut rec = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            config: config.clone(),
            state: ContainerState::Creating,
            image_name,
            image_id: image.id.clone(),
            stop_signal: crate::container::stop_signal::effective(
                &config,
                &image.config.stop_signal,
            )?,
            log_path: log_path.clone(),
            pid: 0,
            created_at_ns: now_ns(),
            started_at_ns: 0,
            finished_at_ns: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            user: None,
        };
        {
            let mut objs = self.objects();
            name_free(&objs.containers, &pod.id, &meta)?;
            self.container_store.save(&id, &rec)?;
            // Recorded: from here on its teardown removes the directory.
            if let Some(d) = unpacked_dir.as_mut() {
                d.keep();
            }
            let (exited, _) = watch::channel(false);
            objs.containers.insert(
                id.clone(),
                ContainerEntry {
                    rec: rec.clone(),
                    shim: None,
                    exited,
                    op: Arc::new(tokio::sync::Mutex::new(())),
                },
            );
        }

        let result = self.materialise(&rec, &pod, &image, &dir, restore).await;
        match result {
            Ok((shim, user)) => {
                rec.user = user;
                rec.state = rec.state.transition(ContainerState::Created)?;
                self.container_store.save(&id, &rec)?;
                if let Some(e) = self.objects().containers.get_mut(&id) {
                    e.rec = rec;
                    e.shim = Some(shim);
                }
                self.publish(&id, &pod.id, ContainerEventType::ContainerCreatedEvent);
                tracing::info!(container = %id, pod = %pod.id, "container created");
                Ok(id)
            }
            Err(e) => {
                self.destroy_container(&rec, None).await;
                self.objects().containers.remove(&id);
                Err(e)
            }
        }
    }

    /// Rootfs, bundle and shim of a created container. The runtime's create waits for
    /// StartContainer, as containerd's CRI creates its task there: a created container is
    /// this, and no process.
    async fn materialise(
        self: &Arc<Self>,
        rec: &ContainerRecord,
        pod: &crate::pod::SandboxRecord,
        image: &crate::image::ImageRecord,
        dir: &ShimDir,
        restore: Option<checkpoint::Unpacked>,
    ) -> Result<(Shim, Option<ProcessUser>)> {
        let bundle = dir.bundle();
        let rootfs = bundle.join("rootfs");
        let me = self.clone();
        let (id, top) = (rec.id.clone(), image.top_layer().cloned());
        let (config, pod2, image_config) = (rec.config.clone(), pod.clone(), image.config.clone());
        let cgroups_path = PodCgroup::of(&pod.cgroup_parent).child(&rec.id).to_string();
        let log_path = rec.log_path.clone();
        let target_pidns = self.target_pid_namespace(&rec.config, &pod.id)?;
        // Debug-level step timings: what a slow create spent its time on.
        let began = std::time::Instant::now();
        let setup = tokio::task::spawn_blocking(move || -> Result<Option<ProcessUser>> {
            std::fs::create_dir_all(&rootfs)
                .map_err(|e| Error::internal(format!("creating {}", rootfs.display()), e))?;
            let top = top
                .map(|t| crisp_snapshotter::digest::Digest::parse(&t))
                .transpose()
                .map_err(|e| Error::internal("image layer id", e))?;
            let active = me
                .snapshotter
                .prepare_active(&id, top.as_ref())
                .map_err(|e| Error::internal(format!("preparing the writable layer of {id}"), e))?;
            if let Some(restore) = &restore {
                restore.apply_rootfs_diff(&active.upper)?;
            }
            match (&pod2.userns, pod2.idmap.as_ref().and_then(|m| m.root())) {
                (Some(userns), Some(owner)) => {
                    let ns = std::fs::File::open(userns)
                        .map_err(|e| Error::internal(format!("opening {}", userns.display()), e))?;
                    me.snapshotter
                        .mount_active_idmapped(&active, &rootfs, ns.as_fd(), owner)
                }
                _ => me.snapshotter.mount_active(&active, &rootfs),
            }
            .map_err(|e| Error::internal(format!("mounting the rootfs of {id}"), e))?;
            let image_volumes =
                image_volumes::stage(&config.mounts, &me.images, &me.snapshotter, &bundle)?;
            let mut spec = spec::build(&SpecInput {
                config: &config,
                pod: &pod2,
                image: &image_config,
                rootfs: &rootfs,
                cgroups_path,
                target_pidns,
                image_volumes: &image_volumes,
            })?;
            crate::container::cdi::inject(
                &mut spec,
                &crate::container::cdi::requested(&config),
                &crate::container::cdi::Registry::new(me.cfg.cdi.spec_dirs.clone()),
            )?;
            if let Some(userns) = &pod2.userns {
                idmapped_binds::stage(&mut spec, &bundle, userns)?;
            }
            spec.save(bundle.join("config.json"))
                .map_err(|e| Error::internal(format!("writing the bundle of {id}"), e))?;
            if let Some(parent) = log_path.as_ref().and_then(|p| p.parent()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::internal(format!("creating log dir {}", parent.display()), e)
                })?;
            }
            Ok(ProcessUser::of_spec(&spec))
        });
        // The shim starts meanwhile (its exec and start-up are ~2.5 ms of a create). If the
        // setup fails, the caller's teardown stops it as it would a shim whose create failed.
        let (setup, shim) = tokio::join!(setup, Shim::spawn(&self.shim_binary, dir, &rec.id));
        let user = setup.map_err(|e| Error::internal("container setup task", e))??;
        let shim = shim?;
        tracing::debug!(
            ms = began.elapsed().as_millis(),
            "rootfs mounted, bundle written, shim serving"
        );
        Ok((shim, user))
    }

    /// The runtime's create, at StartContainer: the shim creates the container from the
    /// bundle (or, for a checkpoint, takes the images to restore at its start: then true).
    async fn create_in_shim(&self, rec: &ContainerRecord, shim: &Shim) -> Result<bool> {
        let dir = self.shim_dir(&rec.id);
        let target = match &rec.log_path {
            Some(p) => StdioTarget::CriLog(p.clone()),
            None => StdioTarget::Null,
        }
        .to_uri();
        let stdin = if rec.config.stdin {
            StdioTarget::Attach {
                once: rec.config.stdin_once,
            }
        } else {
            StdioTarget::Null
        };
        let stdio = TaskStdio {
            stdin: stdin.to_uri(),
            stdout: target.clone(),
            stderr: target,
            terminal: rec.config.tty,
        };
        let restore = checkpoint::pending_images(&dir);
        let began = std::time::Instant::now();
        let created = match shim.create(&dir.bundle(), &stdio, restore.as_deref()).await {
            // Created in its shim already: by an earlier crispd, which did it at CreateContainer.
            Err(Error::AlreadyExists(_)) => return Ok(false),
            other => other,
        };
        tracing::debug!(ms = began.elapsed().as_millis(), "runtime create returned");
        let staged = rec
            .config
            .mounts
            .iter()
            .any(|m| image_volumes::image_of(m).is_some())
            || self
                .objects()
                .pods
                .get(&rec.pod_id)
                .is_some_and(|p| p.userns.is_some());
        if staged && created.is_ok() {
            // The container's mount namespace holds its own references by now.
            let bundle = dir.bundle();
            tokio::task::spawn_blocking(move || {
                idmapped_binds::release(&bundle);
                image_volumes::release(&bundle);
            })
            .await
            .map_err(|e| Error::internal("releasing staged mounts", e))?;
        }
        created.map(|_| restore.is_some())
    }

    /// For pid mode TARGET: the PID namespace of the named container, which must be running
    /// in the same pod (as for an ephemeral debug container).
    fn target_pid_namespace(
        &self,
        config: &ContainerConfig,
        pod_id: &str,
    ) -> Result<Option<PathBuf>> {
        let Some(opts) = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .filter(|n| n.pid == NamespaceMode::Target as i32)
        else {
            return Ok(None);
        };
        if opts.target_id.is_empty() {
            return Err(Error::InvalidArgument(
                "pid namespace mode TARGET needs a target_id".into(),
            ));
        }
        let target = self.resolve_container(&opts.target_id)?;
        let objs = self.objects();
        let t = objs
            .containers
            .get(&target)
            .ok_or_else(|| Error::NotFound(format!("target container {target} not found")))?;
        if t.rec.pod_id != pod_id {
            return Err(Error::InvalidArgument(format!(
                "target container {target} belongs to pod {}, not {pod_id}",
                t.rec.pod_id
            )));
        }
        if t.rec.state != ContainerState::Running || t.rec.pid == 0 {
            return Err(Error::FailedPrecondition(format!(
                "target container {target} is not running ({:?})",
                t.rec.state
            )));
        }
        Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", t.rec.pid))))
    }

    pub fn resolve_container(&self, id: &str) -> Result<String> {
        let objs = self.objects();
        ids::resolve("container", id, objs.containers.keys())
    }

    pub(super) fn entry_parts(&self, id: &str) -> Result<EntryView> {
        let objs = self.objects();
        let e = objs
            .containers
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        Ok(EntryView {
            rec: e.rec.clone(),
            shim: e.shim.clone(),
            op: e.op.clone(),
            exited: e.exited.subscribe(),
        })
    }

    pub fn container(&self, id: &str) -> Result<ContainerRecord> {
        let id = self.resolve_container(id)?;
        Ok(self.entry_parts(&id)?.rec)
    }

    pub async fn start_container(self: &Arc<Self>, id: &str) -> Result<()> {
        let id = self.resolve_container(id)?;
        let op = self.entry_parts(&id)?.op;
        let _guard = op.lock().await;
        let EntryView { rec, shim, .. } = self.entry_parts(&id)?;
        if rec.state != ContainerState::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is {:?}: only a created container can be started",
                rec.state
            )));
        }
        let shim = shim.ok_or_else(|| Error::Internal(format!("container {id} has no shim")))?;
        let watcher = shim.clone();
        // Taken before the start: a short-lived container can exit before the call returns,
        // and finished_at must not precede started_at.
        let started_at = now_ns();
        let started = match self.create_in_shim(&rec, &shim).await {
            Ok(restoring) if restoring => shim.start_within(checkpoint::RESTORE_TIMEOUT).await,
            Ok(_) => shim.start().await,
            Err(e) => Err(e),
        };
        match started {
            Ok(pid) => {
                self.update_container(&id, |r| {
                    r.state = r.state.transition(ContainerState::Running)?;
                    r.started_at_ns = started_at;
                    // A restored container's process exists from its start on.
                    if pid > 0 {
                        r.pid = pid;
                    }
                    Ok(())
                })?;
                // A restore's CRIU images (the container's memory) are not needed any more.
                let restored = self.shim_dir(&id).restore_from();
                if restored.exists() {
                    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(restored));
                }
                self.watch_exit(id.clone(), watcher);
                self.publish(&id, &rec.pod_id, ContainerEventType::ContainerStartedEvent);
                tracing::info!(container = %id, "container started");
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                let _ = self.update_container(&id, |r| r.exited(128, now_ns(), false, msg.clone()));
                let _ = self.update_container(&id, |r| {
                    r.reason = "StartError".into();
                    Ok(())
                });
                self.signal_exited(&id);
                self.release_when_exited(id.clone());
                Err(e)
            }
        }
    }

    /// Waits on the shim for the exit and records it.
    pub(super) fn watch_exit(self: &Arc<Self>, id: String, shim: Shim) {
        let me = self.clone();
        tokio::spawn(async move {
            let exit = match shim.wait().await {
                // The shim persisted the exit (with what only it knows: the OOM kill) before
                // answering; prefer that record.
                Ok(exit) => Ok(me.exit_from_record(&id).unwrap_or(exit)),
                // The shim died: its persisted record, if any, still tells the truth; whatever
                // still runs of the container has nobody to supervise it any more.
                Err(e) => {
                    me.stop_orphan(&id).await;
                    me.exit_from_record(&id).ok_or(e)
                }
            };
            match exit {
                Ok(exit) => me.record_exit(&id, exit, String::new()),
                Err(e) => me.record_exit(
                    &id,
                    Exit {
                        code: 255,
                        at_ns: now_ns(),
                        oom_killed: false,
                    },
                    format!("shim lost: {e}"),
                ),
            }
            me.release_when_exited(id);
        });
    }

    /// A container whose shim died: kills what is left of it and removes its runtime state,
    /// through the shim binary's one-shot libcontainer helper (as containerd runs
    /// `containerd-shim-… delete` after losing a shim). Best effort: it is logged, not returned.
    pub(super) async fn stop_orphan(&self, id: &str) {
        let dir = self.shim_dir(id);
        let run = tokio::process::Command::new(&self.shim_binary)
            .args(["__runtime", "delete", "--root"])
            .arg(dir.runtime_root())
            .args(["--id", id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(Duration::from_secs(20), run).await {
            Ok(Ok(out)) if out.status.success() => {
                tracing::warn!(container = %id, "shim lost: stopped what was left of the container")
            }
            Ok(Ok(out)) => tracing::error!(
                container = %id,
                error = %String::from_utf8_lossy(&out.stderr).trim(),
                "shim lost: cleaning up the container failed"
            ),
            Ok(Err(e)) => tracing::error!(container = %id, error = %e, "shim lost: cleanup helper"),
            Err(_) => tracing::error!(container = %id, "shim lost: cleanup helper timed out"),
        }
    }

    pub(super) fn exit_from_record(&self, id: &str) -> Option<Exit> {
        let dir = self.shim_dir(id);
        crisp_api::ExitRecord::load(&dir.exit_record())
            .ok()
            .flatten()
            .map(|r| Exit {
                code: r.exit_code,
                at_ns: r.exited_at_ns,
                oom_killed: r.oom_killed,
            })
    }

    pub(super) fn record_exit(&self, id: &str, exit: Exit, message: String) {
        let r = self.update_container(id, |r| {
            if r.state == ContainerState::Exited {
                return Ok(());
            }
            r.exited(
                exit.code,
                if exit.at_ns > 0 { exit.at_ns } else { now_ns() },
                exit.oom_killed,
                message.clone(),
            )
        });
        if let Err(e) = r {
            tracing::warn!(container = %id, error = %e, "recording exit");
        }
        self.signal_exited(id);
        if let Ok(rec) = self.entry_parts(id).map(|e| e.rec) {
            self.publish(id, &rec.pod_id, ContainerEventType::ContainerStoppedEvent);
        }
        tracing::info!(container = %id, code = exit.code, "container exited");
    }

    fn signal_exited(&self, id: &str) {
        if let Some(e) = self.objects().containers.get(id) {
            e.exited.send_replace(true);
        }
    }

    pub(super) fn update_container(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord) -> Result<()>,
    ) -> Result<()> {
        let mut objs = self.objects();
        let e = objs
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        let mut rec = e.rec.clone();
        f(&mut rec)?;
        self.container_store.save(id, &rec)?;
        e.rec = rec;
        Ok(())
    }

    /// Stops a container; one that does not exist (any more) counts as stopped.
    pub async fn stop_container(self: &Arc<Self>, id: &str, timeout_s: i64) -> Result<()> {
        ok_if_gone(self.stop_existing_container(id, timeout_s).await)
    }

    async fn stop_existing_container(self: &Arc<Self>, id: &str, timeout_s: i64) -> Result<()> {
        let id = self.resolve_container(id)?;
        let op = self.entry_parts(&id)?.op;
        let _guard = op.lock().await;
        self.stop_locked(&id, timeout_s).await?;
        self.release_exited_locked(&id).await;
        Ok(())
    }

    /// What an exited container no longer needs, released as soon as it exits (containerd's
    /// exit handler deletes the task the same way): the runtime's state and cgroup (the shim's
    /// Task delete), the shim itself, and the rootfs mount. Its record, logs and writable layer
    /// stay for ContainerStatus and logs until RemoveContainer, which then has little left to
    /// do. Called with the container's op lock held; best effort: whatever is left here,
    /// RemoveContainer's teardown removes.
    async fn release_exited_locked(&self, id: &str) {
        let Ok(EntryView { rec, shim, .. }) = self.entry_parts(id) else {
            return;
        };
        if rec.state != ContainerState::Exited {
            return;
        }
        if let Some(shim) = shim {
            match shim.delete().await {
                // NotFound: a start that failed before the shim's create.
                Ok(()) | Err(Error::NotFound(_)) => {
                    shim.shutdown().await;
                    if let Some(e) = self.objects().containers.get_mut(id) {
                        e.shim = None;
                    }
                }
                // Kept for RemoveContainer's teardown to try again (a lost shim's container
                // was cleaned up by `stop_orphan` already).
                Err(e) => {
                    tracing::debug!(container = %id, error = %e, "releasing an exited container: shim delete")
                }
            }
        }
        // Nothing of an exited container runs in its rootfs any more (a survivor of a host-PID
        // container is detached from it lazily).
        let rootfs = self.shim_dir(id).bundle().join("rootfs");
        let unmounted =
            tokio::task::spawn_blocking(move || crisp_snapshotter::overlay::unmount(&rootfs)).await;
        if let Ok(Err(e)) = unmounted {
            tracing::warn!(container = %id, error = %e, "releasing an exited container: rootfs");
        }
        tracing::debug!(container = %id, "exited container released");
    }

    /// For a container that exits on its own (no StopContainer holds its lock), one found
    /// exited at recovery, and one whose start failed.
    pub(super) fn release_when_exited(self: &Arc<Self>, id: String) {
        let me = self.clone();
        tokio::spawn(async move {
            let Ok(op) = me.entry_parts(&id).map(|e| e.op) else {
                return;
            };
            let _guard = op.lock().await;
            me.release_exited_locked(&id).await;
        });
    }

    async fn stop_locked(&self, id: &str, timeout_s: i64) -> Result<()> {
        let EntryView {
            rec,
            shim,
            mut exited,
            ..
        } = self.entry_parts(id)?;
        if rec.state != ContainerState::Running {
            return Ok(());
        }
        let shim = shim.ok_or_else(|| Error::Internal(format!("container {id} has no shim")))?;
        if timeout_s > 0 {
            shim.kill(rec.stop_signal as u32, false).await?;
            let wait = exited.wait_for(|e| *e);
            if tokio::time::timeout(Duration::from_secs(timeout_s as u64), wait)
                .await
                .is_ok()
            {
                return Ok(());
            }
            tracing::info!(container = %id, "stop timeout passed: killing");
        }
        shim.kill(libc::SIGKILL as u32, true).await?;
        let wait = exited.wait_for(|e| *e);
        tokio::time::timeout(KILL_GRACE, wait)
            .await
            .map_err(|_| {
                Error::DeadlineExceeded(format!("container {id} did not die after SIGKILL"))
            })?
            .map_err(|_| Error::Internal(format!("container {id} vanished while stopping")))?;
        Ok(())
    }

    /// Removes a container; one that does not exist (any more) counts as removed.
    pub async fn remove_container(self: &Arc<Self>, id: &str) -> Result<()> {
        ok_if_gone(self.remove_existing_container(id).await)
    }

    async fn remove_existing_container(self: &Arc<Self>, id: &str) -> Result<()> {
        let id = self.resolve_container(id)?;
        let op = self.entry_parts(&id)?.op;
        let _guard = op.lock().await;
        if let Err(e) = self.stop_locked(&id, 0).await {
            tracing::warn!(container = %id, error = %e, "stopping before removal");
        }
        let Ok(EntryView { rec, shim, .. }) = self.entry_parts(&id) else {
            return Ok(());
        };
        self.destroy_container(&rec, shim).await;
        self.cpu_samples.forget(&id);
        self.objects().containers.remove(&id);
        self.publish(&id, &rec.pod_id, ContainerEventType::ContainerDeletedEvent);
        tracing::info!(container = %id, "container removed");
        Ok(())
    }

    /// Tears down everything a container made, tolerating a shim that is already gone.
    pub(super) async fn destroy_container(&self, rec: &ContainerRecord, shim: Option<Shim>) {
        // Debug-level step timings, as for a create.
        let began = std::time::Instant::now();
        let dir = self.shim_dir(&rec.id);
        let shim = match shim {
            Some(s) => Some(s),
            None => Shim::connect(&dir, &rec.id).await.ok(),
        };
        if let Some(shim) = &shim {
            match shim.delete().await {
                // A container never started was never created in its shim.
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => tracing::warn!(container = %rec.id, error = %e, "shim delete"),
            }
            tracing::debug!(
                us = began.elapsed().as_micros(),
                "shim deleted the container"
            );
            shim.shutdown().await;
            tracing::debug!(us = began.elapsed().as_micros(), "shim shut down");
        }
        let cgroup = self
            .objects()
            .pods
            .get(&rec.pod_id)
            .map(|p| PodCgroup::of(&p.cgroup_parent).child_dir(&rec.id));
        let snapshotter = self.snapshotter.clone();
        let id = rec.id.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(cg) = cgroup {
                let left = crate::cgroups::kill_and_remove_tree(&cg);
                if !left.is_empty() {
                    tracing::warn!(container = %id, ?left, "container cgroups still busy");
                }
            }
            crate::container::shim_client::kill_recorded_shim(&dir);
            tracing::debug!(us = began.elapsed().as_micros(), "cgroup removed");
            let rootfs = dir.bundle().join("rootfs");
            if let Err(e) = crisp_snapshotter::overlay::unmount(&rootfs) {
                tracing::warn!(container = %id, error = %e, "unmounting rootfs");
            }
            tracing::debug!(us = began.elapsed().as_micros(), "rootfs unmounted");
            // Out of the snapshotter at once; its files are deleted after the call returns.
            match snapshotter.detach_active(&id) {
                Ok(Some(detached)) => {
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = std::fs::remove_dir_all(&detached) {
                            tracing::warn!(dir = %detached.display(), error = %e, "deleting a writable layer");
                        }
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(container = %id, error = %e, "removing writable layer"),
            }
            tracing::debug!(us = began.elapsed().as_micros(), "writable layer removed");
            dir.remove_sockets();
            let bundle = dir.bundle();
            let released = [
                idmapped_binds::release(&bundle),
                image_volumes::release(&bundle),
            ];
            if released.contains(&false) {
                tracing::warn!(container = %id, "staged mounts still attached; container dir kept");
                return;
            }
            if let Err(e) = std::fs::remove_dir_all(dir.path()) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(container = %id, error = %e, "removing container dir");
                }
            }
        })
        .await;
        tracing::debug!(us = began.elapsed().as_micros(), "container dir removed");
        if let Err(e) = self.container_store.remove(&rec.id) {
            tracing::warn!(container = %rec.id, error = %e, "removing container record");
        }
        tracing::debug!(us = began.elapsed().as_micros(), "container record removed");
    }

    pub fn list_containers(&self, filter: Option<&ContainerFilter>) -> Vec<ContainerRecord> {
        let objs = self.objects();
        objs.containers
            .values()
            .map(|e| &e.rec)
            .filter(|c| c.state != ContainerState::Creating)
            .filter(|c| {
                let Some(f) = filter else { return true };
                (f.id.is_empty() || c.id.starts_with(&f.id))
                    && (f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
                    && f.state
                        .as_ref()
                        .is_none_or(|s| s.state == c.state.to_cri() as i32)
                    && f.label_selector
                        .iter()
                        .all(|(k, v)| c.config.labels.get(k) == Some(v))
            })
            .cloned()
            .collect()
    }
}

/// The log file: the pod's log directory joined with the container's relative log path. The
/// path must stay inside the directory.
fn log_path(log_directory: &str, rel: &str) -> Result<Option<PathBuf>> {
    if log_directory.is_empty() || rel.is_empty() {
        return Ok(None);
    }
    let rel_path = Path::new(rel);
    if rel_path.is_absolute()
        || rel_path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(Error::InvalidArgument(format!(
            "log path {rel:?} must be relative to the pod's log directory, without '..'"
        )));
    }
    if !Path::new(log_directory).is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "pod log directory {log_directory:?} must be absolute"
        )));
    }
    Ok(Some(Path::new(log_directory).join(rel_path)))
}

impl Runtime {
    /// ReopenContainerLog: the shim (which writes the log) reopens it by path after kubelet
    /// rotated it away. Only for running containers: for others nothing may create a new file.
    pub async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let id = self.resolve_container(id)?;
        let rec = self.entry_parts(&id)?.rec;
        if rec.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running: its log cannot be reopened"
            )));
        }
        let Some(log) = rec.log_path.clone() else {
            return Ok(());
        };
        let dir = self.shim_dir(&id);
        if !crate::container::shim_client::signal_recorded_shim(
            &dir,
            nix::sys::signal::Signal::SIGUSR1,
        ) {
            return Err(Error::Internal(format!(
                "the shim of container {id} is gone"
            )));
        }
        // The shim reopens asynchronously; the CRI expects the new file once we return.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !log.exists() {
            if std::time::Instant::now() > deadline {
                return Err(Error::Internal(format!(
                    "the shim of container {id} did not reopen {}",
                    log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// UpdateContainerResources: new cgroup limits applied live by the shim, and remembered in
    /// the record so ContainerStatus reports them.
    pub async fn update_container_resources(
        self: &Arc<Self>,
        id: &str,
        resources: crisp_cri_api::v1::LinuxContainerResources,
    ) -> Result<()> {
        let id = self.resolve_container(id)?;
        let op = self.entry_parts(&id)?.op;
        let _guard = op.lock().await;
        let EntryView { rec, shim, .. } = self.entry_parts(&id)?;
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is {:?}: cannot update its resources",
                rec.state
            )));
        }
        let oci = spec::cgroup_resources(&resources)?;
        if rec.state == ContainerState::Created {
            // No cgroup yet (the runtime creates it at start): the bundle's spec is updated.
            let bundle = self.shim_dir(&id).bundle();
            tokio::task::spawn_blocking(move || spec::update_bundle_resources(&bundle, oci))
                .await
                .map_err(|e| Error::internal("updating the bundle", e))??;
        } else {
            let json =
                serde_json::to_vec(&oci).map_err(|e| Error::internal("encoding resources", e))?;
            let shim =
                shim.ok_or_else(|| Error::Internal(format!("container {id} has no shim")))?;
            shim.update(json).await?;
        }
        self.update_container(&id, |r| {
            r.config
                .linux
                .get_or_insert_with(Default::default)
                .resources = Some(resources);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_inside_the_pod_log_dir() {
        assert_eq!(
            log_path("/var/log/pods/x", "c/0.log").unwrap(),
            Some(PathBuf::from("/var/log/pods/x/c/0.log"))
        );
        assert!(log_path("/var/log/pods/x", "../../etc/passwd").is_err());
        assert!(log_path("/var/log/pods/x", "/etc/passwd").is_err());
        assert_eq!(log_path("", "c.log").unwrap(), None);
    }
}
