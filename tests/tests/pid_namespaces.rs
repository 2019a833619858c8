//! Shared PID namespaces: a pod with pid mode POD (`shareProcessNamespace`) gets a pause
//! process as PID 1 and its containers see each other's processes; pid mode TARGET (ephemeral
//! debug containers) joins one container's namespace; stopping the pod ends the pause and
//! everything left in the namespace.

use crisp_tests::cri::{LinuxContainerSecurityContext, NamespaceMode, NamespaceOption};
use crisp_tests::{crispd_test, process_alive, sh, with_sc, Crispd, TestPod, BUSYBOX};

crispd_test!(pid_namespaces, check);

fn pid_mode(mode: NamespaceMode, target: &str) -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: mode as i32,
            target_id: target.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;

    let config = TestPod::shared_pid_config(crispd, "sharedpid")?;
    let pod = TestPod::run(&mut client, config).await?;
    let shared = |name: &str, cmd: &[&str]| -> anyhow::Result<_> {
        Ok(with_sc(
            pod.container(name, cmd)?,
            pid_mode(NamespaceMode::Pod, ""),
        ))
    };
    let a = pod
        .create(&mut client, shared("a", &["sleep", "4343"])?)
        .await?;
    client.start_container(&a).await?;
    let b = pod
        .create(&mut client, shared("b", &["sleep", "3600"])?)
        .await?;
    client.start_container(&b).await?;

    // PID 1 is the pod's pause, and b sees a's process.
    let (_, init) = sh(&mut client, &b, "tr '\\0' ' ' < /proc/1/cmdline").await?;
    assert!(init.contains("pause"), "PID 1 of the pod is {init:?}");
    let (_, ps) = sh(&mut client, &b, "ps -o args").await?;
    assert!(ps.contains("sleep 4343"), "b does not see a: {ps}");

    // TARGET: a debug container in a's namespace sees a's process too.
    let lone = pod
        .start_container(&mut client, "lone", &["sleep", "4444"])
        .await?;
    let debug = with_sc(
        pod.container("debug", &["sleep", "3600"])?,
        pid_mode(NamespaceMode::Target, &lone),
    );
    let debug = pod.create(&mut client, debug).await?;
    client.start_container(&debug).await?;
    let (_, ps) = sh(&mut client, &debug, "ps -o args").await?;
    assert!(
        ps.contains("sleep 4444"),
        "debug does not see its target: {ps}"
    );
    assert!(
        !ps.contains("sleep 4343"),
        "debug sees another namespace: {ps}"
    );

    // A target that does not exist is refused.
    let bad = with_sc(
        pod.container("badtarget", &["true"])?,
        pid_mode(NamespaceMode::Target, "no-such-container"),
    );
    let e = pod.create(&mut client, bad).await.expect_err("bad target");
    assert!(e.to_string().contains("no-such-container"), "{e}");

    // The pause is a host process until the pod stops; stopping kills it.
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(
        crispd.root().join("pods").join(format!("{}.json", pod.id)),
    )?)?;
    let pause = record["pause_pid"].as_i64().unwrap_or_default() as i32;
    assert!(pause > 0 && process_alive(pause), "record: {record}");
    // It lives in the pod's cgroup, where its resources count and where cleanup finds it.
    let cgroup = std::fs::read_to_string(format!("/proc/{pause}/cgroup"))?;
    let pod_cgroup = record["cgroup_parent"].as_str().unwrap_or_default();
    assert!(
        !pod_cgroup.is_empty() && cgroup.contains(pod_cgroup),
        "pause cgroups {cgroup} lack {pod_cgroup}"
    );
    client.stop_and_remove_pod(&pod.id).await?;
    crisp_tests::wait_until(
        "the pause to exit",
        std::time::Duration::from_secs(10),
        || (!process_alive(pause)).then_some(()),
    )
    .await?;
    crispd.assert_no_leaks();
    Ok(())
}
