//! The example pods in `manifests/examples/` that need no cluster, run through crispd as the
//! CRI calls kubelet would make for them: the same command (read from the manifest), the same
//! security context, limits and volumes. The image is the local busybox build (the manifests
//! name `busybox:1.36`, which this offline CI cannot pull).

use std::time::Duration;

use crisp_tests::cri::{
    Capability, Int64Value, LinuxContainerResources, LinuxContainerSecurityContext, Mount,
    PortMapping, Protocol, SecurityProfile,
};
use crisp_tests::{crispd_test, repo_root, wait_for_file, with_sc, Crispd, TestPod, BUSYBOX};

crispd_test!(examples, check);

/// The `- |` block script of the manifest's container command, de-indented.
fn block_script(manifest: &str) -> anyhow::Result<String> {
    let mut lines = manifest.lines().skip_while(|l| l.trim() != "- |");
    lines
        .next()
        .ok_or_else(|| anyhow::anyhow!("no `- |` command block"))?;
    let body: Vec<&str> = lines
        .take_while(|l| l.starts_with("          ") || l.trim().is_empty())
        .map(|l| l.get(10..).unwrap_or_default())
        .collect();
    Ok(body.join("\n"))
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let examples = repo_root().join("manifests/examples");

    // hardened.yaml: non-root, read-only root with an emptyDir /tmp, no capabilities, no
    // privilege escalation, RuntimeDefault seccomp, CPU and memory limits.
    let script = block_script(&std::fs::read_to_string(examples.join("hardened.yaml"))?)?;
    anyhow::ensure!(script.contains("exec sleep 3600"), "{script}");
    let pod = TestPod::start(&mut client, crispd, "hardened").await?;
    let empty_dir = crispd.dir().join("hardened-tmp");
    std::fs::create_dir_all(&empty_dir)?;
    // kubelet makes emptyDirs writable by the pod's user through fsGroup/ownership; 65534 here.
    nix::unistd::chown(
        &empty_dir,
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )?;
    let mut app = with_sc(
        pod.container("app", &["sh", "-c", &script])?,
        LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 65534 }),
            run_as_group: Some(Int64Value { value: 65534 }),
            readonly_rootfs: true,
            no_new_privs: true,
            capabilities: Some(Capability {
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            seccomp: Some(SecurityProfile {
                profile_type: 0, // RuntimeDefault
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    if let Some(linux) = app.linux.as_mut() {
        // What kubelet derives from requests 50m/32Mi and limits 200m/64Mi.
        linux.resources = Some(LinuxContainerResources {
            cpu_shares: 51,
            cpu_period: 100_000,
            cpu_quota: 20_000,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        });
    }
    app.mounts = vec![Mount {
        container_path: "/tmp".into(),
        host_path: empty_dir.display().to_string(),
        ..Default::default()
    }];
    let app = pod.create(&mut client, app).await?;
    client.start_container(&app).await?;
    let log = wait_for_file(&pod.log_file("app"), Duration::from_secs(10), |l| {
        l.contains("Seccomp:")
    })
    .await?;
    for want in [
        "uid=65534",
        "/tmp is writable",
        "/ is read-only",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(log.contains(want), "{want:?} missing from the log:\n{log}");
    }
    assert!(!log.contains("/ is writable"), "{log}");
    client.stop_and_remove_pod(&pod.id).await?;

    // web-hostport.yaml: busybox httpd on 8080 with a hostPort, its page from a read-only
    // volume (the ConfigMap, which kubelet hands over as a directory).
    let manifest = std::fs::read_to_string(examples.join("web-hostport.yaml"))?;
    let command = ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"];
    anyhow::ensure!(
        manifest.contains(r#"command: ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]"#),
        "the example's command changed: update this test"
    );
    let www = crispd.dir().join("web-content");
    std::fs::create_dir_all(&www)?;
    std::fs::write(
        www.join("index.html"),
        "Served by busybox httpd in a pod run by crisp.\n",
    )?;
    let host_port = 21000 + (std::process::id() % 20000) as u16;
    let mut cfg = TestPod::new_config(crispd, "web")?;
    cfg.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let web = TestPod::run(&mut client, cfg).await?;
    let mut httpd = web.container("httpd", &command)?;
    httpd.mounts = vec![Mount {
        container_path: "/www".into(),
        host_path: www.display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    let httpd = web.create(&mut client, httpd).await?;
    client.start_container(&httpd).await?;
    let page = crisp_tests::wait_until(
        "the page through the hostPort",
        Duration::from_secs(10),
        || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", host_port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            out.contains("Served by busybox httpd").then_some(out)
        },
    )
    .await?;
    assert!(
        page.starts_with("HTTP/1.") && page.contains(" 200 "),
        "{page}"
    );
    client.stop_and_remove_pod(&web.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
