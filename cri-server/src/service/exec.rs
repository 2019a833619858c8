//! ExecSync: a command run to completion in a container (exec probes, `crictl exec -s`).
//!
//! Output travels through two FIFOs in the container's directory: the shim hands their write
//! ends to the process; crispd reads them. crispd opens its ends read-write so the open never
//! blocks and no EOF is seen before the process has even started; completion comes from the
//! shim's Wait, after which whatever is still buffered is drained.

use super::Runtime;
use crate::container::shim_client::Shim;
use crate::container::ContainerState;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;

/// A chatty probe must not exhaust crispd's memory: output beyond this is read and dropped.
/// Per stream, so that stdout and stderr together fit kubelet's 16 MiB gRPC message limit.
pub const MAX_EXEC_OUTPUT: usize = (8 << 20) - 4096;

pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

impl Runtime {
    pub async fn exec_sync(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        timeout_s: i64,
    ) -> Result<ExecOutput> {
        let id = self.resolve_container(id)?;
        if cmd.is_empty() {
            return Err(Error::InvalidArgument(
                "ExecSync: cmd must not be empty".into(),
            ));
        }
        if cmd.iter().any(|a| a.contains('\0')) {
            return Err(Error::InvalidArgument(
                "ExecSync: cmd contains a NUL byte".into(),
            ));
        }
        let (rec, shim) = self.running_container(&id)?;
        let dir = self.shim_dir(&rec.id);
        let mut spec = oci_spec::runtime::Spec::load(dir.bundle().join("config.json"))
            .map_err(|e| Error::internal(format!("reading the spec of container {id}"), e))?
            .process()
            .clone()
            .ok_or_else(|| Error::Internal(format!("container {id} has no process spec")))?;
        spec.set_args(Some(cmd));
        spec.set_terminal(Some(false));
        let spec =
            serde_json::to_vec(&spec).map_err(|e| Error::internal("encoding the exec spec", e))?;

        let exec_id = crate::ids::new_id()[..16].to_string();
        let fifo_dir = dir.path().join("exec");
        let out_path = fifo_dir.join(format!("{exec_id}-stdout"));
        let err_path = fifo_dir.join(format!("{exec_id}-stderr"));
        let (out_rx, err_rx) = open_fifos(&fifo_dir, &out_path, &err_path)?;
        let (done_tx, done_rx) = watch::channel(false);
        let out_task = tokio::spawn(collect(out_rx, done_rx.clone()));
        let err_task = tokio::spawn(collect(err_rx, done_rx));

        let result = run(&shim, &exec_id, spec, &out_path, &err_path, timeout_s).await;
        let _ = done_tx.send(true);
        let stdout = out_task.await.unwrap_or_default();
        let stderr = err_task.await.unwrap_or_default();
        if let Err(e) = shim.delete_exec(&exec_id).await {
            tracing::debug!(container = %id, exec = %exec_id, error = %e, "deleting exec");
        }
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        let exit_code = result.map_err(|e| match e {
            Error::DeadlineExceeded(_) => Error::DeadlineExceeded(format!(
                "command in container {id} timed out after {timeout_s}s"
            )),
            other => other,
        })?;
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code,
        })
    }

    fn running_container(&self, id: &str) -> Result<(crate::container::ContainerRecord, Shim)> {
        let objs = self.objects();
        let e = objs
            .containers
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        if e.rec.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running ({:?})",
                e.rec.state
            )));
        }
        let shim = e
            .shim
            .clone()
            .ok_or_else(|| Error::Internal(format!("container {id} has no shim")))?;
        Ok((e.rec.clone(), shim))
    }
}

async fn run(
    shim: &Shim,
    exec_id: &str,
    spec: Vec<u8>,
    out: &Path,
    err: &Path,
    timeout_s: i64,
) -> Result<i32> {
    shim.exec(
        exec_id,
        spec,
        &out.display().to_string(),
        &err.display().to_string(),
    )
    .await?;
    shim.start_exec(exec_id).await?;
    let wait = shim.wait_exec(exec_id);
    if timeout_s <= 0 {
        return Ok(wait.await?.code);
    }
    match tokio::time::timeout(Duration::from_secs(timeout_s as u64), wait).await {
        Ok(exit) => Ok(exit?.code),
        Err(_) => {
            shim.kill_exec(exec_id, libc::SIGKILL as u32).await?;
            let _ = tokio::time::timeout(Duration::from_secs(10), shim.wait_exec(exec_id)).await;
            Err(Error::DeadlineExceeded("timed out".into()))
        }
    }
}

fn open_fifos(
    dir: &Path,
    out: &PathBuf,
    err: &PathBuf,
) -> Result<(pipe::Receiver, pipe::Receiver)> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::internal(format!("creating {}", dir.display()), e))?;
    let mut rx = Vec::new();
    for p in [out, err] {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| Error::internal(format!("mkfifo {}", p.display()), e))?;
        rx.push(
            pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(p)
                .map_err(|e| Error::internal(format!("opening {}", p.display()), e))?,
        );
    }
    let err_rx = rx.pop().ok_or_else(|| Error::Internal("fifo".into()))?;
    let out_rx = rx.pop().ok_or_else(|| Error::Internal("fifo".into()))?;
    Ok((out_rx, err_rx))
}

/// Reads until told the process is done, then drains what is buffered.
async fn collect(mut rx: pipe::Receiver, mut done: watch::Receiver<bool>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let keep = |out: &mut Vec<u8>, chunk: &[u8]| {
        let room = MAX_EXEC_OUTPUT.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
    };
    loop {
        tokio::select! {
            r = rx.read(&mut buf) => match r {
                Ok(0) | Err(_) => return out,
                Ok(n) => keep(&mut out, &buf[..n]),
            },
            _ = done.wait_for(|d| *d) => {
                loop {
                    match rx.try_read(&mut buf) {
                        Ok(n) if n > 0 => keep(&mut out, &buf[..n]),
                        _ => return out,
                    }
                }
            }
        }
    }
}
