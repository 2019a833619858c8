//! Exec and port-forward through crispd's streaming server, as `crictl --transport websocket`
//! does it: Exec → URL → WebSocket v5; PortForward → URL → `portforward.k8s.io`.

use crisp_tests::cri::{ExecRequest, ExecSyncRequest, PortForwardRequest};
use crisp_tests::{crispd_test, ws_connect, ws_exec, Crispd, TestPod, BUSYBOX};

crispd_test!(streaming, check);

fn exec_req(id: &str, cmd: &[&str], stdin: bool) -> ExecRequest {
    ExecRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: false,
        stdin,
        stdout: true,
        stderr: true,
        ..Default::default()
    }
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "streams").await?;
    let web = pod
        .start_container(
            &mut client,
            "web",
            &["sh", "-c", "mkdir -p /tmp/www && echo forwarded-page > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
        )
        .await?;

    // echo, exit 0.
    let url = client
        .runtime
        .exec(exec_req(&web, &["echo", "hello"], false))
        .await?
        .into_inner()
        .url;
    let r = ws_exec(&url, None).await?;
    assert_eq!(r.stdout, b"hello\n");
    assert_eq!(r.exit_code(), Some(0), "{:?}", r.status);

    // A non-zero exit code and stderr travel back.
    let url = client
        .runtime
        .exec(exec_req(
            &web,
            &["sh", "-c", "echo oops >&2; exit 7"],
            false,
        ))
        .await?
        .into_inner()
        .url;
    let r = ws_exec(&url, None).await?;
    assert_eq!(r.stderr, b"oops\n");
    assert_eq!(r.exit_code(), Some(7), "{:?}", r.status);

    // 10 MB through stdin and back; stdin's close reaches the process as EOF.
    let payload: Vec<u8> = (0..10_000_000u32).map(|i| (i % 251) as u8).collect();
    let url = client
        .runtime
        .exec(exec_req(&web, &["cat"], true))
        .await?
        .into_inner()
        .url;
    let r = ws_exec(&url, Some(payload.clone())).await?;
    assert_eq!(r.stdout.len(), payload.len());
    assert!(r.stdout == payload, "payload corrupted");
    assert_eq!(r.exit_code(), Some(0));

    // A URL is single-use.
    assert!(
        ws_exec(&url, None).await.is_err(),
        "a used token was accepted"
    );

    // Port-forward to the pod's httpd on its loopback (once it listens).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = client
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: web.clone(),
                cmd: vec![
                    "wget".into(),
                    "-qO-".into(),
                    "http://127.0.0.1:8080/".into(),
                ],
                timeout: 5,
            })
            .await?
            .into_inner();
        if r.exit_code == 0 {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "httpd never listened");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let url = client
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![8080],
        })
        .await?
        .into_inner()
        .url;
    let mut conn = ws_connect(&format!("{url}?port=8080"), &["portforward.k8s.io"]).await?;
    conn.send(0, b"GET / HTTP/1.0\r\n\r\n").await?;
    // Each channel's first message starts with the port (2 bytes, little endian).
    let mut data = Vec::new();
    let mut seen_data_channel = false;
    while let Some((ch, msg)) = conn.recv().await? {
        if ch != 0 {
            continue;
        }
        let body = if seen_data_channel {
            &msg[..]
        } else {
            msg.get(2..).unwrap_or_default()
        };
        seen_data_channel = true;
        data.extend_from_slice(body);
        if String::from_utf8_lossy(&data).contains("forwarded-page") {
            break;
        }
    }
    let page = String::from_utf8_lossy(&data).to_string();
    assert!(page.contains("forwarded-page"), "port-forward got {page:?}");

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
