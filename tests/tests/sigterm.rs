//! SIGTERM stops crispd promptly and cleanly but leaves containers running,
//! as kubelet expects from a runtime restart; a new crispd picks them up.

use std::time::{Duration, Instant};

use crisp_tests::cri::ContainerState;
use crisp_tests::{process_alive, require_root, wait_until, Crispd, TestPod, BUSYBOX};

const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm() {
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
    let pod = TestPod::start(&mut client, crispd, "lasting").await?;
    let id = pod
        .start_container(&mut client, "sleeper", &["sleep", "1000"])
        .await?;
    let pids = wait_until("the container in its cgroup", EXIT_TIMEOUT, || {
        Some(crispd.cgroup_pids()).filter(|pids| !pids.is_empty())
    })
    .await?;
    drop(client);

    let started = Instant::now();
    let status = crispd.stop().await?;
    let took = started.elapsed();
    assert!(status.success(), "crispd exited with {status} on SIGTERM");
    assert!(took < EXIT_TIMEOUT, "crispd took {took:?} to exit");

    let left: Vec<i32> = crispd.cgroup_pids();
    assert!(
        !left.is_empty(),
        "container cgroup emptied by crispd's exit"
    );
    assert!(
        pids.iter().all(|&pid| process_alive(pid)),
        "container processes {pids:?} died with crispd"
    );

    crispd.restart().await?;
    let mut client = crispd.client().await?;
    let status = client.container_status(&id).await?;
    assert_eq!(status.state(), ContainerState::ContainerRunning);
    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
