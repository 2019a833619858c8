//! `crisp-shim`: one process per container. It owns the container's init process (created through
//! youki's libcontainer), writes its logs, keeps its exit status, and outlives crispd.
//!
//! Process model (see docs/design.md): crispd spawns `crisp-shim serve` per container; the shim
//! serves the containerd Task API over ttrpc from a small thread pool. libcontainer is never
//! called from those threads: it `chdir`s the whole process and forks with raw `clone3`, which is
//! unsafe next to other threads (inherited malloc locks, a shared cwd). Every libcontainer call
//! runs in a runtime helper that starts no thread at all, so the single-threaded precondition
//! holds by construction: a clone of the shim's fork server (forked before the shim's first
//! thread, see `forkserver`), or a freshly exec'd `crisp-shim __runtime …` without one.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod attach;
mod cgroup;
mod checkpoint;
mod console;
mod containerd_v2;
mod cri_log;
mod executor;
mod forkserver;
mod helper;
mod oom;
mod pause;
mod pod_userns;
mod reaper;
mod rootfs;
mod run;
mod serve;
mod stats;
mod stdio;
mod task;

#[derive(Parser)]
#[command(
    name = "crisp-shim",
    version,
    about = "Per-container shim of the crisp container runtime",
    long_about = "Per-container shim of the crisp container runtime.\n\n\
        `serve` is how crispd runs it: one shim per container, serving the containerd runtime v2 \
        Task API (ttrpc) on --socket, writing the container's CRI log and keeping its \
        exit status in <dir>/exit.json so it survives crispd restarts.\n\
        `run` runs an OCI bundle in the foreground, like `runc run`, and exits with the \
        container's exit code: handy for testing without crispd.\n\
        `pause` is the init of a pod's shared PID namespace (crispd starts it)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Task API for one container (started by crispd).
    Serve {
        /// Container id.
        #[arg(long)]
        id: String,
        /// The shim's directory: exit record, bundle, runtime state.
        #[arg(long)]
        dir: PathBuf,
        /// Where to listen for the Task API (a unix socket path).
        #[arg(long)]
        socket: PathBuf,
    },
    /// Run an OCI bundle in the foreground and exit with the container's exit code.
    Run {
        /// The bundle directory (holds config.json and the rootfs).
        #[arg(long)]
        bundle: PathBuf,
        /// Container id (default: derived from the process id).
        #[arg(long)]
        id: Option<String>,
        /// libcontainer state root (default: a private directory under /run/crisp-shim).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Be PID 1 of a new PID namespace for a pod whose containers share one (run by crispd
    /// with CLONE_NEWPID unshared); prints that process's pid and exits.
    Pause,
    /// Internal: make a pod's user namespace and the namespaces it owns (crispd pins them).
    #[command(name = "__pod-userns", hide = true)]
    PodUserns {
        #[arg(long)]
        net: bool,
        #[arg(long)]
        ipc: bool,
        #[arg(long)]
        uts: bool,
        #[arg(long)]
        hostname: Option<String>,
    },
    /// Internal: one libcontainer operation in a single-threaded process.
    #[command(name = "__runtime", hide = true)]
    Runtime {
        #[command(subcommand)]
        op: helper::Op,
    },
}

fn main() {
    // containerd runs us as `containerd-shim-crisp-v2 … start|delete` with Go-style flags.
    let args: Vec<String> = std::env::args().collect();
    if let Some(inv) = containerd_v2::parse(&args) {
        std::process::exit(containerd_v2::run(inv));
    }
    // Parsing happens before any thread exists; `__runtime` must stay single-threaded.
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Runtime { op } => helper::run_op(op),
        Command::Pause => pause::run(),
        Command::PodUserns {
            net,
            ipc,
            uts,
            hostname,
        } => pod_userns::run(net, ipc, uts, hostname),
        Command::Serve { id, dir, socket } => report(serve::serve(&id, &dir, &socket)),
        Command::Run { bundle, id, root } => match run::run(&bundle, id, root) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("crisp-shim: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}

fn report(r: Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("crisp-shim: {e:#}");
            1
        }
    }
}
