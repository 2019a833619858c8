//! A client that gives up on RunPodSandbox or CreateContainer half-way (its deadline passes, it
//! disconnects): the call still runs to its end, so what it made is either a pod or container
//! crispd lists (and removes) or nothing at all. Dropped half-way, it used to be neither.

use std::time::Duration;

use crisp_tests::cri::{CreateContainerRequest, RunPodSandboxRequest};
use crisp_tests::{crispd_test, Crispd, TestPod, BUSYBOX};

crispd_test!(cancelled_calls, check);

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "giveup").await?;

    // Deadlines from 1 to 24 ms land before, inside and after the calls' work.
    for i in 0..12u64 {
        let config = pod.container(&format!("c{i}"), &["sleep", "1000"])?;
        let mut c = client.clone();
        let call = c.runtime.create_container(CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        });
        let _ = tokio::time::timeout(Duration::from_millis(1 + 2 * i), call).await;

        let config = TestPod::new_config(crispd, &format!("p{i}"))?;
        let mut c = client.clone();
        let call = c.runtime.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        });
        let _ = tokio::time::timeout(Duration::from_millis(1 + 2 * i), call).await;
    }

    // The calls finish on their own; then everything crispd lists goes, and nothing may remain.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for c in client.list_containers().await? {
        client.remove_container(&c.id).await?;
    }
    let pods = client.list_pods().await?;
    anyhow::ensure!(pods.iter().any(|p| p.id == pod.id), "{pods:?}");
    for p in pods {
        client.stop_and_remove_pod(&p.id).await?;
    }
    crispd.assert_no_leaks();
    Ok(())
}
