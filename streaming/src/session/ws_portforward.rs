//! port-forward over WebSocket (`portforward.k8s.io`): ports come from
//! the `?port=` query; port i uses channel 2i for data and 2i+1 for
//! errors, and the first message we send on each channel is the port as
//! two little-endian bytes, so the client can match channels to ports.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::spdy_portforward::PortForwardSpec;
use super::ws_exec::{finish_reader, pump_out};
use super::ws_link::{next_channel_message, spawn_writer, ChannelCodec, Out};
use super::{AbortOnDrop, MAX_WS_MESSAGE};
use crate::ws::MessageReader;
use crate::Runtime;

const PIPE_CAPACITY: usize = 64 * 1024;

pub async fn serve<IO>(
    io: IO,
    ports: Vec<u16>,
    base64: bool,
    spec: PortForwardSpec,
    rt: Arc<dyn Runtime>,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (out, writer) = spawn_writer(wr);
    let codec = ChannelCodec { base64 };
    let (gone_tx, gone_rx) = watch::channel(false);
    let mut to_pod = Vec::new();
    let mut forwards = JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        // Ports are capped at 64 by the HTTP layer, so 2i+1 fits in a u8.
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        let prefix = port.to_le_bytes();
        let _ = out.send(codec.encode(data_ch, &prefix)).await;
        let _ = out.send(codec.encode(err_ch, &prefix)).await;
        let (ours, theirs) = tokio::io::duplex(PIPE_CAPACITY);
        let (our_r, our_w) = tokio::io::split(ours);
        to_pod.push(Some(our_w));
        let (rt, out, gone, pod) = (
            rt.clone(),
            out.clone(),
            gone_rx.clone(),
            spec.pod_sandbox_id.clone(),
        );
        forwards.spawn(async move {
            let down = pump_out(our_r, data_ch, codec, out.clone(), gone);
            let (res, ()) = tokio::join!(rt.port_forward(&pod, port, theirs), down);
            if let Err(e) = res {
                let msg = format!("error forwarding port {port} to pod {pod}, uid : {e}");
                let _ = out.send(codec.encode(err_ch, msg.as_bytes())).await;
            }
        });
    }
    let reader = AbortOnDrop(tokio::spawn(read_loop(
        MessageReader::new(rd, MAX_WS_MESSAGE, true),
        to_pod,
        out.clone(),
        codec,
        gone_tx,
    )));
    while forwards.join_next().await.is_some() {}
    let _ = out.send(Out::Close(1000)).await;
    drop(out);
    let _ = writer.await;
    finish_reader(reader).await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: MessageReader<R>,
    mut to_pod: Vec<Option<WriteHalf<tokio::io::DuplexStream>>>,
    out: mpsc::Sender<Out>,
    codec: ChannelCodec,
    gone: watch::Sender<bool>,
) {
    loop {
        let Some((ch, data)) = next_channel_message(&mut rd, &out, &codec, "port-forward").await
        else {
            break;
        };
        // Only even (data) channels carry client bytes.
        if ch % 2 != 0 {
            continue;
        }
        if let Some(slot) = to_pod.get_mut(usize::from(ch / 2)) {
            if let Some(w) = slot.as_mut() {
                if w.write_all(&data).await.is_err() {
                    *slot = None;
                }
            }
        }
    }
    for w in to_pod.iter_mut().flatten() {
        let _ = w.shutdown().await;
    }
    let _ = gone.send(true);
}
