//! Wiring a process's stdio to where the Task request says it goes: the CRI log (copied by
//! threads that parse lines, and fanned out to attach clients), a caller's FIFO or file, a stdin
//! the shim keeps for attach clients, or nowhere — through pipes, or through a terminal.
//!
//! Without a terminal, raw FIFOs/files are handed to the process directly and only the CRI log
//! needs copier threads. With one, everything goes through the pty master the process sends
//! back (see [`crate::console`]), so the shim copies in both directions.

use crate::attach::{Attachers, StdinSink};
use crate::console::ConsoleSocket;
use crate::cri_log::{CriLog, LogWriter, Stream};
use crate::helper::ContainerStdio;
use crisp_api::StdioTarget;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the shim waits for a terminal's master after the runtime reported success.
const MASTER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a Create or Exec request asks for.
pub struct StdioRequest<'a> {
    pub stdin: &'a str,
    pub stdout: &'a str,
    pub stderr: &'a str,
    pub terminal: bool,
    /// Where libcontainer sends the pty master (used only with `terminal`).
    pub console_socket: PathBuf,
    /// The container's attach clients (only for its init).
    pub attach: Option<Attachers>,
}

/// The shim's half of a process's stdio once it runs: the copier threads, and the terminal.
pub struct ProcessIo {
    done: std::sync::Mutex<mpsc::Receiver<()>>,
    copiers: usize,
    /// The CRI log the copiers write, if any (reopened on log rotation).
    pub log: Option<CriLog>,
    /// The pty master, for resizes.
    pub console: Option<File>,
}

impl ProcessIo {
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

/// Stdio prepared before the runtime helper runs; [`Prepared::finish`] completes it after.
pub struct Prepared {
    /// What the helper gives the process.
    pub stdio: ContainerStdio,
    io: ProcessIo,
    done_tx: mpsc::Sender<()>,
    terminal: Option<TerminalPlan>,
}

struct TerminalPlan {
    console: ConsoleSocket,
    stdin: StdioTarget,
    stdout: StdioTarget,
    attach: Option<Attachers>,
}

/// Where one output stream's bytes go.
enum Out {
    Discard,
    Log(LogWriter),
    Raw(File),
}

impl Out {
    fn write(&mut self, chunk: &[u8]) {
        let failed = match self {
            Out::Log(w) => {
                w.push(chunk);
                false
            }
            Out::Raw(f) => f.write_all(chunk).is_err(),
            Out::Discard => false,
        };
        // A reader that went away must not stop the drain.
        if failed {
            *self = Out::Discard;
        }
    }

    fn finish(self) {
        if let Out::Log(w) = self {
            w.finish();
        }
    }
}

pub fn prepare(req: StdioRequest<'_>) -> std::io::Result<Prepared> {
    let (done_tx, done) = mpsc::channel();
    let mut io = ProcessIo {
        done: std::sync::Mutex::new(done),
        copiers: 0,
        log: None,
        console: None,
    };
    let mut stdio = ContainerStdio::default();
    let stdin = StdioTarget::parse(req.stdin);
    let stdout = StdioTarget::parse(req.stdout);
    if req.terminal {
        let console = ConsoleSocket::bind(&req.console_socket).map_err(std::io::Error::other)?;
        stdio.console_socket = Some(console.path().to_path_buf());
        return Ok(Prepared {
            stdio,
            io,
            done_tx,
            terminal: Some(TerminalPlan {
                console,
                stdin,
                stdout,
                attach: req.attach,
            }),
        });
    }

    match stdin {
        StdioTarget::Raw(p) => stdio.stdin = Some(open_raw(&p, false)?.into()),
        StdioTarget::Attach { once } => {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            if let Some(a) = &req.attach {
                a.set_stdin(StdinSink::new(File::from(w), once, false));
            }
            stdio.stdin = Some(r);
        }
        // Without a stdin the process reads /dev/null: a missing fd would leave it the runtime
        // helper's own (the pipe the shim reads the helper's answer from).
        StdioTarget::Null | StdioTarget::CriLog(_) => stdio.stdin = Some(dev_null(false)?),
    }
    for (target, stream) in [
        (stdout, Stream::Stdout),
        (StdioTarget::parse(req.stderr), Stream::Stderr),
    ] {
        let fd: OwnedFd = match target {
            // Output nobody logs still reaches a container's attach clients.
            StdioTarget::Null | StdioTarget::Attach { .. } if req.attach.is_some() => {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                spawn_copier(
                    File::from(r),
                    stream,
                    Out::Discard,
                    req.attach.clone(),
                    &done_tx,
                )?;
                io.copiers += 1;
                w
            }
            // Never no fd: the process would inherit the runtime helper's stdout or stderr, and
            // the shim's read of the helper's answer would wait for the container to exit
            // (CreateContainer without a log path hung until its deadline).
            StdioTarget::Null | StdioTarget::Attach { .. } => dev_null(true)?,
            StdioTarget::Raw(p) => open_raw(&p, true)?.into(),
            StdioTarget::CriLog(p) => {
                let log = shared_log(&mut io.log, p)?;
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                spawn_copier(
                    File::from(r),
                    stream,
                    Out::Log(log.writer(stream)),
                    req.attach.clone(),
                    &done_tx,
                )?;
                io.copiers += 1;
                w
            }
        };
        match stream {
            Stream::Stdout => stdio.stdout = Some(fd),
            Stream::Stderr => stdio.stderr = Some(fd),
        }
    }
    Ok(Prepared {
        stdio,
        io,
        done_tx,
        terminal: None,
    })
}

impl Prepared {
    /// Splits off what the helper needs; call [`Pending::finish`] once it succeeded.
    pub fn split(self) -> (ContainerStdio, Pending) {
        (
            self.stdio,
            Pending {
                io: self.io,
                done_tx: self.done_tx,
                terminal: self.terminal,
            },
        )
    }
}

/// The rest of [`Prepared`] while the helper runs.
pub struct Pending {
    io: ProcessIo,
    done_tx: mpsc::Sender<()>,
    terminal: Option<TerminalPlan>,
}

impl Pending {
    /// With a terminal: collects the master and starts copying through it.
    pub fn finish(self) -> std::io::Result<ProcessIo> {
        let mut io = self.io;
        let Some(plan) = self.terminal else {
            return Ok(io);
        };
        let master = plan
            .console
            .receive_master(MASTER_TIMEOUT)
            .map_err(std::io::Error::other)?;
        drop(plan.console);
        // Output: the terminal merges stdout and stderr into one stream, logged as stdout.
        let out = match plan.stdout {
            StdioTarget::CriLog(p) => Out::Log(shared_log(&mut io.log, p)?.writer(Stream::Stdout)),
            StdioTarget::Raw(p) => Out::Raw(open_raw(&p, true)?),
            StdioTarget::Null | StdioTarget::Attach { .. } => Out::Discard,
        };
        spawn_copier(
            master.try_clone()?,
            Stream::Stdout,
            out,
            plan.attach.clone(),
            &self.done_tx,
        )?;
        io.copiers += 1;
        match plan.stdin {
            StdioTarget::Raw(p) => {
                let src = open_raw(&p, false)?;
                let mut dst = master.try_clone()?;
                std::thread::Builder::new()
                    .name("tty-stdin".into())
                    .spawn(move || {
                        let _ = std::io::copy(&mut { src }, &mut dst);
                        // The caller closed stdin: the terminal's EOF, not a hangup.
                        let _ = dst.write_all(b"\x04");
                    })?;
            }
            StdioTarget::Attach { once } => {
                if let Some(a) = &plan.attach {
                    a.set_stdin(StdinSink::new(master.try_clone()?, once, true));
                }
            }
            StdioTarget::Null | StdioTarget::CriLog(_) => {}
        }
        io.console = Some(master);
        Ok(io)
    }
}

fn shared_log(slot: &mut Option<CriLog>, path: PathBuf) -> std::io::Result<CriLog> {
    if let Some(l) = slot {
        return Ok(l.clone());
    }
    let l = CriLog::open(path)?;
    *slot = Some(l.clone());
    Ok(l)
}

/// Copies `src` to `out` (and to attach clients) until EOF. A terminal master reports EIO
/// once the last slave fd closed, which counts as EOF like any other read error.
fn spawn_copier(
    mut src: File,
    stream: Stream,
    out: Out,
    attach: Option<Attachers>,
    done: &mpsc::Sender<()>,
) -> std::io::Result<()> {
    let done = done.clone();
    std::thread::Builder::new()
        .name(format!("copy-{stream:?}"))
        .spawn(move || {
            let mut out = out;
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let chunk = &buf[..n];
                if let Some(a) = &attach {
                    a.broadcast(stream, chunk);
                }
                out.write(chunk);
            }
            out.finish();
            let _ = done.send(());
        })?;
    Ok(())
}

fn dev_null(write: bool) -> std::io::Result<OwnedFd> {
    Ok(OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")?
        .into())
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
