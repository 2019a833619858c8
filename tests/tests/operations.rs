//! Operating crispd: Prometheus metrics that answer and move (CRI calls, objects, a registry
//! pull), JSON log lines, and a log level changed by SIGHUP without a restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crisp_tests::cri::ContainerStatusRequest;
use crisp_tests::{require_root, wait_until, Crispd, TestPod, BUSYBOX};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations() {
    if !require_root() {
        return;
    }
    let mut crispd = Crispd::start().await.expect("starting crispd");
    let result = check(&mut crispd).await;
    crispd.expect_ok(result);
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn scrape(port: u16) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    anyhow::ensure!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    Ok(out)
}

/// The value of the sample line starting with `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Lines of crispd's log after the last restart marker.
fn log_since_start(crispd: &Crispd) -> String {
    let log = crispd.crispd_log();
    log.rsplit("==== crisp-tests: starting crispd ====")
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn check(crispd: &mut Crispd) -> anyhow::Result<()> {
    let port = free_port()?;
    crispd.stop().await?;
    crispd
        .restart_with_config(
            "log_level = \"info\"\nlog_format = \"json\"",
            &format!("[metrics]\naddr = \"127.0.0.1:{port}\""),
            None,
        )
        .await?;

    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "ops").await?;
    let id = pod
        .start_container(&mut client, "c", &["sleep", "1000"])
        .await?;
    let missing = client
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: "no-such-container".into(),
            verbose: false,
        })
        .await;
    anyhow::ensure!(missing.is_err(), "status of a missing container succeeded");

    // A pull from a registry (on loopback, started here) counts in the pull metrics.
    let registry = crisp_tests::TestRegistry::start()?;
    registry.push(
        &format!("oci:{}:latest", crisp_tests::busybox_layout().display()),
        "metrics:v1",
        &[],
    )?;
    client
        .pull(&format!("{}/metrics:v1", registry.host()))
        .await?;

    let text = tokio::task::spawn_blocking(move || scrape(port)).await??;
    for (series, at_least) in [
        (
            r#"crisp_cri_requests_total{method="RunPodSandbox",code="OK"}"#,
            1.0,
        ),
        (
            r#"crisp_cri_requests_total{method="ContainerStatus",code="NotFound"}"#,
            1.0,
        ),
        (
            r#"crisp_cri_request_duration_seconds_count{method="StartContainer"}"#,
            1.0,
        ),
        (r#"crisp_pods{state="ready"}"#, 1.0),
        (r#"crisp_containers{state="running"}"#, 1.0),
        ("crisp_shims", 1.0),
        ("crisp_image_pulls_total", 1.0),
        ("crisp_image_pull_bytes_total", 100_000.0),
        ("crisp_image_pull_duration_seconds_count", 1.0),
    ] {
        let v = sample(&text, series);
        assert!(
            v.is_some_and(|v| v >= at_least),
            "{series} = {v:?} in:\n{text}"
        );
    }

    // JSON lines: every line crispd wrote since this start is one JSON object.
    let log = log_since_start(crispd);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    anyhow::ensure!(!lines.is_empty(), "crispd logged nothing");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l)
            .map_err(|e| anyhow::anyhow!("not a JSON log line ({e}): {l}"))?;
        anyhow::ensure!(v.get("level").is_some(), "no level in {l}");
    }
    anyhow::ensure!(
        !log.contains("\"level\":\"DEBUG\""),
        "debug lines at level info"
    );

    // SIGHUP with log_level = "debug" in the file: debug lines appear without a restart.
    let config = std::fs::read_to_string(crispd.config_path())?;
    std::fs::write(
        crispd.config_path(),
        config.replace("log_level = \"info\"", "log_level = \"debug\""),
    )?;
    let pid = crispd
        .pid()
        .ok_or_else(|| anyhow::anyhow!("crispd not running"))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )?;
    wait_until("the new log level", Duration::from_secs(10), || {
        log_since_start(crispd)
            .contains("log level changed")
            .then_some(())
    })
    .await?;
    client.container_status(&id).await?;
    wait_until("a debug line", Duration::from_secs(10), || {
        log_since_start(crispd)
            .contains("\"level\":\"DEBUG\"")
            .then_some(())
    })
    .await?;

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
