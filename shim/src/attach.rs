//! Attach clients of the container's main process (CRI `Attach`, see `crisp_api::attach`).
//!
//! Output is fanned out as the copier threads read it: each client has a bounded queue drained
//! by its own writer thread, so a slow or stuck client is dropped instead of stalling the
//! container (whose output would otherwise back up into a full pipe). Input from every client
//! goes to the one stdin the shim holds for the container.

use crate::cri_log::Stream;
use crisp_api::attach::{self, Kind};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Frames queued per client before it counts as stuck (64 × ≤32 KiB chunks).
const CLIENT_QUEUE: usize = 64;

/// The container's stdin as the shim holds it for attach clients.
pub struct StdinSink {
    /// `None` once closed; the container then reads EOF.
    file: Option<File>,
    /// Close after the first client's input ends (CRI `stdin_once`).
    once: bool,
    /// With a terminal, EOF is the terminal's EOF character: closing the master would hang up
    /// the session and lose its remaining output.
    terminal: bool,
}

impl StdinSink {
    pub fn new(file: File, once: bool, terminal: bool) -> StdinSink {
        StdinSink {
            file: Some(file),
            once,
            terminal,
        }
    }

    fn write(&mut self, data: &[u8]) {
        if let Some(f) = &mut self.file {
            if f.write_all(data).is_err() {
                self.file = None;
            }
        }
    }

    fn client_done(&mut self) {
        if !self.once {
            return;
        }
        if self.terminal {
            // VEOF (^D) at the start of a line: the reader sees end of input.
            self.write(b"\x04");
        }
        self.file = None;
    }
}

#[derive(Default)]
struct State {
    clients: Vec<SyncSender<Vec<u8>>>,
    stdin: Option<StdinSink>,
    /// The process exited and its output drained: no one else may attach.
    closed: bool,
}

#[derive(Clone, Default)]
pub struct Attachers {
    state: Arc<Mutex<State>>,
}

impl Attachers {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_stdin(&self, sink: StdinSink) {
        self.lock().stdin = Some(sink);
    }

    /// CloseIO: the container's stdin reads EOF from now on.
    pub fn close_stdin(&self) {
        if let Some(s) = &mut self.lock().stdin {
            if s.terminal {
                s.write(b"\x04");
            }
            s.file = None;
        }
    }

    /// Hands `data` to every client; those whose queue is full or gone are dropped.
    pub fn broadcast(&self, stream: Stream, data: &[u8]) {
        let mut st = self.lock();
        if st.clients.is_empty() {
            return;
        }
        let kind = match stream {
            Stream::Stdout => Kind::Stdout,
            Stream::Stderr => Kind::Stderr,
        };
        let frame = attach::frame(kind, data);
        st.clients.retain(|c| match c.try_send(frame.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!("dropping an attach client that does not keep up");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// The process is gone and its output drained: ends every session (their writer threads
    /// flush what is queued, then close) and refuses new ones.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.clients.clear();
        st.stdin = None;
    }

    /// Serves attach connections on `path` for the shim's lifetime.
    pub fn listen(&self, path: &Path) -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("attach".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    if let Err(e) = me.serve(conn) {
                        tracing::warn!(error = %e, "attach session");
                    }
                }
            })?;
        Ok(())
    }

    fn serve(&self, conn: UnixStream) -> std::io::Result<()> {
        let (tx, rx) = sync_channel::<Vec<u8>>(CLIENT_QUEUE);
        {
            let mut st = self.lock();
            if st.closed {
                return Ok(());
            }
            st.clients.push(tx);
        }
        let mut out = conn.try_clone()?;
        std::thread::Builder::new()
            .name("attach-out".into())
            .spawn(move || {
                for frame in rx {
                    if out.write_all(&frame).is_err() {
                        break;
                    }
                }
                let _ = out.shutdown(std::net::Shutdown::Both);
            })?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("attach-in".into())
            .spawn(move || me.read_input(conn))?;
        Ok(())
    }

    fn read_input(&self, mut conn: UnixStream) {
        let mut buf = Vec::new();
        // A client has stdin once it sent any input frame (crispd starts with an empty one);
        // only such a client's end closes a `stdin_once` stdin.
        let mut has_stdin = false;
        loop {
            let mut h = [0u8; attach::HEADER_LEN];
            if conn.read_exact(&mut h).is_err() {
                break;
            }
            let Ok((kind, len)) = attach::parse_header(h) else {
                break;
            };
            buf.resize(len, 0);
            if conn.read_exact(&mut buf).is_err() {
                break;
            }
            has_stdin |= matches!(kind, Kind::Stdin | Kind::StdinClose);
            match kind {
                Kind::Stdin => {
                    if let Some(s) = &mut self.lock().stdin {
                        s.write(&buf);
                    }
                }
                Kind::StdinClose => break,
                Kind::Stdout | Kind::Stderr => {}
            }
        }
        if has_stdin {
            if let Some(s) = &mut self.lock().stdin {
                s.client_done();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn read_frame(c: &mut UnixStream) -> Option<(Kind, Vec<u8>)> {
        let mut h = [0u8; attach::HEADER_LEN];
        c.read_exact(&mut h).ok()?;
        let (k, n) = attach::parse_header(h).ok()?;
        let mut b = vec![0u8; n];
        c.read_exact(&mut b).ok()?;
        Some((k, b))
    }

    #[test]
    fn fans_out_feeds_stdin_and_closes() {
        let dir = std::env::temp_dir().join(format!("crisp-attach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.sock");
        let a = Attachers::default();
        let (r, w) = nix::unistd::pipe().unwrap();
        a.set_stdin(StdinSink::new(File::from(w), true, false));
        a.listen(&path).unwrap();
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Registration happens on the listener thread: wait until a broadcast reaches us.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            a.broadcast(Stream::Stdout, b"hi");
            let mut h = [0u8; 1];
            let flags =
                nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT;
            if nix::sys::socket::recv(std::os::fd::AsRawFd::as_raw_fd(&c), &mut h, flags).is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(read_frame(&mut c), Some((Kind::Stdout, b"hi".to_vec())));
        c.write_all(&attach::frame(Kind::Stdin, b"input")).unwrap();
        c.write_all(&attach::frame(Kind::StdinClose, b"")).unwrap();
        // stdin_once: the container's stdin closes after this client's input ended.
        let mut got = String::new();
        File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "input");
        a.close();
        while let Some((k, _)) = read_frame(&mut c) {
            assert_eq!(k, Kind::Stdout);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
