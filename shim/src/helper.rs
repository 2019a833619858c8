//! libcontainer calls, each in its own short-lived, single-threaded process.
//!
//! The parent side ([`RuntimeHelper`]) spawns `/proc/self/exe __runtime <op>`; the child side
//! ([`run_op`]) performs exactly one libcontainer operation and exits. The child never creates a
//! thread: it is a fresh exec, `main` dispatches here before anything else, and libcontainer's
//! own forks happen from this one thread.

use crate::reaper::Reaper;
use clap::Subcommand;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the helper finds the container's stdio (dup'ed there by the parent before exec).
const CHILD_STDIN_FD: RawFd = 3;
const CHILD_STDOUT_FD: RawFd = 4;
const CHILD_STDERR_FD: RawFd = 5;

#[derive(Subcommand, Debug)]
pub enum Op {
    /// Create the container (init blocked until `start`); prints its pid on stdout.
    Create {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        bundle: PathBuf,
        /// fds 3/4/5 carry stdin/stdout/stderr for the container.
        #[arg(long)]
        with_stdin: bool,
        #[arg(long)]
        with_stdout: bool,
        #[arg(long)]
        with_stderr: bool,
        /// The process gets a terminal whose master goes to this socket.
        #[arg(long)]
        console_socket: Option<PathBuf>,
    },
    Start {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        id: String,
    },
    /// Run an extra process in the running container; prints its pid on stdout.
    Exec {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        id: String,
        /// An OCI `process` JSON.
        #[arg(long)]
        process: PathBuf,
        #[arg(long)]
        with_stdin: bool,
        #[arg(long)]
        with_stdout: bool,
        #[arg(long)]
        with_stderr: bool,
        #[arg(long)]
        console_socket: Option<PathBuf>,
    },
    Delete {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("spawning the runtime helper: {0}")]
    Spawn(std::io::Error),
    #[error("{op} failed: {message}")]
    Failed { op: &'static str, message: String },
}

/// Runs in the helper process.
pub fn run_op(op: Op) -> i32 {
    // The shim blocks signals it handles on a thread of its own; a container must start with
    // none blocked, and it inherits our mask through libcontainer's forks.
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
    // libcontainer reports through `tracing`; send errors to stderr, which the parent reads.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::ERROR)
        .without_time()
        .with_target(false)
        .try_init();
    let result: Result<(), String> = match op {
        Op::Create {
            root,
            id,
            bundle,
            with_stdin,
            with_stdout,
            with_stderr,
            console_socket,
        } => create(
            &root,
            &id,
            &bundle,
            [with_stdin, with_stdout, with_stderr],
            console_socket,
        ),
        Op::Exec {
            root,
            id,
            process,
            with_stdin,
            with_stdout,
            with_stderr,
            console_socket,
        } => exec(
            &root,
            &id,
            &process,
            [with_stdin, with_stdout, with_stderr],
            console_socket,
        ),
        Op::Start { root, id } => Container::load(root.join(&id))
            .and_then(|mut c| c.start())
            .map_err(|e| e.to_string()),
        Op::Delete { root, id } => match Container::load(root.join(&id)) {
            Ok(mut c) => c.delete(true).map_err(|e| e.to_string()),
            // Nothing to delete: a create that failed early, or a second delete.
            Err(_) if !root.join(&id).exists() => Ok(()),
            Err(e) => Err(e.to_string()),
        },
    };
    match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("{message}");
            1
        }
    }
}

fn builder_with_stdio(
    root: &Path,
    id: &str,
    stdio: [bool; 3],
    console_socket: Option<PathBuf>,
) -> Result<ContainerBuilder, String> {
    let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(|e| e.to_string())?
        .with_console_socket(console_socket);
    // SAFETY: the parent dup'ed exactly these fds into place for us and nothing else in this
    // process owns them; ownership moves to the builder, which closes them.
    unsafe {
        if stdio[0] {
            builder = builder.with_stdin(OwnedFd::from_raw_fd(CHILD_STDIN_FD));
        }
        if stdio[1] {
            builder = builder.with_stdout(OwnedFd::from_raw_fd(CHILD_STDOUT_FD));
        }
        if stdio[2] {
            builder = builder.with_stderr(OwnedFd::from_raw_fd(CHILD_STDERR_FD));
        }
    }
    Ok(builder)
}

fn create(
    root: &Path,
    id: &str,
    bundle: &Path,
    stdio: [bool; 3],
    console_socket: Option<PathBuf>,
) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let container = builder_with_stdio(root, id, stdio, console_socket)?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| e.to_string())?;
    let pid = container
        .pid()
        .ok_or_else(|| "container created without a pid".to_string())?;
    println!("{pid}");
    Ok(())
}

fn exec(
    root: &Path,
    id: &str,
    process: &Path,
    stdio: [bool; 3],
    console_socket: Option<PathBuf>,
) -> Result<(), String> {
    let pid = builder_with_stdio(root, id, stdio, console_socket)?
        .as_tenant()
        .with_process(Some(process))
        .with_detach(true)
        .build()
        .map_err(|e| e.to_string())?;
    println!("{pid}");
    Ok(())
}

/// The parent side: spawns helpers and collects their result through the shim's reaper (the
/// reaper owns every `waitpid`, so helpers are never waited on directly).
#[derive(Clone)]
pub struct RuntimeHelper {
    reaper: Reaper,
    root: PathBuf,
}

/// The container's stdio for `create`: each `Some` fd becomes the container's stdin/out/err.
#[derive(Default)]
pub struct ContainerStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// With a terminal: the socket libcontainer sends the pty master to (no fds then).
    pub console_socket: Option<PathBuf>,
}

impl RuntimeHelper {
    pub fn new(reaper: Reaper, root: PathBuf) -> Self {
        RuntimeHelper { reaper, root }
    }

    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: ContainerStdio,
    ) -> Result<u32, HelperError> {
        let mut cmd = self.command("create", id);
        cmd.arg("--bundle").arg(bundle);
        self.spawn_with_stdio("create", cmd, stdio)
    }

    /// Starts `process` (an OCI process JSON file) inside the running container.
    pub fn exec(
        &self,
        id: &str,
        process: &Path,
        stdio: ContainerStdio,
    ) -> Result<u32, HelperError> {
        let mut cmd = self.command("exec", id);
        cmd.arg("--process").arg(process);
        self.spawn_with_stdio("exec", cmd, stdio)
    }

    fn spawn_with_stdio(
        &self,
        op: &'static str,
        mut cmd: Command,
        stdio: ContainerStdio,
    ) -> Result<u32, HelperError> {
        let mut fds: Vec<(RawFd, RawFd)> = Vec::new();
        for (flag, fd, target) in [
            ("--with-stdin", &stdio.stdin, CHILD_STDIN_FD),
            ("--with-stdout", &stdio.stdout, CHILD_STDOUT_FD),
            ("--with-stderr", &stdio.stderr, CHILD_STDERR_FD),
        ] {
            if let Some(fd) = fd {
                cmd.arg(flag);
                fds.push((fd.as_raw_fd(), target));
            }
        }
        if let Some(p) = &stdio.console_socket {
            cmd.arg("--console-socket").arg(p);
        }
        pass_fds(&mut cmd, fds);
        let out = self.execute(op, cmd)?;
        // The fds in `stdio` are dropped here: the container holds the only write ends now.
        drop(stdio);
        out.trim().parse().map_err(|_| HelperError::Failed {
            op,
            message: format!("helper printed no pid: {out:?}"),
        })
    }

    pub fn start(&self, id: &str) -> Result<(), HelperError> {
        self.execute("start", self.command("start", id)).map(|_| ())
    }

    pub fn delete(&self, id: &str) -> Result<(), HelperError> {
        self.execute("delete", self.command("delete", id))
            .map(|_| ())
    }

    fn command(&self, op: &str, id: &str) -> Command {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("__runtime")
            .arg(op)
            .arg("--root")
            .arg(&self.root)
            .arg("--id")
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn execute(&self, op: &'static str, mut cmd: Command) -> Result<String, HelperError> {
        let mut child = cmd.spawn().map_err(HelperError::Spawn)?;
        self.reaper.child_spawned();
        let pid = child.id() as i32;
        let mut out = String::new();
        let mut err = String::new();
        // Read stderr on a thread so neither pipe can fill and block the helper.
        let stderr = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = stderr {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Ok(s) = err_reader.join() {
            err = s;
        }
        let code = self.reaper.wait(pid);
        if code == 0 {
            Ok(out)
        } else {
            let message = err.trim().to_string();
            Err(HelperError::Failed {
                op,
                message: if message.is_empty() {
                    format!("runtime helper exited with {code}")
                } else {
                    message
                },
            })
        }
    }
}

/// Places `src` fds at `target` numbers in the child. Sources are first moved above every
/// target so that one `dup2` cannot clobber a source another still needs.
fn pass_fds(cmd: &mut Command, fds: Vec<(RawFd, RawFd)>) {
    if fds.is_empty() {
        return;
    }
    // SAFETY: the closure runs between fork and exec and only calls fcntl/dup2, which are
    // async-signal-safe; it allocates nothing (the Vec was built before fork).
    unsafe {
        cmd.pre_exec(move || {
            let mut moved = [(-1, -1); 3];
            for (i, (src, target)) in fds.iter().enumerate().take(3) {
                let high = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 64);
                if high < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                moved[i] = (high, *target);
            }
            for (high, target) in moved.iter().filter(|(h, _)| *h >= 0) {
                // dup2 clears FD_CLOEXEC on the new fd, so it survives exec.
                if libc::dup2(*high, *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
