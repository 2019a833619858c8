//! Stop and remove are idempotent (CRI since 1.31): for an id that never existed, and again
//! for one already stopped or removed, they succeed. Removal leaves nothing of the container
//! in the state dir (its attach socket outlived it).

use crisp_client::cri::{
    RemoveContainerRequest, RemovePodSandboxRequest, StopContainerRequest, StopPodSandboxRequest,
};
use crisp_client::CriClient;
use crisp_tests::{crispd_test, Crispd, TestPod, BUSYBOX};

crispd_test!(idempotent_stop_and_remove, check);

async fn stop_and_remove_all(
    client: &mut CriClient,
    pod: &str,
    container: &str,
) -> anyhow::Result<()> {
    let rt = &mut client.runtime;
    rt.stop_container(StopContainerRequest {
        container_id: container.into(),
        timeout: 0,
    })
    .await
    .map_err(|e| anyhow::anyhow!("StopContainer {container}: {e}"))?;
    rt.remove_container(RemoveContainerRequest {
        container_id: container.into(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("RemoveContainer {container}: {e}"))?;
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("StopPodSandbox {pod}: {e}"))?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("RemovePodSandbox {pod}: {e}"))?;
    Ok(())
}

/// Files under the state dir that are not crispd's own (its lock, socket and the dirs).
fn state_files(crispd: &Crispd) -> Vec<String> {
    let state = crispd.state();
    let mut found = Vec::new();
    for dir in ["s", "containers"] {
        if let Ok(entries) = std::fs::read_dir(state.join(dir)) {
            found.extend(entries.flatten().map(|e| e.path().display().to_string()));
        }
    }
    found
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    let never = "0123456789abcdef".repeat(4);
    stop_and_remove_all(&mut client, &never, &never).await?;

    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "idem").await?;
    let a = pod
        .start_container(&mut client, "a", &["sleep", "1000"])
        .await?;
    let b = pod
        .start_container(&mut client, "b", &["sleep", "1000"])
        .await?;
    assert!(!state_files(crispd).is_empty());
    client.remove_container(&b).await?;
    // Twice each, the second time on what is gone.
    for _ in 0..2 {
        stop_and_remove_all(&mut client, &pod.id, &a).await?;
        client.remove_container(&b).await?;
    }
    assert_eq!(state_files(crispd), Vec::<String>::new());
    crispd.assert_no_leaks();
    Ok(())
}
