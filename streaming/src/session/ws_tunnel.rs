//! `SPDY/3.1+portforward.k8s.io`: newer kubectl tunnels the SPDY
//! port-forward protocol through WebSocket binary messages (the apiserver's
//! tunnelling proxy). We bridge the messages to an in-memory byte pipe and
//! run the ordinary SPDY port-forward session on the other end.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::spdy_portforward::{self, PortForwardSpec};
use super::ws_exec::finish_reader;
use super::ws_link::{spawn_writer, Out};
use super::{AbortOnDrop, MAX_WS_MESSAGE};
use crate::ws::{Message, MessageReader, Opcode};
use crate::Runtime;

const PIPE_CAPACITY: usize = 256 * 1024;

pub async fn serve<IO>(io: IO, spec: PortForwardSpec, rt: Arc<dyn Runtime>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (spdy_side, bridge_side) = tokio::io::duplex(PIPE_CAPACITY);
    let (mut br, mut bw) = tokio::io::split(bridge_side);
    let (rd, wr) = tokio::io::split(io);
    let (out, writer) = spawn_writer(wr);

    let mut session = AbortOnDrop(tokio::spawn(spdy_portforward::serve(spdy_side, spec, rt)));
    let pong = out.clone();
    // WebSocket → SPDY bytes.
    let reader = AbortOnDrop(tokio::spawn(async move {
        let mut rd = MessageReader::new(rd, MAX_WS_MESSAGE, true);
        loop {
            match rd.next().await {
                Ok(Some(Message::Binary(b) | Message::Text(b))) => {
                    if bw.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Ok(Some(Message::Ping(p))) => {
                    let _ = pong.send(Out::Msg(Opcode::Pong, p)).await;
                }
                Ok(Some(Message::Pong(_))) => {}
                Ok(Some(Message::Close(..))) | Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "tunnelled port-forward client sent garbage");
                    break;
                }
            }
        }
        // EOF to the SPDY session, which then winds down.
        let _ = bw.shutdown().await;
    }));
    // SPDY bytes → WebSocket, until the SPDY session closes its side.
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match br.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let msg = Out::Msg(Opcode::Binary, Bytes::copy_from_slice(&buf[..n]));
                if out.send(msg).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = out.send(Out::Close(1000)).await;
    drop(out);
    let _ = writer.await;
    drop(br);
    let _ = (&mut session.0).await;
    finish_reader(reader).await;
}
