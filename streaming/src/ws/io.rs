//! Message-level reading and writing over a byte stream.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{self, Message, Opcode};
use super::WsError;

/// Reassembles fragmented messages and surfaces control frames.
pub struct MessageReader<R> {
    rd: R,
    buf: BytesMut,
    partial: Option<(Opcode, BytesMut)>,
    max_message: usize,
    require_mask: bool,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// `require_mask` is true on the server side (RFC 6455 5.1).
    pub fn new(rd: R, max_message: usize, require_mask: bool) -> Self {
        Self {
            rd,
            buf: BytesMut::with_capacity(16 * 1024),
            partial: None,
            max_message,
            require_mask,
        }
    }

    /// Next message; `Ok(None)` on a clean end of the byte stream.
    pub async fn next(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let max = self
                .max_message
                .saturating_sub(self.partial.as_ref().map_or(0, |(_, b)| b.len()));
            let Some(f) = frame::decode(&mut self.buf, max)? else {
                if self.rd.read_buf(&mut self.buf).await? == 0 {
                    return Ok(None);
                }
                continue;
            };
            if self.require_mask && !f.masked {
                return Err(WsError::Unmasked);
            }
            match f.opcode {
                Opcode::Ping => return Ok(Some(Message::Ping(f.payload))),
                Opcode::Pong => return Ok(Some(Message::Pong(f.payload))),
                Opcode::Close => {
                    let p = f.payload;
                    let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                    let reason = if p.len() > 2 {
                        p.slice(2..)
                    } else {
                        Bytes::new()
                    };
                    return Ok(Some(Message::Close(code, reason)));
                }
                Opcode::Continuation => {
                    let Some((op, mut acc)) = self.partial.take() else {
                        return Err(WsError::UnexpectedContinuation);
                    };
                    acc.extend_from_slice(&f.payload);
                    if f.fin {
                        return Ok(Some(message(op, acc.freeze())));
                    }
                    self.partial = Some((op, acc));
                }
                op @ (Opcode::Text | Opcode::Binary) => {
                    if self.partial.is_some() {
                        return Err(WsError::InterleavedMessage);
                    }
                    if f.fin {
                        return Ok(Some(message(op, f.payload)));
                    }
                    self.partial = Some((op, BytesMut::from(&f.payload[..])));
                }
            }
        }
    }
}

fn message(op: Opcode, payload: Bytes) -> Message {
    if op == Opcode::Text {
        Message::Text(payload)
    } else {
        Message::Binary(payload)
    }
}

/// Writes whole messages as single frames.
pub struct MessageWriter<W> {
    wr: W,
    buf: BytesMut,
    /// Clients must mask; the key need not be secret for our test client,
    /// so a simple counter is used.
    mask: Option<u32>,
}

impl<W: AsyncWrite + Unpin> MessageWriter<W> {
    pub fn new(wr: W, client: bool) -> Self {
        Self {
            wr,
            buf: BytesMut::new(),
            mask: client.then_some(0x1234_5678),
        }
    }

    pub async fn send(&mut self, opcode: Opcode, payload: &[u8]) -> Result<(), WsError> {
        self.queue(opcode, payload);
        self.flush().await
    }

    /// Encodes without writing, to batch several messages into one write.
    pub fn queue(&mut self, opcode: Opcode, payload: &[u8]) {
        let key = self.mask.map(|m| {
            let next = m.wrapping_mul(1_103_515_245).wrapping_add(12345);
            self.mask = Some(next);
            next.to_be_bytes()
        });
        frame::encode(true, opcode, payload, key, &mut self.buf);
    }

    pub async fn flush(&mut self) -> Result<(), WsError> {
        if !self.buf.is_empty() {
            self.wr.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.wr.flush().await?;
        Ok(())
    }

    pub async fn close(&mut self, code: u16) -> Result<(), WsError> {
        self.send(Opcode::Close, &code.to_be_bytes()).await?;
        self.wr.shutdown().await?;
        Ok(())
    }
}
