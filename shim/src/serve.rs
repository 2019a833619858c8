//! `crisp-shim serve`: the long-lived per-container daemon crispd talks to.

use crate::forkserver::ForkServer;
use crate::reaper::Reaper;
use crate::task::TaskService;
use anyhow::{Context, Result};
use containerd_shim_protos::create_task;
use crisp_api::shim_dir::{TASK_SERVICE_V2, TASK_SERVICE_V3};
use crisp_api::ShimDir;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{mpsc, Arc};

pub fn serve(id: &str, dir: &Path, socket: &Path) -> Result<()> {
    // Our own session: a terminal hangup or a signal to crispd's process group must not reach
    // us, since the shim outlives crispd. EPERM means we already lead one; that is fine.
    let _ = nix::unistd::setsid();
    // Before the fork server, which inherits them (it clones every create's and exec's
    // helper), and for the cgroup managers the shim builds itself (stats, updates, OOM).
    crate::cgroup::pin_v1_mounts();
    // Forked first: it must be a copy of a process with one thread (see forkserver.rs).
    let forkserver = ForkServer::start();
    // One malloc arena for all the shim's threads: glibc would give each thread that allocates
    // an arena of its own (a heap with pages touched in each), memory a shim per container pays
    // for on every node, for allocation throughput it has no use for.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; no thread allocates concurrently yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let dir = ShimDir::new(dir, socket);
    std::fs::create_dir_all(dir.path())
        .with_context(|| format!("creating {}", dir.path().display()))?;
    // In the state dir, which means nothing after a reboot: no fsync.
    crisp_api::atomic_file::replace(&dir.pid_file(), std::process::id().to_string().as_bytes())
        .context("writing the shim pid file")?;
    init_tracing();
    let _span = tracing::info_span!("shim", container = %id).entered();
    // Blocked before any thread exists, so every thread inherits the mask and only the
    // dedicated thread below receives it (helpers unblock it again before exec'ing a container).
    let usr1 = {
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGUSR1);
        set
    };
    usr1.thread_block().context("blocking SIGUSR1")?;

    let forkserver = forkserver
        .map_err(|e| tracing::warn!(error = %e, "no fork server: runtime helpers will be exec'd"))
        .ok();
    let reaper = Reaper::start().context("becoming a subreaper")?;
    let (shutdown_tx, shutdown_rx) = mpsc::channel();
    let service = TaskService::new(dir.clone(), reaper, forkserver, shutdown_tx);
    let reopener = service.clone();
    std::thread::Builder::new()
        .name("sigusr1".into())
        .spawn(move || {
            // SIGUSR1 = crispd's ReopenContainerLog.
            while usr1.wait().is_ok() {
                reopener.reopen_log();
            }
        })
        .context("starting the signal thread")?;

    let socket = dir.socket().to_path_buf();
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", socket.display())),
    }
    // Per connection, two worker threads to start with and at least one idle (crispd keeps a
    // `Wait` pending on one for the container's whole life); ttrpc's defaults are three and
    // one, and ttrpc wants the default above the minimum.
    let mut server = ttrpc::Server::new()
        .set_thread_count_default(2)
        .set_thread_count_min(1)
        .bind(&dir.address())
        .with_context(|| format!("binding {}", socket.display()))?
        .register_service(task_methods(&service));
    server.start().context("starting the ttrpc server")?;
    let attach = dir.attach_socket();
    service
        .listen_attach(&attach)
        .with_context(|| format!("listening on {}", attach.display()))?;

    signal_ready()?;
    let _ = shutdown_rx.recv();
    tracing::info!("shutting down");
    server.shutdown();
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&attach);
    Ok(())
}

/// The Task handlers under both service names (see `TASK_SERVICE_V2`).
fn task_methods(
    service: &TaskService,
) -> HashMap<String, Box<dyn ttrpc::MethodHandler + Send + Sync>> {
    let v3 = create_task(Arc::new(service.clone()));
    let v3_prefix = format!("/{TASK_SERVICE_V3}/");
    let v2_prefix = format!("/{TASK_SERVICE_V2}/");
    let mut all = create_task(Arc::new(service.clone()));
    for (path, handler) in v3 {
        if let Some(method) = path.strip_prefix(&v3_prefix) {
            all.insert(format!("{v2_prefix}{method}"), handler);
        }
    }
    all
}

/// crispd reads one line from our stdout to know the socket is listening, then we stop using
/// stdout so a crispd that went away cannot make us die of SIGPIPE.
fn signal_ready() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").context("signalling readiness")?;
    out.flush().context("signalling readiness")?;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1).context("detaching stdout")?;
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRISP_SHIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
