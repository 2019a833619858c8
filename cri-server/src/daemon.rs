//! Running crispd: take the locks, open the runtime (re-attaching to what survives from an
//! earlier run), serve CRI on the unix socket until SIGTERM/SIGINT. Containers keep running
//! after crispd exits: they belong to their shims.

use crate::api::images_v1::pull_progress_server::PullProgressServer;
use crate::config::Config;
use crate::cri::Cri;
use crate::lock;
use crate::service::Runtime;
use anyhow::{Context, Result};
use crisp_cri_api::v1::image_service_server::ImageServiceServer;
use crisp_cri_api::v1::runtime_service_server::RuntimeServiceServer;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// What SIGHUP re-reads and applies.
pub struct Reload {
    pub config: Option<PathBuf>,
    /// `--log-level` or CRISP_LOG was given: it wins over the file, now and after SIGHUP.
    pub level_pinned: bool,
    pub log: crate::logging::LogControl,
}

pub async fn run(cfg: Config, reload: Reload) -> Result<()> {
    for dir in [&cfg.root, &cfg.state] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Some(parent) = cfg.socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let _root_lock = lock::acquire(
        &cfg.root.join("crispd.lock"),
        &format!("root {}", cfg.root.display()),
    )?;
    let mut sock_lock_path = cfg.socket.clone().into_os_string();
    sock_lock_path.push(".lock");
    let _socket_lock = lock::acquire(
        Path::new(&sock_lock_path),
        &format!("socket {}", cfg.socket.display()),
    )?;
    // Absolute: the commands reading it run from anywhere.
    _root_lock
        .name_socket(&std::path::absolute(&cfg.socket).unwrap_or_else(|_| cfg.socket.clone()))
        .context("writing the socket into the root's lock file")?;
    std::fs::create_dir_all(cfg.import_dir()).ok();

    let shim = shim_binary(&cfg)?;
    tracing::info!(root = %cfg.root.display(), state = %cfg.state.display(), shim = %shim.display(), "starting crispd");
    let runtime = Runtime::open(cfg.clone(), shim)
        .await
        .context("opening the runtime")?;
    let streaming = runtime
        .start_streaming()
        .await
        .context("starting the streaming server")?;
    tracing::info!(addr = %streaming, "streaming server (exec, port-forward) listening");
    let metrics = runtime.metrics.clone();
    if let Some(addr) = cfg.metrics.addr {
        let census_of = std::sync::Arc::downgrade(&runtime);
        let refresh: crate::metrics::server::Refresh = std::sync::Arc::new(move |m| {
            if let Some(rt) = census_of.upgrade() {
                m.set_census(&rt.census());
            }
        });
        let bound = crate::metrics::server::serve(addr, metrics.clone(), refresh)
            .await
            .with_context(|| format!("serving metrics on {addr}"))?;
        tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
    }
    let cri = Cri {
        runtime: runtime.clone(),
    };

    // We hold the socket lock, so whatever is at the path is a stale socket of a dead crispd.
    match std::fs::remove_file(&cfg.socket) {
        Ok(()) => tracing::info!(socket = %cfg.socket.display(), "replaced a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale {}", cfg.socket.display()))
        }
    }
    let listener = UnixListener::bind(&cfg.socket)
        .with_context(|| format!("binding {}", cfg.socket.display()))?;
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", cfg.socket.display()))?;
    tracing::info!(socket = %cfg.socket.display(), "serving CRI");
    tokio::spawn(reload_on_sighup(reload));

    tonic::transport::Server::builder()
        .layer(crate::metrics::layer::MetricsLayer(metrics))
        .add_service(RuntimeServiceServer::new(cri.clone()).max_decoding_message_size(16 << 20))
        .add_service(ImageServiceServer::new(cri.clone()).max_decoding_message_size(16 << 20))
        .add_service(PullProgressServer::new(cri))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown_signal())
        .await
        .context("serving CRI")?;
    let _ = std::fs::remove_file(&cfg.socket);
    runtime.flush_to_disk();
    tracing::info!("crispd stopped; containers keep running under their shims");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we can still serve; we just cannot stop gracefully.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// SIGHUP: re-reads the config file and applies what is safe to change live (the log level).
/// Everything else needs a restart, which leaves containers running anyway.
async fn reload_on_sighup(reload: Reload) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: the log level cannot be changed live");
        return;
    };
    while hup.recv().await.is_some() {
        let Some(path) = &reload.config else {
            tracing::info!("SIGHUP: no --config file to reload");
            continue;
        };
        match Config::load(path) {
            Ok(_) if reload.level_pinned => {
                tracing::info!("SIGHUP: log level pinned by --log-level or CRISP_LOG; unchanged")
            }
            Ok(new) => match reload.log.set_level(&new.log_level) {
                Ok(()) => tracing::info!(level = %new.log_level, "SIGHUP: log level changed"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: log level unchanged"),
            },
            Err(e) => tracing::error!(error = %e, "SIGHUP: config not reloaded"),
        }
    }
}

/// `[shim] path`, else `crisp-shim` next to this binary, else the first on `$PATH`.
fn shim_binary(cfg: &Config) -> Result<PathBuf> {
    if let Some(p) = &cfg.shim.path {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("locating crispd")?;
    let beside = exe.with_file_name("crisp-shim");
    if beside.exists() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("crisp-shim"))
        .find(|p| p.exists())
        .context("crisp-shim not found next to crispd nor on PATH; set [shim] path")
}
