//! Upgrade across two real versions: the previous release's crispd, crisp-shim and crisp-bridge
//! (built by scripts/build-upgrade-baseline.sh from the commit in tests/upgrade-baseline; their
//! directory in CRISP_UPGRADE_FROM, which scripts/test.sh sets) make a pod with an IP, a
//! running, an exited and a created container and pull and import images. That crispd is
//! SIGTERMed (its shims keep running) and this build's crispd starts on the same root and state:
//! it must list everything with the same ids, states, exit code and IP, and exec, logs, log
//! reopening, stats, start and stop must work through the OLD shims still running; a container
//! whose old shim died during the upgrade is ended with the new shim binary. Removal leaves
//! nothing behind, and a new pod runs on the new crispd. Without CRISP_UPGRADE_FROM the test
//! fails (saying how to build the baseline) rather than pass without running.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context};
use crisp_tests::cri::{
    ContainerState, ContainerStats, ContainerStatsRequest, ContainerStatus, ContainerStatusRequest,
    Image, ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListImagesRequest,
    NamespaceMode, NamespaceOption, PodSandboxState, PodSandboxStatus, RemoveImageRequest,
    ReopenContainerLogRequest, StopContainerRequest,
};
use crisp_tests::{
    bin_path, layered_image, parse_cri_log, process_alive, require_root, sh, tick_count,
    upgrade_baseline, wait_for_file, wait_until, Baseline, CriClient, Crispd, Entry, TestPod,
    TestRegistry, BUSYBOX, TICKER,
};

const PULLED_FILE: &str = "pulled by the old release";
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_crispd_takes_over_the_previous_release() {
    if !require_root() {
        return;
    }
    let baseline = upgrade_baseline().unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "upgrading from {} ({})",
        baseline.commit,
        baseline.bin_dir.display()
    );
    let registry = TestRegistry::start().expect("starting the registry");
    let mut crispd = Crispd::start_from(&baseline.bin_dir)
        .await
        .expect("starting the baseline's crispd");
    let result = check(&mut crispd, &registry, &baseline).await;
    crispd.expect_ok(result);
}

/// What the old crispd made and reported, to compare with what the new one reports.
struct Before {
    pod: TestPod,
    pod_status: PodSandboxStatus,
    /// Container name → id.
    ids: BTreeMap<&'static str, String>,
    statuses: BTreeMap<String, ContainerStatus>,
    /// Container id → its shim's pid.
    shims: BTreeMap<String, i32>,
    /// The running container's process on the host.
    ticker_pid: i32,
    /// A running container whose (old) shim is SIGKILLed while no crispd runs: id, shim pid and
    /// the container's process. The new crispd cleans it up with its own shim binary.
    orphan: (String, i32, i32),
    images: Vec<Image>,
    /// The registry image: reference, and the blobs only it holds (manifest, config, top layer).
    pulled: String,
    pulled_blobs: Vec<String>,
}

async fn check(
    crispd: &mut Crispd,
    registry: &TestRegistry,
    baseline: &Baseline,
) -> anyhow::Result<()> {
    let before = with_old_crispd(crispd, registry, baseline).await?;

    let status = crispd.stop().await?;
    ensure!(
        status.success(),
        "the old crispd exited with {status} on SIGTERM"
    );
    for (id, &pid) in &before.shims {
        ensure!(
            process_alive(pid),
            "shim {pid} of {id} died with the old crispd"
        );
    }
    ensure!(
        process_alive(before.ticker_pid),
        "the running container died with the old crispd"
    );
    // A shim dying during the upgrade: the new crispd must end its container through
    // libcontainer state the old release wrote.
    let (_, orphan_shim, _) = &before.orphan;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(*orphan_shim),
        nix::sys::signal::Signal::SIGKILL,
    )?;

    crispd.restart_with_bin_dir(None).await?;
    let pid = crispd.pid().context("the new crispd has no pid")?;
    ensure!(
        same_file(
            &PathBuf::from(format!("/proc/{pid}/exe")),
            &bin_path("crispd")
        ),
        "the crispd now running is not this build's"
    );
    with_new_crispd(crispd, before, baseline).await
}

/// Everything the old crispd does: images, a pod, containers in three states and one more
/// running one for the shim to die under.
async fn with_old_crispd(
    crispd: &Crispd,
    registry: &TestRegistry,
    baseline: &Baseline,
) -> anyhow::Result<Before> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;

    // A registry pull (content blobs, repo digest) and an import through the old release's CLI.
    let layouts = tempfile::Builder::new()
        .prefix("crisp-upgrade-")
        .tempdir()?;
    let pulled_layout = layouts.path().join("pulled");
    let pulled_img = layered_image(
        &pulled_layout,
        "v1",
        &[vec![Entry::File(
            "etc/upgrade",
            format!("{PULLED_FILE}\n").as_bytes(),
        )]],
    )?;
    registry.push(
        &format!("oci:{}:v1", pulled_layout.display()),
        "upgrade:v1",
        &[],
    )?;
    let pulled = format!("{}/upgrade:v1", registry.host());
    ensure!(
        client.pull(&pulled).await? == pulled_img.config,
        "the old crispd pulled {pulled} as another image"
    );
    let imported_layout = layouts.path().join("imported");
    let imported_img = layered_image(
        &imported_layout,
        "v1",
        &[vec![Entry::File("etc/imported", b"imported\n")]],
    )?;
    crispd.images_import(&imported_layout)?;
    ensure!(
        client.pull("imported:v1").await? == imported_img.config,
        "the old crispd imported imported:v1 as another image"
    );
    let mut pulled_blobs = vec![pulled_img.manifest.clone(), pulled_img.config.clone()];
    pulled_blobs.extend(pulled_img.layers.last().cloned());
    for blob in &pulled_blobs {
        ensure!(crispd.blob_stored(blob), "{blob} of {pulled} is not stored");
    }

    // A pod with the test network's IP and a pause process (a shared PID namespace), so the
    // new crispd also takes over a pinned PID namespace and its init.
    let mut config = TestPod::new_config(crispd, "upgraded")?;
    config
        .linux
        .get_or_insert_with(LinuxPodSandboxConfig::default)
        .security_context
        .get_or_insert_with(LinuxSandboxSecurityContext::default)
        .namespace_options
        .get_or_insert_with(NamespaceOption::default)
        .pid = NamespaceMode::Pod as i32;
    let pod = TestPod::run(&mut client, config).await?;
    let pod_status = client.pod_status(&pod.id).await?;
    let ip = pod_ip(&pod_status);
    let subnet_prefix = format!("10.89.{}.", crispd.network().octet);
    ensure!(
        ip.starts_with(&subnet_prefix),
        "pod IP {ip:?} is not in the test network {}",
        crispd.network().subnet()
    );

    let ticker = pod
        .start_container(&mut client, "ticker", &["sh", "-c", TICKER])
        .await?;
    wait_for_file(&pod.log_file("ticker"), WAIT, |log| {
        log.lines().count() >= 3
    })
    .await?;
    let exited = pod
        .start_container(&mut client, "exited", &["sh", "-c", "exit 7"])
        .await?;
    let status = client.wait_exited(&exited, WAIT).await?;
    ensure!(status.exit_code == 7, "exited: {status:?}");
    // Created, not started: the new crispd starts it through the shim the old one spawned.
    let mut created_config = pod.container(
        "created",
        &["sh", "-c", "cat /etc/upgrade; exec sleep 1000"],
    )?;
    created_config.image = Some(ImageSpec {
        image: pulled.clone(),
        ..Default::default()
    });
    let created = pod.create(&mut client, created_config).await?;
    let orphan = pod
        .start_container(&mut client, "orphan", &["sleep", "4545"])
        .await?;
    let orphan_shim = crispd.shim_pid(&orphan)?;
    let orphan_pid = verbose_pid(&mut client, &orphan).await?;
    ensure!(
        process_alive(orphan_pid),
        "orphan pid {orphan_pid} not alive"
    );

    let ids = BTreeMap::from([
        ("ticker", ticker.clone()),
        ("exited", exited),
        ("created", created),
    ]);
    let mut statuses = BTreeMap::new();
    let mut shims = BTreeMap::new();
    let old_shim = baseline.bin_dir.join("crisp-shim");
    for id in ids.values() {
        statuses.insert(id.clone(), client.container_status(id).await?);
        if id.as_str() != ids["exited"] {
            let pid = crispd.shim_pid(id)?;
            ensure!(
                same_file(&PathBuf::from(format!("/proc/{pid}/exe")), &old_shim),
                "shim {pid} of {id} is not the baseline's crisp-shim"
            );
            shims.insert(id.clone(), pid);
        }
    }
    let ticker_pid = verbose_pid(&mut client, &ticker).await?;
    ensure!(
        process_alive(ticker_pid),
        "ticker pid {ticker_pid} not alive"
    );

    Ok(Before {
        pod,
        pod_status,
        ids,
        statuses,
        shims,
        ticker_pid,
        orphan: (orphan, orphan_shim, orphan_pid),
        images: list_images(&mut client).await?,
        pulled,
        pulled_blobs,
    })
}

/// The new crispd: the same view, everything working through the old shims, clean removal,
/// then a pod of its own.
async fn with_new_crispd(
    crispd: &Crispd,
    before: Before,
    baseline: &Baseline,
) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    let (pod, ids) = (&before.pod, &before.ids);
    let ticker = &ids["ticker"];

    let pods = client.list_pods().await?;
    ensure!(
        pods.len() == 1 && pods[0].id == pod.id && pods[0].state() == PodSandboxState::SandboxReady,
        "pods after the upgrade: {pods:?}"
    );
    let pod_status = client.pod_status(&pod.id).await?;
    ensure!(
        pod_status == before.pod_status,
        "pod status changed across the upgrade:\n before {:?}\n after  {pod_status:?}",
        before.pod_status
    );
    ensure!(!pod_ip(&pod_status).is_empty(), "the pod lost its IP");

    let containers = client.list_containers().await?;
    let (orphan, _, orphan_pid) = &before.orphan;
    let found: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    let expected: HashSet<&str> = ids.values().chain([orphan]).map(String::as_str).collect();
    ensure!(
        found == expected,
        "containers after the upgrade: {containers:?}"
    );
    for (id, old) in &before.statuses {
        let new = client.container_status(id).await?;
        ensure!(
            comparable(&new) == comparable(old),
            "status of {id} changed across the upgrade:\n before {old:?}\n after  {new:?}"
        );
    }
    // (Equal to the old statuses, so these are the new crispd's states too.)
    let states: Vec<(&str, ContainerState, i32)> = ids
        .iter()
        .map(|(name, id)| {
            (
                *name,
                before.statuses[id].state(),
                before.statuses[id].exit_code,
            )
        })
        .collect();
    ensure!(
        states
            == [
                ("created", ContainerState::ContainerCreated, 0),
                ("exited", ContainerState::ContainerExited, 7),
                ("ticker", ContainerState::ContainerRunning, 0),
            ],
        "states: {states:?}"
    );
    let status = client.container_status(orphan).await?;
    ensure!(
        status.state() == ContainerState::ContainerExited
            && status.exit_code != 0
            && status.message.contains("shim"),
        "the container whose shim died during the upgrade: {status:?}"
    );
    wait_until("the orphaned container to end", WAIT, || {
        (!process_alive(*orphan_pid)).then_some(())
    })
    .await?;
    let images = list_images(&mut client).await?;
    ensure!(
        images == before.images,
        "images changed across the upgrade:\n before {:?}\n after  {images:?}",
        before.images
    );

    // The new crispd re-attached to the old shims rather than replacing them.
    for (id, &pid) in &before.shims {
        ensure!(
            crispd.shim_pid(id)? == pid && process_alive(pid),
            "shim {pid} of {id} was replaced or died"
        );
    }
    ensure!(verbose_pid(&mut client, ticker).await? == before.ticker_pid);

    // Exec through the old shim.
    let (code, out) = sh(&mut client, ticker, "echo exec after upgrade; exit 3").await?;
    ensure!(
        code == 3 && out.contains("exec after upgrade"),
        "exec: exit {code}, output {out:?}"
    );
    let (code, out) = sh(&mut client, ticker, "hostname").await?;
    ensure!(
        code == 0 && out.trim() == "upgraded",
        "hostname: {code} {out:?}"
    );

    // The old shim kept logging, and reopens the log when the new crispd asks.
    let log = pod.log_file("ticker");
    let ticks = tick_count(&std::fs::read_to_string(&log)?)?;
    wait_for_file(&log, WAIT, |text| {
        tick_count(text).is_ok_and(|n| n >= ticks + 5)
    })
    .await
    .context("ticker log after the upgrade")?;
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated)?;
    client
        .runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: ticker.clone(),
        })
        .await?;
    wait_for_file(&log, WAIT, |text| {
        text.lines().count() >= 3 && parse_cri_log(text).is_ok()
    })
    .await
    .context("ticker log after ReopenContainerLog")?;

    let stats = container_stats(&mut client, ticker).await?;
    ensure!(
        stats.attributes.as_ref().map(|a| a.id.as_str()) == Some(ticker.as_str())
            && stats.memory.is_some(),
        "stats of the ticker: {stats:?}"
    );

    // Start through the shim the old crispd spawned, from the image it pulled.
    let created = &ids["created"];
    client.start_container(created).await?;
    wait_for_file(&pod.log_file("created"), WAIT, |text| {
        text.contains(PULLED_FILE)
    })
    .await
    .context("the created container's log")?;
    let status = client.container_status(created).await?;
    ensure!(
        status.state() == ContainerState::ContainerRunning,
        "created after StartContainer: {status:?}"
    );

    for id in [ticker, created] {
        client
            .runtime
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 1,
            })
            .await?;
        let status = client.wait_exited(id, WAIT).await?;
        ensure!(status.finished_at > 0, "stopped {id}: {status:?}");
    }
    for id in ids.values().chain([orphan]) {
        client.remove_container(id).await?;
    }
    client.stop_and_remove_pod(&pod.id).await?;
    client
        .image
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: before.pulled.clone(),
                ..Default::default()
            }),
        })
        .await?;
    for blob in &before.pulled_blobs {
        ensure!(!crispd.blob_stored(blob), "{blob} left after RemoveImage");
    }
    crispd.assert_no_leaks();
    for (id, &pid) in &before.shims {
        ensure!(
            !process_alive(pid),
            "shim {pid} of {id} outlived its container"
        );
    }
    ensure!(
        !process_alive(before.ticker_pid),
        "the ticker outlived its removal"
    );

    // A pod of the new crispd's own, with this build's shim.
    let fresh = TestPod::start(&mut client, crispd, "fresh").await?;
    let sleeper = fresh
        .start_container(&mut client, "sleeper", &["sleep", "1000"])
        .await?;
    let status = client.pod_status(&fresh.id).await?;
    ensure!(
        pod_ip(&status).starts_with(&format!("10.89.{}.", crispd.network().octet)),
        "new pod's IP: {status:?}"
    );
    let (code, out) = sh(&mut client, &sleeper, "echo fresh").await?;
    ensure!(code == 0 && out.trim() == "fresh", "exec: {code} {out:?}");
    let pid = crispd.shim_pid(&sleeper)?;
    ensure!(
        same_file(
            &PathBuf::from(format!("/proc/{pid}/exe")),
            &bin_path("crisp-shim")
        ),
        "the new pod's shim is not this build's (the baseline's is {})",
        baseline.bin_dir.join("crisp-shim").display()
    );
    client.stop_and_remove_pod(&fresh.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}

/// A container status without what a release may start reporting on purpose (resources from
/// the cgroup, the process's user, the stop signal in effect): the rest must not change across
/// an upgrade.
fn comparable(status: &ContainerStatus) -> ContainerStatus {
    ContainerStatus {
        resources: None,
        user: None,
        stop_signal: 0,
        ..status.clone()
    }
}

fn pod_ip(status: &PodSandboxStatus) -> String {
    status
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default()
}

/// Images sorted by id, as compared across the upgrade.
async fn list_images(client: &mut CriClient) -> anyhow::Result<Vec<Image>> {
    let mut images = client
        .image
        .list_images(ListImagesRequest { filter: None })
        .await?
        .into_inner()
        .images;
    images.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(images)
}

async fn container_stats(client: &mut CriClient, id: &str) -> anyhow::Result<ContainerStats> {
    client
        .runtime
        .container_stats(ContainerStatsRequest {
            container_id: id.to_string(),
        })
        .await?
        .into_inner()
        .stats
        .context("ContainerStats without stats")
}

/// `info.pid` of the verbose ContainerStatus: the container's process on the host.
async fn verbose_pid(client: &mut CriClient, id: &str) -> anyhow::Result<i32> {
    let response = client
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        })
        .await?
        .into_inner();
    let raw = response.info.get("info").context("no verbose info")?;
    let info: serde_json::Value = serde_json::from_str(raw)?;
    let pid = info["pid"].as_i64().context("no pid in the verbose info")?;
    Ok(i32::try_from(pid)?)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
