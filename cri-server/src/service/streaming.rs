//! The runtime side of the streaming server (crate `crisp-streaming`): exec and port-forward
//! for `kubectl exec`/`crictl exec`, attach for `kubectl attach`/`crictl attach`, and
//! `kubectl port-forward`.

use super::exec::ExecStreams;
use super::Runtime;
use crisp_streaming::ExecIo;
use std::sync::{Arc, Weak};
use tokio::io::DuplexStream;
use tracing::Instrument;

/// Held by the streaming server; weak so the server does not keep the runtime alive.
pub struct StreamRuntime(pub Weak<Runtime>);

impl StreamRuntime {
    fn rt(&self) -> Result<Arc<Runtime>, String> {
        self.0
            .upgrade()
            .ok_or_else(|| "crispd is shutting down".to_string())
    }
}

#[async_trait::async_trait]
impl crisp_streaming::Runtime for StreamRuntime {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: ExecIo,
    ) -> Result<i32, String> {
        let rt = self.rt()?;
        let span = tracing::info_span!("Exec", container = %container_id, tty);
        let streams = ExecStreams {
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: io.stderr,
            resize: io.resize,
            tty,
        };
        rt.exec_stream(container_id, cmd, streams)
            .instrument(span)
            .await
            .map_err(|e| e.to_string())
    }

    async fn attach(&self, container_id: &str, tty: bool, io: ExecIo) -> Result<(), String> {
        let rt = self.rt()?;
        let span = tracing::info_span!("Attach", container = %container_id, tty);
        rt.attach(container_id, io)
            .instrument(span)
            .await
            .map_err(|e| e.to_string())
    }

    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        stream: DuplexStream,
    ) -> Result<(), String> {
        let rt = self.rt()?;
        let pod = rt.pod(pod_sandbox_id).map_err(|e| e.to_string())?;
        // A URL handed out while the pod ran may be used after its stop.
        pod.require_ready("port-forward")
            .map_err(|e| e.to_string())?;
        let netns = pod.netns.clone();
        // The socket is created on a thread that entered the pod's netns (setns is per thread);
        // once connected, it stays in that namespace and is used from anywhere.
        let std_stream = tokio::task::spawn_blocking(move || connect_in(netns.as_deref(), port))
            .await
            .map_err(|e| e.to_string())??;
        std_stream
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let mut tcp = tokio::net::TcpStream::from_std(std_stream).map_err(|e| e.to_string())?;
        let mut stream = stream;
        tokio::io::copy_bidirectional(&mut tcp, &mut stream)
            .await
            .map(|_| ())
            .map_err(|e| format!("port {port}: {e}"))
    }
}

fn connect_in(netns: Option<&std::path::Path>, port: u16) -> Result<std::net::TcpStream, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Some(netns) = netns else {
        return std::net::TcpStream::connect(addr).map_err(|e| format!("port {port}: {e}"));
    };
    let ns = std::fs::File::open(netns).map_err(|e| format!("pod network namespace: {e}"))?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering the pod network namespace: {e}"))?;
        std::net::TcpStream::connect(addr).map_err(|e| format!("port {port}: {e}"))
    })
    .join()
    .map_err(|_| "port-forward thread panicked".to_string())?
}
