//! A shim killed with SIGKILL: its container is reported exited with a reason, the container's
//! processes do not outlive it, crispd keeps serving, and removal leaves nothing behind.

use std::time::Duration;

use crisp_tests::{crispd_test, process_alive, Crispd, TestPod, BUSYBOX};

crispd_test!(shim_killed, check);

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "shimkill").await?;
    let victim = pod
        .start_container(&mut client, "victim", &["sleep", "4545"])
        .await?;
    let bystander = pod
        .start_container(&mut client, "bystander", &["sleep", "1000"])
        .await?;
    let container_pid = client.container_status(&victim).await?;
    let shim = crispd.shim_pid(&victim)?;
    let init: i32 = {
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(
            crispd
                .root()
                .join("containers")
                .join(format!("{victim}.json")),
        )?)?;
        rec["pid"].as_i64().unwrap_or_default() as i32
    };
    anyhow::ensure!(init > 0 && process_alive(init), "{container_pid:?}");
    let forkservers = crisp_tests::children_named(shim, "shim-forkserver");
    anyhow::ensure!(forkservers.len() == 1, "shim {shim}: {forkservers:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )?;

    let st = client.wait_exited(&victim, Duration::from_secs(10)).await?;
    assert_ne!(st.exit_code, 0, "{st:?}");
    assert!(!st.reason.is_empty(), "no reason: {st:?}");
    assert!(st.message.contains("shim"), "{st:?}");
    // The container does not run on unsupervised.
    crisp_tests::wait_until(
        "the orphaned container to end",
        Duration::from_secs(10),
        || (!process_alive(init)).then_some(()),
    )
    .await?;
    // Nor does the shim's fork server (it leaves when the shim's end of its socket closes).
    crisp_tests::wait_until("the fork server to end", Duration::from_secs(10), || {
        (!process_alive(forkservers[0])).then_some(())
    })
    .await?;

    // crispd keeps serving, and the other container is untouched.
    let other = client.container_status(&bystander).await?;
    assert_eq!(
        other.state,
        crisp_tests::cri::ContainerState::ContainerRunning as i32
    );
    let c = pod.start_container(&mut client, "after", &["true"]).await?;
    client.wait_exited(&c, Duration::from_secs(10)).await?;

    // A created, never started container whose shim dies (as in a crash mid-create): its
    // init, blocked in the container's cgroup waiting for a start, must not outlive removal.
    let idle = pod
        .create(&mut client, pod.container("idle", &["sleep", "4646"])?)
        .await?;
    let idle_shim = crispd.shim_pid(&idle)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(idle_shim),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    crisp_tests::wait_until(
        "the idle container's shim to be gone",
        Duration::from_secs(10),
        || (!process_alive(idle_shim)).then_some(()),
    )
    .await?;
    client.remove_container(&idle).await?;

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
