//! Transport-independent half of exec/attach: what was requested, the
//! in-memory pipes between the runtime and the connection, and running the
//! runtime call to an [`Outcome`].

use std::sync::Arc;

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use crate::status::Outcome;
use crate::{ExecIo, Runtime, TermSize};

/// Pipe capacity per standard stream: enough to keep a process streaming
/// while a frame is in flight, small enough to bound memory per session.
const PIPE_CAPACITY: usize = 64 * 1024;

/// A validated exec or attach request, as stored under its token.
#[derive(Clone, Debug)]
pub struct ExecSpec {
    pub container_id: String,
    /// `None` for attach.
    pub cmd: Option<Vec<String>>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// The connection-side ends of the pipes handed to the runtime.
pub struct Ends {
    /// Write here what the client sends on stdin; drop for EOF.
    pub stdin: Option<DuplexStream>,
    /// Read the process's output here; EOF once the runtime drops its end.
    pub stdout: Option<DuplexStream>,
    pub stderr: Option<DuplexStream>,
    pub resize: Option<mpsc::Sender<TermSize>>,
}

/// Builds the runtime's [`ExecIo`] and our matching ends. DuplexStream
/// (rather than a split simplex) because dropping either end is seen by the
/// other side as EOF / broken pipe, which is how disconnects propagate.
pub fn plumb(spec: &ExecSpec) -> (ExecIo, Ends) {
    let pair = |want: bool| want.then(|| tokio::io::duplex(PIPE_CAPACITY));
    let stdin = pair(spec.stdin);
    let stdout = pair(spec.stdout);
    let stderr = pair(spec.stderr && !spec.tty);
    let resize = spec.tty.then(|| mpsc::channel(16));
    let (stdin_rt, stdin_ours) = split_pair(stdin);
    let (stdout_rt, stdout_ours) = split_pair(stdout);
    let (stderr_rt, stderr_ours) = split_pair(stderr);
    let (resize_tx, resize_rx) = match resize {
        Some((tx, rx)) => (Some(tx), Some(rx)),
        None => (None, None),
    };
    let io = ExecIo {
        stdin: stdin_rt.map(|s| Box::new(s) as _),
        stdout: stdout_rt.map(|s| Box::new(s) as _),
        stderr: stderr_rt.map(|s| Box::new(s) as _),
        resize: resize_rx,
    };
    let ends = Ends {
        stdin: stdin_ours,
        stdout: stdout_ours,
        stderr: stderr_ours,
        resize: resize_tx,
    };
    (io, ends)
}

fn split_pair(
    p: Option<(DuplexStream, DuplexStream)>,
) -> (Option<DuplexStream>, Option<DuplexStream>) {
    match p {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    }
}

/// Calls the runtime and maps its result to what the client is told.
pub async fn run(rt: Arc<dyn Runtime>, spec: &ExecSpec, io: ExecIo) -> Outcome {
    match &spec.cmd {
        Some(cmd) => match rt.exec(&spec.container_id, cmd.clone(), spec.tty, io).await {
            Ok(0) => Outcome::Success,
            Ok(code) => Outcome::ExitCode(code),
            Err(e) => Outcome::Failed(e),
        },
        None => match rt.attach(&spec.container_id, spec.tty, io).await {
            Ok(()) => Outcome::Success,
            Err(e) => Outcome::Failed(e),
        },
    }
}
