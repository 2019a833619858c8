//! port-forward over SPDY, WebSocket, and SPDY-in-WebSocket.

use std::time::Duration;

use bytes::Bytes;
use crisp_cri_api::v1::PortForwardRequest;
use crisp_streaming::spdy::{self, Headers, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{self, T};
use crate::fake;

fn pf(ports: Vec<i32>) -> PortForwardRequest {
    PortForwardRequest {
        pod_sandbox_id: "pod1".into(),
        port: ports,
    }
}

/// Runs kubectl's per-connection SPDY dance on `conn`: error + data
/// streams sharing a requestID; sends `msg`, returns (data, error text).
async fn spdy_forward(
    conn: &spdy::Connection,
    port: u16,
    req_id: u32,
    msg: &[u8],
) -> (Vec<u8>, String) {
    let h = |t: &str| {
        Headers::new()
            .with("streamType", t)
            .with("port", &port.to_string())
            .with("requestID", &req_id.to_string())
    };
    let mut err = conn.open_stream(h("error"), false).await.unwrap();
    let mut data = conn.open_stream(h("data"), false).await.unwrap();
    data.send.send(Bytes::copy_from_slice(msg)).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    let read = tokio::time::timeout(Duration::from_secs(5), data.recv.read_exact(&mut got)).await;
    data.send.close().await.unwrap();
    let got = match read {
        Ok(Ok(_)) => got,
        _ => Vec::new(),
    };
    let etext = tokio::time::timeout(T, err.recv.read_to_end_limited(4096))
        .await
        .unwrap();
    (got, String::from_utf8_lossy(&etext).into_owned())
}

#[tokio::test]
async fn spdy_round_trip_and_errors() {
    let (srv, fake) = fake::server(Duration::from_secs(60)).await;
    let port = fake::upper_server().await;
    let dead = fake::dead_port().await;
    let url = srv.get_port_forward(pf(vec![])).unwrap();
    let up = client::spdy_upgrade(&url, &["portforward.k8s.io"]).await;
    assert_eq!(up.status, 101);
    assert_eq!(
        up.header("X-Stream-Protocol-Version"),
        Some("portforward.k8s.io")
    );
    let (conn, _acc) = spdy::conn::start(up.tcp, Role::Client);

    // Two concurrent forwarded connections on one SPDY session.
    let big = client::noise(3, 300_000)
        .iter()
        .map(|b| b'a' + b % 26)
        .collect::<Vec<_>>();
    let (a, b) = tokio::join!(
        spdy_forward(&conn, port, 0, b"hello"),
        spdy_forward(&conn, port, 1, &big)
    );
    assert_eq!(a.0, b"HELLO");
    assert_eq!(a.1, "");
    assert_eq!(b.0, big.to_ascii_uppercase());

    // Nothing listening: the error stream says so.
    let (data, etext) = spdy_forward(&conn, dead, 2, b"x").await;
    assert!(data.is_empty());
    assert!(
        etext.contains(&format!("error forwarding port {dead} to pod pod1")),
        "{etext}"
    );
    assert!(fake.events().contains(&format!("portforward pod1 {port}")));
}

#[tokio::test]
async fn spdy_port_not_in_request_is_refused() {
    let (srv, fake) = fake::server(Duration::from_secs(60)).await;
    let port = fake::upper_server().await;
    let url = srv.get_port_forward(pf(vec![1])).unwrap();
    let up = client::spdy_upgrade(&url, &["portforward.k8s.io"]).await;
    let (conn, _acc) = spdy::conn::start(up.tcp, Role::Client);
    let (data, etext) = spdy_forward(&conn, port, 0, b"x").await;
    assert!(data.is_empty());
    assert!(etext.contains("not allowed"), "{etext}");
    assert!(fake.events().is_empty());
}

#[tokio::test]
async fn websocket_round_trip() {
    let (srv, _fake) = fake::server(Duration::from_secs(60)).await;
    let p1 = fake::upper_server().await;
    let p2 = fake::upper_server().await;
    let url = srv.get_port_forward(pf(vec![])).unwrap();
    let up = client::ws_upgrade(
        &format!("{url}?port={p1}&port={p2}"),
        &["portforward.k8s.io"],
    )
    .await;
    assert_eq!(up.status, 101);
    assert_eq!(
        up.header("Sec-WebSocket-Protocol"),
        Some("portforward.k8s.io")
    );
    let mut ws = client::Ws::new(up);
    // First message on each of the four channels: the port, little-endian.
    let mut prefixes = Vec::new();
    for _ in 0..4 {
        prefixes.push(ws.recv().await.unwrap());
    }
    assert!(prefixes.contains(&(0, p1.to_le_bytes().to_vec())));
    assert!(prefixes.contains(&(1, p1.to_le_bytes().to_vec())));
    assert!(prefixes.contains(&(2, p2.to_le_bytes().to_vec())));
    assert!(prefixes.contains(&(3, p2.to_le_bytes().to_vec())));
    ws.send(0, b"first").await;
    ws.send(2, b"second").await;
    let mut got = std::collections::HashMap::<u8, Vec<u8>>::new();
    while got.get(&0).map_or(0, |v| v.len()) < 5 || got.get(&2).map_or(0, |v| v.len()) < 6 {
        let (ch, data) = ws.recv().await.expect("ws closed early");
        got.entry(ch).or_default().extend(data);
    }
    assert_eq!(got[&0], b"FIRST");
    assert_eq!(got[&2], b"SECOND");
}

#[tokio::test]
async fn websocket_requires_ports() {
    let (srv, _fake) = fake::server(Duration::from_secs(60)).await;
    let url = srv.get_port_forward(pf(vec![])).unwrap();
    let up = client::ws_upgrade(&url, &["portforward.k8s.io"]).await;
    assert_eq!(up.status, 400);
}

/// `SPDY/3.1+portforward.k8s.io`: SPDY frames inside WebSocket messages.
#[tokio::test]
async fn spdy_tunnelled_in_websocket() {
    let (srv, _fake) = fake::server(Duration::from_secs(60)).await;
    let port = fake::upper_server().await;
    let url = srv.get_port_forward(pf(vec![])).unwrap();
    let up = client::ws_upgrade(&url, &["SPDY/3.1+portforward.k8s.io"]).await;
    assert_eq!(up.status, 101);
    assert_eq!(
        up.header("Sec-WebSocket-Protocol"),
        Some("SPDY/3.1+portforward.k8s.io")
    );
    // Bridge WebSocket messages to a byte pipe for the SPDY client.
    let (client_side, bridge) = tokio::io::duplex(1 << 16);
    let ws = client::Ws::new(up);
    tokio::spawn(async move {
        let client::Ws { mut rd, mut wr } = ws;
        let (mut br, mut bw) = tokio::io::split(bridge);
        let up = async move {
            let mut buf = vec![0u8; 16384];
            loop {
                match br.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if wr
                            .send(crisp_streaming::ws::Opcode::Binary, &buf[..n])
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        };
        let down = async move {
            while let Ok(Some(crisp_streaming::ws::Message::Binary(b))) = rd.next().await {
                if bw.write_all(&b).await.is_err() {
                    break;
                }
            }
        };
        tokio::join!(up, down);
    });
    let (conn, _acc) = spdy::conn::start(client_side, Role::Client);
    let (data, etext) = spdy_forward(&conn, port, 0, b"tunnel").await;
    assert_eq!(data, b"TUNNEL");
    assert_eq!(etext, "");
}
