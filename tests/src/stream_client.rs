//! A small client for crispd's streaming server over WebSocket, as `crictl --transport
//! websocket` speaks it: remotecommand `v5.channel.k8s.io` for exec and `portforward.k8s.io`
//! for port-forward. Framing comes from `crisp_streaming::ws` (client side, masked).

use std::time::Duration;

use anyhow::{bail, Context};
use crisp_streaming::ws::frame::{Message, Opcode};
use crisp_streaming::ws::io::{MessageReader, MessageWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(30);

pub struct WsConn {
    rd: MessageReader<ReadHalf<TcpStream>>,
    wr: MessageWriter<WriteHalf<TcpStream>>,
    /// The subprotocol the server chose.
    pub protocol: String,
}

/// Upgrades `url` (http://host:port/path?query) to a WebSocket offering `protocols`.
pub async fn ws_connect(url: &str, protocols: &[&str]) -> anyhow::Result<WsConn> {
    let rest = url
        .strip_prefix("http://")
        .context("streaming URL is not http://")?;
    let slash = rest.find('/').context("streaming URL has no path")?;
    let (host, path) = rest.split_at(slash);
    let mut tcp = TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting {host}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: {}\r\n\r\n",
        protocols.join(", ")
    );
    tcp.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut b)).await??;
        if n == 0 {
            bail!(
                "connection closed in the response head: {}",
                String::from_utf8_lossy(&head)
            );
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if !head.starts_with("HTTP/1.1 101") {
        bail!("upgrade refused: {head}");
    }
    let protocol = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("Sec-WebSocket-Protocol"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let (r, w) = tokio::io::split(tcp);
    Ok(WsConn {
        rd: MessageReader::new(r, 64 << 20, false),
        wr: MessageWriter::new(w, true),
        protocol,
    })
}

impl WsConn {
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> anyhow::Result<()> {
        let mut m = Vec::with_capacity(data.len() + 1);
        m.push(channel);
        m.extend_from_slice(data);
        self.wr.send(Opcode::Binary, &m).await?;
        Ok(())
    }

    /// The next data message as (channel, payload); `None` once the server closed.
    pub async fn recv(&mut self) -> anyhow::Result<Option<(u8, Vec<u8>)>> {
        loop {
            match tokio::time::timeout(TIMEOUT, self.rd.next()).await? {
                Ok(Some(Message::Binary(b))) if !b.is_empty() => {
                    return Ok(Some((b[0], b[1..].to_vec())))
                }
                Ok(Some(Message::Close(..))) | Ok(None) => return Ok(None),
                Ok(Some(_)) => continue,
                Err(e) => bail!("websocket: {e}"),
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The v5 error channel: a metav1.Status JSON.
    pub status: serde_json::Value,
}

impl ExecResult {
    /// The exit code the Status carries (0 for Success).
    pub fn exit_code(&self) -> Option<i64> {
        if self.status["status"] == "Success" {
            return Some(0);
        }
        self.status["details"]["causes"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok()
    }
}

/// Runs an exec URL to completion: sends `stdin` (then closes it, v5 style) while collecting
/// stdout, stderr and the status.
pub async fn ws_exec(url: &str, stdin: Option<Vec<u8>>) -> anyhow::Result<ExecResult> {
    ws_exec_with(url, &[], stdin).await
}

/// [`ws_exec`] for an exec or attach with a terminal: first sends each (width, height) on the
/// resize channel, as kubectl does with the local terminal's size.
pub async fn ws_exec_with(
    url: &str,
    resizes: &[(u16, u16)],
    stdin: Option<Vec<u8>>,
) -> anyhow::Result<ExecResult> {
    let resizes: Vec<Vec<u8>> = resizes
        .iter()
        .map(|(w, h)| {
            let mut m = vec![4u8];
            m.extend_from_slice(format!("{{\"Width\":{w},\"Height\":{h}}}").as_bytes());
            m
        })
        .collect();
    let conn = ws_connect(url, &["v5.channel.k8s.io"]).await?;
    anyhow::ensure!(
        conn.protocol == "v5.channel.k8s.io",
        "negotiated {:?}",
        conn.protocol
    );
    let WsConn { mut rd, mut wr, .. } = conn;
    let writer = tokio::spawn(async move {
        for m in resizes {
            if wr.send(Opcode::Binary, &m).await.is_err() {
                return wr;
            }
        }
        if let Some(data) = stdin {
            for c in data.chunks(32 * 1024) {
                let mut m = vec![0u8];
                m.extend_from_slice(c);
                if wr.send(Opcode::Binary, &m).await.is_err() {
                    return wr;
                }
            }
            let _ = wr.send(Opcode::Binary, &[255, 0]).await;
        }
        wr
    });
    let mut out = ExecResult::default();
    let mut error = Vec::new();
    loop {
        match tokio::time::timeout(TIMEOUT, rd.next()).await? {
            Ok(Some(Message::Binary(b))) if !b.is_empty() => match b[0] {
                1 => out.stdout.extend_from_slice(&b[1..]),
                2 => out.stderr.extend_from_slice(&b[1..]),
                3 => error.extend_from_slice(&b[1..]),
                _ => {}
            },
            Ok(Some(Message::Close(..))) | Ok(None) => break,
            Ok(Some(_)) => {}
            Err(e) => bail!("websocket: {e}"),
        }
    }
    if let Ok(mut wr) = writer.await {
        let _ = wr.close(1000).await;
    }
    out.status = serde_json::from_slice(&error)
        .with_context(|| format!("status is not JSON: {}", String::from_utf8_lossy(&error)))?;
    Ok(out)
}
