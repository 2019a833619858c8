//! crispd's side of the per-container shim: spawning it and calling its Task API (ttrpc).

use crate::error::{Error, Result};
use containerd_shim_protos::api;
use containerd_shim_protos::shim_async::{Client, TaskClient};
use crisp_api::ShimDir;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// How long a shim may take to come up, and an ordinary call to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a task's stdio goes, as `crisp_api::StdioTarget` URIs or FIFO paths.
#[derive(Debug, Default, Clone)]
pub struct TaskStdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

#[derive(Clone)]
pub struct Shim {
    id: String,
    task: TaskClient,
}

fn ctx(timeout: Option<Duration>) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(timeout.map(|t| t.as_nanos() as i64).unwrap_or(0))
}

fn call_err(id: &str, what: &str, e: ttrpc::Error) -> Error {
    match e {
        ttrpc::Error::RpcStatus(s) => {
            let msg = format!("{what} container {id}: {}", s.message());
            match s.code() {
                ttrpc::Code::NOT_FOUND => Error::NotFound(msg),
                ttrpc::Code::FAILED_PRECONDITION => Error::FailedPrecondition(msg),
                ttrpc::Code::INVALID_ARGUMENT => Error::InvalidArgument(msg),
                ttrpc::Code::ALREADY_EXISTS => Error::AlreadyExists(msg),
                ttrpc::Code::DEADLINE_EXCEEDED => Error::DeadlineExceeded(msg),
                _ => Error::Internal(msg),
            }
        }
        other => Error::Internal(format!("{what} container {id}: shim unreachable: {other}")),
    }
}

/// Exit as the shim reports it.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub code: i32,
    pub at_ns: i64,
    /// Only known from the shim's exit record (the Task API does not carry it).
    pub oom_killed: bool,
}

fn exit_of(
    status: u32,
    at: &containerd_shim_protos::protobuf::MessageField<
        containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp,
    >,
) -> Exit {
    Exit {
        code: status as i32,
        at_ns: at
            .as_ref()
            .map(|t| t.seconds * 1_000_000_000 + t.nanos as i64)
            .unwrap_or(0),
        oom_killed: false,
    }
}

impl Shim {
    /// Starts `crisp-shim serve` for container `id`, waits for it to listen, and connects.
    /// The shim runs in its own session and is not killed with crispd.
    pub async fn spawn(binary: &Path, dir: &ShimDir, id: &str) -> Result<Shim> {
        std::fs::create_dir_all(dir.path())
            .map_err(|e| Error::internal(format!("creating {}", dir.path().display()), e))?;
        let log = std::fs::File::create(dir.shim_log())
            .map_err(|e| Error::internal(format!("creating {}", dir.shim_log().display()), e))?;
        let mut cmd = tokio::process::Command::new(binary);
        cmd.args(dir.serve_args(id))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(false);
        if let Some(mounts) = crate::cgroups::v1_mounts_for_shims() {
            cmd.env(crisp_api::cgroup_mounts::ENV, mounts);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::internal(format!("starting shim {}", binary.display()), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Internal("shim stdout missing".into()))?;
        let mut line = String::new();
        let ready = tokio::time::timeout(
            START_TIMEOUT,
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        if !matches!(ready, Ok(Ok(n)) if n > 0 && line.trim() == "ready") {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let log = std::fs::read_to_string(dir.shim_log()).unwrap_or_default();
            return Err(Error::Internal(format!(
                "shim for container {id} did not start: {}",
                log.trim()
            )));
        }
        // The shim outlives us; tokio reaps the child in the background if it exits while we
        // are still running.
        drop(child);
        Shim::connect(dir, id).await
    }

    pub async fn connect(dir: &ShimDir, id: &str) -> Result<Shim> {
        let client = Client::connect(&dir.address())
            .await
            .map_err(|e| Error::Internal(format!("connecting to the shim of {id}: {e}")))?;
        Ok(Shim {
            id: id.to_string(),
            task: TaskClient::new(client),
        })
    }

    /// Creates the container; with `checkpoint` (CRIU images), one that Start restores from
    /// them (no process until then: the pid is 0).
    pub async fn create(
        &self,
        bundle: &Path,
        stdio: &TaskStdio,
        checkpoint: Option<&Path>,
    ) -> Result<u32> {
        let req = api::CreateTaskRequest {
            id: self.id.clone(),
            bundle: bundle.display().to_string(),
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            terminal: stdio.terminal,
            checkpoint: checkpoint
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            ..Default::default()
        };
        let r = self
            .task
            .create(ctx(Some(CALL_TIMEOUT)), &req)
            .await
            .map_err(|e| call_err(&self.id, "creating", e))?;
        Ok(r.pid)
    }

    /// Dumps the running container with CRIU into `images`, leaving it running.
    pub async fn checkpoint(&self, images: &Path, timeout: Duration) -> Result<()> {
        let req = api::CheckpointTaskRequest {
            id: self.id.clone(),
            path: images.display().to_string(),
            ..Default::default()
        };
        self.task
            .checkpoint(ctx(Some(timeout)), &req)
            .await
            .map_err(|e| call_err(&self.id, "checkpointing", e))?;
        Ok(())
    }

    pub async fn start(&self) -> Result<u32> {
        self.start_within(CALL_TIMEOUT).await
    }

    /// Start, given `timeout` (a CRIU restore takes as long as the container's memory takes
    /// to read back).
    pub async fn start_within(&self, timeout: Duration) -> Result<u32> {
        let req = api::StartRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        let r = self
            .task
            .start(ctx(Some(timeout)), &req)
            .await
            .map_err(|e| call_err(&self.id, "starting", e))?;
        Ok(r.pid)
    }

    /// Sends `signal`; to every process of the container when `all`. A container that already
    /// exited is not an error.
    pub async fn kill(&self, signal: u32, all: bool) -> Result<()> {
        let req = api::KillRequest {
            id: self.id.clone(),
            signal,
            all,
            ..Default::default()
        };
        match self.task.kill(ctx(Some(CALL_TIMEOUT)), &req).await {
            Ok(_) => Ok(()),
            Err(e) => match call_err(&self.id, "signalling", e) {
                Error::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Blocks until the container exits.
    pub async fn wait(&self) -> Result<Exit> {
        let req = api::WaitRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        let r = self
            .task
            .wait(ctx(None), &req)
            .await
            .map_err(|e| call_err(&self.id, "waiting for", e))?;
        Ok(exit_of(r.exit_status, &r.exited_at))
    }

    /// The shim's view: (status, pid, exit if stopped).
    pub async fn state(&self) -> Result<(api::Status, u32, Option<Exit>)> {
        let req = api::StateRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        let r = self
            .task
            .state(ctx(Some(CALL_TIMEOUT)), &req)
            .await
            .map_err(|e| call_err(&self.id, "querying", e))?;
        let status = r.status.enum_value_or(api::Status::UNKNOWN);
        let exit = (status == api::Status::STOPPED).then(|| exit_of(r.exit_status, &r.exited_at));
        Ok((status, r.pid, exit))
    }

    /// Registers an exec process (an OCI `process` as JSON) with its stdio paths.
    pub async fn exec(
        &self,
        exec_id: &str,
        process_json: Vec<u8>,
        stdio: &TaskStdio,
    ) -> Result<()> {
        let mut any = containerd_shim_protos::protobuf::well_known_types::any::Any::new();
        any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        any.value = process_json;
        let req = api::ExecProcessRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            terminal: stdio.terminal,
            spec: containerd_shim_protos::protobuf::MessageField::some(any),
            ..Default::default()
        };
        self.task
            .exec(ctx(Some(CALL_TIMEOUT)), &req)
            .await
            .map_err(|e| call_err(&self.id, "exec in", e))?;
        Ok(())
    }

    pub async fn start_exec(&self, exec_id: &str) -> Result<u32> {
        let req = api::StartRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let r = self
            .task
            .start(ctx(Some(CALL_TIMEOUT)), &req)
            .await
            .map_err(|e| call_err(&self.id, "starting exec in", e))?;
        Ok(r.pid)
    }

    pub async fn wait_exec(&self, exec_id: &str) -> Result<Exit> {
        let req = api::WaitRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let r = self
            .task
            .wait(ctx(None), &req)
            .await
            .map_err(|e| call_err(&self.id, "waiting for exec in", e))?;
        Ok(exit_of(r.exit_status, &r.exited_at))
    }

    /// Resizes the terminal of the init (`exec_id` empty) or of an exec.
    pub async fn resize(&self, exec_id: &str, width: u16, height: u16) -> Result<()> {
        let req = api::ResizePtyRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            width: u32::from(width),
            height: u32::from(height),
            ..Default::default()
        };
        self.task
            .resize_pty(ctx(Some(CALL_TIMEOUT)), &req)
            .await
            .map_err(|e| call_err(&self.id, "resizing the terminal of", e))?;
        Ok(())
    }

    pub async fn kill_exec(&self, exec_id: &str, signal: u32) -> Result<()> {
        let req = api::KillRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            signal,
            ..Default::default()
        };
        match self.task.kill(ctx(Some(CALL_TIMEOUT)), &req).await {
            Ok(_) => Ok(()),
            Err(e) => match call_err(&self.id, "signalling exec in", e) {
                Error::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    pub async fn delete_exec(&self, exec_id: &str) -> Result<()> {
        let req = api::DeleteRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        self.task
            .delete(ctx(Some(CALL_TIMEOUT)), &req)
            .await
            .map_err(|e| call_err(&self.id, "deleting exec in", e))?;
        Ok(())
    }

    /// Applies new cgroup limits (an OCI `LinuxResources` as JSON) to the running container.
    pub async fn update(&self, resources_json: Vec<u8>) -> Result<()> {
        let mut any = containerd_shim_protos::protobuf::well_known_types::any::Any::new();
        any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
        any.value = resources_json;
        let req = api::UpdateTaskRequest {
            id: self.id.clone(),
            resources: containerd_shim_protos::protobuf::MessageField::some(any),
            ..Default::default()
        };
        self.task
            .update(ctx(Some(CALL_TIMEOUT)), &req)
            .await
            .map_err(|e| call_err(&self.id, "updating", e))?;
        Ok(())
    }

    pub async fn delete(&self) -> Result<()> {
        let req = api::DeleteRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        match self.task.delete(ctx(Some(CALL_TIMEOUT)), &req).await {
            Ok(_) => Ok(()),
            Err(e) => match call_err(&self.id, "deleting", e) {
                Error::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Asks the shim to exit; it is gone (or going) when this returns.
    pub async fn shutdown(&self) {
        let req = api::ShutdownRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        let _ = self
            .task
            .shutdown(ctx(Some(Duration::from_secs(5))), &req)
            .await;
    }
}

/// SIGKILLs the shim recorded in `dir` if it is still alive (a shim that ignored Shutdown, or
/// one whose container was half made when crispd died).
pub fn kill_recorded_shim(dir: &ShimDir) {
    signal_recorded_shim(dir, nix::sys::signal::Signal::SIGKILL);
}

/// Signals the shim recorded in `dir`. The pid is only trusted if that process's command line
/// names this very directory, so a recycled pid is never hit. Returns whether it was sent.
pub fn signal_recorded_shim(dir: &ShimDir, signal: nix::sys::signal::Signal) -> bool {
    let Ok(pid) = std::fs::read_to_string(dir.pid_file()) else {
        return false;
    };
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return false;
    };
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let wanted = dir.path().as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == wanted)
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).is_ok()
}
