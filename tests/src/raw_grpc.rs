//! A gRPC call written as raw HTTP/2 frames, so a test can send the `:authority` that other
//! gRPC stacks send on a unix socket (the socket's path, percent-encoded or not; none at all),
//! which no Rust HTTP client can express: `http::Uri` refuses such authorities, and `h2`'s
//! client takes the pseudo-headers from one.
//!
//! Only what a unary call needs: the preface, SETTINGS (and their ACK), one HEADERS frame of
//! HPACK literals without Huffman coding, one DATA frame; the answer is read until the
//! stream ends or is reset.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const STREAM: u32 = 1;

/// How the server answered stream 1.
#[derive(Debug)]
pub enum RawAnswer {
    /// The response's DATA payload (gRPC framing included) once the stream ended.
    Data(Vec<u8>),
    /// RST_STREAM with this HTTP/2 error code (1: PROTOCOL_ERROR).
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
}

/// Calls `method` (e.g. `/runtime.v1.RuntimeService/Version`) with the serialized `message`
/// over the unix socket, sending `authority` as `:authority` (or none).
pub fn unary_call(
    socket: &Path,
    authority: Option<&str>,
    method: &str,
    message: &[u8],
) -> anyhow::Result<RawAnswer> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    let mut block = Vec::new();
    literal(&mut block, ":method", "POST");
    literal(&mut block, ":scheme", "http");
    literal(&mut block, ":path", method);
    if let Some(a) = authority {
        literal(&mut block, ":authority", a);
    }
    literal(&mut block, "content-type", "application/grpc");
    literal(&mut block, "te", "trailers");
    frame(&mut out, HEADERS, END_HEADERS, STREAM, &block);
    let len = u32::try_from(message.len()).context("message too long")?;
    let mut body = vec![0u8];
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(message);
    frame(&mut out, DATA, END_STREAM, STREAM, &body);
    s.write_all(&out).context("sending the request")?;

    let mut data = Vec::new();
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head)
            .context("reading a frame (the server closed the connection?)")?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).context("reading a frame")?;
        match kind {
            SETTINGS if flags & ACK == 0 => {
                let mut ack = Vec::new();
                frame(&mut ack, SETTINGS, ACK, 0, &[]);
                s.write_all(&ack)?;
            }
            RST_STREAM if stream == STREAM => return Ok(RawAnswer::Reset(code(&payload, 0))),
            GOAWAY => return Ok(RawAnswer::GoAway(code(&payload, 4))),
            DATA if stream == STREAM => {
                data.extend_from_slice(&payload);
                if flags & END_STREAM != 0 {
                    return Ok(RawAnswer::Data(data));
                }
            }
            // The trailers end the stream.
            HEADERS if stream == STREAM && flags & END_STREAM != 0 => {
                return Ok(RawAnswer::Data(data));
            }
            _ => {}
        }
        if len > 1 << 20 {
            bail!("unexpectedly large frame ({len} bytes)");
        }
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// HPACK "literal header field without indexing, new name", both strings raw.
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0);
    string(block, name.as_bytes());
    string(block, value.as_bytes());
}

fn string(block: &mut Vec<u8>, s: &[u8]) {
    // A 7-bit prefix integer (RFC 7541 5.1), Huffman bit clear.
    let mut n = s.len();
    if n < 127 {
        block.push(n as u8);
    } else {
        block.push(127);
        n -= 127;
        while n >= 128 {
            block.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        block.push(n as u8);
    }
    block.extend_from_slice(s);
}

fn code(payload: &[u8], at: usize) -> u32 {
    payload
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(u32::MAX)
}
