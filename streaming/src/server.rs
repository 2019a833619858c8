//! The server handle: binding, the accept loop, minting URLs for CRI
//! responses, and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::exec::ExecSpec;
use crate::http::{handle, Pending};
use crate::session::spdy_portforward::PortForwardSpec;
use crate::token::TokenCache;
use crate::{Runtime, StreamingError};

/// A slow or idle client must send its request headers within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen; port 0 picks a free port. The URLs handed out use
    /// the bound address, so bind a concrete (not unspecified) IP that the
    /// CRI client can reach.
    pub addr: SocketAddr,
    /// How long a URL stays redeemable.
    pub token_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_ttl: Duration::from_secs(60),
        }
    }
}

/// The running streaming server; cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) addr: SocketAddr,
    pub(crate) tokens: TokenCache<Pending>,
    pub(crate) runtime: Arc<dyn Runtime>,
    sessions: Mutex<JoinSet<()>>,
    stop: watch::Sender<bool>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    /// Sessions are tracked so shutdown can abort them (dropping their
    /// pipes, which the runtime sees as EOF / broken pipe).
    pub(crate) fn spawn_session(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        while set.try_join_next().is_some() {}
        if *self.stop.borrow() {
            return;
        }
        set.spawn(fut);
    }
}

impl Server {
    /// Binds and starts serving on a tokio task; returns once listening.
    pub async fn start(cfg: Config, rt: Arc<dyn Runtime>) -> Result<Server, StreamingError> {
        let listener =
            TcpListener::bind(cfg.addr)
                .await
                .map_err(|source| StreamingError::Bind {
                    addr: cfg.addr,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StreamingError::Bind {
                addr: cfg.addr,
                source,
            })?;
        let (stop, stop_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            addr,
            tokens: TokenCache::new(cfg.token_ttl),
            runtime: rt,
            sessions: Mutex::new(JoinSet::new()),
            stop,
            accept_task: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(listener, inner.clone(), stop_rx));
        *inner.accept_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        tracing::info!(%addr, "streaming server listening");
        Ok(Server { inner })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    fn url(&self, kind: &str, pending: Pending) -> Result<String, StreamingError> {
        if *self.inner.stop.borrow() {
            return Err(StreamingError::ShutDown);
        }
        let token = self.inner.tokens.insert(pending)?;
        Ok(format!("http://{}/{kind}/{token}", self.inner.addr))
    }

    /// URL for an `Exec` response. Rejects what kubelet rejects.
    pub fn get_exec(&self, req: crisp_cri_api::v1::ExecRequest) -> Result<String, StreamingError> {
        if req.container_id.is_empty() {
            return Err(StreamingError::InvalidRequest("container_id is empty"));
        }
        if req.cmd.is_empty() {
            return Err(StreamingError::InvalidRequest("cmd is empty"));
        }
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        self.url(
            "exec",
            Pending::Exec(ExecSpec {
                container_id: req.container_id,
                cmd: Some(req.cmd),
                tty: req.tty,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
            }),
        )
    }

    /// URL for an `Attach` response.
    pub fn get_attach(
        &self,
        req: crisp_cri_api::v1::AttachRequest,
    ) -> Result<String, StreamingError> {
        if req.container_id.is_empty() {
            return Err(StreamingError::InvalidRequest("container_id is empty"));
        }
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        self.url(
            "attach",
            Pending::Attach(ExecSpec {
                container_id: req.container_id,
                cmd: None,
                tty: req.tty,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
            }),
        )
    }

    /// URL for a `PortForward` response.
    pub fn get_port_forward(
        &self,
        req: crisp_cri_api::v1::PortForwardRequest,
    ) -> Result<String, StreamingError> {
        if req.pod_sandbox_id.is_empty() {
            return Err(StreamingError::InvalidRequest("pod_sandbox_id is empty"));
        }
        let ports = req
            .port
            .iter()
            .map(|&p| u16::try_from(p).ok().filter(|&p| p != 0))
            .collect::<Option<Vec<u16>>>()
            .ok_or(StreamingError::InvalidRequest("port out of range 1-65535"))?;
        self.url(
            "portforward",
            Pending::PortForward(PortForwardSpec {
                pod_sandbox_id: req.pod_sandbox_id,
                ports,
            }),
        )
    }

    /// Stops accepting, aborts open sessions (their runtime pipes close) and
    /// forgets unredeemed tokens. Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let task = self
            .inner
            .accept_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = task {
            let _ = t.await;
        }
        let mut sessions = std::mem::take(
            &mut *self
                .inner
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        sessions.shutdown().await;
        self.inner.tokens.clear();
    }
}

fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), StreamingError> {
    if !(stdin || stdout || stderr) {
        return Err(StreamingError::InvalidRequest(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    if tty && stderr {
        return Err(StreamingError::InvalidRequest(
            "tty and stderr cannot both be true",
        ));
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    // Dropping this set at shutdown aborts the HTTP connections still
    // being served (upgraded sessions live in `Inner::sessions`).
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Usually EMFILE; back off instead of spinning.
                    tracing::warn!(error = %e, "streaming accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        while conns.try_join_next().is_some() {}
        let inner = inner.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| handle(req, inner.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "streaming HTTP connection ended with error");
            }
        });
    }
}
