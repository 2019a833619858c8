//! CheckpointContainer and restoring from its archive, as kubelet's forensic checkpointing and
//! CRI-O's restore use them: a running container is dumped with CRIU into an archive (and keeps
//! running), and a container created in another pod with that archive as its image continues
//! where the dump left it: its memory (a counter), its filesystem changes (a file written, one
//! deleted), its output into the new container's log.
//!
//! CRIU must work on the kernel: Debian's CRIU 3.17 does on kernel 6.1 (the cgroup v2 VM,
//! `scripts/test-vm.sh`), not on this host's 6.18, where CheckpointContainer must answer
//! FAILED_PRECONDITION with CRIU's reason and this test says it stopped there.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use crisp_tests::cri::{
    CheckpointContainerRequest, ContainerState, ContainerStatusRequest, PodSandboxStatusRequest,
};
use crisp_tests::{crispd_test, expect_code, sh, timed_stop, CriClient, Crispd, TestPod, BUSYBOX};

crispd_test!(checkpoint_and_restore, check);

/// Counts forever, from wherever its memory says it was.
const COUNTER: &str = "echo kept > /marker; rm /bin/true; \
    i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done";

fn request(id: &str, location: &Path) -> CheckpointContainerRequest {
    CheckpointContainerRequest {
        container_id: id.to_string(),
        location: location.display().to_string(),
        timeout: 0,
    }
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "ckpt").await?;
    let archive = crispd.dir().join("counter.tar");

    refusals(&mut client, &pod, crispd).await?;

    let counter = pod
        .start_container(&mut client, "counter", &["sh", "-c", COUNTER])
        .await?;
    let ticks_before = wait_for_tick(&pod, "counter", 3).await?;
    let answer = client
        .runtime
        .checkpoint_container(request(&counter, &archive))
        .await;
    if let Err(status) = &answer {
        if status.code() == tonic::Code::FailedPrecondition && status.message().contains("CRIU") {
            eprintln!(
                "checkpoint: stopped before the dump, CRIU does not work on this kernel: {}",
                status.message()
            );
            anyhow::ensure!(!archive.exists(), "an archive was left behind");
            client.stop_and_remove_pod(&pod.id).await?;
            crispd.assert_no_leaks();
            return Ok(());
        }
    }
    answer.context("CheckpointContainer")?;

    // The archive: CRI-O's layout, readable only by root; the container kept running.
    let mode = std::fs::metadata(&archive)?.permissions().mode() & 0o777;
    anyhow::ensure!(mode == 0o600, "archive mode {mode:o}");
    let names = archive_entries(&archive)?;
    for want in [
        "checkpoint/inventory.img",
        "checkpoint/descriptors.json",
        "config.dump",
        "spec.dump",
        "bind.mounts",
        "rootfs-diff.tar",
        "deleted.files",
        "dump.log",
    ] {
        anyhow::ensure!(
            names.contains(want),
            "{want} missing from the archive: {names:?}"
        );
    }
    anyhow::ensure!(
        state_of(&mut client, &counter).await? == ContainerState::ContainerRunning,
        "the checkpointed container stopped"
    );
    let at_dump = wait_for_tick(&pod, "counter", ticks_before + 2).await?;

    // Restored into another pod, as kubelet restores a pod's container.
    let mut pod2_config = TestPod::new_config(crispd, "ckpt-restored")?;
    pod2_config.hostname = "restored-host".into();
    let pod2 = TestPod::run(&mut client, pod2_config).await?;
    let mut config = pod2.container("counter", &[])?;
    config.image = Some(crisp_tests::cri::ImageSpec {
        image: archive.display().to_string(),
        ..Default::default()
    });
    // One created from the archive and removed unstarted: nothing was restored, nothing left.
    let unstarted = pod2.create(&mut client, config.clone()).await?;
    client.remove_container(&unstarted).await?;
    let restored = pod2.create(&mut client, config.clone()).await?;
    // The same name again: ALREADY_EXISTS, and no second unpacked archive left behind (the
    // leak check at the end counts the state's container dirs).
    expect_code(
        client
            .runtime
            .create_container(crisp_tests::cri::CreateContainerRequest {
                pod_sandbox_id: pod2.id.clone(),
                config: Some(config),
                sandbox_config: Some(pod2.config.clone()),
            })
            .await,
        tonic::Code::AlreadyExists,
        "a second container of the same name from the archive",
    )?;
    anyhow::ensure!(
        state_of(&mut client, &restored).await? == ContainerState::ContainerCreated,
        "a restored container is created first, restored at start"
    );
    client.start_container(&restored).await?;
    let status = client
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: restored.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .context("no status")?;
    anyhow::ensure!(
        status.state() == ContainerState::ContainerRunning,
        "restored container is {:?}",
        status.state()
    );
    anyhow::ensure!(
        status
            .image
            .as_ref()
            .is_some_and(|i| i.image.contains("busybox")),
        "restored container's image: {:?}",
        status.image
    );

    // Its memory: the count goes on from the dump, in the new container's log.
    let first = first_tick(&pod2, "counter").await?;
    anyhow::ensure!(
        first > 1 && first <= at_dump + 50,
        "the restored counter starts at {first}; the dump was taken near tick {at_dump}"
    );
    // Its filesystem: the file it wrote is there, the file it deleted is not.
    let (code, out) = sh(
        &mut client,
        &restored,
        "cat /marker; test -e /bin/true; echo $?",
    )
    .await?;
    anyhow::ensure!(
        code == 0 && out == "kept\n1\n",
        "restored rootfs: {code} {out:?}"
    );

    // Its pod's namespaces: the new pod's network (its address), UTS (its hostname) and IPC.
    let ip = client
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod2.id.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .context("restored pod has no address")?;
    let (_, local) = sh(&mut client, &restored, "hostname; cat /proc/net/fib_trie").await?;
    anyhow::ensure!(
        local.starts_with("restored-host\n") && local.contains(&ip),
        "restored container's hostname and addresses (pod address {ip}): {local}"
    );
    let ipc = |pid: String| format!("readlink /proc/{pid}/ns/ipc");
    let (_, in_restored) = sh(&mut client, &restored, &ipc("1".into())).await?;
    let sibling = pod2
        .start_container(&mut client, "sibling", &["sleep", "1000"])
        .await?;
    let (_, in_sibling) = sh(&mut client, &sibling, &ipc("self".into())).await?;
    anyhow::ensure!(
        in_restored == in_sibling,
        "IPC namespace of the restored container {in_restored:?}, of its pod {in_sibling:?}"
    );
    eprintln!("checkpoint: dumped near tick {at_dump}, restored counting on from tick {first}");

    let took = timed_stop(&mut client, &restored, 2).await?;
    anyhow::ensure!(
        took < Duration::from_secs(20),
        "stopping the restored container took {took:?}"
    );
    anyhow::ensure!(
        state_of(&mut client, &restored).await? == ContainerState::ContainerExited,
        "the restored container did not exit"
    );
    client.remove_container(&restored).await?;
    client.stop_and_remove_pod(&pod2.id).await?;
    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}

/// What is refused before CRIU runs: NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT naming
/// the cause; an archive that is not one.
async fn refusals(client: &mut CriClient, pod: &TestPod, crispd: &Crispd) -> anyhow::Result<()> {
    let archive = crispd.dir().join("refused.tar");
    expect_code(
        client
            .runtime
            .checkpoint_container(request("no-such", &archive))
            .await,
        tonic::Code::NotFound,
        "checkpoint of an unknown container",
    )?;
    let exited = pod.start_container(client, "done", &["true"]).await?;
    client.wait_exited(&exited, Duration::from_secs(30)).await?;
    expect_code(
        client
            .runtime
            .checkpoint_container(request(&exited, &archive))
            .await,
        tonic::Code::FailedPrecondition,
        "checkpoint of an exited container",
    )?;
    expect_code(
        client
            .runtime
            .checkpoint_container(request(&exited, Path::new("relative.tar")))
            .await,
        tonic::Code::InvalidArgument,
        "checkpoint to a relative path",
    )?;
    client.remove_container(&exited).await?;

    let junk = crispd.dir().join("junk.tar");
    std::fs::write(&junk, b"not a tar archive at all")?;
    let mut config = pod.container("from-junk", &[])?;
    config.image = Some(crisp_tests::cri::ImageSpec {
        image: junk.display().to_string(),
        ..Default::default()
    });
    let status = expect_code(
        client
            .runtime
            .create_container(crisp_tests::cri::CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.config.clone()),
            })
            .await,
        tonic::Code::InvalidArgument,
        "a container from a file that is no checkpoint archive",
    )?;
    anyhow::ensure!(
        status.message().contains("checkpoint archive"),
        "{}",
        status.message()
    );
    anyhow::ensure!(!archive.exists());
    Ok(())
}

async fn state_of(client: &mut CriClient, id: &str) -> anyhow::Result<ContainerState> {
    Ok(client
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .context("no status")?
        .state())
}

fn ticks(log: &str) -> Vec<usize> {
    crisp_tests::parse_cri_log(log)
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l.content.strip_prefix("tick ")?.parse().ok())
        .collect()
}

/// Waits until the container's log has reached tick `n`; returns the last tick seen.
async fn wait_for_tick(pod: &TestPod, name: &str, n: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = ticks(&pod.read_log(name)).last().copied().unwrap_or(0);
        if last >= n {
            return Ok(last);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{name} logged up to tick {last}, want {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first tick the container logged.
async fn first_tick(pod: &TestPod, name: &str) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(first) = ticks(&pod.read_log(name)).first() {
            return Ok(*first);
        }
        anyhow::ensure!(Instant::now() < deadline, "{name} logged no tick");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn archive_entries(archive: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut bytes = Vec::new();
    std::fs::File::open(archive)?.read_to_end(&mut bytes)?;
    let mut tar = tar::Archive::new(bytes.as_slice());
    let mut names = BTreeSet::new();
    for e in tar.entries()? {
        names.insert(
            e?.path()?
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string(),
        );
    }
    Ok(names)
}
