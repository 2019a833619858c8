//! exec/attach over SPDY and WebSocket.

use std::time::Duration;

use crisp_cri_api::v1::{AttachRequest, ExecRequest};
use crisp_streaming::TermSize;

use crate::client::{self, ExecReq, T};
use crate::fake;

fn exec_req(cmd: &[&str], stdin: bool, stdout: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        audit_request_id: String::new(),
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout,
        stderr,
    }
}

const SPDY_ALL: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

#[tokio::test]
async fn spdy_v4_exit_codes_and_separate_stderr() {
    let (srv, fake) = fake::server(Duration::from_secs(60)).await;
    for code in [0, 3] {
        let url = srv
            .get_exec(exec_req(
                &["exit", &code.to_string()],
                false,
                true,
                true,
                false,
            ))
            .unwrap();
        let up = client::spdy_upgrade(&url, SPDY_ALL).await;
        assert_eq!(up.status, 101);
        assert_eq!(
            up.header("X-Stream-Protocol-Version"),
            Some("v4.channel.k8s.io")
        );
        let out = client::spdy_exec(
            up,
            ExecReq {
                stdout: true,
                stderr: true,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(out.stdout, b"out");
        assert_eq!(out.stderr, b"err");
        let st = out.status();
        if code == 0 {
            assert_eq!(st, serde_json::json!({"metadata": {}, "status": "Success"}));
        } else {
            assert_eq!(st["status"], "Failure");
            assert_eq!(st["reason"], "NonZeroExitCode");
            assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode");
            assert_eq!(st["details"]["causes"][0]["message"], "3");
        }
    }
    assert!(fake
        .events()
        .contains(&"exec c1 exit 3 tty=false".to_string()));
}

#[tokio::test]
async fn spdy_runtime_error_is_internal_failure() {
    let (srv, _fake) = fake::server(Duration::from_secs(60)).await;
    let url = srv
        .get_exec(exec_req(&["fail"], false, true, false, false))
        .unwrap();
    let up = client::spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;
    let out = client::spdy_exec(
        up,
        ExecReq {
            stdout: true,
            ..Default::default()
        },
    )
    .await;
    let st = out.status();
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["reason"], "InternalError");
    assert!(st["message"].as_str().unwrap().contains("boom"));
}

#[tokio::test]
async fn spdy_legacy_versions_report_text_only_on_failure() {
    let (srv, _fake) = fake::server(Duration::from_secs(60)).await;
    for (proto, code) in [
        ("v2.channel.k8s.io", 0),
        ("v2.channel.k8s.io", 5),
        ("channel.k8s.io", 5),
    ] {
        let url = srv
            .get_exec(exec_req(
                &["exit", &code.to_string()],
                false,
                true,
                false,
                false,
            ))
            .unwrap();
        let up = client::spdy_upgrade(&url, &[proto]).await;
        assert_eq!(up.header("X-Stream-Protocol-Version"), Some(proto));
        let out = client::spdy_exec(
            up,
            ExecReq {
                stdout: true,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(out.stdout, b"out");
        if code == 0 {
            assert!(out.error.is_empty());
        } else {
            let text = String::from_utf8(out.error).unwrap();
            assert!(text.contains("non-zero exit code"), "{text}");
        }
    }
}

async fn spdy_round_trip(flow_control: bool) {
    let (srv, fake) = fake::server(Duration::from_secs(60)).await;
    let payload = client::noise(7, 10 * 1024 * 1024);
    let url = srv
        .get_exec(exec_req(&["echo", "0"], true, true, false, false))
        .unwrap();
    let up = client::spdy_upgrade(&url, SPDY_ALL).await;
    let out = client::spdy_exec(
        up,
        ExecReq {
            stdin: Some(payload.clone()),
            stdout: true,
            flow_control,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(out.stdout.len(), payload.len());
    assert!(out.stdout == payload, "payload corrupted");
    assert_eq!(out.status()["status"], "Success");
    assert!(fake.wait_for(&format!("echo-done {}", payload.len())).await);
}

/// A window-honouring client (sends SETTINGS, so both sides pace on
/// WINDOW_UPDATE) moves 10 MB through stdin and back.
#[tokio::test]
async fn spdy_10mb_round_trip_with_flow_control() {
    spdy_round_trip(true).await;
}

/// spdystream-style client that never announces flow control.
#[tokio::test]
async fn spdy_10mb_round_trip_without_flow_control() {
    spdy_round_trip(false).await;
}

#[tokio::test]
async fn spdy_tty_resize_delivered() {
    let (srv, fake) = fake::server(Duration::from_secs(60)).await;
    let url = srv
        .get_exec(exec_req(&["resize", "2"], false, true, false, true))
        .unwrap();
    let up = client::spdy_upgrade(&url, SPDY_ALL).await;
    let out = client::spdy_exec(
        up,
        ExecReq {
            stdout: true,
            tty: true,
            resizes: vec![
                TermSize {
                    width: 80,
                    height: 24,
                },
                TermSize {
                    width: 132,
                    height: 43,
                },
            ],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(out.stdout, b"80x24\n132x43\n");
    assert_eq!(out.status()["status"], "Success");
    assert!(fake.events().contains(&"resize 132x43".to_string()));
}

#[tokio::test]
async fn spdy_attach_echoes() {
    let (srv, fake) = fake::server(Duration::from_secs(60)).await;
    let url = srv
        .get_attach(AttachRequest {
            container_id: "c2".into(),
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .unwrap();
    assert!(url.contains("/attach/"));
    let up = client::spdy_upgrade(&url, SPDY_ALL).await;
    let out = client::spdy_exec(
        up,
        ExecReq {
            stdin: Some(b"hello attach".to_vec()),
            stdout: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(out.stdout, b"hello attach");
    assert_eq!(out.status()["status"], "Success");
    assert!(fake.events().contains(&"attach c2 tty=false".to_string()));
}

#[tokio::test]
async fn ws_v5_exit_codes() {
    let (srv, _fake) = fake::server(Duration::from_secs(60)).await;
    for code in [0, 42] {
        let url = srv
            .get_exec(exec_req(
                &["exit", &code.to_string()],
                false,
                true,
                true,
                false,
            ))
            .unwrap();
        let up = client::ws_upgrade(&url, &["v4.channel.k8s.io", "v5.channel.k8s.io"]).await;
        assert_eq!(up.status, 101);
        assert_eq!(
            up.header("Sec-WebSocket-Protocol"),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(
            up.header("Sec-WebSocket-Accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        let out = client::ws_exec(up, ExecReq::default(), true).await;
        assert_eq!(out.stdout, b"out");
        assert_eq!(out.stderr, b"err");
        let st = out.status();
        if code == 0 {
            assert_eq!(st["status"], "Success");
        } else {
            assert_eq!(st["reason"], "NonZeroExitCode");
            assert_eq!(st["details"]["causes"][0]["message"], "42");
        }
    }
}

/// 10 MB through stdin and back; stdin EOF arrives via the v5 close signal
/// while the socket stays open (the status must still come back).
#[tokio::test]
async fn ws_v5_10mb_round_trip_and_stdin_close_signal() {
    let (srv, fake) = fake::server(Duration::from_secs(60)).await;
    let payload = client::noise(11, 10 * 1024 * 1024);
    let url = srv
        .get_exec(exec_req(&["echo", "7"], true, true, false, false))
        .unwrap();
    let up = client::ws_upgrade(&url, &["v5.channel.k8s.io"]).await;
    let out = client::ws_exec(
        up,
        ExecReq {
            stdin: Some(payload.clone()),
            ..Default::default()
        },
        true,
    )
    .await;
    assert_eq!(out.stdout.len(), payload.len());
    assert!(out.stdout == payload, "payload corrupted");
    assert_eq!(out.status()["details"]["causes"][0]["message"], "7");
    assert!(fake.wait_for(&format!("echo-done {}", payload.len())).await);
}

#[tokio::test]
async fn ws_tty_resize_delivered() {
    let (srv, _fake) = fake::server(Duration::from_secs(60)).await;
    let url = srv
        .get_exec(exec_req(&["resize", "1"], false, true, false, true))
        .unwrap();
    let up = client::ws_upgrade(&url, &["v5.channel.k8s.io"]).await;
    let out = client::ws_exec(
        up,
        ExecReq {
            resizes: vec![TermSize {
                width: 100,
                height: 30,
            }],
            ..Default::default()
        },
        true,
    )
    .await;
    assert_eq!(out.stdout, b"100x30\n");
    assert_eq!(out.status()["status"], "Success");
}

#[tokio::test]
async fn ws_base64_protocol() {
    use crisp_streaming::ws::{Message, MessageReader};
    let (srv, _fake) = fake::server(Duration::from_secs(60)).await;
    let url = srv
        .get_exec(exec_req(&["exit", "0"], false, true, false, false))
        .unwrap();
    let up = client::ws_upgrade(&url, &["v4.base64.channel.k8s.io"]).await;
    assert_eq!(
        up.header("Sec-WebSocket-Protocol"),
        Some("v4.base64.channel.k8s.io")
    );
    let mut rd = MessageReader::new(up.tcp, 1 << 20, false);
    let mut got = Vec::new();
    while let Ok(Some(Message::Text(t))) = tokio::time::timeout(T, rd.next()).await.unwrap() {
        got.push(String::from_utf8(t.to_vec()).unwrap());
    }
    // "out" on channel 1, then the Success status on channel 3.
    assert_eq!(got[0], "1b3V0");
    assert!(got[1].starts_with('3'));
}

/// The client vanishes mid-exec: the server drops the runtime's exec call (so the runtime can
/// stop the abandoned process) instead of leaving it pinned (SPDY and WebSocket).
#[tokio::test]
async fn disconnect_mid_exec_finishes_runtime() {
    let (srv, fake) = fake::server(Duration::from_secs(60)).await;

    let url = srv
        .get_exec(exec_req(&["echo"], true, true, false, false))
        .unwrap();
    let up = client::spdy_upgrade(&url, SPDY_ALL).await;
    {
        use crisp_streaming::spdy::{self, Headers, Role};
        let (conn, _acc) = spdy::conn::start(up.tcp, Role::Client);
        let mut streams = Vec::new();
        for t in ["error", "stdin", "stdout"] {
            streams.push(
                conn.open_stream(Headers::new().with("streamtype", t), false)
                    .await
                    .unwrap(),
            );
        }
        streams[1]
            .send
            .send(bytes::Bytes::from_static(b"partial"))
            .await
            .unwrap();
        let mut out = [0u8; 7];
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(T, streams[2].recv.read_exact(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&out, b"partial");
        // Dropping everything closes the TCP connection without FINs.
    }
    assert!(
        fake.wait_for("echo-ended").await,
        "events: {:?}",
        fake.events()
    );

    let url = srv
        .get_exec(exec_req(&["spew"], false, true, false, false))
        .unwrap();
    let up = client::ws_upgrade(&url, &["v5.channel.k8s.io"]).await;
    let mut ws = client::Ws::new(up);
    assert_eq!(ws.recv().await.map(|m| m.0), Some(1));
    drop(ws);
    assert!(
        fake.wait_for("spew-ended").await,
        "events: {:?}",
        fake.events()
    );
}
