//! What current kubelets (1.35–1.37) send and read over the newest CRI `api.proto`: env values
//! that are not UTF-8, a container's own stop signal, the `Stream*` list RPCs (KEP-5825), the
//! runtime features crispd reports (CheckpointContainer: `checkpoint.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use crisp_tests::cri::{
    ExecSyncRequest, KeyValue, ListContainerStatsRequest, ListImagesRequest,
    ListPodSandboxMetricsRequest, ListPodSandboxStatsRequest, Signal, StreamContainerStatsRequest,
    StreamContainersRequest, StreamImagesRequest, StreamPodSandboxMetricsRequest,
    StreamPodSandboxStatsRequest, StreamPodSandboxesRequest,
};
use crisp_tests::{crispd_test, timed_stop, CriClient, Crispd, TestPod, BUSYBOX};

crispd_test!(current_kubelet, check);

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "kubelet-now").await?;

    env_bytes(&mut client, &pod).await?;
    stop_signals(&mut client, &pod).await?;
    let other = TestPod::start(&mut client, crispd, "kubelet-now-2").await?;
    other
        .start_container(&mut client, "idle", &["sleep", "1000"])
        .await?;
    stream_lists(&mut client).await?;
    features(&mut client).await?;

    client.stop_and_remove_pod(&other.id).await?;
    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}

async fn exec_out(client: &mut CriClient, id: &str, cmd: &[&str]) -> anyhow::Result<Vec<u8>> {
    let r = client
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await?
        .into_inner();
    anyhow::ensure!(
        r.exit_code == 0,
        "{cmd:?}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    Ok(r.stdout)
}

/// A value that is not UTF-8 reaches the process byte for byte (CreateContainer refused it
/// with INTERNAL "invalid string value" when `KeyValue.value` was a string).
async fn env_bytes(client: &mut CriClient, pod: &TestPod) -> anyhow::Result<()> {
    let raw = vec![b'a', 0xff, 0xfe, b'=', b'z'];
    let mut config = pod.container("env", &["sleep", "1000"])?;
    config.envs = vec![
        KeyValue {
            key: "RAW".into(),
            value: raw.clone(),
        },
        KeyValue {
            key: "TEXT".into(),
            value: "é".into(),
        },
    ];
    let id = pod.create(client, config).await?;
    client.start_container(&id).await?;
    let environ = exec_out(client, &id, &["cat", "/proc/1/environ"]).await?;
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    let mut want = b"RAW=".to_vec();
    want.extend_from_slice(&raw);
    assert!(
        vars.contains(&want.as_slice()),
        "RAW in the container's environment: {:?}",
        String::from_utf8_lossy(&environ)
    );
    assert!(vars.contains(&"TEXT=é".as_bytes()));
    // A process exec'd into the container gets the same environment.
    let echoed = exec_out(client, &id, &["sh", "-c", "printf %s \"$RAW\""]).await?;
    assert_eq!(echoed, raw, "RAW in an exec'd process");
    Ok(())
}

/// `ContainerConfig.stop_signal` is what StopContainer sends; ContainerStatus reports it.
async fn stop_signals(client: &mut CriClient, pod: &TestPod) -> anyhow::Result<()> {
    // Exits 7 on SIGUSR1; SIGTERM (ignored) would leave it to the SIGKILL after 30 s.
    let script = "trap 'exit 7' USR1; trap '' TERM; while :; do sleep 0.1; done";
    let mut config = pod.container("usr1", &["sh", "-c", script])?;
    config.stop_signal = Signal::Sigusr1 as i32;
    let id = pod.create(client, config).await?;
    client.start_container(&id).await?;
    assert_eq!(
        client.container_status(&id).await?.stop_signal(),
        Signal::Sigusr1
    );
    // Let the shell install its traps.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = timed_stop(client, &id, 30).await?;
    let status = client.container_status(&id).await?;
    assert_eq!(status.exit_code, 7, "stopped by {took:?}: {status:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(status.stop_signal(), Signal::Sigusr1);

    // Without one: the image's (busybox has none), else SIGTERM.
    let plain = pod
        .start_container(client, "plain", &["sleep", "1000"])
        .await?;
    assert_eq!(
        client.container_status(&plain).await?.stop_signal(),
        Signal::Sigterm
    );
    let mut bad = pod.container("bad-signal", &["true"])?;
    bad.stop_signal = 1000;
    let refused = client
        .create_container(&pod.id, bad, &pod.config)
        .await
        .expect_err("an unknown stop signal is refused");
    assert!(format!("{refused}").contains("stop_signal"), "{refused}");
    Ok(())
}

/// Collects a server stream, checking that no message is empty.
macro_rules! collect_stream {
    ($call:expr, $field:ident) => {{
        let mut stream = $call.await?.into_inner();
        let mut items = Vec::new();
        while let Some(message) = stream.message().await? {
            anyhow::ensure!(
                !message.$field.is_empty(),
                "an empty message in {}",
                stringify!($field)
            );
            items.extend(message.$field);
        }
        items
    }};
}

/// Every `Stream*` RPC answers the same items as its unary list.
async fn stream_lists(client: &mut CriClient) -> anyhow::Result<()> {
    let ids = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();

    let pods = collect_stream!(
        client
            .runtime
            .stream_pod_sandboxes(StreamPodSandboxesRequest::default()),
        pod_sandboxes
    );
    let listed = client.list_pods().await?;
    assert_eq!(listed.len(), 2);
    assert_eq!(
        ids(pods.into_iter().map(|p| p.id).collect()),
        ids(listed.into_iter().map(|p| p.id).collect())
    );

    let containers = collect_stream!(
        client
            .runtime
            .stream_containers(StreamContainersRequest::default()),
        containers
    );
    let listed = client.list_containers().await?;
    assert!(listed.len() >= 4, "{listed:?}");
    assert_eq!(
        ids(containers.into_iter().map(|c| c.id).collect()),
        ids(listed.into_iter().map(|c| c.id).collect())
    );

    let stats = collect_stream!(
        client
            .runtime
            .stream_container_stats(StreamContainerStatsRequest::default()),
        container_stats
    );
    let listed = client
        .runtime
        .list_container_stats(ListContainerStatsRequest::default())
        .await?
        .into_inner()
        .stats;
    let stat_ids = |v: &[crisp_tests::cri::ContainerStats]| {
        ids(v
            .iter()
            .filter_map(|s| s.attributes.as_ref().map(|a| a.id.clone()))
            .collect())
    };
    assert!(!listed.is_empty());
    assert_eq!(stat_ids(&stats), stat_ids(&listed));

    let pod_stats = collect_stream!(
        client
            .runtime
            .stream_pod_sandbox_stats(StreamPodSandboxStatsRequest::default()),
        pod_sandbox_stats
    );
    let listed = client
        .runtime
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
        .await?
        .into_inner()
        .stats;
    assert_eq!(pod_stats.len(), listed.len());
    assert_eq!(pod_stats.len(), 2);

    let metrics = collect_stream!(
        client
            .runtime
            .stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest::default()),
        pod_sandbox_metrics
    );
    let listed = client
        .runtime
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest::default())
        .await?
        .into_inner()
        .pod_metrics;
    assert_eq!(
        ids(metrics.into_iter().map(|m| m.pod_sandbox_id).collect()),
        ids(listed.into_iter().map(|m| m.pod_sandbox_id).collect())
    );

    let images = collect_stream!(
        client.image.stream_images(StreamImagesRequest::default()),
        images
    );
    let listed = client
        .image
        .list_images(ListImagesRequest::default())
        .await?
        .into_inner()
        .images;
    assert!(!listed.is_empty());
    assert_eq!(
        ids(images.into_iter().map(|i| i.id).collect()),
        ids(listed.into_iter().map(|i| i.id).collect())
    );
    Ok(())
}

/// What kubelet reads from Status to decide which pods it may place here.
async fn features(client: &mut CriClient) -> anyhow::Result<()> {
    let status = client.status().await?;
    let features = status.features.context("Status without features")?;
    assert!(features.supplemental_groups_policy);
    // RunPodSandbox refuses a user namespace with the host's network.
    assert!(!features.user_namespaces_host_network);
    Ok(())
}
