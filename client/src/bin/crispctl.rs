//! `crispctl`: a tiny CRI client for poking at a running crispd by hand and for
//! the README demo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use crisp_client::cri::{ContainerStatus, PodSandboxStatus};
use crisp_client::{connect, container_config, pod_config, CriClient};

const DEFAULT_SOCKET: &str = "/run/crisp/crisp.sock";
/// Read by hand rather than through clap's `env` feature, which the workspace
/// does not enable.
const SOCKET_ENV: &str = "CRISP_SOCKET";
const DEMO_POD: &str = "crisp-demo";
const DEMO_NAMESPACE: &str = "default";
const DEMO_CONTAINER: &str = "hello";
/// Where kubelet keeps pod logs; the demo mimics it so the layout looks familiar.
const POD_LOG_ROOT: &str = "/var/log/pods";
/// The demo prints the log once the container's first two lines are in it.
const LOG_WAIT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(name = "crispctl", about = "Talk to a crisp CRI runtime")]
struct Cli {
    /// crispd's CRI socket [env: CRISP_SOCKET] [default: /run/crisp/crisp.sock]
    #[arg(long)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the runtime's Version answer
    Version,
    /// Run a busybox pod that says hello, show its status and log, then remove it
    Demo {
        /// Leave the pod running instead of removing it at the end
        #[arg(long)]
        keep: bool,
    },
    /// List pod sandboxes (id, state, namespace/name)
    Pods,
    /// Stop and remove pod sandboxes (with their containers)
    RmPod {
        /// Pod sandbox ids (or unique prefixes)
        ids: Vec<String>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crispctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let socket = cli
        .socket
        .or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let mut client = connect(&socket).await?;
    match cli.command {
        Command::Version => {
            let version = client.version().await?;
            println!("version:             {}", version.version);
            println!("runtime_name:        {}", version.runtime_name);
            println!("runtime_version:     {}", version.runtime_version);
            println!("runtime_api_version: {}", version.runtime_api_version);
            Ok(())
        }
        Command::Demo { keep } => demo(&mut client, keep).await,
        Command::Pods => {
            let pods = client
                .runtime
                .list_pod_sandbox(crisp_client::cri::ListPodSandboxRequest::default())
                .await
                .context("ListPodSandbox")?
                .into_inner()
                .items;
            for p in pods {
                let m = p.metadata.clone().unwrap_or_default();
                println!("{}  {:?}  {}/{}", p.id, p.state(), m.namespace, m.name);
            }
            Ok(())
        }
        Command::RmPod { ids } => {
            for id in ids {
                client.stop_and_remove_pod(&id).await?;
                println!("removed {id}");
            }
            Ok(())
        }
    }
}

async fn demo(client: &mut CriClient, keep: bool) -> anyhow::Result<()> {
    let image_ref = client.pull("busybox").await?;
    println!("pulled busybox as {image_ref}");

    // A fresh uid per run so a pod left behind by `--keep` does not collide.
    let uid = format!("demo-{}", unix_nanos());
    let log_dir = Path::new(POD_LOG_ROOT).join(format!("{DEMO_NAMESPACE}_{DEMO_POD}_{uid}"));
    // kubelet creates the pod and container log directories, not the runtime.
    let log_path = format!("{DEMO_CONTAINER}/0.log");
    std::fs::create_dir_all(log_dir.join(DEMO_CONTAINER))
        .with_context(|| format!("creating log directory {}", log_dir.display()))?;

    let pod = pod_config(DEMO_POD, DEMO_NAMESPACE, &uid, &log_dir);
    let pod_id = client.run_pod(&pod).await?;
    println!("pod {DEMO_POD} running as {pod_id}");

    let result = show_container(client, &pod_id, &pod, &log_dir.join(&log_path), &log_path).await;

    if keep {
        println!("keeping pod {pod_id} (--keep)");
    } else {
        client.stop_and_remove_pod(&pod_id).await?;
        // Removing the logs along with the pod is kubelet's job; do it here
        // so repeated demos leave nothing behind.
        std::fs::remove_dir_all(&log_dir)
            .with_context(|| format!("removing {}", log_dir.display()))?;
        println!("pod {pod_id} stopped and removed");
    }
    result
}

async fn show_container(
    client: &mut CriClient,
    pod_id: &str,
    pod: &crisp_client::cri::PodSandboxConfig,
    log_file: &Path,
    log_path: &str,
) -> anyhow::Result<()> {
    let command = [
        "sh",
        "-c",
        "echo hello from crisp; echo pod $(hostname); sleep 3600",
    ];
    let config = container_config(DEMO_CONTAINER, "busybox", &command, log_path);
    let container_id = client.create_container(pod_id, config, pod).await?;
    client.start_container(&container_id).await?;
    println!("container {DEMO_CONTAINER} started as {container_id}");

    print_pod(&client.pod_status(pod_id).await?);
    print_container(&client.container_status(&container_id).await?);

    let log = wait_for_lines(log_file, 2).await?;
    println!("--- {} ---", log_file.display());
    print!("{log}");
    println!("---");
    Ok(())
}

fn print_pod(status: &PodSandboxStatus) {
    let (name, namespace) = status
        .metadata
        .as_ref()
        .map(|m| (m.name.as_str(), m.namespace.as_str()))
        .unwrap_or_default();
    println!("pod status:");
    println!("  id:         {}", status.id);
    println!("  name:       {namespace}/{name}");
    println!("  state:      {:?}", status.state());
    println!("  created_at: {}", status.created_at);
    if let Some(network) = status.network.as_ref().filter(|n| !n.ip.is_empty()) {
        println!("  ip:         {}", network.ip);
    }
}

fn print_container(status: &ContainerStatus) {
    let name = status
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .unwrap_or_default();
    println!("container status:");
    println!("  id:         {}", status.id);
    println!("  name:       {name}");
    println!("  state:      {:?}", status.state());
    println!("  image_ref:  {}", status.image_ref);
    println!("  created_at: {}", status.created_at);
    println!("  started_at: {}", status.started_at);
    println!("  log_path:   {}", status.log_path);
}

/// Waits until the log file holds at least `lines` complete lines.
async fn wait_for_lines(path: &Path, lines: usize) -> anyhow::Result<String> {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        // The file may not exist yet right after start; that is not an error.
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if content.lines().count() >= lines && content.ends_with('\n') {
            return Ok(content);
        }
        if Instant::now() >= deadline {
            bail!(
                "log {} did not get {lines} lines within {LOG_WAIT:?} (has: {content:?})",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}
