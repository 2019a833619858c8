//! ContainerStats / ListContainerStats / PodSandboxStats move when the container burns CPU,
//! holds memory, writes to its writable layer and sends traffic.

use std::time::Duration;

use crisp_tests::cri::{
    ContainerStatsFilter, ContainerStatsRequest, ExecSyncRequest, ListContainerStatsRequest,
    PodSandboxStatsRequest,
};
use crisp_tests::{crispd_test, Crispd, TestPod, BUSYBOX};

crispd_test!(stats, check);

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "stats").await?;
    let burner = pod
        .start_container(
            &mut client,
            "burner",
            &[
                "sh",
                "-c",
                "dd if=/dev/zero of=/filler bs=1M count=8 2>/dev/null; touch /filled; while true; do :; done",
            ],
        )
        .await?;
    let idle = pod
        .start_container(&mut client, "idle", &["sleep", "1000"])
        .await?;

    let get = |c: &mut crisp_tests::CriClient, id: String| {
        let mut c = c.clone();
        async move {
            anyhow::Ok(
                c.runtime
                    .container_stats(ContainerStatsRequest { container_id: id })
                    .await?
                    .into_inner()
                    .stats
                    .ok_or_else(|| anyhow::anyhow!("no stats"))?,
            )
        }
    };
    // The filler is complete before the samples (under emulation dd takes its time).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while crisp_tests::sh(&mut client, &burner, "test -e /filled")
        .await?
        .0
        != 0
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the filler was not written within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = get(&mut client, burner.clone()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = get(&mut client, burner.clone()).await?;
    let cpu = |s: &crisp_tests::cri::ContainerStats| {
        s.cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref())
            .map(|v| v.value)
            .unwrap_or(0)
    };
    assert!(
        cpu(&second) > cpu(&first),
        "cpu did not move: {first:?} → {second:?}"
    );
    let cores = second
        .cpu
        .as_ref()
        .and_then(|c| c.usage_nano_cores.as_ref())
        .map(|v| v.value);
    assert!(
        cores.is_some_and(|c| c > 100_000_000),
        "nano cores {cores:?}"
    );
    let ws = second
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value);
    assert!(ws.is_some_and(|w| w > 0), "working set {ws:?}");
    let layer = second
        .writable_layer
        .as_ref()
        .and_then(|w| w.used_bytes.as_ref())
        .map(|v| v.value);
    assert!(
        layer.is_some_and(|b| b >= 8 << 20),
        "writable layer {layer:?}"
    );
    // PSI (cgroup v2 with a kernel that keeps it): the burner has been runnable for a while.
    let psi_kept = std::path::Path::new("/proc/pressure/cpu").exists();
    if crisp_tests::cgroup_v2() && psi_kept {
        let cpu_psi = second.cpu.as_ref().and_then(|c| c.psi.as_ref());
        let some = cpu_psi.and_then(|p| p.some.as_ref());
        assert!(some.is_some(), "no CPU PSI in {:?}", second.cpu);
        let memory_psi = second.memory.as_ref().and_then(|m| m.psi.as_ref());
        assert!(memory_psi.is_some_and(|p| p.some.is_some() && p.full.is_some()));
        let io_psi = second.io.as_ref().and_then(|io| io.psi.as_ref());
        assert!(io_psi.is_some(), "no I/O PSI in {:?}", second.io);
        assert!(second.io.as_ref().is_some_and(|io| io.timestamp > 0));
    } else {
        assert!(second.cpu.as_ref().is_some_and(|c| c.psi.is_none()));
        assert!(
            second.io.is_none(),
            "I/O usage without PSI: {:?}",
            second.io
        );
    }

    let listed = client
        .runtime
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .stats;
    let mut ids: Vec<String> = listed
        .iter()
        .filter_map(|s| s.attributes.as_ref())
        .map(|a| a.id.clone())
        .collect();
    ids.sort();
    let mut want = vec![burner.clone(), idle.clone()];
    want.sort();
    assert_eq!(ids, want);

    // Some traffic on eth0, then the pod's stats show it.
    let gw = crispd.network().gateway();
    client
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: idle.clone(),
            cmd: vec![
                "ping".into(),
                "-c".into(),
                "2".into(),
                "-W".into(),
                "2".into(),
                gw,
            ],
            timeout: 10,
        })
        .await?;
    let pstats = client
        .runtime
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await?
        .into_inner()
        .stats
        .and_then(|s| s.linux)
        .ok_or_else(|| anyhow::anyhow!("no pod stats"))?;
    let eth0 = pstats
        .network
        .as_ref()
        .and_then(|n| n.default_interface.as_ref());
    assert!(
        eth0.is_some_and(|i| i.name == "eth0" && i.tx_bytes.as_ref().is_some_and(|b| b.value > 0)),
        "pod network stats {:?}",
        pstats.network
    );
    let procs = pstats
        .process
        .and_then(|p| p.process_count)
        .map(|v| v.value);
    assert!(procs.is_some_and(|n| n >= 2), "process count {procs:?}");
    assert_eq!(pstats.containers.len(), 2);
    if crisp_tests::cgroup_v2() && psi_kept {
        let pod_psi = pstats.memory.as_ref().and_then(|m| m.psi.as_ref());
        assert!(pod_psi.is_some(), "no memory PSI for the pod");
        assert!(pstats.io.as_ref().and_then(|io| io.psi.as_ref()).is_some());
    }

    // The same figures as CRI metrics (kubelet's PodAndContainerStatsFromCRI).
    let descriptors = client
        .runtime
        .list_metric_descriptors(crisp_tests::cri::ListMetricDescriptorsRequest {})
        .await?
        .into_inner()
        .descriptors;
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
    ] {
        assert!(
            descriptors.iter().any(|d| d.name == name),
            "no {name}: {descriptors:?}"
        );
    }
    let metrics = client
        .runtime
        .list_pod_sandbox_metrics(crisp_tests::cri::ListPodSandboxMetricsRequest {})
        .await?
        .into_inner()
        .pod_metrics;
    let ours = metrics
        .iter()
        .find(|m| m.pod_sandbox_id == pod.id)
        .ok_or_else(|| anyhow::anyhow!("no metrics for the pod: {metrics:?}"))?;
    assert!(
        ours.metrics
            .iter()
            .any(|m| m.name == "container_network_transmit_bytes_total"
                && m.label_values.last().is_some_and(|i| i == "eth0")
                && m.value.as_ref().is_some_and(|v| v.value > 0)),
        "pod metrics {:?}",
        ours.metrics
    );
    let burner_ws = ours
        .container_metrics
        .iter()
        .find(|c| c.container_id == burner)
        .and_then(|c| {
            c.metrics
                .iter()
                .find(|m| m.name == "container_memory_working_set_bytes")
        })
        .and_then(|m| m.value.as_ref())
        .map(|v| v.value);
    assert!(
        burner_ws.is_some_and(|v| v > 0),
        "burner working set {burner_ws:?}"
    );
    // The series of kubelet's /metrics/cadvisor, each value with a label per descriptor key
    // (container, id, image, name, namespace, pod, then the series' own).
    let burner_metrics = &ours
        .container_metrics
        .iter()
        .find(|c| c.container_id == burner)
        .ok_or_else(|| anyhow::anyhow!("no metrics for the burner"))?
        .metrics;
    for name in [
        "container_cpu_user_seconds_total",
        "container_cpu_cfs_periods_total",
        "container_memory_cache",
        "container_memory_failures_total",
        "container_threads",
        "container_fs_usage_bytes",
        "container_start_time_seconds",
    ] {
        let m = burner_metrics
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| anyhow::anyhow!("no {name} for the burner: {burner_metrics:?}"))?;
        let d = descriptors
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| anyhow::anyhow!("no descriptor for {name}"))?;
        assert_eq!(d.label_keys.len(), m.label_values.len(), "{name}");
        assert_eq!(
            &m.label_values[..6][5],
            "stats",
            "{name}: {:?}",
            m.label_values
        );
    }
    let fs = burner_metrics
        .iter()
        .find(|m| m.name == "container_fs_usage_bytes")
        .and_then(|m| m.value.as_ref())
        .map(|v| v.value);
    assert!(fs.is_some_and(|b| b >= 8 << 20), "writable layer {fs:?}");

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
