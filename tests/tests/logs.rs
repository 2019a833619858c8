//! Container logs: long lines split into partial (`P`) records, and ReopenContainerLog after
//! kubelet-style rotation (rename, reopen, new lines in the new file).

use std::time::{Duration, Instant};

use crisp_tests::cri::ReopenContainerLogRequest;
use crisp_tests::{crispd_test, parse_cri_log, Crispd, TestPod, BUSYBOX};

crispd_test!(logs, check);

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "logs").await?;

    // A 40000-byte line: two 16 KiB partial records, then the full remainder.
    let long = pod
        .start_container(
            &mut client,
            "long",
            &[
                "sh",
                "-c",
                "head -c 40000 /dev/zero | tr '\\0' x; echo; echo short",
            ],
        )
        .await?;
    client.wait_exited(&long, Duration::from_secs(10)).await?;
    let text = pod.read_log("long");
    let lines = parse_cri_log(&text).map_err(anyhow::Error::msg)?;
    let tags: Vec<&str> = lines.iter().map(|l| l.tag).collect();
    assert_eq!(tags, ["P", "P", "F", "F"], "{tags:?}");
    let joined: String = lines[..3].iter().map(|l| l.content).collect();
    assert_eq!(joined, "x".repeat(40000));
    assert_eq!(lines[3].content, "short");

    // Rotation: rename the file away, ask for a reopen, new lines land in a new file.
    let ticker = pod
        .start_container(
            &mut client,
            "ticker",
            &[
                "sh",
                "-c",
                "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.05; done",
            ],
        )
        .await?;
    let path = pod.log_file("ticker");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 3
    {
        anyhow::ensure!(Instant::now() < deadline, "ticker wrote nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rotated = path.with_extension("log.1");
    std::fs::rename(&path, &rotated)?;
    client
        .runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: ticker.clone(),
        })
        .await?;
    assert!(path.exists(), "no new log file after ReopenContainerLog");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = std::fs::read_to_string(&rotated)?;
    let new = std::fs::read_to_string(&path)?;
    let old_last = parse_cri_log(&old)
        .map_err(anyhow::Error::msg)?
        .last()
        .map(|l| l.content.to_string());
    let new_lines = parse_cri_log(&new).map_err(anyhow::Error::msg)?;
    assert!(new_lines.len() >= 3, "new log: {new}");
    // Nothing lost across the rotation: the new file continues where the old one stopped.
    let n = |s: &str| s.trim_start_matches("tick ").parse::<u64>().unwrap_or(0);
    let last_old = old_last.as_deref().map(n).unwrap_or(0);
    assert_eq!(
        n(new_lines[0].content),
        last_old + 1,
        "gap between {old_last:?} and {:?}",
        new_lines[0].content
    );

    // Not running → the reopen is refused and creates nothing.
    client.wait_exited(&long, Duration::from_secs(1)).await?;
    let e = client
        .runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: long.clone(),
        })
        .await
        .expect_err("reopen of an exited container");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
