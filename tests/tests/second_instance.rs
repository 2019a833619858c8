//! Only one crispd may own a root, and a socket file left by a dead crispd
//! (or anything else at that path) does not stop the next one from serving.

use std::fs::File;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crisp_tests::{require_root, Crispd};

const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_instance() {
    if !require_root() {
        return;
    }
    let mut crispd = Crispd::start().await.expect("starting crispd");
    let result = check(&mut crispd).await;
    crispd.expect_ok(result);
}

async fn check(crispd: &mut Crispd) -> anyhow::Result<()> {
    check_second_refused(crispd).await?;

    // SIGKILL leaves a bound socket file with nobody listening behind it.
    crispd.kill9();
    assert!(crispd.socket().exists(), "no socket file left to test with");
    crispd
        .restart()
        .await
        .context("restart over a dead socket")?;
    crispd.client().await?.version().await?;

    // Anything at the socket path is stale once crispd holds the lock.
    let status = crispd.stop().await?;
    assert!(status.success(), "crispd exited with {status} on SIGTERM");
    let _ = std::fs::remove_file(crispd.socket());
    std::fs::write(crispd.socket(), "not a socket").context("writing a plain file")?;
    crispd
        .restart()
        .await
        .context("restart over a plain file")?;
    crispd.client().await?.version().await?;

    crispd.assert_no_leaks();
    Ok(())
}

async fn check_second_refused(crispd: &Crispd) -> anyhow::Result<()> {
    let socket = crispd.dir().join("second.sock");
    let log_path = crispd.dir().join("second-crispd.log");
    let log = File::create(&log_path)?;
    let mut second = crispd
        .command(&socket)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawning the second crispd")?;

    let started = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait()? {
            break status;
        }
        if started.elapsed() > REFUSAL_TIMEOUT {
            let _ = second.kill();
            let _ = second.wait();
            bail!(
                "a second crispd on the same root still runs after {REFUSAL_TIMEOUT:?}; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let output = std::fs::read_to_string(&log_path)?;
    assert!(!status.success(), "second crispd exited with {status}");
    let lowered = output.to_lowercase();
    assert!(
        lowered.contains("lock") || lowered.contains("already"),
        "second crispd's output does not mention the lock:\n{output}"
    );

    // The first instance is unaffected.
    crispd.client().await?.version().await?;
    Ok(())
}
