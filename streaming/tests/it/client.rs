//! Test clients: a raw HTTP/1.1 upgrade, then SPDY (via the crate's own
//! connection in client role) or WebSocket (the crate's frame codec with
//! client masking).

use std::time::Duration;

use bytes::Bytes;
use crisp_streaming::spdy::{self, FlowControl, Headers, Role};
use crisp_streaming::ws::{Message, MessageReader, MessageWriter, Opcode};
use crisp_streaming::TermSize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

pub const T: Duration = Duration::from_secs(20);

pub struct Upgraded {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub tcp: TcpStream,
}

impl Upgraded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends an upgrade request for `url` and reads the response head (byte by
/// byte, so nothing after it is swallowed).
pub async fn request(url: &str, method: &str, headers: &[(&str, &str)]) -> Upgraded {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = TcpStream::connect(host).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(T, tcp.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed in response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Upgraded {
        status,
        headers,
        tcp,
    }
}

pub async fn spdy_upgrade(url: &str, protocols: &[&str]) -> Upgraded {
    let mut h = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
    for p in protocols {
        h.push(("X-Stream-Protocol-Version", p));
    }
    request(url, "POST", &h).await
}

pub async fn ws_upgrade(url: &str, protocols: &[&str]) -> Upgraded {
    let joined = protocols.join(", ");
    let mut h = vec![
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    if !protocols.is_empty() {
        h.push(("Sec-WebSocket-Protocol", &joined));
    }
    request(url, "GET", &h).await
}

#[derive(Default, Clone)]
pub struct ExecReq {
    pub stdin: Option<Vec<u8>>,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub resizes: Vec<TermSize>,
    /// Announce flow control (SETTINGS), as a spec-following peer would.
    pub flow_control: bool,
}

#[derive(Debug, Default)]
pub struct ExecOut {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub error: Vec<u8>,
}

impl ExecOut {
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.error).unwrap_or_else(|e| {
            panic!(
                "status not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.error)
            )
        })
    }
}

/// remotecommand over SPDY, as client-go's v4 client does it.
pub async fn spdy_exec(up: Upgraded, req: ExecReq) -> ExecOut {
    // On: spec-following peer (SETTINGS, windows both ways). Off: what
    // Go's spdystream does (no WINDOW_UPDATE, windows ignored).
    let fc = if req.flow_control {
        FlowControl::On
    } else {
        FlowControl::Off
    };
    let (conn, _acc) = spdy::conn::start_with(up.tcp, Role::Client, fc);
    let open = |t: &str| conn.open_stream(Headers::new().with("streamType", t), false);
    let mut error = open("error").await.unwrap();
    let mut tasks = Vec::new();
    if let Some(data) = req.stdin.clone() {
        let mut s = open("stdin").await.unwrap();
        tasks.push(tokio::spawn(async move {
            for c in data.chunks(32 * 1024) {
                if s.send.send(Bytes::copy_from_slice(c)).await.is_err() {
                    break;
                }
            }
            let _ = s.send.close().await;
            Vec::<u8>::new()
        }));
    }
    let mut readers = Vec::new();
    for (want, t) in [(req.stdout, "stdout"), (req.stderr, "stderr")] {
        if want {
            let mut s = open(t).await.unwrap();
            readers.push(tokio::spawn(async move {
                s.recv.read_to_end_limited(64 << 20).await
            }));
        } else {
            readers.push(tokio::spawn(async { Vec::new() }));
        }
    }
    if req.tty {
        let mut s = open("resize").await.unwrap();
        let sizes = req.resizes.clone();
        tasks.push(tokio::spawn(async move {
            for z in sizes {
                let j = format!("{{\"Width\":{},\"Height\":{}}}\n", z.width, z.height);
                let _ = s.send.send(Bytes::from(j)).await;
            }
            // Keep the stream open like kubectl does while the TTY lives.
            Vec::new()
        }));
    }
    let err = tokio::time::timeout(T, error.recv.read_to_end_limited(1 << 20))
        .await
        .expect("error stream timed out");
    let mut outs = Vec::new();
    for r in readers {
        outs.push(
            tokio::time::timeout(T, r)
                .await
                .expect("output timed out")
                .unwrap(),
        );
    }
    for t in tasks {
        let _ = t.await;
    }
    let stderr = outs.pop().unwrap_or_default();
    let stdout = outs.pop().unwrap_or_default();
    ExecOut {
        stdout,
        stderr,
        error: err,
    }
}

pub struct Ws {
    pub rd: MessageReader<ReadHalf<TcpStream>>,
    pub wr: MessageWriter<WriteHalf<TcpStream>>,
}

impl Ws {
    pub fn new(up: Upgraded) -> Self {
        let (r, w) = tokio::io::split(up.tcp);
        Ws {
            rd: MessageReader::new(r, 64 << 20, false),
            wr: MessageWriter::new(w, true),
        }
    }

    pub async fn send(&mut self, ch: u8, data: &[u8]) {
        let mut m = vec![ch];
        m.extend_from_slice(data);
        self.wr.send(Opcode::Binary, &m).await.unwrap();
    }

    /// Next data message as (channel, payload); `None` at close/EOF.
    pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            match tokio::time::timeout(T, self.rd.next())
                .await
                .expect("ws read timed out")
            {
                Ok(Some(Message::Binary(b))) if !b.is_empty() => {
                    return Some((b[0], b[1..].to_vec()))
                }
                Ok(Some(Message::Close(..))) | Ok(None) | Err(_) => return None,
                Ok(Some(_)) => continue,
            }
        }
    }
}

/// remotecommand v5 over WebSocket, as crictl --transport websocket does:
/// stdin sent concurrently, then a close signal for channel 0.
pub async fn ws_exec(up: Upgraded, req: ExecReq, v5: bool) -> ExecOut {
    let (r, w) = tokio::io::split(up.tcp);
    let mut rd = MessageReader::new(r, 64 << 20, false);
    let mut wr = MessageWriter::new(w, true);
    let writer = tokio::spawn(async move {
        for z in &req.resizes {
            let j = format!("\x04{{\"Width\":{},\"Height\":{}}}", z.width, z.height);
            wr.send(Opcode::Binary, j.as_bytes()).await.unwrap();
        }
        if let Some(data) = &req.stdin {
            for c in data.chunks(32 * 1024) {
                let mut m = vec![0u8];
                m.extend_from_slice(c);
                if wr.send(Opcode::Binary, &m).await.is_err() {
                    return wr;
                }
            }
            if v5 {
                let _ = wr.send(Opcode::Binary, &[255, 0]).await;
            }
        }
        wr
    });
    let mut out = ExecOut::default();
    loop {
        let m = tokio::time::timeout(T, rd.next())
            .await
            .expect("ws exec timed out");
        match m {
            Ok(Some(Message::Binary(b))) if !b.is_empty() => {
                let dest = match b[0] {
                    1 => &mut out.stdout,
                    2 => &mut out.stderr,
                    3 => &mut out.error,
                    other => panic!("unexpected channel {other}"),
                };
                dest.extend_from_slice(&b[1..]);
            }
            Ok(Some(Message::Close(..))) | Ok(None) => break,
            Ok(Some(_)) => {}
            Err(e) => panic!("ws error {e}"),
        }
    }
    if let Ok(mut wr) = writer.await {
        let _ = wr.close(1000).await;
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift) for payloads and fuzzing.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
