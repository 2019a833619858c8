//! The containerd runtime v2 Task service for the one container this shim owns.
//!
//! State machine of the container as the shim sees it: `Created` → (Start) → `Running` → (the
//! init exits) → `Stopped` → (Delete) → `Deleted`. A transition asked for from the wrong state is
//! a FAILED_PRECONDITION error naming the container and its state.

use crate::attach::Attachers;
use crate::forkserver::ForkServer;
use crate::helper::RuntimeHelper;
use crate::reaper::Reaper;
use crate::stdio::{self, ProcessIo, StdioRequest};
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::Task;
use crisp_api::{ExitRecord, ShimDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;
use ttrpc::{Code, TtrpcContext};

/// How long an exit waits for its output to drain before it is reported anyway.
const IO_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an exit waits for systemd to remove the container's emptied scope, and with it for
/// the OOM watch to have read its last count (`oom::Watch::finish`).
const OOM_WATCH_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    Stopped,
    Deleted,
}

/// The container's init or one of its exec processes.
struct Process {
    pid: u32,
    phase: Phase,
    exit: Option<ExitRecord>,
    stdin: String,
    stdout: String,
    stderr: String,
    terminal: bool,
    /// The pty master while the process runs with a terminal (for resizes).
    console: Option<std::fs::File>,
}

impl Process {
    fn new(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Process {
        Process {
            pid: 0,
            phase: Phase::Created,
            exit: None,
            stdin: stdin.to_string(),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            terminal,
            console: None,
        }
    }
}

struct Container {
    id: String,
    bundle: String,
    /// The container's cgroup (from its spec, read once at Create).
    cgroup: Option<PathBuf>,
    init: Process,
    execs: HashMap<String, Process>,
    /// The rootfs this shim mounted from the request (containerd's way), unmounted at Delete.
    mounted_rootfs: Option<PathBuf>,
    /// Created from a checkpoint: CRIU restores the init at Start, into this stdio.
    restore: Option<PendingRestore>,
}

/// A container created from CRIU images (containerd's `CreateTaskRequest.checkpoint`): no
/// process exists until Start restores one, as containerd's and CRI-O's restores run at start.
struct PendingRestore {
    images: PathBuf,
    stdio: stdio::Prepared,
}

impl Container {
    fn process(&mut self, exec_id: &str) -> ttrpc::Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        let id = &self.id;
        self.execs.get_mut(exec_id).ok_or_else(|| {
            err(
                Code::NOT_FOUND,
                format!("exec {exec_id} not found in container {id}"),
            )
        })
    }
}

struct Inner {
    dir: ShimDir,
    helper: RuntimeHelper,
    reaper: Reaper,
    container: Mutex<Option<Container>>,
    /// The init's CRI log, reopened on SIGUSR1 (crispd's ReopenContainerLog).
    log: Mutex<Option<crate::cri_log::CriLog>>,
    /// Clients attached to the init's stdio.
    attach: Attachers,
    changed: Condvar,
    shutdown: Mutex<mpsc::Sender<()>>,
}

#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

fn err(code: Code, msg: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

fn timestamp(ns: i64) -> MessageField<Timestamp> {
    let mut t = Timestamp::new();
    t.seconds = ns.div_euclid(1_000_000_000);
    t.nanos = ns.rem_euclid(1_000_000_000) as i32;
    MessageField::some(t)
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

impl TaskService {
    pub fn new(
        dir: ShimDir,
        reaper: Reaper,
        forkserver: Option<ForkServer>,
        shutdown: mpsc::Sender<()>,
    ) -> TaskService {
        let helper =
            RuntimeHelper::new(reaper.clone(), dir.runtime_root()).with_forkserver(forkserver);
        TaskService {
            inner: Arc::new(Inner {
                dir,
                helper,
                reaper,
                container: Mutex::new(None),
                log: Mutex::new(None),
                attach: Attachers::default(),
                changed: Condvar::new(),
                shutdown: Mutex::new(shutdown),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Container>> {
        self.inner
            .container
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Checks that `id` names our container and runs `f` on it under the lock.
    fn with_container<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container) -> ttrpc::Result<T>,
    ) -> ttrpc::Result<T> {
        let mut guard = self.lock();
        match guard.as_mut() {
            Some(c) if c.id == id && c.init.phase != Phase::Deleted => f(c),
            _ => Err(err(
                Code::NOT_FOUND,
                format!("container {id} not found in this shim"),
            )),
        }
    }

    /// Waits for a process to exit, lets its output drain, persists the init's exit, then
    /// publishes it.
    fn monitor(&self, exec_id: String, pid: u32, io: ProcessIo) {
        let cgroup = self.lock().as_ref().and_then(|c| c.cgroup.clone());
        let oom_watch = cgroup
            .as_deref()
            .filter(|_| exec_id.is_empty())
            .and_then(crate::oom::Watch::start);
        let code = self.inner.reaper.wait(pid as i32);
        io.wait_drained(IO_DRAIN_TIMEOUT);
        if exec_id.is_empty() {
            self.inner.attach.close();
        }
        let oom_killed = exec_id.is_empty()
            && (oom_watch.is_some_and(|w| w.finish(OOM_WATCH_GRACE) > 0)
                || cgroup.is_some_and(|p| crate::oom::oom_kills(&p) > 0));
        let record = ExitRecord {
            pid,
            exit_code: code,
            exited_at_ns: now_ns(),
            oom_killed,
        };
        if exec_id.is_empty() {
            if let Err(e) = record.store(&self.inner.dir.exit_record()) {
                tracing::error!(error = %e, "persisting the exit record");
            }
        }
        let mut guard = self.lock();
        if let Some(p) = guard.as_mut().and_then(|c| c.process(&exec_id).ok()) {
            if p.pid == pid {
                p.exit = Some(record);
                p.console = None;
                if p.phase != Phase::Deleted {
                    p.phase = Phase::Stopped;
                }
            }
        }
        self.inner.changed.notify_all();
    }

    /// Reopens the container's CRI log (after kubelet rotated it).
    pub fn reopen_log(&self) {
        if let Some(log) = self
            .inner
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if let Err(e) = log.reopen() {
                tracing::error!(error = %e, "reopening the container log");
            }
        }
    }

    /// Serves attach clients of the init on `path`.
    pub fn listen_attach(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.inner.attach.listen(path)
    }

    /// Start of a container created from a checkpoint: CRIU restores its init.
    fn start_restored(&self, id: &str, restore: PendingRestore) -> ttrpc::Result<u32> {
        let bundle = self.with_container(id, |c| Ok(PathBuf::from(&c.bundle)))?;
        let (stdio, pending) = restore.stdio.split();
        let pid = self
            .inner
            .helper
            .restore(id, &bundle, &restore.images, stdio)
            .map_err(|e| err(Code::INTERNAL, format!("restoring container {id}: {e}")))?;
        let io = pending.finish().map_err(|e| {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            err(Code::INTERNAL, format!("stdio of restored {id}: {e}"))
        })?;
        // From here on a restored process exists: on any error it is killed, not left unwatched.
        let watched = self
            .with_container(id, |c| {
                c.init.pid = pid;
                Ok(())
            })
            .and_then(|()| {
                *self.inner.log.lock().unwrap_or_else(|e| e.into_inner()) = io.log.clone();
                self.spawn_monitor(String::new(), pid, io)
            });
        if let Err(e) = watched {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            return Err(e);
        }
        Ok(pid)
    }

    fn spawn_monitor(&self, exec_id: String, pid: u32, io: ProcessIo) -> ttrpc::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || me.monitor(exec_id, pid, io))
            .map(|_| ())
            .map_err(|e| err(Code::INTERNAL, format!("starting the exit monitor: {e}")))
    }

    fn cgroup_pids(&self, cgroup: Option<PathBuf>, id: &str) -> Vec<Pid> {
        use libcgroups::common::{create_cgroup_manager, CgroupManager};
        let Some(cg) = cgroup else {
            return Vec::new();
        };
        create_cgroup_manager(crate::cgroup::config(&cg, id))
            .ok()
            .and_then(|m| m.get_all_pids().ok())
            .unwrap_or_default()
    }
}

fn exit_fields(exit: Option<ExitRecord>) -> (u32, MessageField<Timestamp>) {
    match exit {
        Some(e) => (e.exit_code as u32, timestamp(e.exited_at_ns)),
        None => (0, MessageField::none()),
    }
}

impl Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        let _span = tracing::info_span!("create", container = %req.id).entered();
        if !req.checkpoint.is_empty() && req.terminal {
            return Err(err(
                Code::INVALID_ARGUMENT,
                format!(
                    "container {}: restoring a checkpoint into a terminal is not supported",
                    req.id
                ),
            ));
        }
        {
            let mut guard = self.lock();
            if let Some(c) = guard.as_ref() {
                return Err(err(
                    Code::ALREADY_EXISTS,
                    format!("this shim already runs container {}", c.id),
                ));
            }
            // Reserve the slot so a concurrent Create cannot race us.
            *guard = Some(Container {
                id: req.id.clone(),
                bundle: req.bundle.clone(),
                cgroup: crate::cgroup::of_bundle(std::path::Path::new(&req.bundle)),
                init: Process::new(&req.stdin, &req.stdout, &req.stderr, req.terminal),
                execs: HashMap::new(),
                mounted_rootfs: None,
                restore: None,
            });
        }
        if !req.rootfs.is_empty() {
            let target = PathBuf::from(&req.bundle).join("rootfs");
            let mounts: Vec<(String, String, Vec<String>)> = req
                .rootfs
                .iter()
                .map(|m| (m.type_.clone(), m.source.clone(), m.options.clone()))
                .collect();
            if let Err(e) = crate::rootfs::mount_all(&mounts, &target) {
                crate::rootfs::unmount_all(&target);
                *self.lock() = None;
                return Err(err(Code::INTERNAL, format!("container {}: {e}", req.id)));
            }
            if let Some(c) = self.lock().as_mut() {
                c.mounted_rootfs = Some(target);
            }
        }
        let prepared = stdio::prepare(StdioRequest {
            stdin: &req.stdin,
            stdout: &req.stdout,
            stderr: &req.stderr,
            terminal: req.terminal,
            console_socket: self.inner.dir.console_socket(""),
            attach: Some(self.inner.attach.clone()),
        })
        .map_err(|e| {
            err(
                Code::INTERNAL,
                format!("setting up stdio of {}: {e}", req.id),
            )
        });
        if !req.checkpoint.is_empty() {
            let pending = prepared.map(|stdio| PendingRestore {
                images: PathBuf::from(&req.checkpoint),
                stdio,
            });
            return match pending {
                Ok(pending) => {
                    self.with_container(&req.id, |c| {
                        c.restore = Some(pending);
                        Ok(())
                    })?;
                    Ok(api::CreateTaskResponse::new())
                }
                Err(e) => {
                    if let Some(target) = self.lock().take().and_then(|c| c.mounted_rootfs) {
                        crate::rootfs::unmount_all(&target);
                    }
                    Err(e)
                }
            };
        }
        let created = prepared.and_then(|prepared| {
            let (stdio, pending) = prepared.split();
            let cgroup = self.lock().as_ref().and_then(|c| c.cgroup.clone());
            let pid = self
                .inner
                .helper
                .create(
                    &req.id,
                    PathBuf::from(&req.bundle).as_path(),
                    cgroup.as_deref(),
                    stdio,
                )
                .map_err(|e| {
                    err(
                        Code::INTERNAL,
                        format!("creating container {}: {e}", req.id),
                    )
                })?;
            let io = pending.finish().map_err(|e| {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                err(
                    Code::INTERNAL,
                    format!("terminal of container {}: {e}", req.id),
                )
            })?;
            Ok((pid, io))
        });
        let (pid, mut io) = match created {
            Ok(v) => v,
            Err(e) => {
                if let Some(target) = self.lock().take().and_then(|c| c.mounted_rootfs) {
                    crate::rootfs::unmount_all(&target);
                }
                return Err(e);
            }
        };
        let console = io.console.take();
        self.with_container(&req.id, |c| {
            c.init.pid = pid;
            c.init.console = console;
            Ok(())
        })?;
        *self.inner.log.lock().unwrap_or_else(|e| e.into_inner()) = io.log.clone();
        self.spawn_monitor(String::new(), pid, io)?;
        let mut resp = api::CreateTaskResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> ttrpc::Result<api::Empty> {
        let _span = tracing::info_span!("exec", container = %req.id, exec = %req.exec_id).entered();
        if req.exec_id.is_empty()
            || req.exec_id.len() > 64
            || !req
                .exec_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err(
                Code::INVALID_ARGUMENT,
                format!("invalid exec id {:?}", req.exec_id),
            ));
        }
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        serde_json::from_slice::<oci_spec::runtime::Process>(&spec).map_err(|e| {
            err(
                Code::INVALID_ARGUMENT,
                format!("invalid exec process spec: {e}"),
            )
        })?;
        let spec_path = self.inner.dir.exec_spec(&req.exec_id);
        self.with_container(&req.id, |c| {
            if c.init.phase != Phase::Running {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    format!("container {} is not running", c.id),
                ));
            }
            if c.execs.contains_key(&req.exec_id) {
                return Err(err(
                    Code::ALREADY_EXISTS,
                    format!("exec {} already exists in container {}", req.exec_id, c.id),
                ));
            }
            if let Some(parent) = spec_path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    err(
                        Code::INTERNAL,
                        format!("creating {}: {e}", parent.display()),
                    )
                })?;
            }
            std::fs::write(&spec_path, &spec).map_err(|e| {
                err(
                    Code::INTERNAL,
                    format!("writing {}: {e}", spec_path.display()),
                )
            })?;
            c.execs.insert(
                req.exec_id.clone(),
                Process::new(&req.stdin, &req.stdout, &req.stderr, req.terminal),
            );
            Ok(())
        })?;
        Ok(api::Empty::new())
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> ttrpc::Result<api::StartResponse> {
        let _span =
            tracing::info_span!("start", container = %req.id, exec = %req.exec_id).entered();
        let (pid, stdin, stdout, stderr, terminal) = self.with_container(&req.id, |c| {
            let id = c.id.clone();
            let p = c.process(&req.exec_id)?;
            match p.phase {
                Phase::Created => Ok((
                    p.pid,
                    p.stdin.clone(),
                    p.stdout.clone(),
                    p.stderr.clone(),
                    p.terminal,
                )),
                phase => Err(err(
                    Code::FAILED_PRECONDITION,
                    format!(
                        "container {id} process {:?} cannot start: it is {phase:?}",
                        req.exec_id
                    ),
                )),
            }
        })?;
        let restore = if req.exec_id.is_empty() {
            self.with_container(&req.id, |c| Ok(c.restore.take()))?
        } else {
            None
        };
        let pid = if let Some(restore) = restore {
            self.start_restored(&req.id, restore)?
        } else if req.exec_id.is_empty() {
            self.inner.helper.start(&req.id).map_err(|e| {
                err(
                    Code::INTERNAL,
                    format!("starting container {}: {e}", req.id),
                )
            })?;
            pid
        } else {
            let (stdio, pending) = stdio::prepare(StdioRequest {
                stdin: &stdin,
                stdout: &stdout,
                stderr: &stderr,
                terminal,
                console_socket: self.inner.dir.console_socket(&req.exec_id),
                attach: None,
            })
            .map_err(|e| err(Code::INTERNAL, format!("setting up exec stdio: {e}")))?
            .split();
            let spec_path = self.inner.dir.exec_spec(&req.exec_id);
            let started = self
                .inner
                .helper
                .exec(&req.id, &spec_path, stdio)
                .map_err(|e| e.to_string())
                .and_then(|pid| match pending.finish() {
                    Ok(io) => Ok((pid, io)),
                    Err(e) => {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                        Err(format!("its terminal: {e}"))
                    }
                });
            let _ = std::fs::remove_file(&spec_path);
            let (pid, mut io) = match started {
                Ok(v) => v,
                Err(e) => {
                    let _ = self.with_container(&req.id, |c| {
                        c.execs.remove(&req.exec_id);
                        Ok(())
                    });
                    return Err(err(
                        Code::INTERNAL,
                        format!("exec {} in container {}: {e}", req.exec_id, req.id),
                    ));
                }
            };
            let console = io.console.take();
            self.with_container(&req.id, |c| {
                let p = c.process(&req.exec_id)?;
                p.pid = pid;
                p.console = console;
                Ok(())
            })?;
            self.spawn_monitor(req.exec_id.clone(), pid, io)?;
            pid
        };
        self.with_container(&req.id, |c| {
            let p = c.process(&req.exec_id)?;
            if p.phase == Phase::Created {
                p.phase = Phase::Running;
            }
            Ok(())
        })?;
        let mut resp = api::StartResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<api::Empty> {
        let _span = tracing::info_span!("kill", container = %req.id, signal = req.signal).entered();
        let signal = Signal::try_from(req.signal as i32).map_err(|_| {
            err(
                Code::INVALID_ARGUMENT,
                format!("unknown signal {}", req.signal),
            )
        })?;
        let (pid, cgroup, phase) = self.with_container(&req.id, |c| {
            let cgroup = c.cgroup.clone();
            let p = c.process(&req.exec_id)?;
            Ok((p.pid, cgroup, p.phase))
        })?;
        if phase == Phase::Stopped || pid == 0 {
            return Err(err(
                Code::NOT_FOUND,
                format!("container {}: process already finished", req.id),
            ));
        }
        if req.all && req.exec_id.is_empty() {
            for p in self.cgroup_pids(cgroup, &req.id) {
                let _ = kill(p, signal);
            }
        }
        match kill(Pid::from_raw(pid as i32), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(api::Empty::new()),
            Err(e) => Err(err(
                Code::INTERNAL,
                format!("signalling container {} (pid {pid}): {e}", req.id),
            )),
        }
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> ttrpc::Result<api::WaitResponse> {
        let mut guard = self.lock();
        loop {
            let exit = match guard.as_mut() {
                Some(c) if c.id == req.id => c.process(&req.exec_id)?.exit,
                _ => {
                    return Err(err(
                        Code::NOT_FOUND,
                        format!("container {} not found in this shim", req.id),
                    ))
                }
            };
            if exit.is_some() {
                let (status, at) = exit_fields(exit);
                let mut resp = api::WaitResponse::new();
                resp.exit_status = status;
                resp.exited_at = at;
                return Ok(resp);
            }
            guard = self
                .inner
                .changed
                .wait(guard)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> ttrpc::Result<api::StateResponse> {
        self.with_container(&req.id, |c| {
            let (id, bundle) = (c.id.clone(), c.bundle.clone());
            let p = c.process(&req.exec_id)?;
            let mut resp = api::StateResponse::new();
            resp.id = id;
            resp.exec_id = req.exec_id.clone();
            resp.bundle = bundle;
            resp.pid = p.pid;
            resp.stdin = p.stdin.clone();
            resp.stdout = p.stdout.clone();
            resp.stderr = p.stderr.clone();
            resp.status = match p.phase {
                Phase::Created => api::Status::CREATED,
                Phase::Running => api::Status::RUNNING,
                Phase::Stopped | Phase::Deleted => api::Status::STOPPED,
            }
            .into();
            (resp.exit_status, resp.exited_at) = exit_fields(p.exit);
            Ok(resp)
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        let cgroup = self.with_container(&req.id, |c| Ok(c.cgroup.clone()))?;
        let mut resp = api::PidsResponse::new();
        for p in self.cgroup_pids(cgroup, &req.id) {
            let mut info = api::ProcessInfo::new();
            info.pid = p.as_raw() as u32;
            resp.processes.push(info);
        }
        Ok(resp)
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        let _span =
            tracing::info_span!("delete", container = %req.id, exec = %req.exec_id).entered();
        if !req.exec_id.is_empty() {
            return self.with_container(&req.id, |c| {
                let p = c.process(&req.exec_id)?;
                if p.phase == Phase::Running {
                    return Err(err(
                        Code::FAILED_PRECONDITION,
                        format!("exec {} is still running", req.exec_id),
                    ));
                }
                let mut resp = api::DeleteResponse::new();
                resp.pid = p.pid;
                (resp.exit_status, resp.exited_at) = exit_fields(p.exit);
                c.execs.remove(&req.exec_id);
                Ok(resp)
            });
        }
        let (pid, phase) = self.with_container(&req.id, |c| Ok((c.init.pid, c.init.phase)))?;
        if phase == Phase::Running {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!("container {} is running: stop it before deleting", req.id),
            ));
        }
        // Never started: its init is parked waiting for `start`; kill it so it can be reaped.
        // A container to be restored has no process yet (pid 0: nothing to kill or wait for).
        let parked = phase == Phase::Created && pid > 0;
        if parked {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        self.inner.helper.delete(&req.id).map_err(|e| {
            err(
                Code::INTERNAL,
                format!("deleting container {}: {e}", req.id),
            )
        })?;
        let exit = {
            let mut guard = self.lock();
            if parked {
                // Wait for the monitor so the reported exit is real, not invented.
                guard = self
                    .inner
                    .changed
                    .wait_timeout_while(guard, Duration::from_secs(5), |c| {
                        c.as_ref().is_some_and(|c| c.init.exit.is_none())
                    })
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            let c = guard
                .as_mut()
                .ok_or_else(|| err(Code::NOT_FOUND, "container vanished"))?;
            c.init.phase = Phase::Deleted;
            if let Some(target) = c.mounted_rootfs.take() {
                crate::rootfs::unmount_all(&target);
            }
            c.init.exit
        };
        self.inner.changed.notify_all();
        let mut resp = api::DeleteResponse::new();
        resp.pid = pid;
        (resp.exit_status, resp.exited_at) = exit_fields(exit);
        Ok(resp)
    }

    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        let _span = tracing::info_span!("checkpoint", container = %req.id).entered();
        self.with_container(&req.id, |c| match c.init.phase {
            Phase::Running => Ok(()),
            phase => Err(err(
                Code::FAILED_PRECONDITION,
                format!(
                    "container {} is {phase:?}: only a running one can be checkpointed",
                    c.id
                ),
            )),
        })?;
        if req.path.is_empty() {
            return Err(err(
                Code::INVALID_ARGUMENT,
                "checkpoint without an images path",
            ));
        }
        self.inner
            .helper
            .checkpoint(&req.id, std::path::Path::new(&req.path))
            .map_err(|e| {
                err(
                    Code::INTERNAL,
                    format!("checkpointing container {}: {e}", req.id),
                )
            })?;
        Ok(api::Empty::new())
    }

    fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        use libcgroups::common::{create_cgroup_manager, CgroupManager, ControllerOpt};
        let _span = tracing::info_span!("update", container = %req.id).entered();
        let raw = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "update without resources"))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&raw)
            .map_err(|e| err(Code::INVALID_ARGUMENT, format!("invalid resources: {e}")))?;
        let cgroup = self.with_container(&req.id, |c| match c.init.phase {
            Phase::Created | Phase::Running => Ok(c.cgroup.clone()),
            p => Err(err(
                Code::FAILED_PRECONDITION,
                format!("container {} is {p:?}: cannot update its resources", c.id),
            )),
        })?;
        let cgroup_path = cgroup.ok_or_else(|| {
            err(
                Code::FAILED_PRECONDITION,
                format!("container {} has no cgroup", req.id),
            )
        })?;
        let manager =
            create_cgroup_manager(crate::cgroup::config(&cgroup_path, &req.id)).map_err(|e| {
                err(
                    Code::INTERNAL,
                    format!("opening the cgroup of {}: {e}", req.id),
                )
            })?;
        manager
            .apply(&ControllerOpt {
                resources: &resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| {
                err(
                    Code::INVALID_ARGUMENT,
                    format!("updating the resources of {}: {e}", req.id),
                )
            })?;
        Ok(api::Empty::new())
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> ttrpc::Result<api::StatsResponse> {
        let cgroup = self
            .with_container(&req.id, |c| Ok(c.cgroup.clone()))?
            .ok_or_else(|| {
                err(
                    Code::FAILED_PRECONDITION,
                    format!("container {} has no cgroup", req.id),
                )
            })?;
        let any = crate::stats::metrics(&cgroup, &req.id)
            .map_err(|e| err(Code::INTERNAL, format!("container {}: {e}", req.id)))?;
        let mut resp = api::StatsResponse::new();
        resp.stats = MessageField::some(any);
        Ok(resp)
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> ttrpc::Result<api::Empty> {
        let (width, height) = (
            u16::try_from(req.width).unwrap_or(u16::MAX),
            u16::try_from(req.height).unwrap_or(u16::MAX),
        );
        self.with_container(&req.id, |c| {
            let id = c.id.clone();
            let p = c.process(&req.exec_id)?;
            let console = p.console.as_ref().ok_or_else(|| {
                err(
                    Code::FAILED_PRECONDITION,
                    format!(
                        "container {id} process {:?} has no terminal (or has exited)",
                        req.exec_id
                    ),
                )
            })?;
            crate::console::resize(console, width, height)
                .map_err(|e| err(Code::INTERNAL, format!("container {id}: {e}")))
        })?;
        Ok(api::Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> ttrpc::Result<api::Empty> {
        self.with_container(&req.id, |_| Ok(()))?;
        // An exec's stdin is the caller's FIFO: closing its end is the caller's business.
        if req.exec_id.is_empty() && req.stdin {
            self.inner.attach.close_stdin();
        }
        Ok(api::Empty::new())
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        let task_pid = self
            .with_container(&req.id, |c| Ok(c.init.pid))
            .unwrap_or(0);
        let mut resp = api::ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.task_pid = task_pid;
        resp.version = env!("CARGO_PKG_VERSION").to_string();
        Ok(resp)
    }

    fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> ttrpc::Result<api::Empty> {
        let busy = matches!(
            self.lock().as_ref().map(|c| c.init.phase),
            Some(Phase::Created | Phase::Running | Phase::Stopped)
        );
        if busy {
            // containerd's rule: a shim with an undeleted task ignores shutdown.
            return Ok(api::Empty::new());
        }
        let _ = self
            .inner
            .shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(());
        Ok(api::Empty::new())
    }
}
