//! A SPDY/3.1 session over any byte stream: one reader task that decodes
//! frames and routes them to streams, one writer task that owns the socket's
//! write half and the outgoing header zlib stream.
//!
//! Flow control, and why it is lenient:
//! * Receiving: we announce consumption with WINDOW_UPDATE (stream and
//!   session) as the application reads, so a peer that honours windows never
//!   has more than 64 KiB in flight per stream. Go's spdystream (kubectl,
//!   crictl, the apiserver's translator) ignores windows entirely, so an
//!   overrun is not fatal; instead each stream buffers at most
//!   [`STREAM_BUFFER`] bytes and the reader then waits (TCP backpressure).
//! * Sending: a peer that never sends SETTINGS or WINDOW_UPDATE (again
//!   spdystream) would stall forever if we waited for window credit, so we
//!   only enforce its windows once it has shown it does flow control by
//!   sending either frame. Windows are tracked from the start regardless.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use super::frame::{self, goaway, rst, Decoder, Encoder, Frame};
use super::headers::Headers;

/// Initial per-stream and session window (SPDY/3.1 default).
pub const DEFAULT_WINDOW: i64 = 64 * 1024;
/// Bytes a stream may hold unread before the reader stops reading the
/// socket. Larger than the window so window-honouring peers never hit it.
pub const STREAM_BUFFER: usize = 256 * 1024;
/// Largest data frame we emit; matches what Go peers read comfortably.
pub const MAX_DATA_FRAME: usize = 32 * 1024;
/// Concurrent streams a peer may have open; more are refused.
pub const MAX_STREAMS: usize = 128;
/// How long a graceful close may spend flushing to a peer that is slow or
/// not reading before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep reading after our FIN, waiting for the peer to hang up.
const LINGER: Duration = Duration::from_secs(5);
const WINDOW_MAX: i64 = 0x7fff_ffff;

/// Which side of the connection we are; decides stream id parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepts client-initiated (odd) streams and replies to them.
    Server,
    /// Opens odd streams; used by the test client.
    Client,
}

/// How this end treats SPDY/3.1 flow control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowControl {
    /// Announce consumption with WINDOW_UPDATE; honour (and police) the
    /// peer's windows once it sends SETTINGS or WINDOW_UPDATE. The server
    /// default: right for both spdystream and spec-following peers.
    Auto,
    /// Send SETTINGS first and honour windows from the start, as the spec
    /// says. For clients talking to a server known to do flow control.
    On,
    /// Neither send WINDOW_UPDATE nor honour windows: what Go's spdystream
    /// does. Only useful to imitate it in tests.
    Off,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnError {
    #[error("SPDY connection closed: {0}")]
    Closed(String),
    #[error("SPDY stream {0} was reset by the peer")]
    Reset(u32),
    #[error("SPDY stream {0} is already half-closed by us")]
    AlreadyClosed(u32),
    #[error("no stream ids left on this connection")]
    IdsExhausted,
}

/// A stream opened by the peer (or by us, for clients).
pub struct Stream {
    pub id: u32,
    /// Headers of the SYN_STREAM that opened it.
    pub headers: Headers,
    pub recv: RecvStream,
    pub send: SendStream,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish()
    }
}

/// Yields streams the peer opens, in order. Ends when the connection does
/// or the peer sends GOAWAY.
pub struct Acceptor {
    rx: mpsc::Receiver<Stream>,
}

impl Acceptor {
    pub async fn accept(&mut self) -> Option<Stream> {
        self.rx.recv().await
    }
}

/// Handle to a running connection; cheap to clone. When the last clone is
/// dropped the connection shuts down (so an aborted session cannot leak its
/// socket tasks).
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    done: watch::Receiver<bool>,
    _guard: Arc<CloseOnDrop>,
}

struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.begin_shutdown(goaway::OK);
    }
}

struct Shared {
    role: Role,
    flow: FlowControl,
    state: Mutex<State>,
    out: mpsc::Sender<Frame>,
    /// Wakes the writer for window updates, deferred FINs and shutdown.
    wake_writer: Notify,
    /// Wakes senders waiting for window credit or for closure.
    windows_changed: Notify,
    reader: Mutex<Option<JoinHandle<()>>>,
    /// Serialises id allocation with queueing the SYN_STREAM, so ids go out
    /// in increasing order (the peer must reject anything else).
    open_lock: tokio::sync::Mutex<()>,
}

struct State {
    streams: HashMap<u32, Entry>,
    next_local_id: u32,
    last_peer_id: u32,
    peer_initial_window: i64,
    session_send_window: i64,
    /// The peer has sent SETTINGS or WINDOW_UPDATE, so it does flow control.
    peer_flow_control: bool,
    /// Consumed-but-unannounced bytes per stream; key 0 is the session.
    pending_updates: HashMap<u32, u32>,
    /// Streams whose SendStream was dropped without a FIN.
    pending_fins: HashSet<u32>,
    closed: Option<String>,
    shutdown: bool,
    goaway_status: u32,
}

struct Entry {
    data_tx: Option<mpsc::UnboundedSender<Bytes>>,
    budget: Arc<Semaphore>,
    send_window: i64,
    /// What the peer may still send us.
    recv_window: i64,
    /// Police `recv_window`: only when the peer was known to do flow
    /// control when the stream opened (an Auto peer may start honouring
    /// windows midway, after overrunning them legitimately).
    policed: bool,
    local_closed: bool,
    remote_closed: bool,
    reset: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere; the state is still
        // structurally valid, and refusing service would not help.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn consumed(&self, id: u32, n: usize) {
        if n == 0 || self.flow == FlowControl::Off {
            return;
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let wake = {
            let mut st = self.lock();
            let s = st.pending_updates.entry(id).or_insert(0);
            *s = s.saturating_add(n);
            *s >= (DEFAULT_WINDOW / 2) as u32
        };
        if wake {
            self.wake_writer.notify_one();
        }
    }

    /// Session-level credit is returned on receipt rather than on
    /// consumption: per-stream buffers are bounded anyway, and this keeps
    /// one unread stream (say, stdin of a process that never reads) from
    /// starving every other stream of the session window.
    fn received(&self, n: usize) {
        self.consumed(0, n);
    }

    fn begin_shutdown(&self, goaway_status: u32) {
        {
            let mut st = self.lock();
            st.shutdown = true;
            if st.goaway_status == goaway::OK {
                st.goaway_status = goaway_status;
            }
        }
        self.wake_writer.notify_one();
    }

    fn mark_closed(&self, why: &str) {
        {
            let mut st = self.lock();
            if st.closed.is_none() {
                st.closed = Some(why.to_owned());
            }
            for e in st.streams.values_mut() {
                e.data_tx = None;
            }
            st.streams.clear();
        }
        self.windows_changed.notify_waiters();
    }
}

fn maybe_remove(st: &mut State, id: u32) {
    if let Some(e) = st.streams.get(&id) {
        if (e.local_closed && e.remote_closed) || e.reset {
            st.streams.remove(&id);
        }
    }
}

/// Starts a SPDY session over `io`. Returns a handle for opening streams
/// and closing, and the acceptor of peer-initiated streams.
pub fn start<IO>(io: IO, role: Role) -> (Connection, Acceptor)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    start_with(io, role, FlowControl::Auto)
}

/// [`start`] with an explicit flow-control mode.
pub fn start_with<IO>(io: IO, role: Role, flow: FlowControl) -> (Connection, Acceptor)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel(64);
    let (acc_tx, acc_rx) = mpsc::channel(16);
    let (done_tx, done_rx) = watch::channel(false);
    if flow == FlowControl::On {
        // Cannot fail: the channel is new and has room.
        let _ = out_tx.try_send(Frame::Settings {
            flags: 0,
            entries: vec![frame::Setting {
                flags: 0,
                id: frame::SETTINGS_INITIAL_WINDOW_SIZE,
                value: DEFAULT_WINDOW as u32,
            }],
        });
    }
    let shared = Arc::new(Shared {
        role,
        flow,
        state: Mutex::new(State {
            streams: HashMap::new(),
            next_local_id: if role == Role::Client { 1 } else { 2 },
            last_peer_id: 0,
            peer_initial_window: DEFAULT_WINDOW,
            session_send_window: DEFAULT_WINDOW,
            peer_flow_control: flow == FlowControl::On,
            pending_updates: HashMap::new(),
            pending_fins: HashSet::new(),
            closed: None,
            shutdown: false,
            goaway_status: goaway::OK,
        }),
        out: out_tx,
        wake_writer: Notify::new(),
        windows_changed: Notify::new(),
        reader: Mutex::new(None),
        open_lock: tokio::sync::Mutex::new(()),
    });
    tokio::spawn(write_loop(wr, out_rx, shared.clone(), done_tx));
    let reader = tokio::spawn(read_loop(rd, shared.clone(), acc_tx));
    *shared.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader);
    (
        Connection {
            _guard: Arc::new(CloseOnDrop(shared.clone())),
            shared,
            done: done_rx,
        },
        Acceptor { rx: acc_rx },
    )
}

impl Connection {
    /// Opens a stream (SYN_STREAM). Servers never need this; clients do.
    pub async fn open_stream(&self, headers: Headers, fin: bool) -> Result<Stream, ConnError> {
        let _order = self.shared.open_lock.lock().await;
        let (stream, id) = {
            let mut st = self.shared.lock();
            if let Some(why) = &st.closed {
                return Err(ConnError::Closed(why.clone()));
            }
            let id = st.next_local_id;
            if id > 0x7fff_ffff - 2 {
                return Err(ConnError::IdsExhausted);
            }
            st.next_local_id += 2;
            let stream = new_stream(&self.shared, &mut st, id, headers.clone(), false);
            if fin {
                if let Some(e) = st.streams.get_mut(&id) {
                    e.local_closed = true;
                }
            }
            (stream, id)
        };
        let flags = if fin { frame::FLAG_FIN } else { 0 };
        self.shared
            .out
            .send(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags,
                headers,
            })
            .await
            .map_err(|_| ConnError::Closed("writer gone".into()))?;
        let mut stream = stream;
        stream.send.fin_sent = fin;
        Ok(stream)
    }

    /// Sends a SETTINGS frame (test clients use it to announce flow control).
    pub async fn send_frame(&self, f: Frame) -> Result<(), ConnError> {
        self.shared
            .out
            .send(f)
            .await
            .map_err(|_| ConnError::Closed("writer gone".into()))
    }

    /// Flushes everything queued, sends GOAWAY and closes the socket. Bounded
    /// by a timeout so a peer that stops reading cannot hold us.
    pub async fn close(&self) {
        self.shared.begin_shutdown(goaway::OK);
        self.closed().await;
    }

    /// Waits until the connection's writer has finished.
    pub async fn closed(&self) {
        let mut done = self.done.clone();
        // Err means the writer is gone, which is also "closed".
        let _ = done.wait_for(|d| *d).await;
    }

    pub fn is_closed(&self) -> bool {
        *self.done.borrow()
    }
}

fn new_stream(
    shared: &Arc<Shared>,
    st: &mut State,
    id: u32,
    headers: Headers,
    remote_fin: bool,
) -> Stream {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(STREAM_BUFFER));
    st.streams.insert(
        id,
        Entry {
            data_tx: if remote_fin { None } else { Some(tx) },
            budget: budget.clone(),
            send_window: st.peer_initial_window,
            recv_window: DEFAULT_WINDOW,
            policed: st.peer_flow_control,
            local_closed: false,
            remote_closed: remote_fin,
            reset: false,
        },
    );
    Stream {
        id,
        headers,
        recv: RecvStream {
            id,
            rx,
            chunk: Bytes::new(),
            budget,
            shared: shared.clone(),
        },
        send: SendStream {
            id,
            shared: shared.clone(),
            fin_sent: false,
        },
    }
}

/// The receiving half of a stream: an `AsyncRead` that ends at the peer's
/// FIN (or reset / connection loss).
pub struct RecvStream {
    id: u32,
    rx: mpsc::UnboundedReceiver<Bytes>,
    chunk: Bytes,
    budget: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl RecvStream {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Next chunk of data, or `None` at end of stream.
    pub async fn chunk(&mut self) -> Option<Bytes> {
        let c = if self.chunk.is_empty() {
            self.rx.recv().await?
        } else {
            std::mem::take(&mut self.chunk)
        };
        self.release(c.len());
        Some(c)
    }

    /// Reads until end of stream, keeping at most `limit` bytes.
    pub async fn read_to_end_limited(&mut self, limit: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await {
            let room = limit.saturating_sub(out.len());
            out.extend_from_slice(&c[..c.len().min(room)]);
        }
        out
    }

    fn release(&self, n: usize) {
        self.budget.add_permits(n);
        self.shared.consumed(self.id, n);
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.chunk.is_empty() {
                let n = self.chunk.len().min(buf.remaining());
                buf.put_slice(&self.chunk[..n]);
                self.chunk.advance(n);
                self.release(n);
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(c)) => self.chunk = c,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        // Unblocks a reader waiting for buffer room on a stream nobody will
        // read again; it then discards (and acknowledges) further data.
        self.budget.close();
    }
}

/// The sending half of a stream.
pub struct SendStream {
    id: u32,
    shared: Arc<Shared>,
    fin_sent: bool,
}

impl SendStream {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends data, split into frames and paced by the peer's windows (when
    /// it does flow control).
    pub async fn send(&mut self, mut data: Bytes) -> Result<(), ConnError> {
        if self.fin_sent {
            return Err(ConnError::AlreadyClosed(self.id));
        }
        while !data.is_empty() {
            let notified = self.shared.windows_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let n = {
                let mut st = self.shared.lock();
                if let Some(why) = &st.closed {
                    return Err(ConnError::Closed(why.clone()));
                }
                let enforce = st.peer_flow_control;
                let session = st.session_send_window;
                let Some(e) = st.streams.get_mut(&self.id) else {
                    return Err(ConnError::Reset(self.id));
                };
                if e.reset {
                    return Err(ConnError::Reset(self.id));
                }
                let mut n = data.len().min(MAX_DATA_FRAME);
                if enforce {
                    let avail = e.send_window.min(session);
                    if avail <= 0 {
                        0
                    } else {
                        n = n.min(avail as usize);
                        e.send_window -= n as i64;
                        st.session_send_window -= n as i64;
                        n
                    }
                } else {
                    e.send_window -= n as i64;
                    st.session_send_window -= n as i64;
                    n
                }
            };
            if n == 0 {
                notified.await;
                continue;
            }
            let piece = data.split_to(n);
            self.shared
                .out
                .send(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: piece,
                })
                .await
                .map_err(|_| ConnError::Closed("writer gone".into()))?;
        }
        Ok(())
    }

    /// Half-closes our side (empty DATA frame with FIN).
    pub async fn close(&mut self) -> Result<(), ConnError> {
        if self.fin_sent {
            return Ok(());
        }
        self.fin_sent = true;
        {
            let mut st = self.shared.lock();
            if let Some(e) = st.streams.get_mut(&self.id) {
                e.local_closed = true;
            }
            maybe_remove(&mut st, self.id);
        }
        self.shared
            .out
            .send(Frame::Data {
                stream_id: self.id,
                flags: frame::FLAG_FIN,
                data: Bytes::new(),
            })
            .await
            .map_err(|_| ConnError::Closed("writer gone".into()))
    }

    /// Aborts the stream (RST_STREAM CANCEL).
    pub async fn reset(&mut self) {
        self.fin_sent = true;
        {
            let mut st = self.shared.lock();
            if let Some(e) = st.streams.get_mut(&self.id) {
                e.reset = true;
                e.data_tx = None;
            }
            maybe_remove(&mut st, self.id);
        }
        let _ = self
            .shared
            .out
            .send(Frame::RstStream {
                stream_id: self.id,
                status: rst::CANCEL,
            })
            .await;
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if self.fin_sent {
            return;
        }
        // Cannot await here: let the writer emit the FIN after any of this
        // stream's frames still queued (it drains the queue first).
        {
            let mut st = self.shared.lock();
            if let Some(e) = st.streams.get_mut(&self.id) {
                e.local_closed = true;
            }
            st.pending_fins.insert(self.id);
        }
        self.shared.wake_writer.notify_one();
    }
}

// ---------------------------------------------------------------- reader

async fn read_loop<R>(mut rd: R, shared: Arc<Shared>, acc: mpsc::Sender<Stream>)
where
    R: AsyncRead + Unpin,
{
    let mut dec = Decoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut acc = Some(acc);
    let why = loop {
        let frame = match dec.decode(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(64 * 1024);
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) => break "peer closed the connection".to_string(),
                    Ok(_) => continue,
                    Err(e) => break format!("read failed: {e}"),
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "SPDY protocol error, closing");
                shared.begin_shutdown(goaway::PROTOCOL_ERROR);
                break format!("protocol error: {e}");
            }
        };
        if let Err(why) = handle_frame(&shared, frame, &mut acc).await {
            tracing::debug!(error = %why, "SPDY session error, closing");
            shared.begin_shutdown(goaway::PROTOCOL_ERROR);
            break why;
        }
    };
    drop(acc);
    shared.mark_closed(&why);
    shared.begin_shutdown(goaway::OK);
}

/// Applies one frame; `Err` is a session-level protocol error.
async fn handle_frame(
    shared: &Arc<Shared>,
    frame: Frame,
    acc: &mut Option<mpsc::Sender<Stream>>,
) -> Result<(), String> {
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            let peer_parity = if shared.role == Role::Server { 1 } else { 0 };
            let accepted = {
                let mut st = shared.lock();
                if stream_id == 0 || stream_id % 2 != peer_parity || stream_id <= st.last_peer_id {
                    return Err(format!("invalid or non-increasing stream id {stream_id}"));
                }
                st.last_peer_id = stream_id;
                if acc.is_none() || st.streams.len() >= MAX_STREAMS {
                    None
                } else {
                    let fin = flags & frame::FLAG_FIN != 0;
                    Some(new_stream(shared, &mut st, stream_id, headers, fin))
                }
            };
            let Some(s) = accepted else {
                return send(
                    shared,
                    Frame::RstStream {
                        stream_id,
                        status: rst::REFUSED_STREAM,
                    },
                )
                .await;
            };
            if shared.role == Role::Server {
                // Queue the reply before handing the stream out, so it
                // precedes any data the application sends on it.
                send(
                    shared,
                    Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Headers::new(),
                    },
                )
                .await?;
            }
            if let Some(tx) = acc.as_ref() {
                if tx.send(s).await.is_err() {
                    // Nobody accepts any more; dropping the stream FINs it
                    // and discards its data.
                    *acc = None;
                }
            }
        }
        Frame::SynReply { .. } => {}
        Frame::Headers {
            stream_id, flags, ..
        } => {
            if flags & frame::FLAG_FIN != 0 {
                remote_fin(shared, stream_id);
            }
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => on_data(shared, stream_id, flags, data).await?,
        Frame::RstStream { stream_id, .. } => {
            {
                let mut st = shared.lock();
                if let Some(e) = st.streams.get_mut(&stream_id) {
                    e.reset = true;
                    e.data_tx = None;
                }
                maybe_remove(&mut st, stream_id);
            }
            shared.windows_changed.notify_waiters();
        }
        Frame::Settings { entries, .. } => {
            {
                let mut st = shared.lock();
                st.peer_flow_control |= shared.flow != FlowControl::Off;
                for s in entries {
                    if s.id == frame::SETTINGS_INITIAL_WINDOW_SIZE {
                        let new = i64::from(s.value).min(WINDOW_MAX);
                        let delta = new - st.peer_initial_window;
                        st.peer_initial_window = new;
                        for e in st.streams.values_mut() {
                            e.send_window = (e.send_window + delta).min(WINDOW_MAX);
                        }
                    }
                }
            }
            shared.windows_changed.notify_waiters();
        }
        Frame::Ping { id } => {
            // Echo only pings the peer originated (its parity); ours would
            // come back as replies, and we never send any.
            let peer_parity = if shared.role == Role::Server { 1 } else { 0 };
            if id % 2 == peer_parity {
                send(shared, Frame::Ping { id }).await?;
            }
        }
        Frame::GoAway { .. } => {
            *acc = None;
        }
        Frame::WindowUpdate { stream_id, delta } => {
            {
                let mut st = shared.lock();
                st.peer_flow_control |= shared.flow != FlowControl::Off;
                let delta = i64::from(delta);
                if stream_id == 0 {
                    st.session_send_window = (st.session_send_window + delta).min(WINDOW_MAX);
                } else if let Some(e) = st.streams.get_mut(&stream_id) {
                    e.send_window = (e.send_window + delta).min(WINDOW_MAX);
                }
            }
            shared.windows_changed.notify_waiters();
        }
        Frame::Unknown { frame_type } => {
            tracing::trace!(frame_type, "ignoring unknown SPDY control frame");
        }
    }
    Ok(())
}

async fn send(shared: &Shared, f: Frame) -> Result<(), String> {
    shared
        .out
        .send(f)
        .await
        .map_err(|_| "writer gone".to_string())
}

fn remote_fin(shared: &Shared, id: u32) {
    let mut st = shared.lock();
    if let Some(e) = st.streams.get_mut(&id) {
        e.remote_closed = true;
        e.data_tx = None;
    }
    maybe_remove(&mut st, id);
}

async fn on_data(shared: &Arc<Shared>, id: u32, flags: u8, data: Bytes) -> Result<(), String> {
    shared.received(data.len());
    let target = {
        let mut st = shared.lock();
        match st.streams.get_mut(&id) {
            Some(e) => {
                e.recv_window -= data.len() as i64;
                if e.policed && e.recv_window < 0 {
                    return Err(format!(
                        "peer overran the flow-control window of stream {id}"
                    ));
                }
                e.data_tx.clone().map(|tx| (tx, e.budget.clone()))
            }
            None => None,
        }
    };
    match target {
        Some((tx, budget)) => {
            let mut rest = data;
            while !rest.is_empty() {
                let piece = rest.split_to(rest.len().min(STREAM_BUFFER));
                let n = piece.len() as u32; // <= STREAM_BUFFER
                match budget.acquire_many(n).await {
                    Ok(permit) => {
                        permit.forget();
                        if tx.send(piece).is_err() {
                            shared.consumed(id, n as usize);
                        }
                    }
                    // Reader dropped: discard but still acknowledge, so a
                    // window-honouring peer is not stalled.
                    Err(_) => shared.consumed(id, n as usize),
                }
            }
        }
        None => {
            let known = shared.lock().streams.contains_key(&id);
            shared.consumed(id, data.len());
            if !known && !data.is_empty() {
                // Best effort: while closing, the queue is already shut.
                let _ = send(
                    shared,
                    Frame::RstStream {
                        stream_id: id,
                        status: rst::INVALID_STREAM,
                    },
                )
                .await;
            }
        }
    }
    if flags & frame::FLAG_FIN != 0 {
        remote_fin(shared, id);
    }
    Ok(())
}

// ---------------------------------------------------------------- writer

async fn write_loop<W>(
    mut wr: W,
    mut rx: mpsc::Receiver<Frame>,
    shared: Arc<Shared>,
    done: watch::Sender<bool>,
) where
    W: AsyncWrite + Unpin,
{
    let mut enc = Encoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let result: Result<(), String> = async {
        loop {
            tokio::select! {
                biased;
                f = rx.recv() => match f {
                    Some(f) => encode(&mut enc, &f, &mut buf)?,
                    None => break,
                },
                _ = shared.wake_writer.notified() => {}
            }
            // Drain what is queued before deferred FINs (ordering) and
            // before flushing (batching).
            while let Ok(f) = rx.try_recv() {
                encode(&mut enc, &f, &mut buf)?;
                if buf.len() >= 256 * 1024 {
                    write_out(&mut wr, &mut buf).await?;
                }
            }
            let shutdown = emit_deferred(&shared, &mut enc, &mut buf)?;
            write_out(&mut wr, &mut buf).await?;
            if shutdown {
                break;
            }
        }
        // Graceful end: take what is still queued, then GOAWAY.
        rx.close();
        let drain = async {
            while let Some(f) = rx.recv().await {
                encode(&mut enc, &f, &mut buf)?;
                if buf.len() >= 256 * 1024 {
                    write_out(&mut wr, &mut buf).await?;
                }
            }
            emit_deferred(&shared, &mut enc, &mut buf)?;
            let (last, status) = {
                let st = shared.lock();
                (st.last_peer_id, st.goaway_status)
            };
            encode(
                &mut enc,
                &Frame::GoAway {
                    last_good_stream_id: last,
                    status,
                },
                &mut buf,
            )?;
            write_out(&mut wr, &mut buf).await?;
            wr.shutdown().await.map_err(|e| e.to_string())
        };
        tokio::time::timeout(CLOSE_TIMEOUT, drain)
            .await
            .map_err(|_| "timed out flushing to peer".to_string())?
    }
    .await;
    if let Err(e) = &result {
        tracing::debug!(error = %e, "SPDY writer stopped");
    }
    let failed = result.is_err();
    shared.mark_closed(result.err().as_deref().unwrap_or("connection closed"));
    let _ = done.send(true);
    let reader = shared
        .reader
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(mut r) = reader {
        // Lingering close: after our FIN, keep reading (and discarding)
        // briefly so unread peer data does not make the kernel answer with
        // RST, which can destroy output the peer has not read yet.
        if !failed {
            let _ = tokio::time::timeout(LINGER, &mut r).await;
        }
        r.abort();
    }
    drop(wr);
}

fn encode(enc: &mut Encoder, f: &Frame, buf: &mut BytesMut) -> Result<(), String> {
    enc.encode(f, buf).map_err(|e| e.to_string())
}

async fn write_out<W: AsyncWrite + Unpin>(wr: &mut W, buf: &mut BytesMut) -> Result<(), String> {
    if buf.is_empty() {
        return Ok(());
    }
    wr.write_all(buf)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    wr.flush().await.map_err(|e| format!("flush failed: {e}"))?;
    buf.clear();
    Ok(())
}

/// Encodes pending FINs and window updates; returns whether to shut down.
fn emit_deferred(shared: &Shared, enc: &mut Encoder, buf: &mut BytesMut) -> Result<bool, String> {
    let (fins, updates, shutdown) = {
        let mut st = shared.lock();
        let fins: Vec<u32> = st.pending_fins.drain().collect();
        for id in &fins {
            maybe_remove(&mut st, *id);
        }
        let threshold = (DEFAULT_WINDOW / 2) as u32;
        let mut updates = Vec::new();
        let State {
            streams,
            pending_updates,
            ..
        } = &mut *st;
        pending_updates.retain(|id, _| *id == 0 || streams.contains_key(id));
        pending_updates.retain(|id, n| {
            if *n >= threshold {
                if let Some(e) = streams.get_mut(id) {
                    e.recv_window += i64::from(*n);
                }
                updates.push((*id, *n));
                false
            } else {
                true
            }
        });
        (fins, updates, st.shutdown)
    };
    for id in fins {
        encode(
            enc,
            &Frame::Data {
                stream_id: id,
                flags: frame::FLAG_FIN,
                data: Bytes::new(),
            },
            buf,
        )?;
    }
    for (id, n) in updates {
        encode(
            enc,
            &Frame::WindowUpdate {
                stream_id: id,
                delta: n,
            },
            buf,
        )?;
    }
    Ok(shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spdy::frame::Setting;
    use tokio::io::DuplexStream;

    /// A raw peer: frames in and out by hand, no session logic.
    struct Peer {
        io: DuplexStream,
        enc: Encoder,
        dec: Decoder,
        buf: BytesMut,
    }

    impl Peer {
        async fn send(&mut self, f: Frame) {
            let mut b = BytesMut::new();
            self.enc.encode(&f, &mut b).unwrap();
            self.io.write_all(&b).await.unwrap();
        }

        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = self.dec.decode(&mut self.buf).unwrap() {
                    return Some(f);
                }
                let r =
                    tokio::time::timeout(Duration::from_secs(5), self.io.read_buf(&mut self.buf));
                match r.await {
                    Ok(Ok(0)) | Ok(Err(_)) => return None,
                    Ok(Ok(_)) => {}
                    Err(_) => panic!("peer read timed out"),
                }
            }
        }

        /// Data bytes received on `id` until nothing arrives for 200 ms.
        async fn data_until_quiet(&mut self, id: u32) -> usize {
            let mut n = 0;
            loop {
                let next = tokio::time::timeout(Duration::from_millis(200), self.recv()).await;
                match next {
                    Ok(Some(Frame::Data {
                        stream_id, data, ..
                    })) if stream_id == id => n += data.len(),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return n,
                }
            }
        }
    }

    fn setup() -> (Connection, Acceptor, Peer) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (conn, acc) = start(a, Role::Server);
        let peer = Peer {
            io: b,
            enc: Encoder::new(),
            dec: Decoder::new(),
            buf: BytesMut::new(),
        };
        (conn, acc, peer)
    }

    fn syn(id: u32) -> Frame {
        Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: Headers::new().with("streamtype", "stdout"),
        }
    }

    #[tokio::test]
    async fn replies_to_syn_and_ping() {
        let (_conn, mut acc, mut peer) = setup();
        peer.send(syn(1)).await;
        let s = acc.accept().await.unwrap();
        assert_eq!(s.headers.get("streamtype"), Some("stdout"));
        assert!(matches!(
            peer.recv().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        peer.send(Frame::Ping { id: 5 }).await;
        assert_eq!(peer.recv().await, Some(Frame::Ping { id: 5 }));
    }

    /// Once the peer announces flow control, we never exceed its windows.
    #[tokio::test]
    async fn honours_peer_stream_and_session_windows() {
        let (_conn, mut acc, mut peer) = setup();
        peer.send(Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 0,
                id: frame::SETTINGS_INITIAL_WINDOW_SIZE,
                value: 100,
            }],
        })
        .await;
        peer.send(syn(1)).await;
        let mut s = acc.accept().await.unwrap();
        let sender = tokio::spawn(async move {
            s.send.send(Bytes::from(vec![7u8; 1000])).await.unwrap();
            s.send.close().await.unwrap();
            s
        });
        assert_eq!(peer.data_until_quiet(1).await, 100);
        peer.send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 50,
        })
        .await;
        assert_eq!(peer.data_until_quiet(1).await, 50);
        peer.send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 1 << 20,
        })
        .await;
        assert_eq!(peer.data_until_quiet(1).await, 850);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn session_window_limits_all_streams() {
        let (_conn, mut acc, mut peer) = setup();
        peer.send(Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 0,
                id: frame::SETTINGS_INITIAL_WINDOW_SIZE,
                value: 1 << 20,
            }],
        })
        .await;
        peer.send(syn(1)).await;
        let mut s = acc.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = s.send.send(Bytes::from(vec![1u8; 100_000])).await;
            s
        });
        // The session window is still the 64 KiB default.
        assert_eq!(peer.data_until_quiet(1).await, DEFAULT_WINDOW as usize);
        peer.send(Frame::WindowUpdate {
            stream_id: 0,
            delta: 100_000,
        })
        .await;
        assert_eq!(
            peer.data_until_quiet(1).await,
            100_000 - DEFAULT_WINDOW as usize
        );
    }

    /// Consumption is announced with WINDOW_UPDATE (stream and session).
    #[tokio::test]
    async fn announces_consumption() {
        let (_conn, mut acc, mut peer) = setup();
        peer.send(syn(1)).await;
        let mut s = acc.accept().await.unwrap();
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { .. })));
        peer.send(Frame::Data {
            stream_id: 1,
            flags: frame::FLAG_FIN,
            data: Bytes::from(vec![0u8; 40_000]),
        })
        .await;
        let got = s.recv.read_to_end_limited(1 << 20).await;
        assert_eq!(got.len(), 40_000);
        let mut updates = HashMap::new();
        while updates.len() < 2 {
            if let Some(Frame::WindowUpdate { stream_id, delta }) = peer.recv().await {
                updates.insert(stream_id, delta);
            }
        }
        assert_eq!(updates.get(&1), Some(&40_000));
        assert_eq!(updates.get(&0), Some(&40_000));
    }

    /// A peer that announced flow control and then overruns our window is
    /// cut off with GOAWAY(PROTOCOL_ERROR).
    #[tokio::test]
    async fn polices_overrun_from_flow_controlled_peer() {
        let (_conn, mut acc, mut peer) = setup();
        peer.send(Frame::Settings {
            flags: 0,
            entries: vec![],
        })
        .await;
        peer.send(syn(1)).await;
        let _s = acc.accept().await.unwrap();
        peer.send(Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from(vec![0u8; DEFAULT_WINDOW as usize + 1]),
        })
        .await;
        let mut saw_goaway = false;
        while let Some(f) = peer.recv().await {
            if let Frame::GoAway { status, .. } = f {
                assert_eq!(status, goaway::PROTOCOL_ERROR);
                saw_goaway = true;
            }
        }
        assert!(saw_goaway);
    }

    /// spdystream-style peers ignore windows; that must keep working.
    #[tokio::test]
    async fn tolerates_overrun_from_peer_without_flow_control() {
        let (_conn, mut acc, mut peer) = setup();
        peer.send(syn(1)).await;
        let mut s = acc.accept().await.unwrap();
        peer.send(Frame::Data {
            stream_id: 1,
            flags: frame::FLAG_FIN,
            data: Bytes::from(vec![0u8; 200_000]),
        })
        .await;
        assert_eq!(s.recv.read_to_end_limited(1 << 20).await.len(), 200_000);
    }

    #[tokio::test]
    async fn rejects_non_increasing_stream_ids() {
        let (_conn, mut acc, mut peer) = setup();
        peer.send(syn(3)).await;
        let _s = acc.accept().await.unwrap();
        peer.send(syn(1)).await;
        let mut saw_goaway = false;
        while let Some(f) = peer.recv().await {
            saw_goaway |= matches!(
                f,
                Frame::GoAway {
                    status: goaway::PROTOCOL_ERROR,
                    ..
                }
            );
        }
        assert!(saw_goaway);
        assert!(acc.accept().await.is_none());
    }

    #[tokio::test]
    async fn dropped_send_stream_is_finned_after_its_data() {
        let (_conn, mut acc, mut peer) = setup();
        peer.send(syn(1)).await;
        let mut s = acc.accept().await.unwrap();
        s.send.send(Bytes::from_static(b"abc")).await.unwrap();
        drop(s);
        let mut seen = Vec::new();
        while seen.len() < 3 {
            match peer.recv().await {
                Some(f @ (Frame::SynReply { .. } | Frame::Data { .. })) => seen.push(f),
                Some(_) => {}
                None => break,
            }
        }
        assert!(matches!(seen[0], Frame::SynReply { .. }));
        assert!(matches!(&seen[1], Frame::Data { flags: 0, data, .. } if &data[..] == b"abc"));
        assert!(
            matches!(&seen[2], Frame::Data { flags: frame::FLAG_FIN, data, .. } if data.is_empty())
        );
    }
}
