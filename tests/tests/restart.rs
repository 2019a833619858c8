//! crispd can be SIGKILLed and restarted: pods and containers are recovered
//! with the same ids and states, exits during the downtime are recorded, and
//! container logs keep flowing (the shim writes them, not crispd).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use crisp_tests::cri::{ContainerState, ListContainersRequest, ListPodSandboxRequest};
use crisp_tests::{require_root, tick_count, wait_for_file, Crispd, TestPod, BUSYBOX, TICKER};

const DOWNTIME: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart() {
    if !require_root() {
        return;
    }
    let mut crispd = Crispd::start().await.expect("starting crispd");
    let result = check(&mut crispd).await;
    crispd.expect_ok(result);
}

async fn check(crispd: &mut Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "survivor").await?;
    let long = pod
        .start_container(&mut client, "long", &["sleep", "1000"])
        .await?;
    let short = pod
        .start_container(&mut client, "short", &["sh", "-c", "sleep 1; exit 7"])
        .await?;
    let ticker = pod
        .start_container(&mut client, "ticker", &["sh", "-c", TICKER])
        .await?;
    let ticker_log = pod.log_file("ticker");
    wait_for_file(&ticker_log, Duration::from_secs(5), |log| {
        log.lines().count() >= 3
    })
    .await?;
    drop(client);

    crispd.kill9();
    let before = tick_count(&std::fs::read_to_string(&ticker_log)?)?;
    tokio::time::sleep(DOWNTIME).await;
    let during = tick_count(&std::fs::read_to_string(&ticker_log)?)?;
    // 20 ticks fit in the downtime; ask for half to allow for a loaded host.
    assert!(
        during >= before + 10,
        "log stalled while crispd was down: {before} -> {during} ticks"
    );
    crispd.restart().await?;
    let mut client = crispd.client().await?;

    let pods = client
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items;
    let pod_ids: Vec<&str> = pods.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(pod_ids, [pod.id.as_str()], "pods after restart");

    let containers = client
        .runtime
        .list_containers(ListContainersRequest { filter: None })
        .await?
        .into_inner()
        .containers;
    let found: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    let expected: HashSet<&str> = [&long, &short, &ticker].map(String::as_str).into();
    assert_eq!(found, expected, "containers after restart");

    let status = client.container_status(&long).await?;
    assert_eq!(status.state(), ContainerState::ContainerRunning, "long");
    let status = client.container_status(&ticker).await?;
    assert_eq!(status.state(), ContainerState::ContainerRunning, "ticker");
    // It exited while crispd was down, so only the shim saw the exit.
    let status = client.wait_exited(&short, Duration::from_secs(5)).await?;
    assert_eq!(status.exit_code, 7, "short: {status:?}");

    let after = during;
    wait_for_file(&ticker_log, Duration::from_secs(5), |log| {
        tick_count(log).is_ok_and(|n| n > after + 5)
    })
    .await
    .context("ticker log after restart")?;

    client.stop_and_remove_pod(&pod.id).await?;
    let log = std::fs::read_to_string(&ticker_log)?;
    tick_count(&log).context("ticker log after removal")?;
    crispd.assert_no_leaks();
    Ok(())
}
