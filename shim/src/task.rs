//! The containerd runtime v2 Task service for the one container this shim owns.
//!
//! State machine of the container as the shim sees it: `Created` → (Start) → `Running` → (the
//! init exits) → `Stopped` → (Delete) → `Deleted`. A transition asked for from the wrong state is
//! a FAILED_PRECONDITION error naming the container and its state.

use crate::helper::RuntimeHelper;
use crate::reaper::Reaper;
use crate::stdio::{self, ContainerIo};
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::Task;
use crisp_api::{ExitRecord, ShimDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;
use ttrpc::{Code, TtrpcContext};

/// How long an exit waits for its output to drain before it is reported anyway.
const IO_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    Stopped,
    Deleted,
}

struct Container {
    id: String,
    bundle: String,
    pid: u32,
    phase: Phase,
    exit: Option<ExitRecord>,
    stdin: String,
    stdout: String,
    stderr: String,
}

struct Inner {
    dir: ShimDir,
    helper: RuntimeHelper,
    reaper: Reaper,
    container: Mutex<Option<Container>>,
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
    pub fn new(dir: ShimDir, reaper: Reaper, shutdown: mpsc::Sender<()>) -> TaskService {
        let helper = RuntimeHelper::new(reaper.clone(), dir.runtime_root());
        TaskService {
            inner: Arc::new(Inner {
                dir,
                helper,
                reaper,
                container: Mutex::new(None),
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
            Some(c) if c.id == id && c.phase != Phase::Deleted => f(c),
            _ => Err(err(
                Code::NOT_FOUND,
                format!("container {id} not found in this shim"),
            )),
        }
    }

    /// Waits for the init to exit, lets its output drain, persists the exit, then publishes it.
    fn monitor(&self, pid: u32, io: Arc<ContainerIo>) {
        let code = self.inner.reaper.wait(pid as i32);
        io.wait_drained(IO_DRAIN_TIMEOUT);
        let record = ExitRecord {
            pid,
            exit_code: code,
            exited_at_ns: now_ns(),
            oom_killed: false,
        };
        if let Err(e) = record.store(&self.inner.dir.exit_record()) {
            tracing::error!(error = %e, "persisting the exit record");
        }
        let mut guard = self.lock();
        if let Some(c) = guard.as_mut() {
            if c.pid == pid {
                c.exit = Some(record);
                if c.phase != Phase::Deleted {
                    c.phase = Phase::Stopped;
                }
            }
        }
        self.inner.changed.notify_all();
    }

    fn cgroup_pids(&self, bundle: &str, id: &str) -> Vec<Pid> {
        use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager};
        let path = PathBuf::from(bundle).join("config.json");
        let Ok(spec) = oci_spec::runtime::Spec::load(&path) else {
            return Vec::new();
        };
        let Some(cg) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) else {
            return Vec::new();
        };
        let cfg = CgroupConfig {
            cgroup_path: cg,
            systemd_cgroup: false,
            container_name: id.to_string(),
        };
        create_cgroup_manager(cfg)
            .ok()
            .and_then(|m| m.get_all_pids().ok())
            .unwrap_or_default()
    }
}

impl Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        let _span = tracing::info_span!("create", container = %req.id).entered();
        if req.terminal {
            return Err(err(
                Code::UNIMPLEMENTED,
                "terminal containers are not supported yet",
            ));
        }
        {
            let guard = self.lock();
            if let Some(c) = guard.as_ref() {
                return Err(err(
                    Code::ALREADY_EXISTS,
                    format!("this shim already runs container {}", c.id),
                ));
            }
        }
        let (stdio, io) = stdio::setup(&req.stdin, &req.stdout, &req.stderr).map_err(|e| {
            err(
                Code::INTERNAL,
                format!("setting up stdio of {}: {e}", req.id),
            )
        })?;
        let io = Arc::new(io);
        let pid = self
            .inner
            .helper
            .create(&req.id, PathBuf::from(&req.bundle).as_path(), stdio)
            .map_err(|e| {
                err(
                    Code::INTERNAL,
                    format!("creating container {}: {e}", req.id),
                )
            })?;
        *self.lock() = Some(Container {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            pid,
            phase: Phase::Created,
            exit: None,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        });
        let me = self.clone();
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || me.monitor(pid, io))
            .map_err(|e| err(Code::INTERNAL, format!("starting the exit monitor: {e}")))?;
        let mut resp = api::CreateTaskResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> ttrpc::Result<api::StartResponse> {
        let _span = tracing::info_span!("start", container = %req.id).entered();
        if !req.exec_id.is_empty() {
            return Err(err(
                Code::UNIMPLEMENTED,
                "exec processes are not supported yet",
            ));
        }
        let pid = self.with_container(&req.id, |c| match c.phase {
            Phase::Created => Ok(c.pid),
            p => Err(err(
                Code::FAILED_PRECONDITION,
                format!("container {} cannot start: it is {p:?}", c.id),
            )),
        })?;
        self.inner.helper.start(&req.id).map_err(|e| {
            err(
                Code::INTERNAL,
                format!("starting container {}: {e}", req.id),
            )
        })?;
        self.with_container(&req.id, |c| {
            if c.phase == Phase::Created {
                c.phase = Phase::Running;
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
        let (pid, bundle, phase) =
            self.with_container(&req.id, |c| Ok((c.pid, c.bundle.clone(), c.phase)))?;
        if phase == Phase::Stopped {
            return Err(err(
                Code::NOT_FOUND,
                format!("container {}: process already finished", req.id),
            ));
        }
        if req.all {
            for p in self.cgroup_pids(&bundle, &req.id) {
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
            match guard.as_ref() {
                Some(c) if c.id == req.id => {
                    if let Some(exit) = c.exit {
                        let mut resp = api::WaitResponse::new();
                        resp.exit_status = exit.exit_code as u32;
                        resp.exited_at = timestamp(exit.exited_at_ns);
                        return Ok(resp);
                    }
                }
                _ => {
                    return Err(err(
                        Code::NOT_FOUND,
                        format!("container {} not found in this shim", req.id),
                    ))
                }
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
            let mut resp = api::StateResponse::new();
            resp.id = c.id.clone();
            resp.bundle = c.bundle.clone();
            resp.pid = c.pid;
            resp.stdin = c.stdin.clone();
            resp.stdout = c.stdout.clone();
            resp.stderr = c.stderr.clone();
            resp.status = match c.phase {
                Phase::Created => api::Status::CREATED,
                Phase::Running => api::Status::RUNNING,
                Phase::Stopped | Phase::Deleted => api::Status::STOPPED,
            }
            .into();
            if let Some(exit) = c.exit {
                resp.exit_status = exit.exit_code as u32;
                resp.exited_at = timestamp(exit.exited_at_ns);
            }
            Ok(resp)
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        let bundle = self.with_container(&req.id, |c| Ok(c.bundle.clone()))?;
        let mut resp = api::PidsResponse::new();
        for p in self.cgroup_pids(&bundle, &req.id) {
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
        let _span = tracing::info_span!("delete", container = %req.id).entered();
        let (pid, phase) = self.with_container(&req.id, |c| Ok((c.pid, c.phase)))?;
        if phase == Phase::Running {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!("container {} is running: stop it before deleting", req.id),
            ));
        }
        if phase == Phase::Created {
            // Never started: its init is parked waiting for `start`; kill it so it can be reaped.
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
            if phase == Phase::Created {
                // Wait for the monitor so the reported exit is real, not invented.
                guard = self
                    .inner
                    .changed
                    .wait_timeout_while(guard, Duration::from_secs(5), |c| {
                        c.as_ref().is_some_and(|c| c.exit.is_none())
                    })
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            let c = guard
                .as_mut()
                .ok_or_else(|| err(Code::NOT_FOUND, "container vanished"))?;
            c.phase = Phase::Deleted;
            c.exit
        };
        self.inner.changed.notify_all();
        let mut resp = api::DeleteResponse::new();
        resp.pid = pid;
        if let Some(exit) = exit {
            resp.exit_status = exit.exit_code as u32;
            resp.exited_at = timestamp(exit.exited_at_ns);
        }
        Ok(resp)
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        let task_pid = self.with_container(&req.id, |c| Ok(c.pid)).unwrap_or(0);
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
            self.lock().as_ref().map(|c| c.phase),
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
