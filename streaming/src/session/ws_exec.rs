//! exec/attach over WebSocket (`v5.channel.k8s.io` and older): every
//! message's first byte names the channel — 0 stdin, 1 stdout, 2 stderr,
//! 3 error (status), 4 resize; v5 adds 255 "close channel N" so stdin EOF
//! can be signalled without closing the socket.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};

use super::ws_link::{next_channel_message, spawn_writer, ChannelCodec, Out, LINGER};
use super::{AbortOnDrop, MAX_WS_MESSAGE, OUTPUT_CHUNK, OUTPUT_DRAIN_TIMEOUT};
use crate::exec::{self, ExecSpec};
use crate::negotiate::{ExecVersion, WsExecProto};
use crate::resize::ResizeDecoder;
use crate::ws::MessageReader;
use crate::{Runtime, TermSize};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

pub async fn serve<IO>(io: IO, proto: WsExecProto, spec: ExecSpec, rt: Arc<dyn Runtime>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (out, writer) = spawn_writer(wr);
    let codec = ChannelCodec {
        base64: proto.base64,
    };
    let (io, ends) = exec::plumb(&spec);
    let (gone_tx, gone_rx) = watch::channel(false);
    let reader = AbortOnDrop(tokio::spawn(read_loop(
        MessageReader::new(rd, MAX_WS_MESSAGE, true),
        ends.stdin,
        ends.resize,
        out.clone(),
        codec,
        proto.version,
        gone_tx,
    )));
    let mut outputs = Vec::new();
    for (ch, pipe) in [(STDOUT, ends.stdout), (STDERR, ends.stderr)] {
        if let Some(pipe) = pipe {
            outputs.push(tokio::spawn(pump_out(
                pipe,
                ch,
                codec,
                out.clone(),
                gone_rx.clone(),
            )));
        }
    }

    // A client that leaves ends the call: the runtime stops an abandoned exec.
    let mut gone = gone_rx.clone();
    let outcome = tokio::select! {
        o = exec::run(rt, &spec, io) => o,
        _ = async { let _ = gone.wait_for(|g| *g).await; } => {
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
    let payload = if proto.version.json_status() {
        Some(outcome.status_json())
    } else {
        outcome.legacy_text().map(String::into_bytes)
    };
    if let Some(p) = payload {
        let _ = out.send(codec.encode(ERROR, &p)).await;
    }
    let _ = out.send(Out::Close(1000)).await;
    drop(out);
    let _ = writer.await;
    finish_reader(reader).await;
}

/// Lingering close: give the client a moment to answer our close frame so
/// unread input does not turn our close into a RST.
pub(crate) async fn finish_reader(mut reader: AbortOnDrop<()>) {
    // Timing out drops (and so aborts) the reader.
    let _ = tokio::time::timeout(LINGER, &mut reader.0).await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: MessageReader<R>,
    mut stdin: Option<DuplexStream>,
    resize: Option<mpsc::Sender<TermSize>>,
    out: mpsc::Sender<Out>,
    codec: ChannelCodec,
    version: ExecVersion,
    gone: watch::Sender<bool>,
) {
    let mut sizes = ResizeDecoder::default();
    loop {
        let Some((ch, data)) = next_channel_message(&mut rd, &out, &codec, "exec").await else {
            break;
        };
        match ch {
            STDIN => {
                if let Some(p) = stdin.as_mut() {
                    if p.write_all(&data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            RESIZE => {
                for s in sizes.push(&data) {
                    if let Some(tx) = &resize {
                        let _ = tx.send(s).await;
                    }
                }
            }
            // Dropping our end is EOF for the process's stdin.
            CLOSE if version >= ExecVersion::V5 && data.first() == Some(&STDIN) => stdin = None,
            _ => {}
        }
    }
    drop(stdin);
    let _ = gone.send(true);
}

pub(crate) async fn pump_out<R: AsyncRead + Unpin>(
    mut pipe: R,
    ch: u8,
    codec: ChannelCodec,
    out: mpsc::Sender<Out>,
    mut gone: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    loop {
        let n = tokio::select! {
            r = pipe.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = async { let _ = gone.wait_for(|g| *g).await; } => return,
        };
        if out.send(codec.encode(ch, &buf[..n])).await.is_err() {
            return;
        }
    }
}
