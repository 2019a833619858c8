//! Shared WebSocket session plumbing: a writer task fed by a channel (so
//! output pumps and the reader's pong/close replies can share the socket),
//! and the k8s channel framing (first byte = channel, optionally base64).

use std::time::Duration;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ws::{Message, MessageReader, MessageWriter, Opcode};
use tokio::io::AsyncRead;

/// Bound on a graceful close, so a client that stops reading cannot keep
/// the session alive.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// After our close frame, how long to wait for the client's.
pub const LINGER: Duration = Duration::from_secs(5);

pub enum Out {
    Msg(Opcode, Bytes),
    /// Send a close frame with this code, then stop writing.
    Close(u16),
}

/// Spawns the writer; it ends after a `Close`, on a write error, or when
/// every sender is dropped.
pub fn spawn_writer<W>(wr: W) -> (mpsc::Sender<Out>, JoinHandle<()>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Out>(32);
    let task = tokio::spawn(async move {
        let mut w = MessageWriter::new(wr, false);
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            // Batch whatever is queued into one write.
            while let Some(item) = next.take() {
                match item {
                    Out::Msg(op, payload) => w.queue(op, &payload),
                    Out::Close(code) => {
                        let _ = w.flush().await;
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, w.close(code)).await;
                        return;
                    }
                }
                next = rx.try_recv().ok();
            }
            if w.flush().await.is_err() {
                return;
            }
        }
    });
    (tx, task)
}

/// The k8s channel framing for one negotiated protocol.
#[derive(Clone, Copy, Debug)]
pub struct ChannelCodec {
    pub base64: bool,
}

impl ChannelCodec {
    pub fn encode(&self, channel: u8, data: &[u8]) -> Out {
        if self.base64 {
            let mut s = BytesMut::with_capacity(1 + data.len() * 4 / 3 + 4);
            s.put_u8(b'0'.wrapping_add(channel));
            s.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .as_bytes(),
            );
            Out::Msg(Opcode::Text, s.freeze())
        } else {
            let mut b = BytesMut::with_capacity(1 + data.len());
            b.put_u8(channel);
            b.extend_from_slice(data);
            Out::Msg(Opcode::Binary, b.freeze())
        }
    }

    /// Splits a data message into (channel, payload); `None` for empty or
    /// undecodable messages, which are ignored.
    pub fn decode(&self, msg: &Message) -> Option<(u8, Bytes)> {
        let (Message::Binary(b) | Message::Text(b)) = msg else {
            return None;
        };
        let (&first, _) = b.split_first()?;
        if self.base64 {
            let ch = first.checked_sub(b'0')?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(&b[1..])
                .ok()?;
            Some((ch, Bytes::from(data)))
        } else {
            Some((first, b.slice(1..)))
        }
    }
}

/// Reads the next channel message from the client, answering pings and close frames on the
/// way. `None` once the session is over (EOF, close, or a protocol error, which is answered
/// with close code 1002). `what` names the session kind in the log.
pub async fn next_channel_message<R: AsyncRead + Unpin>(
    rd: &mut MessageReader<R>,
    out: &mpsc::Sender<Out>,
    codec: &ChannelCodec,
    what: &str,
) -> Option<(u8, Bytes)> {
    loop {
        let msg = match rd.next().await {
            Ok(Some(m)) => m,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket {what} client sent garbage");
                let _ = out.send(Out::Close(1002)).await;
                return None;
            }
        };
        match &msg {
            Message::Ping(p) => {
                let _ = out.send(Out::Msg(Opcode::Pong, p.clone())).await;
                continue;
            }
            Message::Pong(_) => continue,
            Message::Close(..) => {
                let _ = out.send(Out::Close(1000)).await;
                return None;
            }
            Message::Binary(_) | Message::Text(_) => {}
        }
        if let Some(m) = codec.decode(&msg) {
            return Some(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_round_trip() {
        for base64 in [false, true] {
            let c = ChannelCodec { base64 };
            let Out::Msg(op, payload) = c.encode(1, b"hello") else {
                panic!("not a message")
            };
            let msg = if op == Opcode::Text {
                Message::Text(payload)
            } else {
                Message::Binary(payload)
            };
            assert_eq!(c.decode(&msg), Some((1, Bytes::from_static(b"hello"))));
        }
        let c = ChannelCodec { base64: true };
        let Out::Msg(_, p) = c.encode(2, b"hi") else {
            panic!("not a message")
        };
        assert_eq!(&p[..], b"2aGk=");
        assert_eq!(c.decode(&Message::Text(Bytes::from_static(b"0!!"))), None);
        assert_eq!(c.decode(&Message::Binary(Bytes::new())), None);
    }
}
