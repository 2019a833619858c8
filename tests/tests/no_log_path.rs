//! A container created without a log path (crictl and critest create most of theirs so;
//! kubelet always sets one): its output goes to /dev/null, and its creation does not wait on
//! it. Without stdio of its own the container inherited the runtime helper's output pipe, and
//! CreateContainer hung until the shim's deadline.

use std::time::Duration;

use crisp_tests::{crispd_test, sh, Crispd, TestPod, BUSYBOX};

crispd_test!(container_without_log_path, check);

/// Far beyond a create's milliseconds, far below the 30 s the hang took: a bound that tells a
/// hang from a slow machine, not a timing target.
const CREATE_BOUND: Duration = Duration::from_secs(15);

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "nolog").await?;

    let mut quiet = pod.container("quiet", &["sh", "-c", "echo out; echo err >&2; sleep 1000"])?;
    quiet.log_path = String::new();
    let id = tokio::time::timeout(CREATE_BOUND, pod.create(&mut client, quiet))
        .await
        .map_err(|_| anyhow::anyhow!("CreateContainer without a log path hung"))??;
    client.start_container(&id).await?;
    let status = client.container_status(&id).await?;
    assert_eq!(status.log_path, "", "{status:?}");
    // Nothing to read: /dev/null. Output: pipes of the shim's own, which feed attach clients
    // and nothing else (the runtime helper's pipe is what hung the create).
    let (_, stdin) = sh(&mut client, &id, "readlink /proc/1/fd/0").await?;
    assert_eq!(stdin.trim(), "/dev/null");
    let (_, out) = sh(
        &mut client,
        &id,
        "readlink /proc/1/fd/1; readlink /proc/1/fd/2",
    )
    .await?;
    assert!(out.lines().all(|l| l.starts_with("pipe:")), "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        std::fs::read_dir(&pod.log_dir)?.all(|e| e.is_ok_and(|e| e.path().is_dir())),
        "a log file appeared in {}",
        pod.log_dir.display()
    );

    // One that only writes and exits: it must be seen to exit, with its own code.
    let mut done = pod.container("done", &["sh", "-c", "echo bye; exit 3"])?;
    done.log_path = String::new();
    let done = tokio::time::timeout(CREATE_BOUND, pod.create(&mut client, done))
        .await
        .map_err(|_| anyhow::anyhow!("CreateContainer without a log path hung"))??;
    client.start_container(&done).await?;
    let exited = client.wait_exited(&done, Duration::from_secs(20)).await?;
    assert_eq!(exited.exit_code, 3, "{exited:?}");

    // With stdin kept open (attach) and no log either.
    let mut stdin = pod.container("stdin", &["cat"])?;
    stdin.log_path = String::new();
    stdin.stdin = true;
    let stdin = tokio::time::timeout(CREATE_BOUND, pod.create(&mut client, stdin))
        .await
        .map_err(|_| anyhow::anyhow!("CreateContainer with stdin and no log path hung"))??;
    client.start_container(&stdin).await?;
    let (_, out) = sh(&mut client, &stdin, "readlink /proc/1/fd/0").await?;
    assert!(
        out.trim().starts_with("pipe:"),
        "stdin of an attachable container: {out}"
    );

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
