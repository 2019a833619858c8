//! Terminals and attach through crispd's streaming server, as `crictl exec -it`,
//! `crictl attach` and `kubectl attach` use them: a TTY exec sees the size the client sends,
//! attach feeds a container's stdin (closing it for `stdin_once`) and streams its output, and
//! a client that disconnects leaves no process behind.

use crisp_tests::cri::{AttachRequest, ExecRequest, ExecSyncRequest};
use crisp_tests::{
    crispd_test, expect_code, ws_connect, ws_exec, ws_exec_with, CriClient, Crispd, TestPod,
    BUSYBOX,
};
use std::time::Duration;

crispd_test!(attach_and_terminals, check);

/// Polls `stty size` until it shows `want` ("rows cols"): the resize travels separately from
/// the process start, so the first reading may predate it.
fn wait_for_size(want: &str) -> String {
    format!(
        "i=0; while [ $i -lt 100 ]; do s=$(stty size); \
         if [ \"$s\" = \"{want}\" ]; then echo size:$s; exit 0; fi; \
         i=$((i+1)); sleep 0.1; done; echo wrong-size:$s; exit 3"
    )
}

/// The streaming URL crispd answers `Exec` with.
async fn exec_url(client: &mut CriClient, req: ExecRequest) -> anyhow::Result<String> {
    Ok(client.runtime.exec(req).await?.into_inner().url)
}

/// The streaming URL for attaching to container `id` with stdin and stdout (and stderr unless
/// `tty`, which merges it into stdout).
async fn attach_url(client: &mut CriClient, id: &str, tty: bool) -> anyhow::Result<String> {
    let req = AttachRequest {
        audit_request_id: String::new(),
        container_id: id.to_string(),
        stdin: true,
        stdout: true,
        stderr: !tty,
        tty,
    };
    Ok(client.runtime.attach(req).await?.into_inner().url)
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "attach").await?;
    let idle = pod
        .start_container(&mut client, "idle", &["sleep", "3600"])
        .await?;

    // TTY exec: the resize reaches the terminal, and output comes back through it.
    let url = exec_url(
        &mut client,
        ExecRequest {
            audit_request_id: String::new(),
            container_id: idle.clone(),
            cmd: vec!["sh".into(), "-c".into(), wait_for_size("40 100")],
            tty: true,
            stdin: false,
            stdout: true,
            stderr: false,
        },
    )
    .await?;
    let r = ws_exec_with(&url, &[(100, 40)], None).await?;
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(out.contains("size:40 100"), "tty exec printed {out:?}");
    assert_eq!(r.exit_code(), Some(0), "{:?}", r.status);

    // TTY exec with stdin: what the client types arrives (through the terminal's line
    // discipline), and closing stdin is the terminal's end of input.
    let url = exec_url(
        &mut client,
        ExecRequest {
            audit_request_id: String::new(),
            container_id: idle.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "read x; echo got:$x; cat; echo eof".into(),
            ],
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        },
    )
    .await?;
    let r = ws_exec_with(&url, &[(80, 24)], Some(b"typed\n".to_vec())).await?;
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(out.contains("got:typed"), "tty exec printed {out:?}");
    assert!(
        out.contains("eof"),
        "stdin EOF did not reach the tty: {out:?}"
    );
    assert_eq!(r.exit_code(), Some(0), "{:?}", r.status);

    // Attach with stdin_once: input reaches the container, the end of the client's input is
    // the container's EOF, and the session ends when the container exits.
    let mut cfg = pod.container("reader", &["sh", "-c", "cat; echo eof-seen"])?;
    cfg.stdin = true;
    cfg.stdin_once = true;
    let reader = pod.create(&mut client, cfg).await?;
    client.start_container(&reader).await?;
    let url = attach_url(&mut client, &reader, false).await?;
    let r = ws_exec(&url, Some(b"hello attach\n".to_vec())).await?;
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(
        out.contains("hello attach\neof-seen"),
        "attach printed {out:?}"
    );
    assert_eq!(r.exit_code(), Some(0), "{:?}", r.status);
    let st = client.wait_exited(&reader, Duration::from_secs(10)).await?;
    assert_eq!(st.exit_code, 0);
    let log = pod.read_log("reader");
    assert!(log.contains("stdout F hello attach"), "log: {log}");
    assert!(log.contains("stdout F eof-seen"), "log: {log}");

    // Attaching to a container that is no longer running, or with the wrong tty, is refused.
    let attach_req = |id: &str, tty: bool| AttachRequest {
        audit_request_id: String::new(),
        container_id: id.to_string(),
        stdin: false,
        stdout: true,
        stderr: false,
        tty,
    };
    expect_code(
        client.runtime.attach(attach_req(&reader, false)).await,
        tonic::Code::FailedPrecondition,
        "attach to an exited container",
    )?;
    expect_code(
        client.runtime.attach(attach_req(&idle, true)).await,
        tonic::Code::InvalidArgument,
        "attach with tty to a container without one",
    )?;

    // A TTY container: attach sees the size the client sets, and its output is logged too.
    let mut cfg = pod.container(
        "term",
        &[
            "sh",
            "-c",
            &format!("read x; echo got:$x; {}", wait_for_size("30 90")),
        ],
    )?;
    cfg.tty = true;
    cfg.stdin = true;
    let term = pod.create(&mut client, cfg).await?;
    client.start_container(&term).await?;
    let url = attach_url(&mut client, &term, true).await?;
    let r = ws_exec_with(&url, &[(90, 30)], Some(b"from-tty\n".to_vec())).await?;
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(out.contains("got:from-tty"), "tty attach printed {out:?}");
    assert!(out.contains("size:30 90"), "tty attach printed {out:?}");
    let st = client.wait_exited(&term, Duration::from_secs(15)).await?;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let log = pod.read_log("term");
    assert!(log.contains("got:from-tty"), "log: {log}");

    // A client that disconnects mid-exec leaves no process behind.
    let url = exec_url(
        &mut client,
        ExecRequest {
            audit_request_id: String::new(),
            container_id: idle.clone(),
            cmd: vec!["sleep".into(), "4242".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        },
    )
    .await?;
    let conn = ws_connect(&url, &["v5.channel.k8s.io"]).await?;
    let count_sleepers = || ExecSyncRequest {
        container_id: idle.clone(),
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "ps -o args | grep -c '^sleep 4242'".into(),
        ],
        timeout: 5,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .runtime
            .exec_sync(count_sleepers())
            .await?
            .into_inner();
        if String::from_utf8_lossy(&r.stdout).trim() == "1" {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "exec never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(conn);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .runtime
            .exec_sync(count_sleepers())
            .await?
            .into_inner();
        if String::from_utf8_lossy(&r.stdout).trim() == "0" {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the abandoned exec is still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
