//! port-forward over SPDY (`portforward.k8s.io`): per forwarded
//! connection the client opens an `error` and a `data` stream carrying the
//! same `requestID` and a `port`; we pair them, ask the runtime to connect
//! the port, and copy both ways.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

use super::{OUTPUT_CHUNK, STREAM_CREATION_TIMEOUT};
use crate::spdy::{self, Connection, Role, Stream};
use crate::Runtime;

const PIPE_CAPACITY: usize = 64 * 1024;

/// A validated port-forward request, as stored under its token.
#[derive(Clone, Debug)]
pub struct PortForwardSpec {
    pub pod_sandbox_id: String,
    /// Ports the CRI request named; empty means any (kubelet sends none
    /// for SPDY, where the client names ports per stream).
    pub ports: Vec<u16>,
}

impl PortForwardSpec {
    pub fn allows(&self, port: u16) -> bool {
        port != 0 && (self.ports.is_empty() || self.ports.contains(&port))
    }
}

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
    since: Option<Instant>,
}

pub async fn serve<IO>(io: IO, spec: PortForwardSpec, rt: Arc<dyn Runtime>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (conn, mut acc) = spdy::conn::start(io, Role::Server);
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut active = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            s = acc.accept() => {
                let Some(s) = s else { break };
                let Some(id) = request_id(&s) else {
                    tracing::debug!(headers = ?s.headers, "port-forward stream without type");
                    continue;
                };
                let pair = pending.entry(id.clone()).or_default();
                pair.since.get_or_insert_with(Instant::now);
                match s.headers.get("streamtype") {
                    Some("error") if pair.error.is_none() => pair.error = Some(s),
                    Some("data") if pair.data.is_none() => pair.data = Some(s),
                    _ => continue,
                }
                if pair.error.is_some() && pair.data.is_some() {
                    if let Some(Pair { error: Some(e), data: Some(d), .. }) = pending.remove(&id) {
                        active.spawn(forward(e, d, spec.clone(), rt.clone(), conn.clone()));
                    }
                }
            }
            _ = tick.tick() => {
                // Half-opened pairs time out like kubelet's; dropping the
                // streams half-closes them so the client notices.
                pending.retain(|_, p| p.since.is_some_and(|t| t.elapsed() < STREAM_CREATION_TIMEOUT));
                while active.try_join_next().is_some() {}
            }
        }
    }
    // The client went away or sent GOAWAY: let running forwards finish.
    while active.join_next().await.is_some() {}
    conn.close().await;
}

/// Pairs streams by `requestID`; old clients omit it, and kubelet then
/// derives it from the stream id (error stream opened just before data).
fn request_id(s: &Stream) -> Option<String> {
    if let Some(id) = s.headers.get("requestid") {
        return Some(id.to_owned());
    }
    match s.headers.get("streamtype")? {
        "error" => Some(s.id.to_string()),
        "data" => Some(s.id.saturating_sub(2).to_string()),
        _ => None,
    }
}

async fn forward(
    mut error: Stream,
    data: Stream,
    spec: PortForwardSpec,
    rt: Arc<dyn Runtime>,
    conn: Connection,
) {
    let port = data
        .headers
        .get("port")
        .and_then(|p| p.trim().parse::<u16>().ok());
    let result = match port {
        Some(port) if spec.allows(port) => connect(data, port, &spec.pod_sandbox_id, rt, conn)
            .await
            .map_err(|e| {
                format!(
                    "error forwarding port {port} to pod {}, uid : {e}",
                    spec.pod_sandbox_id
                )
            }),
        Some(port) => Err(format!("port {port} is not allowed for this request")),
        None => Err(format!(
            "invalid port header {:?}",
            data.headers.get("port").unwrap_or("")
        )),
    };
    if let Err(msg) = result {
        tracing::debug!(error = %msg, "port-forward failed");
        let _ = error.send.send(Bytes::from(msg)).await;
    }
    let _ = error.send.close().await;
}

/// Runs the runtime's forward and the two copy directions; returns the
/// runtime's verdict.
async fn connect(
    data: Stream,
    port: u16,
    pod: &str,
    rt: Arc<dyn Runtime>,
    conn: Connection,
) -> Result<(), String> {
    let (ours, theirs) = tokio::io::duplex(PIPE_CAPACITY);
    let (mut our_r, mut our_w) = tokio::io::split(ours);
    let Stream {
        mut recv, mut send, ..
    } = data;
    // Client → pod. Aborted once the runtime is done: nothing can consume
    // further client data then.
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut recv, &mut our_w).await;
        let _ = our_w.shutdown().await;
    });
    // Pod → client, ending with FIN when the runtime closes its side.
    let down = async move {
        let mut buf = vec![0u8; OUTPUT_CHUNK];
        loop {
            let n = tokio::select! {
                r = our_r.read(&mut buf) => match r {
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
    };
    let (result, ()) = tokio::join!(rt.port_forward(pod, port, theirs), down);
    up.abort();
    result
}
