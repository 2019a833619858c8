//! StopContainer / RemoveContainer / StopPodSandbox semantics: graceful stop,
//! SIGKILL after the timeout, idempotent stop, forced removal.

use std::time::Duration;

use crisp_tests::cri::{
    ContainerState, ContainerStatusRequest, RemoveContainerRequest, StopPodSandboxRequest,
};
use crisp_tests::{crispd_test, expect_code, timed_stop, CriClient, Crispd, TestPod, BUSYBOX};

/// Slack on top of a stop timeout for crispd to notice the exit.
const STOP_SLACK: Duration = Duration::from_secs(5);

crispd_test!(stop_semantics, check);

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "stopper").await?;

    // `sleep` as PID 1 of its namespace ignores SIGTERM unless it installs a
    // handler, so either signal may end it.
    let sleeper = pod
        .start_container(&mut client, "sleeper", &["sleep", "1000"])
        .await?;
    assert_running(&mut client, &sleeper).await?;
    let elapsed = timed_stop(&mut client, &sleeper, 2).await?;
    assert!(
        elapsed < Duration::from_secs(2) + STOP_SLACK,
        "took {elapsed:?}"
    );
    let status = client.container_status(&sleeper).await?;
    assert_eq!(status.state(), ContainerState::ContainerExited);
    assert!(
        matches!(status.exit_code, 137 | 143),
        "exit code {}",
        status.exit_code
    );

    let stubborn = pod
        .start_container(
            &mut client,
            "stubborn",
            &["sh", "-c", "trap '' TERM; sleep 1000"],
        )
        .await?;
    assert_running(&mut client, &stubborn).await?;
    let elapsed = timed_stop(&mut client, &stubborn, 1).await?;
    assert!(
        elapsed >= Duration::from_secs(1),
        "SIGKILL came early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(1) + STOP_SLACK,
        "took {elapsed:?}"
    );
    let status = client.container_status(&stubborn).await?;
    assert_eq!(status.state(), ContainerState::ContainerExited);
    assert_eq!(status.exit_code, 137);

    // Stopping what already stopped is not an error.
    timed_stop(&mut client, &sleeper, 2).await?;

    let doomed = pod
        .start_container(&mut client, "doomed", &["sleep", "1000"])
        .await?;
    assert_running(&mut client, &doomed).await?;
    client
        .runtime
        .remove_container(RemoveContainerRequest {
            container_id: doomed.clone(),
        })
        .await?;
    expect_code(
        client
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: doomed.clone(),
                verbose: false,
            })
            .await,
        tonic::Code::NotFound,
        "ContainerStatus after removing a running container",
    )?;

    let first = pod
        .start_container(&mut client, "first", &["sleep", "1000"])
        .await?;
    let second = pod
        .start_container(&mut client, "second", &["sleep", "1000"])
        .await?;
    for id in [&first, &second] {
        assert_running(&mut client, id).await?;
    }
    client
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await?;
    for id in [&first, &second] {
        let status = client.container_status(id).await?;
        assert_eq!(
            status.state(),
            ContainerState::ContainerExited,
            "container {id} after StopPodSandbox"
        );
    }

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}

async fn assert_running(client: &mut CriClient, id: &str) -> anyhow::Result<()> {
    let status = client.container_status(id).await?;
    assert_eq!(
        status.state(),
        ContainerState::ContainerRunning,
        "container {id} right after StartContainer"
    );
    Ok(())
}
