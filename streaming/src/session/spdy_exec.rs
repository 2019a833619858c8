//! exec/attach over SPDY (remotecommand v1–v4): the client opens one
//! stream per standard stream plus `error` (and `resize` for v3+ with a
//! TTY); we run the command and report its status on `error`.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use super::{OUTPUT_CHUNK, OUTPUT_DRAIN_TIMEOUT, STREAM_CREATION_TIMEOUT};
use crate::exec::{self, ExecSpec};
use crate::negotiate::ExecVersion;
use crate::resize::ResizeDecoder;
use crate::spdy::{self, Acceptor, Connection, RecvStream, Role, SendStream, Stream};
use crate::{Runtime, TermSize};

#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Streams {
    fn complete(&self, spec: &ExecSpec, version: ExecVersion) -> bool {
        let want_stderr = spec.stderr && !spec.tty;
        let want_resize = spec.tty && version.has_resize();
        self.error.is_some()
            && (!spec.stdin || self.stdin.is_some())
            && (!spec.stdout || self.stdout.is_some())
            && (!want_stderr || self.stderr.is_some())
            && (!want_resize || self.resize.is_some())
    }
}

pub async fn serve<IO>(io: IO, version: ExecVersion, spec: ExecSpec, rt: Arc<dyn Runtime>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (conn, mut acc) = spdy::conn::start(io, Role::Server);
    let collected =
        tokio::time::timeout(STREAM_CREATION_TIMEOUT, collect(&mut acc, &spec, version)).await;
    // Streams opened after this point are refused.
    drop(acc);
    let streams = match collected {
        Ok(Some(s)) => s,
        Ok(None) => {
            tracing::debug!("exec client left before opening its streams");
            conn.close().await;
            return;
        }
        Err(_) => {
            tracing::debug!("exec client did not open its streams in time");
            conn.close().await;
            return;
        }
    };
    let Some(mut error) = streams.error else {
        conn.close().await;
        return;
    };

    let (io, ends) = exec::plumb(&spec);
    if let (Some(s), Some(pipe)) = (streams.stdin, ends.stdin) {
        tokio::spawn(pump_in(s.recv, pipe));
    }
    if let Some(s) = streams.resize {
        tokio::spawn(pump_resize(s.recv, ends.resize));
    }
    let mut outputs = Vec::new();
    for (s, pipe) in [(streams.stdout, ends.stdout), (streams.stderr, ends.stderr)] {
        if let (Some(s), Some(pipe)) = (s, pipe) {
            outputs.push(tokio::spawn(pump_out(pipe, s.send, conn.clone())));
        }
    }

    // A client that leaves ends the call: the runtime stops an abandoned exec.
    let outcome = tokio::select! {
        o = exec::run(rt, &spec, io) => o,
        _ = conn.closed() => {
            tracing::debug!("exec client left");
            return;
        }
    };
    let drained = async {
        for o in outputs {
            let _ = o.await;
        }
    };
    if tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, drained)
        .await
        .is_err()
    {
        tracing::warn!("exec output did not drain after the process ended");
    }

    let payload = if version.json_status() {
        Some(outcome.status_json())
    } else {
        outcome.legacy_text().map(String::into_bytes)
    };
    if let Some(p) = payload {
        let _ = error.send.send(Bytes::from(p)).await;
    }
    let _ = error.send.close().await;
    conn.close().await;
}

/// Accepts streams until the set the request needs is complete; `None` if
/// the connection ends first. Unexpected or duplicate streams are dropped
/// (which half-closes them) rather than failing the session.
async fn collect(acc: &mut Acceptor, spec: &ExecSpec, version: ExecVersion) -> Option<Streams> {
    let mut st = Streams::default();
    while !st.complete(spec, version) {
        let s = acc.accept().await?;
        let slot = match s.headers.get("streamtype") {
            Some("error") => &mut st.error,
            Some("stdin") if spec.stdin => &mut st.stdin,
            Some("stdout") if spec.stdout => &mut st.stdout,
            Some("stderr") if spec.stderr && !spec.tty => &mut st.stderr,
            Some("resize") if spec.tty && version.has_resize() => &mut st.resize,
            other => {
                tracing::debug!(stream_type = ?other, "ignoring unexpected exec stream");
                continue;
            }
        };
        if slot.is_none() {
            *slot = Some(s);
        }
    }
    Some(st)
}

/// Client stdin → process. Dropping the pipe at the client's FIN gives the
/// process EOF; once the process stops reading we keep draining so the
/// connection's flow control is not wedged by an unread stream.
pub(crate) async fn pump_in(mut recv: RecvStream, pipe: DuplexStream) {
    let mut pipe = Some(pipe);
    while let Some(chunk) = recv.chunk().await {
        if let Some(p) = pipe.as_mut() {
            if p.write_all(&chunk).await.is_err() {
                pipe = None;
            }
        }
    }
}

/// Process output → client; FIN at EOF. Stops (dropping the pipe, so the
/// process gets EPIPE) if the client goes away.
pub(crate) async fn pump_out(mut pipe: DuplexStream, mut send: SendStream, conn: Connection) {
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    loop {
        let n = tokio::select! {
            r = pipe.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = conn.closed() => return,
        };
        if send.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
            return;
        }
    }
    let _ = send.close().await;
}

async fn pump_resize(mut recv: RecvStream, tx: Option<mpsc::Sender<TermSize>>) {
    let mut dec = ResizeDecoder::default();
    while let Some(chunk) = recv.chunk().await {
        for size in dec.push(&chunk) {
            if let Some(tx) = &tx {
                // The runtime may have stopped listening; resizes are advisory.
                let _ = tx.send(size).await;
            }
        }
    }
}
