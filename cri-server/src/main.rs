//! `crispd`: the crisp CRI daemon.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use crisp_cri_server::{cli, config, daemon, logging};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "crispd",
    version,
    about = "crisp: a Kubernetes CRI container runtime"
)]
struct Cli {
    /// TOML config file (every key optional; defaults are embedded).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Persistent data directory (default /var/lib/crisp).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Runtime state directory (default /run/crisp).
    #[arg(long)]
    state: Option<PathBuf>,
    /// CRI socket path (default /run/crisp/crisp.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Log level or tracing filter (default info; env CRISP_LOG also works).
    #[arg(long)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Work with the config file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Work with the image store.
    Images {
        #[command(subcommand)]
        action: ImagesAction,
    },
}

#[derive(Subcommand)]
enum ImagesAction {
    /// Import an OCI layout, OCI archive or docker-save tar (gzip ok). With crispd running on
    /// the same root, the file goes to its import dir instead.
    Import { file: PathBuf },
    /// Pull an image (as CRI PullImage does: import dir, then registry), with progress.
    /// With crispd running on the same root, crispd pulls it (its registry config applies).
    Pull {
        /// The image reference, e.g. `busybox` or `registry.example.com/app:v1`.
        reference: String,
        /// Registry credentials as USER:PASS.
        #[arg(long)]
        creds: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the default config, every key documented.
    Default,
    /// Validate a config file; names the bad key.
    Check { file: PathBuf },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("crispd: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Config {
            action: ConfigAction::Default,
        }) => {
            print!("{}", config::DEFAULT_TOML);
            return Ok(());
        }
        Some(Command::Config {
            action: ConfigAction::Check { file },
        }) => {
            config::Config::load(file)?;
            println!("{}: ok", file.display());
            return Ok(());
        }
        Some(Command::Images { .. }) | None => {}
    }
    let mut cfg = match &cli.config {
        Some(p) => config::Config::load(p)?,
        None => config::Config::default(),
    };
    if let Some(r) = cli.root {
        cfg.root = r;
    }
    if let Some(s) = cli.state {
        cfg.state = s;
    }
    if let Some(s) = cli.socket {
        cfg.socket = s;
    }
    // A level from the command line or CRISP_LOG pins it: SIGHUP then leaves it alone.
    let pinned_level = cli
        .log_level
        .clone()
        .or_else(|| std::env::var("CRISP_LOG").ok());
    if let Some(l) = &pinned_level {
        cfg.log_level = l.clone();
    }
    match &cli.command {
        Some(Command::Images {
            action: ImagesAction::Import { file },
        }) => return cli::import::run(&cfg, file),
        Some(Command::Images {
            action: ImagesAction::Pull { reference, creds },
        }) => return cli::pull::run(&cfg, reference, creds.as_deref()),
        _ => {}
    }
    let log = logging::init(&cfg.log_level, cfg.log_format)?;
    let reload = daemon::Reload {
        config: cli.config.clone(),
        level_pinned: pinned_level.is_some(),
        log,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(daemon::run(cfg, reload))
}
