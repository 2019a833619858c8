//! The interface between the streaming server and the container runtime.

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::mpsc;

/// A terminal size change requested by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermSize {
    pub width: u16,
    pub height: u16,
}

/// The process's standard streams as seen by the runtime.
///
/// Each stream is an in-memory pipe to the client connection. Dropping
/// `stdout`/`stderr` (e.g. by returning) ends the corresponding client
/// stream; `stdin` reads EOF when the client half-closes stdin or goes away;
/// writes fail with `BrokenPipe` once the client has disconnected.
pub struct ExecIo {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// `None` when a TTY is allocated (stderr is merged into the TTY).
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Terminal resizes; only present with a TTY.
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

impl std::fmt::Debug for ExecIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// What the streaming server needs from the runtime. Uses `async_trait` so
/// the trait stays object-safe (`Arc<dyn Runtime>`).
///
/// The server awaits each call on its own task; a call that never returns
/// only pins that session. Errors are reported to the client as a Failure
/// status (exec/attach) or on the port's error stream (port-forward).
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Runs `cmd` in the container; returns its exit code.
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: ExecIo,
    ) -> Result<i32, String>;

    /// Attaches to the container's main process until it exits or the
    /// client leaves (stdin EOF / broken pipe).
    async fn attach(&self, container_id: &str, tty: bool, io: ExecIo) -> Result<(), String>;

    /// Connects `stream` to `port` on the pod's loopback inside its network
    /// namespace, copying both ways until either side closes.
    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        stream: DuplexStream,
    ) -> Result<(), String>;
}
