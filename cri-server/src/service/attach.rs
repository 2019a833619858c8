//! Attach (`kubectl attach`, `crictl attach`): the streaming server's client joins the
//! container's main process through its shim's attach socket (`crisp_api::attach`), which
//! outlives crispd just as the process does.

use super::exec::{forward_resizes, AbortOnDrop};
use super::Runtime;
use crate::error::{Error, Result};
use crisp_api::attach::{self, Kind};
use crisp_streaming::ExecIo;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;

/// Bytes per stdin frame; well under `attach::MAX_PAYLOAD`.
const STDIN_CHUNK: usize = 32 * 1024;

impl Runtime {
    /// Relays the client's streams until the process exits (the shim closes the connection),
    /// the client stops reading its output, or, for a client that reads no output, its input
    /// ends.
    pub async fn attach(self: &Arc<Self>, id: &str, io: ExecIo) -> Result<()> {
        let id = self.resolve_container(id)?;
        let shim = self.running_shim(&id)?;
        let path = self.shim_dir(&id).attach_socket();
        let conn = UnixStream::connect(&path).await.map_err(|e| {
            Error::Internal(format!(
                "attaching to container {id} through {}: {e}",
                path.display()
            ))
        })?;
        let (mut from_shim, to_shim) = conn.into_split();

        let _resizer = io
            .resize
            .map(|sizes| AbortOnDrop(tokio::spawn(forward_resizes(shim, String::new(), sizes))));
        let wants_output = io.stdout.is_some() || io.stderr.is_some();
        let (input_done_tx, mut input_done) = tokio::sync::oneshot::channel::<OwnedWriteHalf>();
        let feeder = match io.stdin {
            Some(stdin) => {
                tokio::spawn(async move {
                    let wr = feed_stdin(stdin, to_shim).await;
                    // Keep the connection's write half open: dropping it would end the session.
                    let _ = input_done_tx.send(wr);
                });
                None
            }
            // Held until the end: a client without stdin never ends the container's input.
            None => Some(to_shim),
        };

        let mut stdout = io.stdout;
        let mut stderr = io.stderr;
        let mut input_finished = false;
        let mut kept_writer = None;
        loop {
            tokio::select! {
                frame = read_frame(&mut from_shim) => {
                    let Some((kind, data)) = frame else { break };
                    let sink = match kind {
                        Kind::Stdout => stdout.as_mut(),
                        Kind::Stderr => stderr.as_mut(),
                        Kind::Stdin | Kind::StdinClose => None,
                    };
                    if let Some(w) = sink {
                        if w.write_all(&data).await.is_err() {
                            // The client went away.
                            break;
                        }
                    }
                }
                wr = &mut input_done, if !input_finished => {
                    input_finished = true;
                    kept_writer = wr.ok();
                    if !wants_output {
                        break;
                    }
                }
            }
        }
        for w in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
            let _ = w.shutdown().await;
        }
        drop((feeder, kept_writer));
        Ok(())
    }
}

/// Sends the client's input, then marks its end. The first (empty) frame tells the shim this
/// client has stdin, so its end counts for `stdin_once`.
async fn feed_stdin(
    mut stdin: Box<dyn AsyncRead + Send + Unpin>,
    mut wr: OwnedWriteHalf,
) -> OwnedWriteHalf {
    if wr
        .write_all(&attach::frame(Kind::Stdin, &[]))
        .await
        .is_err()
    {
        return wr;
    }
    let mut buf = vec![0u8; STDIN_CHUNK];
    loop {
        let n = match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if wr
            .write_all(&attach::frame(Kind::Stdin, &buf[..n]))
            .await
            .is_err()
        {
            return wr;
        }
    }
    let _ = wr.write_all(&attach::frame(Kind::StdinClose, &[])).await;
    wr
}

/// The next frame from the shim; `None` at its end (or on garbage, which ends the session).
async fn read_frame(rd: &mut (impl AsyncRead + Unpin)) -> Option<(Kind, Vec<u8>)> {
    let mut h = [0u8; attach::HEADER_LEN];
    rd.read_exact(&mut h).await.ok()?;
    let (kind, len) = attach::parse_header(h).ok()?;
    let mut data = vec![0u8; len];
    rd.read_exact(&mut data).await.ok()?;
    Some((kind, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_back() {
        let mut bytes = attach::frame(Kind::Stdout, b"out");
        bytes.extend(attach::frame(Kind::Stderr, b""));
        bytes.extend([7, 0, 0, 0, 0]);
        let mut rd = &bytes[..];
        assert_eq!(
            read_frame(&mut rd).await,
            Some((Kind::Stdout, b"out".to_vec()))
        );
        assert_eq!(read_frame(&mut rd).await, Some((Kind::Stderr, Vec::new())));
        assert_eq!(read_frame(&mut rd).await, None);
    }
}
