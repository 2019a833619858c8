//! Processes run in a running container: ExecSync (exec probes, `crictl exec -s`) and the
//! streaming server's Exec (`kubectl exec`, `crictl exec`).
//!
//! Stdio travels through FIFOs in the container's directory: the shim hands the far ends to
//! the process; crispd holds the near ends. crispd opens its ends read-write so no open blocks
//! and no EOF is seen before the process has even started; completion comes from the shim's
//! Wait, after which whatever is still buffered is drained. For stdin the process gets a
//! read-only end, so it sees EOF as soon as crispd closes its end.

use super::Runtime;
use crate::container::shim_client::{Shim, TaskStdio};
use crate::container::ContainerState;
use crate::error::{Error, Result};
use crisp_streaming::TermSize;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

/// The client side of a streaming exec.
pub struct ExecStreams {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Always `None` with a terminal: it merges stderr into stdout.
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Terminal size changes; only with a terminal.
    pub resize: Option<mpsc::Receiver<TermSize>>,
    pub tty: bool,
}

/// A chatty probe must not exhaust crispd's memory: output beyond this is read and dropped.
/// Per stream, so that stdout and stderr together fit kubelet's 16 MiB gRPC message limit.
pub const MAX_EXEC_OUTPUT: usize = (8 << 20) - 4096;

pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// The FIFOs of one exec, removed on drop.
struct Fifos {
    dir: PathBuf,
    exec_id: String,
    made: Vec<PathBuf>,
}

impl Fifos {
    fn new(dir: PathBuf, exec_id: &str) -> Result<Fifos> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::internal(format!("creating {}", dir.display()), e))?;
        Ok(Fifos {
            dir,
            exec_id: exec_id.to_string(),
            made: Vec::new(),
        })
    }

    fn make(&mut self, stream: &str) -> Result<PathBuf> {
        let p = self.dir.join(format!("{}-{stream}", self.exec_id));
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| Error::internal(format!("mkfifo {}", p.display()), e))?;
        self.made.push(p.clone());
        Ok(p)
    }

    fn reader(&mut self, stream: &str) -> Result<(String, pipe::Receiver)> {
        let p = self.make(stream)?;
        let rx = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&p)
            .map_err(|e| Error::internal(format!("opening {}", p.display()), e))?;
        Ok((p.display().to_string(), rx))
    }

    fn writer(&mut self, stream: &str) -> Result<(String, pipe::Sender)> {
        let p = self.make(stream)?;
        let tx = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&p)
            .map_err(|e| Error::internal(format!("opening {}", p.display()), e))?;
        Ok((p.display().to_string(), tx))
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        for p in &self.made {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// An exec's stdio as crispd wires it.
struct Plumbing {
    stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    stdout: Option<Sink>,
    stderr: Option<Sink>,
    resize: Option<mpsc::Receiver<TermSize>>,
    tty: bool,
}

/// Where an exec's output goes.
enum Sink {
    Buffer(Vec<u8>),
    Stream(Box<dyn AsyncWrite + Send + Unpin>),
}

impl Sink {
    async fn put(&mut self, chunk: &[u8]) -> bool {
        match self {
            Sink::Buffer(out) => {
                let room = MAX_EXEC_OUTPUT.saturating_sub(out.len());
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
                true
            }
            Sink::Stream(w) => w.write_all(chunk).await.is_ok(),
        }
    }
}

/// Copies a FIFO into `sink` until told the process is done, then drains what is buffered.
/// A client that went away stops the copy but not the drain of the FIFO.
async fn pump(mut rx: pipe::Receiver, mut sink: Sink, mut done: watch::Receiver<bool>) -> Sink {
    let mut buf = vec![0u8; 32 * 1024];
    let mut open = true;
    loop {
        let read = tokio::select! {
            r = rx.read(&mut buf) => Some(r),
            r = done.wait_for(|d| *d) => { drop(r); None }
        };
        match read {
            Some(Ok(n)) if n > 0 => {
                if open {
                    open = sink.put(&buf[..n]).await;
                }
            }
            Some(_) => break,
            None => {
                // A raw non-blocking read, not `try_read`: that one trusts tokio's cached
                // readiness and can report WouldBlock for data the reactor has not seen yet.
                while let Ok(n) = nix::unistd::read(rx.as_raw_fd(), &mut buf) {
                    if n == 0 {
                        break;
                    }
                    if open {
                        open = sink.put(&buf[..n]).await;
                    }
                }
                break;
            }
        }
    }
    if let Sink::Stream(w) = &mut sink {
        let _ = w.shutdown().await;
    }
    sink
}

impl Runtime {
    pub async fn exec_sync(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        timeout_s: i64,
    ) -> Result<ExecOutput> {
        let id = self.resolve_container(id)?;
        let out = self
            .run_exec(
                &id,
                cmd,
                Plumbing {
                    stdin: None,
                    stdout: Some(Sink::Buffer(Vec::new())),
                    stderr: Some(Sink::Buffer(Vec::new())),
                    resize: None,
                    tty: false,
                },
                (timeout_s > 0).then(|| Duration::from_secs(timeout_s as u64)),
            )
            .await
            .map_err(|e| match e {
                Error::DeadlineExceeded(_) => Error::DeadlineExceeded(format!(
                    "command in container {id} timed out after {timeout_s}s"
                )),
                other => other,
            })?;
        let bytes = |s: Option<Sink>| match s {
            Some(Sink::Buffer(b)) => b,
            _ => Vec::new(),
        };
        Ok(ExecOutput {
            exit_code: out.0,
            stdout: bytes(out.1),
            stderr: bytes(out.2),
        })
    }

    /// The streaming server's exec: stdio wired to the client's streams; returns the exit code.
    pub async fn exec_stream(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        streams: ExecStreams,
    ) -> Result<i32> {
        let id = self.resolve_container(id)?;
        let plumbing = Plumbing {
            stdin: streams.stdin,
            stdout: streams.stdout.map(Sink::Stream),
            stderr: streams.stderr.filter(|_| !streams.tty).map(Sink::Stream),
            resize: streams.resize,
            tty: streams.tty,
        };
        let out = self.run_exec(&id, cmd, plumbing, None).await?;
        Ok(out.0)
    }

    async fn run_exec(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        io: Plumbing,
        timeout: Option<Duration>,
    ) -> Result<(i32, Option<Sink>, Option<Sink>)> {
        let Plumbing {
            stdin,
            stdout,
            stderr,
            resize,
            tty,
        } = io;
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("exec: cmd must not be empty".into()));
        }
        if cmd.iter().any(|a| a.contains('\0')) {
            return Err(Error::InvalidArgument(
                "exec: cmd contains a NUL byte".into(),
            ));
        }
        let shim = self.running_shim(id)?;
        let dir = self.shim_dir(id);
        let spec = exec_spec(&dir.bundle(), cmd, tty)
            .map_err(|e| Error::internal(format!("exec in container {id}"), e))?;
        let exec_id = crate::ids::new_id()[..16].to_string();
        let mut fifos = Fifos::new(dir.path().join("exec"), &exec_id)?;
        let (done_tx, done_rx) = watch::channel(false);

        let mut paths = [String::new(), String::new(), String::new()];
        let mut pumps = Vec::new();
        for (i, (name, sink)) in [("stdout", stdout), ("stderr", stderr)]
            .into_iter()
            .enumerate()
        {
            match sink {
                Some(sink) => {
                    let (path, rx) = fifos.reader(name)?;
                    paths[i + 1] = path;
                    pumps.push(Some(tokio::spawn(pump(rx, sink, done_rx.clone()))));
                }
                None => pumps.push(None),
            }
        }
        let feeder = match stdin {
            Some(mut input) => {
                let (path, mut tx) = fifos.writer("stdin")?;
                paths[0] = path;
                Some(tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut input, &mut tx).await;
                    // Dropping our end is the process's EOF.
                }))
            }
            None => None,
        };

        let stdio = TaskStdio {
            stdin: std::mem::take(&mut paths[0]),
            stdout: std::mem::take(&mut paths[1]),
            stderr: std::mem::take(&mut paths[2]),
            terminal: tty,
        };
        let result = run(&shim, &exec_id, spec, &stdio, resize, timeout).await;
        let _ = done_tx.send(true);
        if let Some(f) = feeder {
            f.abort();
        }
        let mut sinks = Vec::new();
        for p in pumps {
            sinks.push(match p {
                Some(h) => h.await.ok(),
                None => None,
            });
        }
        if let Err(e) = shim.delete_exec(&exec_id).await {
            tracing::debug!(container = %id, exec = %exec_id, error = %e, "deleting exec");
        }
        drop(fifos);
        let code = result?;
        let stderr = sinks.pop().flatten();
        let stdout = sinks.pop().flatten();
        Ok((code, stdout, stderr))
    }

    pub(super) fn running_shim(&self, id: &str) -> Result<Shim> {
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
        e.shim
            .clone()
            .ok_or_else(|| Error::Internal(format!("container {id} has no shim")))
    }
}

/// The container's own process spec (user, capabilities, env, cwd) with `cmd` as its args.
fn exec_spec(bundle: &Path, cmd: Vec<String>, tty: bool) -> std::result::Result<Vec<u8>, String> {
    let mut process = oci_spec::runtime::Spec::load(bundle.join("config.json"))
        .map_err(|e| e.to_string())?
        .process()
        .clone()
        .ok_or("the container has no process spec")?;
    process.set_args(Some(cmd));
    process.set_terminal(Some(tty));
    if tty {
        // As containerd does for a terminal exec, unless the container chose its own.
        let mut env = process.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
            process.set_env(Some(env));
        }
    }
    serde_json::to_vec(&process).map_err(|e| e.to_string())
}

async fn run(
    shim: &Shim,
    exec_id: &str,
    spec: Vec<u8>,
    stdio: &TaskStdio,
    resize: Option<mpsc::Receiver<TermSize>>,
    timeout: Option<Duration>,
) -> Result<i32> {
    shim.exec(exec_id, spec, stdio).await?;
    shim.start_exec(exec_id).await?;
    let mut orphan_guard = KillOnDrop {
        shim: Some(shim.clone()),
        exec_id: exec_id.to_string(),
    };
    // Only now: the terminal exists once the process started (clients send a size at once).
    let _resizer = resize.map(|sizes| {
        AbortOnDrop(tokio::spawn(forward_resizes(
            shim.clone(),
            exec_id.to_string(),
            sizes,
        )))
    });
    let wait = shim.wait_exec(exec_id);
    let Some(timeout) = timeout else {
        let code = wait.await?.code;
        orphan_guard.shim = None;
        return Ok(code);
    };
    let result = match tokio::time::timeout(timeout, wait).await {
        Ok(exit) => Ok(exit?.code),
        Err(_) => {
            shim.kill_exec(exec_id, libc::SIGKILL as u32).await?;
            let _ = tokio::time::timeout(Duration::from_secs(10), shim.wait_exec(exec_id)).await;
            Err(Error::DeadlineExceeded("timed out".into()))
        }
    };
    orphan_guard.shim = None;
    result
}

/// Kills an exec whose caller went away before it exited (the streaming client disconnected
/// and the session dropped our future), as containerd does: nobody would read its output or
/// delete its record otherwise.
struct KillOnDrop {
    /// `None` once the exec finished normally.
    shim: Option<Shim>,
    exec_id: String,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Some(shim) = self.shim.take() else {
            return;
        };
        let exec_id = std::mem::take(&mut self.exec_id);
        tokio::spawn(async move {
            tracing::info!(exec = %exec_id, "client left: killing its exec");
            if let Err(e) = shim.kill_exec(&exec_id, libc::SIGKILL as u32).await {
                tracing::warn!(exec = %exec_id, error = %e, "killing an abandoned exec");
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), shim.wait_exec(&exec_id)).await;
            if let Err(e) = shim.delete_exec(&exec_id).await {
                tracing::debug!(exec = %exec_id, error = %e, "deleting an abandoned exec");
            }
        });
    }
}

/// Applies the client's terminal sizes to the process (`exec_id` empty: the container's init).
pub(super) async fn forward_resizes(
    shim: Shim,
    exec_id: String,
    mut sizes: mpsc::Receiver<TermSize>,
) {
    while let Some(TermSize { width, height }) = sizes.recv().await {
        // Advisory: the process may have exited in the meantime.
        if let Err(e) = shim.resize(&exec_id, width, height).await {
            tracing::debug!(exec = %exec_id, error = %e, "terminal resize");
        }
    }
}

/// Stops a helper task when the call that started it returns, however it returns.
pub(super) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
