//! A pod's whole life through the CRI: run, inspect, list with filters, run
//! containers to completion, read their logs, stop, remove, and leave nothing
//! behind.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use crisp_tests::cri::{
    ContainerFilter, ContainerState, ContainerStateValue, DnsConfig, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    RemoveContainerRequest, RemovePodSandboxRequest, StopPodSandboxRequest,
};
use crisp_tests::{
    crispd_test, expect_code, parse_cri_log, wait_for_file, CriClient, Crispd, TestPod, BUSYBOX,
};

const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
const LOG_TIMEOUT: Duration = Duration::from_secs(5);
const HOSTNAME: &str = "lifecycle-host";

crispd_test!(pod_lifecycle, check);

/// A container's writable overlay is mounted `volatile` (every kernel crisp supports takes
/// it): its last unmount, at the container's stop, must not sync the whole filesystem under
/// crisp's root.
fn check_rootfs_is_volatile(crispd: &Crispd, id: &str) -> anyhow::Result<()> {
    let rootfs = crispd
        .state()
        .join("containers")
        .join(id)
        .join("bundle/rootfs");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    // "id parent dev root mountpoint opts ... - fstype source superopts"
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(&rootfs.display().to_string()))
        .with_context(|| format!("no mount at {}", rootfs.display()))?;
    let superopts = line.rsplit(' ').next().unwrap_or_default();
    anyhow::ensure!(
        // Kernels before 6.7 list `volatile`, later ones `fsync=volatile`.
        superopts
            .split(',')
            .any(|o| o == "volatile" || o == "fsync=volatile"),
        "rootfs overlay not volatile: {line}"
    );
    Ok(())
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;

    let mut config = TestPod::new_config(crispd, "lifecycle")?;
    config.hostname = HOSTNAME.to_string();
    config.dns_config = Some(DnsConfig {
        servers: vec!["10.0.0.10".to_string()],
        searches: vec!["svc.local".to_string()],
        options: Vec::new(),
    });
    config.labels = labels("app", "lifecycle");
    let pod = TestPod::run(&mut client, config).await?;
    check_pod_status(&mut client, &pod).await?;

    let mut other_config = TestPod::new_config(crispd, "other")?;
    other_config.labels = labels("app", "other");
    let other = TestPod::run(&mut client, other_config).await?;
    check_pod_filters(&mut client, &pod, &other).await?;

    let failing = check_failing_container(&mut client, &pod).await?;
    let completed = check_pod_environment(&mut client, &pod).await?;
    let sleeper = pod
        .create(
            &mut client,
            with_labels(
                pod.container("sleeper", &["sleep", "1000"])?,
                "role",
                "sleeper",
            ),
        )
        .await?;
    client.start_container(&sleeper).await?;
    check_rootfs_is_volatile(crispd, &sleeper)?;
    check_container_filters(&mut client, &pod, &failing, &completed, &sleeper).await?;

    client
        .runtime
        .remove_container(RemoveContainerRequest {
            container_id: failing.clone(),
        })
        .await?;
    let remaining = list_containers(&mut client, pod_filter(&pod.id)).await?;
    assert!(
        !remaining.contains(&failing),
        "removed container still listed"
    );
    expect_code(
        client
            .runtime
            .container_status(status_request(&failing))
            .await,
        tonic::Code::NotFound,
        "ContainerStatus of a removed container",
    )?;

    client
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await?;
    let stopped = client.pod_status(&pod.id).await?;
    assert_eq!(stopped.state(), PodSandboxState::SandboxNotready);
    let sleeper_status = client.container_status(&sleeper).await?;
    assert_eq!(sleeper_status.state(), ContainerState::ContainerExited);

    for id in [&pod.id, &other.id] {
        client
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
    }
    let pods = list_pods(&mut client, None).await?;
    assert!(pods.is_empty(), "pods left after removal: {pods:?}");
    let containers = list_containers(&mut client, None).await?;
    assert!(containers.is_empty(), "containers left: {containers:?}");
    crispd.assert_no_leaks();
    Ok(())
}

async fn check_pod_status(client: &mut CriClient, pod: &TestPod) -> anyhow::Result<()> {
    let status = client.pod_status(&pod.id).await?;
    assert_eq!(status.id, pod.id);
    assert_eq!(status.state(), PodSandboxState::SandboxReady);
    assert_eq!(status.metadata, pod.config.metadata);
    assert!(status.created_at > 0, "created_at {}", status.created_at);
    assert_eq!(status.labels, pod.config.labels);
    Ok(())
}

async fn check_pod_filters(
    client: &mut CriClient,
    pod: &TestPod,
    other: &TestPod,
) -> anyhow::Result<()> {
    let all = list_pods(client, None).await?;
    assert_eq!(sorted(all), sorted(vec![pod.id.clone(), other.id.clone()]));

    // kubelet and crictl accept a unique id prefix.
    let prefix = pod.id.get(..12).unwrap_or(&pod.id).to_string();
    let by_id = list_pods(
        client,
        Some(PodSandboxFilter {
            id: prefix,
            ..Default::default()
        }),
    )
    .await?;
    assert_eq!(by_id, vec![pod.id.clone()], "filter by id prefix");

    let by_label = list_pods(
        client,
        Some(PodSandboxFilter {
            label_selector: labels("app", "other"),
            ..Default::default()
        }),
    )
    .await?;
    assert_eq!(by_label, vec![other.id.clone()], "filter by label");

    let ready = list_pods(client, Some(state_filter(PodSandboxState::SandboxReady))).await?;
    assert_eq!(
        sorted(ready),
        sorted(vec![pod.id.clone(), other.id.clone()])
    );

    client
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: other.id.clone(),
        })
        .await?;
    let ready = list_pods(client, Some(state_filter(PodSandboxState::SandboxReady))).await?;
    assert_eq!(ready, vec![pod.id.clone()], "READY after stopping one pod");
    let not_ready = list_pods(client, Some(state_filter(PodSandboxState::SandboxNotready))).await?;
    assert_eq!(
        not_ready,
        vec![other.id.clone()],
        "NOTREADY after stopping it"
    );
    Ok(())
}

/// A container that writes to both streams and fails: state transitions,
/// timestamps, exit code, reason, and the exact CRI log.
async fn check_failing_container(client: &mut CriClient, pod: &TestPod) -> anyhow::Result<String> {
    let script = "for i in 1 2 3; do echo line$i; done; echo err >&2; exit 3";
    let config = with_labels(
        pod.container("failing", &["sh", "-c", script])?,
        "role",
        "failing",
    );
    let id = pod.create(client, config).await?;
    let created = client.container_status(&id).await?;
    assert_eq!(created.state(), ContainerState::ContainerCreated);
    assert!(created.created_at > 0);

    client.start_container(&id).await?;
    let exited = client.wait_exited(&id, EXIT_TIMEOUT).await?;
    assert_eq!(exited.exit_code, 3, "{exited:?}");
    assert_eq!(exited.reason, "Error");
    assert!(exited.started_at >= exited.created_at, "{exited:?}");
    assert!(exited.finished_at >= exited.started_at, "{exited:?}");
    assert!(exited.started_at > 0, "{exited:?}");

    let log = wait_for_file(&pod.log_file("failing"), LOG_TIMEOUT, |log| {
        log.lines().count() >= 4
    })
    .await?;
    let lines = parse_cri_log(&log).map_err(anyhow::Error::msg)?;
    let stream = |name: &str| -> Vec<&str> {
        lines
            .iter()
            .filter(|line| line.stream == name)
            .map(|line| line.content)
            .collect()
    };
    assert_eq!(stream("stdout"), ["line1", "line2", "line3"], "log:\n{log}");
    assert_eq!(stream("stderr"), ["err"], "log:\n{log}");
    assert!(lines.iter().all(|line| line.tag == "F"), "log:\n{log}");
    Ok(id)
}

/// A container that succeeds and shows what the pod gave it: hostname and
/// DNS settings.
async fn check_pod_environment(client: &mut CriClient, pod: &TestPod) -> anyhow::Result<String> {
    let id = pod
        .start_container(
            client,
            "environment",
            &["sh", "-c", "cat /etc/resolv.conf; hostname"],
        )
        .await?;
    let exited = client.wait_exited(&id, EXIT_TIMEOUT).await?;
    assert_eq!(exited.exit_code, 0, "{exited:?}");
    assert_eq!(exited.reason, "Completed");

    let log = wait_for_file(&pod.log_file("environment"), LOG_TIMEOUT, |log| {
        log.contains(HOSTNAME)
    })
    .await?;
    let lines = parse_cri_log(&log).map_err(anyhow::Error::msg)?;
    let contents: Vec<&str> = lines.iter().map(|line| line.content).collect();
    assert!(
        contents.iter().any(|c| c.trim() == "nameserver 10.0.0.10"),
        "log:\n{log}"
    );
    assert!(
        contents.iter().any(|c| c.trim() == "search svc.local"),
        "log:\n{log}"
    );
    assert_eq!(contents.last().copied(), Some(HOSTNAME), "log:\n{log}");
    Ok(id)
}

async fn check_container_filters(
    client: &mut CriClient,
    pod: &TestPod,
    failing: &str,
    completed: &str,
    sleeper: &str,
) -> anyhow::Result<()> {
    let in_pod = list_containers(client, pod_filter(&pod.id)).await?;
    assert_eq!(
        sorted(in_pod),
        sorted(vec![failing.into(), completed.into(), sleeper.into()])
    );

    let running = list_containers(
        client,
        Some(ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning.into(),
            }),
            ..Default::default()
        }),
    )
    .await?;
    assert_eq!(running, vec![sleeper.to_string()], "filter by state");

    let exited = list_containers(
        client,
        Some(ContainerFilter {
            pod_sandbox_id: pod.id.clone(),
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerExited.into(),
            }),
            ..Default::default()
        }),
    )
    .await?;
    assert_eq!(
        sorted(exited),
        sorted(vec![failing.into(), completed.into()]),
        "filter by pod and state"
    );

    let by_label = list_containers(
        client,
        Some(ContainerFilter {
            label_selector: labels("role", "sleeper"),
            ..Default::default()
        }),
    )
    .await?;
    assert_eq!(by_label, vec![sleeper.to_string()], "filter by label");

    let prefix = failing.get(..12).unwrap_or(failing).to_string();
    let by_id = list_containers(
        client,
        Some(ContainerFilter {
            id: prefix,
            ..Default::default()
        }),
    )
    .await?;
    assert_eq!(by_id, vec![failing.to_string()], "filter by id prefix");

    let elsewhere = list_containers(client, pod_filter("nosuch")).await?;
    assert!(
        elsewhere.is_empty(),
        "unknown pod filter matched {elsewhere:?}"
    );
    Ok(())
}

async fn list_pods(
    client: &mut CriClient,
    filter: Option<PodSandboxFilter>,
) -> anyhow::Result<Vec<String>> {
    let items = client
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter })
        .await?
        .into_inner()
        .items;
    Ok(items.into_iter().map(|pod| pod.id).collect())
}

async fn list_containers(
    client: &mut CriClient,
    filter: Option<ContainerFilter>,
) -> anyhow::Result<Vec<String>> {
    let containers = client
        .runtime
        .list_containers(ListContainersRequest { filter })
        .await
        .context("ListContainers")?
        .into_inner()
        .containers;
    Ok(containers.into_iter().map(|c| c.id).collect())
}

fn pod_filter(pod_id: &str) -> Option<ContainerFilter> {
    Some(ContainerFilter {
        pod_sandbox_id: pod_id.to_string(),
        ..Default::default()
    })
}

fn state_filter(state: PodSandboxState) -> PodSandboxFilter {
    PodSandboxFilter {
        state: Some(PodSandboxStateValue {
            state: state.into(),
        }),
        ..Default::default()
    }
}

fn status_request(id: &str) -> crisp_tests::cri::ContainerStatusRequest {
    crisp_tests::cri::ContainerStatusRequest {
        container_id: id.to_string(),
        verbose: false,
    }
}

fn labels(key: &str, value: &str) -> HashMap<String, String> {
    HashMap::from([(key.to_string(), value.to_string())])
}

fn with_labels(
    mut config: crisp_tests::cri::ContainerConfig,
    key: &str,
    value: &str,
) -> crisp_tests::cri::ContainerConfig {
    config.labels = labels(key, value);
    config
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}
