//! A fake runtime driven by the command line it is given.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crisp_streaming::{Config, ExecIo, Runtime, Server, TermSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Fake {
    pub events: Mutex<Vec<String>>,
    pub changed: Notify,
}

impl Fake {
    fn record(&self, e: impl Into<String>) {
        self.events.lock().unwrap().push(e.into());
        self.changed.notify_waiters();
    }

    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until an event satisfying `pred` was recorded.
    pub async fn wait_for(&self, what: &str) -> bool {
        let fut = async {
            loop {
                let n = self.changed.notified();
                if self.events().iter().any(|e| e == what) {
                    return;
                }
                n.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .is_ok()
    }
}

pub async fn server(ttl: Duration) -> (Server, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let cfg = Config {
        token_ttl: ttl,
        ..Config::default()
    };
    let srv = Server::start(cfg, fake.clone()).await.unwrap();
    (srv, fake)
}

/// Copies stdin to stdout until EOF; returns bytes copied.
async fn echo(io: &mut ExecIo) -> usize {
    let (Some(i), Some(o)) = (io.stdin.as_mut(), io.stdout.as_mut()) else {
        return 0;
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        match i.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                if o.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    total
}

struct Ended<'a>(&'a Fake, String);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.record(std::mem::take(&mut self.1));
    }
}

#[async_trait::async_trait]
impl Runtime for Fake {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        mut io: ExecIo,
    ) -> Result<i32, String> {
        self.record(format!("exec {container_id} {} tty={tty}", cmd.join(" ")));
        let arg = |i: usize| cmd.get(i).cloned().unwrap_or_default();
        // Recorded however the call ends, including the server dropping it.
        let _ended = Ended(self, format!("{}-ended", arg(0)));
        match arg(0).as_str() {
            // echo [code]: stdin → stdout, then exit with code.
            "echo" => {
                let n = echo(&mut io).await;
                self.record(format!("echo-done {n}"));
                Ok(arg(1).parse().unwrap_or(0))
            }
            // exit N: write to both outputs, exit N.
            "exit" => {
                if let Some(o) = io.stdout.as_mut() {
                    o.write_all(b"out").await.map_err(|e| e.to_string())?;
                }
                if let Some(e) = io.stderr.as_mut() {
                    e.write_all(b"err").await.map_err(|e| e.to_string())?;
                }
                Ok(arg(1).parse().unwrap_or(0))
            }
            "fail" => Err("boom".into()),
            // resize N: report the first N resizes on stdout, exit 0.
            "resize" => {
                let want: usize = arg(1).parse().unwrap_or(1);
                let mut rx = io.resize.take().ok_or("no resize channel")?;
                for _ in 0..want {
                    let Some(TermSize { width, height }) = rx.recv().await else {
                        break;
                    };
                    self.record(format!("resize {width}x{height}"));
                    if let Some(o) = io.stdout.as_mut() {
                        let _ = o.write_all(format!("{width}x{height}\n").as_bytes()).await;
                    }
                }
                Ok(0)
            }
            // sleep: write forever until the client is gone.
            "spew" => {
                let o = io.stdout.as_mut().ok_or("no stdout")?;
                while o.write_all(&[b'x'; 1024]).await.is_ok() {}
                self.record("spew-done");
                Ok(0)
            }
            other => Err(format!("unknown fake command {other:?}")),
        }
    }

    async fn attach(&self, container_id: &str, tty: bool, mut io: ExecIo) -> Result<(), String> {
        self.record(format!("attach {container_id} tty={tty}"));
        echo(&mut io).await;
        Ok(())
    }

    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        mut stream: DuplexStream,
    ) -> Result<(), String> {
        self.record(format!("portforward {pod_sandbox_id} {port}"));
        // A real runtime enters the pod's netns; the fake uses the host's.
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        tokio::io::copy_bidirectional(&mut stream, &mut tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A TCP server that upper-cases what it receives, one connection at a time
/// per task. Returns its port.
pub async fn upper_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            buf[..n].make_ascii_uppercase();
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

/// A port with (almost certainly) nothing listening.
pub async fn dead_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}
