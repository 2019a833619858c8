//! Wiring a container's stdio to where the Task request says it goes: the CRI log (copied by
//! threads that parse lines), a caller's FIFO or file (handed to the container directly), or
//! nowhere.

use crate::cri_log::{CriLog, Stream};
use crate::helper::ContainerStdio;
use crisp_api::StdioTarget;
use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The shim's half of a container's stdio: the copier threads.
pub struct ContainerIo {
    done: std::sync::Mutex<mpsc::Receiver<()>>,
    copiers: usize,
    /// The CRI log the copiers write, if any (reopened on log rotation).
    pub log: Option<CriLog>,
}

impl ContainerIo {
    /// Waits until every copier saw EOF, or the deadline passes (a daemonised grandchild may
    /// hold the pipe open forever; the exit must still be reported).
    pub fn wait_drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..self.copiers {
            let left = deadline.saturating_duration_since(Instant::now());
            if done.recv_timeout(left).is_err() {
                return;
            }
        }
    }
}

pub fn setup(
    stdin: &str,
    stdout: &str,
    stderr: &str,
) -> std::io::Result<(ContainerStdio, ContainerIo)> {
    let (tx, done) = mpsc::channel();
    let mut copiers = 0;
    let mut log: Option<CriLog> = None;
    let mut stdio = ContainerStdio::default();

    if let StdioTarget::Raw(p) = StdioTarget::parse(stdin) {
        stdio.stdin = Some(open_raw(&p, false)?.into());
    }
    for (uri, stream) in [(stdout, Stream::Stdout), (stderr, Stream::Stderr)] {
        let fd: Option<OwnedFd> = match StdioTarget::parse(uri) {
            StdioTarget::Null => None,
            StdioTarget::Raw(p) => Some(open_raw(&p, true)?.into()),
            StdioTarget::CriLog(p) => {
                let l = match &log {
                    Some(l) => l.clone(),
                    None => {
                        let l = CriLog::open(p)?;
                        log = Some(l.clone());
                        l
                    }
                };
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                let tx = tx.clone();
                std::thread::Builder::new()
                    .name(format!("log-{stream:?}"))
                    .spawn(move || {
                        l.copy_from(stream, File::from(r));
                        let _ = tx.send(());
                    })?;
                copiers += 1;
                Some(w)
            }
        };
        match stream {
            Stream::Stdout => stdio.stdout = fd,
            Stream::Stderr => stdio.stderr = fd,
        }
    }
    Ok((
        stdio,
        ContainerIo {
            done: std::sync::Mutex::new(done),
            copiers,
            log,
        },
    ))
}

/// FIFOs are opened read-write so the open does not block waiting for the other end.
fn open_raw(path: &Path, write: bool) -> std::io::Result<File> {
    let is_fifo = std::fs::metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    let mut o = OpenOptions::new();
    if is_fifo && !write {
        // A stdin FIFO is opened read-only, so the process sees EOF once the caller closes
        // its end; O_NONBLOCK only for the open (which would otherwise wait for a writer).
        use std::os::unix::fs::OpenOptionsExt;
        let f = o.read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
        let fl = nix::fcntl::OFlag::from_bits_truncate(nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            nix::fcntl::FcntlArg::F_GETFL,
        )?);
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            nix::fcntl::FcntlArg::F_SETFL(fl - nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        return Ok(f);
    }
    if is_fifo {
        o.read(true).write(true);
    } else if write {
        o.create(true).append(true);
    } else {
        o.read(true);
    }
    o.open(path)
}
