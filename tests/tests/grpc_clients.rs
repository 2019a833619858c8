//! gRPC clients of every stack get answers on the unix socket, whatever `:authority` they
//! send: `localhost` (grpc-go >= 1.61, crictl and kubelet >= 1.31), the socket path
//! percent-encoded (grpc-go before, crictl/kubelet <= 1.30), the raw path (gRPC C-core: Python,
//! C++) or none. h2 reset every request of the two path forms with PROTOCOL_ERROR.

use crisp_tests::{crispd_test, unary_call, Crispd, RawAnswer};

crispd_test!(grpc_authority_forms, check);

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let socket = crispd.socket();
    let path = socket.display().to_string();
    let encoded = path.replace('/', "%2F");
    let forms = [
        Some("localhost"),
        Some(encoded.as_str()),
        Some(path.as_str()),
        None,
    ];
    for authority in forms {
        let socket = socket.clone();
        let authority_owned = authority.map(str::to_string);
        let answer = tokio::task::spawn_blocking(move || {
            // VersionRequest { version: "v1" }: field 1, length 2.
            unary_call(
                &socket,
                authority_owned.as_deref(),
                "/runtime.v1.RuntimeService/Version",
                b"\x0a\x02v1",
            )
        })
        .await??;
        match answer {
            RawAnswer::Data(d) if d.windows(5).any(|w| w == b"crisp") => {}
            other => anyhow::bail!("authority {authority:?}: Version answered {other:?}"),
        }
    }
    Ok(())
}
