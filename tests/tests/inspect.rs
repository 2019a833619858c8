//! Verbose status, as `crictl inspect` / `inspectp` show it: `info.pid` is the container's (or
//! the pod's pause) process on the host, `info.runtimeSpec` the OCI config it runs with, and the
//! pod's namespaces are listed with their pins.

use crisp_tests::cri::{ContainerStatusRequest, PodSandboxStatusRequest};
use crisp_tests::{crispd_test, Crispd, TestPod, BUSYBOX};
use serde_json::Value;

crispd_test!(inspect, check);

fn info(map: &std::collections::HashMap<String, String>) -> anyhow::Result<Value> {
    let raw = map
        .get("info")
        .ok_or_else(|| anyhow::anyhow!("no info in {map:?}"))?;
    Ok(serde_json::from_str(raw)?)
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let config = TestPod::shared_pid_config(crispd, "inspected")?;
    let pod = TestPod::run(&mut client, config).await?;
    let id = pod
        .start_container(&mut client, "sleeper", &["sleep", "4242"])
        .await?;

    let c = client
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await?
        .into_inner();
    let c = info(&c.info)?;
    let pid = c["pid"].as_i64().unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    assert_eq!(
        cmdline, b"sleep\x004242\x00",
        "info.pid is the container's process"
    );
    assert_eq!(c["sandboxID"], pod.id.as_str());
    assert_eq!(c["runtimeSpec"]["process"]["args"][1], "4242");

    let p = client
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: true,
        })
        .await?
        .into_inner();
    let p = info(&p.info)?;
    let pause = p["pid"].as_i64().unwrap_or_default();
    let comm = std::fs::read_to_string(format!("/proc/{pause}/cmdline"))?;
    assert!(
        comm.contains("pause"),
        "info.pid of the pod is its pause: {comm:?}"
    );
    let types: Vec<&str> = p["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(types, ["network", "ipc", "uts", "pid"]);

    // Not verbose: no info, as kubelet asks.
    let quiet = client
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id,
            verbose: false,
        })
        .await?
        .into_inner();
    assert!(quiet.info.is_empty());
    client.stop_and_remove_pod(&pod.id).await?;
    Ok(())
}
