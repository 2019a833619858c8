//! ExecSync: output and exit codes, timeouts, output cap, many at once, and bad input.

use std::time::{Duration, Instant};

use crisp_tests::cri::{ExecSyncRequest, LinuxContainerSecurityContext, NamespaceMode};
use crisp_tests::{crispd_test, pid_mode, with_sc, CriClient, Crispd, TestPod, BUSYBOX};
use tonic::Code;

crispd_test!(exec_sync, check);

async fn exec(
    client: &mut CriClient,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<crisp_tests::cri::ExecSyncResponse, tonic::Status> {
    client
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await
        .map(|r| r.into_inner())
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "execer").await?;
    let id = pod
        .start_container(&mut client, "target", &["sleep", "1000"])
        .await?;

    let r = exec(&mut client, &id, &["echo", "hello"], 10).await?;
    assert_eq!(r.stdout, b"hello\n");
    assert!(r.stderr.is_empty());
    assert_eq!(r.exit_code, 0);

    let r = exec(
        &mut client,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        10,
    )
    .await?;
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 3)
    );

    // The exec runs as the container does: same namespaces, same hostname.
    let r = exec(&mut client, &id, &["hostname"], 10).await?;
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "execer");

    // ... and the same cgroups as the container's init (PID 1 of its PID namespace).
    let r = exec(
        &mut client,
        &id,
        &[
            "sh",
            "-c",
            "cat /proc/1/cgroup; echo ---; cat /proc/self/cgroup",
        ],
        10,
    )
    .await?;
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    let (init_cgroups, exec_cgroups) = out.split_once("---\n").unwrap_or_default();
    // v2: the container's own cgroup namespace, whose root is its cgroup (another cgroup
    // would show as `0::/../x`).
    let own = if crisp_tests::cgroup_v2() {
        init_cgroups == "0::/\n"
    } else {
        init_cgroups.contains("memory:/")
    };
    assert!(
        own && init_cgroups == exec_cgroups,
        "exec'd process is not in the container's cgroups:\n{out}"
    );

    // A timeout kills the command and is DEADLINE_EXCEEDED, as kubelet's probes expect.
    let started = Instant::now();
    let e = exec(&mut client, &id, &["sleep", "100"], 1)
        .await
        .expect_err("must time out");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(15));

    // Output is capped (8 MiB per stream, so both fit kubelet's 16 MiB message limit) and the
    // call still completes.
    let r = exec(
        &mut client,
        &id,
        &["sh", "-c", "head -c 20000000 /dev/zero; echo done >&2"],
        60,
    )
    .await?;
    assert_eq!(r.stdout.len(), (8 << 20) - 4096);
    assert_eq!(r.stderr, b"done\n");

    // 100 concurrent calls each get their own output.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let mut c = client.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let arg = format!("n{i}");
            exec(&mut c, &id, &["echo", &arg], 30).await.map(|r| (i, r))
        }));
    }
    for t in tasks {
        let (i, r) = t.await??;
        assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), format!("n{i}"));
    }

    for (cid, cmd, code) in [
        ("nosuch", &["true"][..], Code::NotFound),
        (id.as_str(), &[][..], Code::InvalidArgument),
    ] {
        let e = exec(&mut client, cid, cmd, 5).await.expect_err("must fail");
        assert_eq!(e.code(), code, "{e:?}");
    }
    let r = exec(&mut client, &id, &["/no/such/binary"], 5).await;
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|r| r.exit_code != 0),
        "{r:?}"
    );

    // The exec'd process holds its stdio and nothing of the shim's or its fork server's.
    let r = exec(&mut client, &id, &["ls", "/proc/self/fd"], 10).await?;
    let fds = String::from_utf8_lossy(&r.stdout).into_owned();
    // 3 is ls's own handle on the directory.
    assert!(
        fds.split_whitespace()
            .all(|fd| ["0", "1", "2", "3"].contains(&fd)),
        "exec'd process has extra fds: {fds}"
    );

    // Helpers are cloned by the shim's fork server; if it is gone, they are exec'd instead.
    let shim = crispd.shim_pid(&id)?;
    let forkservers = crisp_tests::children_named(shim, "shim-forkserver");
    assert_eq!(forkservers.len(), 1, "shim {shim}: {forkservers:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(forkservers[0]),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    crisp_tests::wait_until("the fork server to die", Duration::from_secs(10), || {
        (!crisp_tests::process_alive(forkservers[0])).then_some(())
    })
    .await?;
    for _ in 0..2 {
        let r = exec(&mut client, &id, &["echo", "still"], 10).await?;
        assert_eq!((r.stdout.as_slice(), r.exit_code), (&b"still\n"[..], 0));
    }

    // The container exits (on its own) while an ExecSync runs in it: the exec dies with it
    // and the call answers as containerd's does, the killed command's 137, not an error. In a
    // pod sharing its PID namespace the exec outlives the container's init: the shim kills it.
    let shared = TestPod::shared_pid_config(crispd, "sharedpid-exec")?;
    let shared = TestPod::run(&mut client, shared).await?;
    let doomed = shared.container(
        "doomed",
        &["sh", "-c", "until [ -e /tmp/go ]; do sleep 0.05; done"],
    )?;
    let doomed = with_sc(
        doomed,
        LinuxContainerSecurityContext {
            namespace_options: Some(pid_mode(NamespaceMode::Pod)),
            ..Default::default()
        },
    );
    let doomed = shared.create(&mut client, doomed).await?;
    client.start_container(&doomed).await?;
    let started = Instant::now();
    let r = exec(
        &mut client,
        &doomed,
        &["sh", "-c", "touch /tmp/go; sleep 6161"],
        120,
    )
    .await
    .map_err(|s| anyhow::anyhow!("ExecSync in a container that exited under it: {s}"))?;
    assert_eq!(r.exit_code, 137, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the exec outlived its container"
    );

    client.stop_and_remove_pod(&shared.id).await?;
    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
