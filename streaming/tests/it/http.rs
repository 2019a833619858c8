//! Tokens, request validation, negotiation and hostile input.

use std::time::Duration;

use crisp_cri_api::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use crisp_streaming::StreamingError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{self, ExecReq, T};
use crate::fake;

fn echo_req() -> ExecRequest {
    ExecRequest {
        container_id: "c".into(),
        cmd: vec!["exit".into(), "0".into()],
        stdout: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn validation_mirrors_kubelet() {
    let (srv, _) = fake::server(Duration::from_secs(60)).await;
    let bad = [
        ExecRequest {
            container_id: String::new(),
            ..echo_req()
        },
        ExecRequest {
            cmd: vec![],
            ..echo_req()
        },
        ExecRequest {
            stdout: false,
            ..echo_req()
        },
        ExecRequest {
            tty: true,
            stderr: true,
            ..echo_req()
        },
    ];
    for r in bad {
        assert!(matches!(
            srv.get_exec(r),
            Err(StreamingError::InvalidRequest(_))
        ));
    }
    assert!(srv
        .get_attach(AttachRequest {
            container_id: "c".into(),
            ..Default::default()
        })
        .is_err());
    assert!(srv
        .get_port_forward(PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![70000]
        })
        .is_err());
    assert!(srv
        .get_port_forward(PortForwardRequest {
            pod_sandbox_id: String::new(),
            port: vec![]
        })
        .is_err());
    let url = srv.get_exec(echo_req()).unwrap();
    let addr = srv.local_addr();
    assert!(url.starts_with(&format!("http://{addr}/exec/")), "{url}");
    assert_eq!(url.rsplit('/').next().unwrap().len(), 43);
}

#[tokio::test]
async fn bad_reused_expired_and_mismatched_tokens_are_refused() {
    let (srv, fake) = fake::server(Duration::from_millis(300)).await;
    let base = format!("http://{}", srv.local_addr());

    let up =
        client::spdy_upgrade(&format!("{base}/exec/not-a-token"), &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 404);

    let url = srv.get_exec(echo_req()).unwrap();
    let up = client::spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 101);
    let out = client::spdy_exec(
        up,
        ExecReq {
            stdout: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(out.status()["status"], "Success");
    let up = client::spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 404, "token reused");

    let url = srv.get_exec(echo_req()).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let up = client::spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 404, "expired token accepted");

    // An exec token presented at /attach is consumed and refused.
    let url = srv.get_exec(echo_req()).unwrap();
    let wrong = url.replace("/exec/", "/attach/");
    assert_eq!(
        client::spdy_upgrade(&wrong, &["v4.channel.k8s.io"])
            .await
            .status,
        400
    );
    assert_eq!(
        client::spdy_upgrade(&url, &["v4.channel.k8s.io"])
            .await
            .status,
        404
    );

    // Without upgrade headers: 400, nothing runs.
    let url = srv.get_exec(echo_req()).unwrap();
    assert_eq!(client::request(&url, "GET", &[]).await.status, 400);

    assert_eq!(
        fake.events()
            .iter()
            .filter(|e| e.starts_with("exec "))
            .count(),
        1,
        "only the one good exec ran: {:?}",
        fake.events()
    );
}

#[tokio::test]
async fn negotiation_picks_newest_offered() {
    let (srv, _) = fake::server(Duration::from_secs(60)).await;

    // Repeated headers and comma lists, oldest first.
    let url = srv.get_exec(echo_req()).unwrap();
    let up = client::request(
        &url,
        "POST",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "channel.k8s.io"),
            (
                "X-Stream-Protocol-Version",
                "v2.channel.k8s.io, v3.channel.k8s.io",
            ),
            ("X-Stream-Protocol-Version", "v5.channel.k8s.io"),
        ],
    )
    .await;
    assert_eq!(up.status, 101);
    assert_eq!(
        up.header("X-Stream-Protocol-Version"),
        Some("v3.channel.k8s.io")
    );

    // Nothing we speak: 403 listing what we do.
    let url = srv.get_exec(echo_req()).unwrap();
    let up = client::spdy_upgrade(&url, &["v9.channel.k8s.io"]).await;
    assert_eq!(up.status, 403);
    assert!(up.header("X-Accepted-Stream-Protocol-Versions").is_some());

    // WebSocket: newest wins regardless of offer order.
    let url = srv.get_exec(echo_req()).unwrap();
    let up = client::ws_upgrade(
        &url,
        &["channel.k8s.io", "v4.channel.k8s.io", "v5.channel.k8s.io"],
    )
    .await;
    assert_eq!(
        up.header("Sec-WebSocket-Protocol"),
        Some("v5.channel.k8s.io")
    );

    let url = srv.get_exec(echo_req()).unwrap();
    let up = client::ws_upgrade(&url, &["bogus.k8s.io"]).await;
    assert_eq!(up.status, 403);
}

/// Garbage after a SPDY or WebSocket upgrade must close that connection
/// without disturbing the server.
#[tokio::test]
async fn malformed_frames_close_connection() {
    let (srv, fake) = fake::server(Duration::from_secs(60)).await;
    // (bytes, then half-close?). Random noise may look like the start of a
    // huge frame, so those are followed by EOF; the structured ones are
    // outright protocol errors and must close the connection by themselves.
    let mut inputs: Vec<(Vec<u8>, bool)> = (0..24)
        .map(|i| (client::noise(i + 1, 64 + (i as usize) * 97), true))
        .collect();
    // Huge SYN_STREAM length, then EOF mid-frame.
    inputs.push((vec![0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff], true));
    // SPDY/2 frame.
    inputs.push((
        vec![0x80, 2, 0, 1, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
        false,
    ));
    // SYN_STREAM whose header block is not zlib.
    inputs.push((
        [
            vec![0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            b"junk".to_vec(),
        ]
        .concat(),
        false,
    ));
    // SETTINGS claiming 2^32-1 entries.
    inputs.push((
        vec![0x80, 3, 0, 4, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
        false,
    ));
    // Client-initiated stream with an even (server) id.
    inputs.push((
        vec![0x80, 3, 0, 1, 0, 0, 0, 10, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0],
        false,
    ));
    // PING with a bad length.
    inputs.push((vec![0x80, 3, 0, 6, 0, 0, 0, 2, 0, 0], false));
    for (i, (garbage, half_close)) in inputs.iter().enumerate() {
        for ws in [false, true] {
            let url = srv.get_exec(echo_req()).unwrap();
            let up = if ws {
                client::ws_upgrade(&url, &["v5.channel.k8s.io"]).await
            } else {
                client::spdy_upgrade(&url, &["v4.channel.k8s.io"]).await
            };
            assert_eq!(up.status, 101);
            let mut tcp = up.tcp;
            let _ = tcp.write_all(garbage).await;
            if *half_close {
                let _ = tcp.shutdown().await;
            }
            let mut sink = vec![0u8; 65536];
            let ended = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match tcp.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(
                ended.is_ok(),
                "input {i} (ws={ws}) did not close the connection"
            );
        }
    }
    // Still serving.
    let url = srv.get_exec(echo_req()).unwrap();
    let up = client::spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;
    let out = client::spdy_exec(
        up,
        ExecReq {
            stdout: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(out.status()["status"], "Success");
    drop(fake);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let (srv, _) = fake::server(Duration::from_secs(60)).await;
    let addr = srv.local_addr();
    srv.shutdown().await;
    assert!(matches!(
        srv.get_exec(echo_req()),
        Err(StreamingError::ShutDown)
    ));
    let r = tokio::time::timeout(T, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    assert!(r.is_err(), "listener still open");
}
