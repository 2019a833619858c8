//! libcontainer calls, each in its own short-lived, single-threaded process.
//!
//! The parent side ([`RuntimeHelper`]) has the shim's fork server clone a helper, or spawns
//! `/proc/self/exe __runtime <op>` without one; the child side ([`run_op`]) performs exactly one
//! libcontainer operation and exits. The child never creates a thread: it is a clone of the
//! single-threaded fork server (or a fresh exec whose `main` dispatches here before anything
//! else), and libcontainer's own forks happen from this one thread.

use crate::forkserver::{ForkError, ForkServer, Spawned};
use crate::reaper::Reaper;
use clap::Subcommand;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Where the helper finds the container's stdio (dup'ed there by the parent before exec).
pub(crate) const CHILD_STDIN_FD: RawFd = 3;
pub(crate) const CHILD_STDOUT_FD: RawFd = 4;
pub(crate) const CHILD_STDERR_FD: RawFd = 5;

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
        /// The spec's cgroupsPath is systemd's `slice:prefix:name` (runc's flag of that name).
        #[arg(long)]
        systemd_cgroup: bool,
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
    /// Dump the running container with CRIU into `images`, leaving it running.
    Checkpoint {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        images: PathBuf,
    },
    /// Restore a dump into the created container's bundle; prints the restored pid.
    Restore {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        images: PathBuf,
        #[arg(long)]
        with_stdin: bool,
        #[arg(long)]
        with_stdout: bool,
        #[arg(long)]
        with_stderr: bool,
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
    // A clone of the fork server has them already; an exec'd helper pins crispd's list.
    crate::cgroup::pin_v1_mounts();
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
            systemd_cgroup,
        } => create(
            &root,
            &id,
            &bundle,
            [with_stdin, with_stdout, with_stderr],
            console_socket,
            systemd_cgroup,
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
        Op::Checkpoint { root, id, images } => crate::checkpoint::dump(&root, &id, &images),
        Op::Restore {
            root,
            id,
            bundle,
            images,
            with_stdin,
            with_stdout,
            with_stderr,
        } => {
            let fd = |with: bool, fd: RawFd| with.then_some(fd);
            crate::checkpoint::restore(
                &root,
                &id,
                &bundle,
                &images,
                [
                    fd(with_stdin, CHILD_STDIN_FD),
                    fd(with_stdout, CHILD_STDOUT_FD),
                    fd(with_stderr, CHILD_STDERR_FD),
                ],
            )
            .map(|pid| println!("{pid}"))
        }
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
        .with_console_socket(console_socket)
        .with_executor(crate::executor::CrispExecutor);
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
    systemd: bool,
) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let container = builder_with_stdio(root, id, stdio, console_socket)?
        .as_init(bundle)
        .with_systemd(systemd)
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

/// The helper's arguments (after `__runtime`), parsed the way `main` parses an exec'd helper's.
pub fn parse_op(args: Vec<OsString>) -> Result<Op, clap::Error> {
    #[derive(clap::Parser)]
    #[command(name = "__runtime")]
    struct Runtime {
        #[command(subcommand)]
        op: Op,
    }
    <Runtime as clap::Parser>::try_parse_from(
        std::iter::once(OsString::from("__runtime")).chain(args),
    )
    .map(|r| r.op)
}

/// The parent side: starts helpers and collects their result through the shim's reaper (the
/// reaper owns every `waitpid`, so helpers are never waited on directly).
#[derive(Clone)]
pub struct RuntimeHelper {
    reaper: Reaper,
    root: PathBuf,
    /// Clones helpers without an exec; without it (or if it died) they are exec'd.
    forkserver: Option<Arc<ForkServer>>,
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
        RuntimeHelper {
            reaper,
            root,
            forkserver: None,
        }
    }

    pub fn with_forkserver(mut self, forkserver: Option<ForkServer>) -> Self {
        self.forkserver = forkserver.map(Arc::new);
        self
    }

    /// Creates container `id` from `bundle`; `cgroup` is the spec's `cgroupsPath` (the shim
    /// read it already: it says which cgroup driver libcontainer must use).
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        cgroup: Option<&Path>,
        stdio: ContainerStdio,
    ) -> Result<u32, HelperError> {
        let mut args = self.args("create", id);
        args.extend(["--bundle".into(), bundle.into()]);
        if cgroup.is_some_and(crate::cgroup::is_systemd) {
            args.push("--systemd-cgroup".into());
        }
        self.run_with_stdio("create", args, stdio)
    }

    /// Starts `process` (an OCI process JSON file) inside the running container.
    pub fn exec(
        &self,
        id: &str,
        process: &Path,
        stdio: ContainerStdio,
    ) -> Result<u32, HelperError> {
        let mut args = self.args("exec", id);
        args.extend(["--process".into(), process.into()]);
        self.run_with_stdio("exec", args, stdio)
    }

    fn run_with_stdio(
        &self,
        op: &'static str,
        mut args: Vec<OsString>,
        stdio: ContainerStdio,
    ) -> Result<u32, HelperError> {
        let mut fds: Vec<(BorrowedFd<'_>, RawFd)> = Vec::new();
        for (flag, fd, target) in [
            ("--with-stdin", &stdio.stdin, CHILD_STDIN_FD),
            ("--with-stdout", &stdio.stdout, CHILD_STDOUT_FD),
            ("--with-stderr", &stdio.stderr, CHILD_STDERR_FD),
        ] {
            if let Some(fd) = fd {
                args.push(flag.into());
                fds.push((fd.as_fd(), target));
            }
        }
        if let Some(p) = &stdio.console_socket {
            args.extend(["--console-socket".into(), p.into()]);
        }
        let out = self.run(op, &args, &fds)?;
        // The fds in `stdio` are dropped here: the container holds the only write ends now.
        drop(fds);
        drop(stdio);
        out.trim().parse().map_err(|_| HelperError::Failed {
            op,
            message: format!("helper printed no pid: {out:?}"),
        })
    }

    /// Dumps the running container into `images` (see [`crate::checkpoint::dump`]).
    pub fn checkpoint(&self, id: &str, images: &Path) -> Result<(), HelperError> {
        let mut args = self.args("checkpoint", id);
        args.extend(["--images".into(), images.into()]);
        self.run("checkpoint", &args, &[]).map(|_| ())
    }

    /// Restores the dump in `images` as the created container `id`; returns the init's pid.
    pub fn restore(
        &self,
        id: &str,
        bundle: &Path,
        images: &Path,
        stdio: ContainerStdio,
    ) -> Result<u32, HelperError> {
        let mut args = self.args("restore", id);
        args.extend([
            "--bundle".into(),
            bundle.into(),
            "--images".into(),
            images.into(),
        ]);
        self.run_with_stdio("restore", args, stdio)
    }

    pub fn start(&self, id: &str) -> Result<(), HelperError> {
        self.run("start", &self.args("start", id), &[]).map(|_| ())
    }

    pub fn delete(&self, id: &str) -> Result<(), HelperError> {
        self.run("delete", &self.args("delete", id), &[])
            .map(|_| ())
    }

    fn args(&self, op: &str, id: &str) -> Vec<OsString> {
        vec![
            op.into(),
            "--root".into(),
            self.root.clone().into(),
            "--id".into(),
            id.into(),
        ]
    }

    /// Starts a helper: cloned by the fork server, or exec'd if there is none (or it failed:
    /// an error there leaves nothing behind, so exec'ing is a safe retry).
    fn launch(
        &self,
        args: &[OsString],
        fds: &[(BorrowedFd<'_>, RawFd)],
    ) -> Result<Spawned, HelperError> {
        if let Some(fs) = &self.forkserver {
            match fs.spawn(args, fds) {
                Ok(spawned) => return Ok(spawned),
                Err(e @ ForkError::Unavailable(_)) => {
                    tracing::warn!(error = %e, "exec'ing the runtime helper instead")
                }
                Err(ForkError::Failed(e)) => return Err(HelperError::Spawn(e)),
            }
        }
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("__runtime")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        pass_fds(
            &mut cmd,
            fds.iter()
                .map(|(fd, target)| (fd.as_raw_fd(), *target))
                .collect(),
        );
        let mut child = cmd.spawn().map_err(HelperError::Spawn)?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(HelperError::Spawn(std::io::Error::other(
                "helper pipes missing",
            )));
        };
        Ok(Spawned {
            pid: child.id() as i32,
            stdout: OwnedFd::from(stdout).into(),
            stderr: OwnedFd::from(stderr).into(),
        })
    }

    fn run(
        &self,
        op: &'static str,
        args: &[OsString],
        fds: &[(BorrowedFd<'_>, RawFd)],
    ) -> Result<String, HelperError> {
        let Spawned {
            pid,
            mut stdout,
            stderr,
        } = self.launch(args, fds)?;
        self.reaper.child_spawned();
        let mut out = String::new();
        // Read stderr on a thread so neither pipe can fill and block the helper.
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = (&stderr).read_to_string(&mut s);
            s
        });
        let _ = stdout.read_to_string(&mut out);
        let err = err_reader.join().unwrap_or_default();
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

/// Where fds are parked while a helper's fd table is laid out: above every target.
const PARK_FD: RawFd = 64;
/// The most [`place_fds`] lays out: the helper's stdout and stderr and the container's three.
const MAX_PLACED: usize = 5;

/// Puts each `(src, target)` fd at `target`, without FD_CLOEXEC (so it survives an exec).
/// Sources are first copied above every target, so that one `dup2` cannot clobber a source
/// another still needs. Async-signal-safe (no allocation; fcntl, dup2 and close only): it runs
/// between fork and exec for an exec'd helper, and in a helper cloned by the fork server.
pub(crate) fn place_fds(fds: &[(RawFd, RawFd)]) -> std::io::Result<()> {
    if fds.len() > MAX_PLACED {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut parked = [(-1, -1); MAX_PLACED];
    for (slot, (src, target)) in parked.iter_mut().zip(fds) {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an fd number takes no pointers.
        let high = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, PARK_FD) };
        if high < 0 {
            return Err(std::io::Error::last_os_error());
        }
        *slot = (high, *target);
    }
    for (high, target) in parked.iter().filter(|(h, _)| *h >= 0) {
        // SAFETY: dup2 and close on fd numbers take no pointers; `high` is our own copy.
        unsafe {
            if libc::dup2(*high, *target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(*high);
        }
    }
    Ok(())
}

/// Places the fds at their targets in the exec'd helper.
fn pass_fds(cmd: &mut Command, fds: Vec<(RawFd, RawFd)>) {
    if fds.is_empty() {
        return;
    }
    // SAFETY: the closure runs between fork and exec and only calls `place_fds`, which is
    // async-signal-safe; the Vec was built before fork.
    unsafe {
        cmd.pre_exec(move || place_fds(&fds));
    }
}
