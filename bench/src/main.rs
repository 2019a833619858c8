//! crisp-bench: starts a private crispd and a private containerd, drives both
//! through identical CRI calls, and reports latency, throughput and memory.
//!
//! Run as root, by hand (it is not part of `cargo test`):
//!
//! ```text
//! cargo build --release -p crisp-bench -p crisp-cri-server -p crisp-shim -p crisp-cni
//! sudo target/release/crisp-bench --pods 30
//! ```
//!
//! Everything it creates (temp dir, mounts, bridges cbench0/cbench1, cgroups,
//! processes) is removed on exit, including on error and Ctrl-C.

mod calls;
mod cni;
mod drive;
mod procs;
mod pull;
mod report;
mod run;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use serde_json::json;

use drive::{Metrics, Target};
use run::Run;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Only {
    Crisp,
    Containerd,
}

#[derive(Parser, Debug)]
#[command(
    name = "crisp-bench",
    about = "Benchmarks crisp against containerd over CRI"
)]
struct Opts {
    /// Pods per phase.
    #[arg(long, default_value_t = 30)]
    pods: usize,
    /// Where bench.json and bench.svg go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Benchmark only one runtime.
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Instead: CNI ADD+DEL per pod, crisp-bridge vs Debian's reference plugins.
    #[arg(long)]
    cni: bool,
    /// Timed PullImage calls per runtime of a ~100 MiB 7-layer image from a local
    /// docker-registry (0: no pull phase).
    #[arg(long, default_value_t = 5)]
    pulls: usize,
    /// Only the pull phase (no pods).
    #[arg(long)]
    pull_only: bool,
    /// Rounds of the per-call phase: each CRI call timed on its own (a small image pulled and
    /// removed, pod and container lifecycles one call at a time); 0: no per-call phase.
    #[arg(long, default_value_t = 20)]
    calls: usize,
}

#[derive(Default)]
struct Results {
    machine: serde_json::Value,
    crisp: Option<Metrics>,
    containerd: Option<Metrics>,
    /// What the pull phase pulled.
    pull_image: Option<serde_json::Value>,
    notes: Vec<String>,
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    match main_inner(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crisp-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner(opts: &Opts) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("must run as root (it starts container runtimes)");
    }
    if opts.pods == 0 && !opts.pull_only {
        bail!("--pods must be at least 1");
    }
    if opts.pull_only && opts.pulls == 0 {
        bail!("--pull-only needs --pulls of at least 1");
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let bin_dir = exe
        .parent()
        .context("binary has no parent dir")?
        .to_path_buf();
    if opts.cni {
        if !bin_dir.join("crisp-bridge").exists() {
            bail!(
                "crisp-bridge not found next to crisp-bench; build with: cargo build --release \
                 -p crisp-bench -p crisp-cni"
            );
        }
        return cni_bench(opts, &bin_dir);
    }
    if opts.only != Some(Only::Containerd) {
        for bin in ["crispd", "crisp-shim", "crisp-bridge"] {
            if !bin_dir.join(bin).exists() {
                bail!(
                    "{} not found next to crisp-bench; build with: cargo build --release \
                     -p crisp-bench -p crisp-cri-server -p crisp-shim -p crisp-cni",
                    bin_dir.join(bin).display()
                );
            }
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    let mut run = Run::new()?;
    eprintln!("crisp-bench: working in {}", run.dir.display());
    let mut results = Results::default();
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = bench(&mut run, opts, &bin_dir, &mut results) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Pods go through CRI while the daemons still run; Drop does the rest.
    runtime.block_on(async {
        if run.crispd_pid().is_some() {
            drive::remove_all_pods(&run.crisp_socket()).await;
        }
        if run.containerd_pid().is_some() {
            drive::remove_all_pods(&run.containerd_socket()).await;
        }
    });
    drop(run);
    outcome?;
    if results.crisp.is_some() || results.containerd.is_some() {
        write_report(opts, &results)?;
    }
    Ok(())
}

fn cni_bench(opts: &Opts, bin_dir: &Path) -> anyhow::Result<()> {
    let run = Run::new()?;
    let figures = cni::run(opts.pods, bin_dir, &run.dir)?;
    drop(run);
    println!(
        "CNI ADD+DEL per pod ({} pods, one hostPort each), ms:",
        opts.pods
    );
    println!(
        "{:<40} {:>9} {:>9} {:>13} {:>13}",
        "plugins", "ADD p50", "DEL p50", "ADD+DEL p50", "ADD+DEL p99"
    );
    for f in &figures {
        println!(
            "{:<40} {:>9.2} {:>9.2} {:>13.2} {:>13.2}",
            f.side, f.add_p50_ms, f.del_p50_ms, f.add_del_p50_ms, f.add_del_p99_ms
        );
    }
    if let [ours, reference] = &figures[..] {
        println!(
            "ratio crisp-bridge / reference (ADD+DEL p50): {:.2}",
            ours.add_del_p50_ms / reference.add_del_p50_ms
        );
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let path = opts.out.join("cni.json");
    let doc = json!({ "machine": machine(), "pods": opts.pods, "figures": figures });
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}

fn machine() -> serde_json::Value {
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    json!({
        "kernel": kernel,
        "nproc": cpus,
        "cpu": cpu_model,
        "mem_total_mib": mem_kib / 1024,
    })
}

async fn bench(
    run: &mut Run,
    opts: &Opts,
    bin_dir: &Path,
    results: &mut Results,
) -> anyhow::Result<()> {
    results.machine = machine();
    eprintln!("machine: {}", results.machine);
    let images = run.build_images().context("building the images")?;
    // Both runtimes' pod phases come first, on a machine that has done nothing else yet: the
    // pull phase's registry setup writes and deletes hundreds of MB, and a pod phase right after
    // it paid for that in file creation (crisp's start p50 at 100 pods: 27 ms before the setup,
    // 37-40 ms after it; containerd's moved within its noise).
    if !opts.pull_only {
        each_runtime(run, opts, bin_dir, &images, Phase::Pods, results).await;
    }
    if opts.pulls > 0 {
        let dir = run.dir.clone();
        let setup = tokio::task::spawn_blocking(move || pull::PullSetup::start(&dir))
            .await
            .context("pull setup task")?
            .context("setting up the pull phase")?;
        eprintln!(
            "pull image {}: {} layers on busybox, {:.1} MiB compressed, {:.1} MiB unpacked",
            setup.image,
            setup.added_layers(),
            setup.compressed_bytes as f64 / 1048576.0,
            setup.uncompressed_bytes as f64 / 1048576.0
        );
        results.pull_image = Some(serde_json::json!({
            "layers_added": setup.added_layers(),
            "second_image": "the same plus one 3.2 MiB layer",
            "compressed_mib": setup.compressed_bytes as f64 / 1048576.0,
            "unpacked_mib": setup.uncompressed_bytes as f64 / 1048576.0,
            "pulls": opts.pulls,
        }));
        each_runtime(run, opts, bin_dir, &images, Phase::Pulls(&setup), results).await;
    }
    if opts.calls > 0 && !opts.pull_only {
        let dir = run.dir.clone();
        let setup = tokio::task::spawn_blocking(move || calls::CallsSetup::start(&dir))
            .await
            .context("per-call setup task")?
            .context("setting up the per-call phase")?;
        each_runtime(run, opts, bin_dir, &images, Phase::Calls(&setup), results).await;
    }
    Ok(())
}

/// What one daemon run measures: each phase gets a freshly started daemon.
#[derive(Clone, Copy)]
enum Phase<'a> {
    Pods,
    Pulls(&'a pull::PullSetup),
    Calls(&'a calls::CallsSetup),
}

impl Phase<'_> {
    /// The registry hosts dir the daemon is started with, for the phases that pull.
    fn hosts_dir(&self) -> Option<&Path> {
        match self {
            Phase::Pods => None,
            Phase::Pulls(setup) => Some(&setup.hosts_dir),
            Phase::Calls(setup) => Some(&setup.hosts_dir),
        }
    }

    fn log_name(&self, daemon: &str) -> String {
        match self {
            Phase::Pods => format!("{daemon}.log"),
            Phase::Pulls(_) => format!("{daemon}-pulls.log"),
            Phase::Calls(_) => format!("{daemon}-calls.log"),
        }
    }
}

/// Runs `phase` against crisp, then containerd (each unless `--only` leaves it out), and adds
/// the figures to `results`. A runtime that fails is noted and the other one still runs.
async fn each_runtime(
    run: &mut Run,
    opts: &Opts,
    bin_dir: &Path,
    (busybox, pause): &(PathBuf, PathBuf),
    phase: Phase<'_>,
    results: &mut Results,
) {
    let log_dir = run.dir.join("pods");
    if opts.only != Some(Only::Containerd) {
        let m = results.crisp.get_or_insert_with(Metrics::default);
        if let Err(e) = bench_crisp(run, opts, bin_dir, busybox, &log_dir, phase, m).await {
            eprintln!(
                "crisp failed: {e:#}\n---- crispd log (tail) ----\n{}",
                tail(&run.crispd_log(), 40)
            );
            results.notes.push(format!("crisp failed: {e:#}"));
        }
        drive::remove_all_pods(&run.crisp_socket()).await;
        run.stop_daemon(true);
        keep_log(&opts.out, &phase.log_name("crispd"), &run.crispd_log());
    }

    if opts.only != Some(Only::Crisp) {
        match Run::containerd_version() {
            None => {
                let note = "containerd not found at /usr/bin/containerd (apt-get install \
                            containerd): crisp figures only";
                eprintln!("{note}");
                if !results.notes.iter().any(|n| n == note) {
                    results.notes.push(note.to_string());
                }
            }
            Some(version) => {
                eprintln!("{version}");
                results.machine["containerd"] = json!(version);
                let m = results.containerd.get_or_insert_with(Metrics::default);
                if let Err(e) =
                    bench_containerd(run, opts, busybox, pause, &log_dir, phase, m).await
                {
                    eprintln!(
                        "containerd failed: {e:#}\n---- containerd log (tail) ----\n{}",
                        tail(&run.containerd_log(), 40)
                    );
                    results.notes.push(format!("containerd failed: {e:#}"));
                }
                drive::remove_all_pods(&run.containerd_socket()).await;
                run.stop_daemon(false);
                keep_log(
                    &opts.out,
                    &phase.log_name("containerd"),
                    &run.containerd_log(),
                );
            }
        }
    }
}

/// The daemon's log goes next to bench.json: the run's directory is removed at the end, and
/// the log (with `CRISP_LOG=debug`, timestamps per step) is what explains a figure.
fn keep_log(out: &Path, name: &str, text: &str) {
    if let Err(e) = std::fs::create_dir_all(out).and_then(|()| std::fs::write(out.join(name), text))
    {
        eprintln!("keeping {name} in {}: {e}", out.display());
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls CRI Version until it answers (or the daemon dies, or 30 s pass).
async fn wait_ready(run: &mut Run, crisp: bool, socket: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        run.check_alive(crisp)?;
        let attempt = async {
            let mut client = crisp_client::connect(socket).await.ok()?;
            client.version().await.ok()
        };
        if let Ok(Some(v)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            eprintln!("{} {} answers", v.runtime_name, v.runtime_version);
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no answer to CRI Version within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn bench_crisp(
    run: &mut Run,
    opts: &Opts,
    bin_dir: &Path,
    busybox: &Path,
    log_dir: &Path,
    phase: Phase<'_>,
    m: &mut Metrics,
) -> anyhow::Result<()> {
    run.start_crispd(bin_dir, busybox, phase.hosts_dir())?;
    let socket = run.crisp_socket();
    wait_ready(run, true, &socket).await?;
    let marker = run.marker();
    let target = Target {
        name: "crisp",
        socket,
        image: run::BUSYBOX_IMAGE,
        log_dir: log_dir.join("crisp"),
        daemon_pid: run.crispd_pid().context("crispd not running")?,
        shim_name: "crisp-shim",
        shim_marker: &marker,
    };
    drive::ensure_image(&target, true).await?;
    // RemoveImage deletes the image's blobs and layers: check that, as for containerd.
    let blobs = run.dir.join("crisp/root/content/blobs/sha256");
    measure(&target, opts, phase, m, |digests| {
        Ok(digests
            .iter()
            .filter(|d| blobs.join(d.trim_start_matches("sha256:")).exists())
            .cloned()
            .collect())
    })
    .await
}

async fn bench_containerd(
    run: &mut Run,
    opts: &Opts,
    busybox: &Path,
    pause: &Path,
    log_dir: &Path,
    phase: Phase<'_>,
    m: &mut Metrics,
) -> anyhow::Result<()> {
    run.start_containerd(phase.hosts_dir())?;
    let socket = run.containerd_socket();
    wait_ready(run, false, &socket).await?;
    run.containerd_import(busybox)?;
    run.containerd_import(pause)?;
    let listing = run.ctr().args(["images", "ls", "-q"]).output()?;
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    eprintln!("containerd k8s.io images:\n{}", listing.trim());
    for image in [run::BUSYBOX_IMAGE, run::PAUSE_IMAGE] {
        if !listing.lines().any(|l| l.trim() == image) {
            bail!("{image} missing from `ctr images ls` after import");
        }
    }
    let marker = run.marker();
    let target = Target {
        name: "containerd",
        socket,
        image: run::BUSYBOX_IMAGE,
        log_dir: log_dir.join("containerd"),
        daemon_pid: run.containerd_pid().context("containerd not running")?,
        shim_name: "containerd-shim-runc-v2",
        shim_marker: &marker,
    };
    // The CRI plugin learns of imported images through events: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match drive::ensure_image(&target, false).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    // CRI RemoveImage deletes the image synchronously, and containerd's garbage collector
    // then drops its content and snapshots.
    measure(&target, opts, phase, m, |digests| {
        let listing = run.ctr().args(["content", "ls", "-q"]).output()?;
        let listing = String::from_utf8_lossy(&listing.stdout);
        Ok(digests
            .iter()
            .filter(|d| listing.lines().any(|l| l.trim() == d.as_str()))
            .cloned()
            .collect())
    })
    .await
}

/// Runs `phase` against `target`. `kept` says which of the given blobs the runtime still has:
/// none may be left after RemoveImage, so that no timed pull finds anything from the last one.
async fn measure(
    target: &Target<'_>,
    opts: &Opts,
    phase: Phase<'_>,
    m: &mut Metrics,
    kept: impl Fn(&[String]) -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<()> {
    match phase {
        Phase::Pods => m.pods = Some(drive::run(target, opts.pods).await?),
        Phase::Pulls(setup) => {
            let digests = setup.blobs();
            let forget = || {
                let left = kept(&digests)?;
                if !left.is_empty() {
                    bail!("{} kept blobs after RemoveImage: {left:?}", target.name);
                }
                Ok(())
            };
            m.pull = Some(pull::run(target, setup, opts.pulls, forget).await?);
        }
        Phase::Calls(setup) => m.calls = Some(calls::run(target, setup, opts.calls).await?),
    }
    Ok(())
}

fn write_report(opts: &Opts, results: &Results) -> anyhow::Result<()> {
    let rows = report::rows(results.crisp.as_ref(), results.containerd.as_ref());
    let m = &results.machine;
    println!();
    println!(
        "machine: kernel {}, {} CPUs ({}), {} MiB RAM{}",
        m["kernel"].as_str().unwrap_or("?"),
        m["nproc"],
        m["cpu"].as_str().unwrap_or("?"),
        m["mem_total_mib"],
        m["containerd"]
            .as_str()
            .map(|v| format!("; {v}"))
            .unwrap_or_default()
    );
    println!(
        "pods per phase: {}, concurrent clients: {}",
        opts.pods,
        drive::CONCURRENCY
    );
    println!();
    print!("{}", report::table(&rows));
    let crisp_calls = results.crisp.as_ref().and_then(|m| m.calls.as_ref());
    let containerd_calls = results.containerd.as_ref().and_then(|m| m.calls.as_ref());
    if crisp_calls.is_some() || containerd_calls.is_some() {
        println!();
        print!("{}", calls::table(crisp_calls, containerd_calls));
    }
    for note in &results.notes {
        println!("note: {note}");
    }

    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    // No pod phases ran with --pull-only: no pod count to report.
    let pods = (!opts.pull_only).then_some(opts.pods);
    let doc = json!({
        "machine": results.machine,
        "pods": pods,
        "concurrency": drive::CONCURRENCY,
        "rows": rows,
        "crisp": results.crisp,
        "containerd": results.containerd,
        "pull_image": results.pull_image,
        "notes": results.notes,
    });
    let json_path = opts.out.join("bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)? + "\n")?;
    let what = match pods {
        Some(n) => format!("{n} pods"),
        None => format!("{} pulls", opts.pulls),
    };
    let title = format!(
        "crisp vs containerd: {what}, kernel {}, {} CPUs",
        m["kernel"].as_str().unwrap_or("?"),
        m["nproc"]
    );
    let svg_path = opts.out.join("bench.svg");
    std::fs::write(&svg_path, report::svg(&rows, &title))?;
    println!("\nwrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}
