//! Pod networking through CNI, on a bridge and /24 private to this test, twice: with
//! crisp-bridge and with Debian's reference plugins (bridge + host-local + portmap). Pod IPs,
//! pod-to-pod and pod-to-gateway traffic, a hostPort on 127.0.0.1, a hostNetwork pod, 50
//! concurrent pods with distinct IPs, and nothing left (veth, iptables rule, IPAM lease) after
//! removal.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crisp_tests::cri::{ExecSyncRequest, NamespaceMode, PortMapping, Protocol};
use crisp_tests::{crispd_test, require_root, CriClient, Crispd, Plugins, TestPod, BUSYBOX};

crispd_test!(network, check);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_with_reference_plugins() {
    if !require_root() {
        return;
    }
    let crispd = Crispd::start_with(Plugins::Reference)
        .await
        .expect("starting crispd");
    crispd.expect_ok(check(&crispd).await);
}

async fn exec(client: &mut CriClient, id: &str, cmd: &[&str]) -> anyhow::Result<(i32, String)> {
    let r = client
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 20,
        })
        .await?
        .into_inner();
    Ok((
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).to_string() + &String::from_utf8_lossy(&r.stderr),
    ))
}

async fn pod_ip(client: &mut CriClient, pod: &str) -> anyhow::Result<String> {
    let s = client.pod_status(pod).await?;
    Ok(s.network.map(|n| n.ip).unwrap_or_default())
}

fn http_get(port: u16) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    let status = client.status().await?;
    let net_ready = status
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.r#type == "NetworkReady")
        .map(|c| (c.status, c.message.clone()));
    assert_eq!(net_ready.as_ref().map(|r| r.0), Some(true), "{net_ready:?}");
    client.pull(BUSYBOX).await?;
    let subnet_prefix = format!("10.89.{}.", crispd.network().octet);

    let host_port = 20000 + (std::process::id() % 20000) as u16;
    let mut web_cfg = TestPod::new_config(crispd, "web")?;
    web_cfg.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: "127.0.0.1".into(),
    }];
    let web = TestPod::run(&mut client, web_cfg).await?;
    let server = web
        .start_container(
            &mut client,
            "httpd",
            &["sh", "-c", "mkdir -p /tmp/www && echo crisp-page > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
        )
        .await?;
    let client_pod = TestPod::start(&mut client, crispd, "client").await?;
    let probe = client_pod
        .start_container(&mut client, "probe", &["sleep", "1000"])
        .await?;

    let web_ip = pod_ip(&mut client, &web.id).await?;
    let client_ip = pod_ip(&mut client, &client_pod.id).await?;
    assert!(web_ip.starts_with(&subnet_prefix), "web ip {web_ip}");
    assert!(
        client_ip.starts_with(&subnet_prefix),
        "client ip {client_ip}"
    );
    assert_ne!(web_ip, client_ip);

    // Pod to pod, and pod to its gateway.
    let url = format!("http://{web_ip}:8080/");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out) = exec(&mut client, &probe, &["wget", "-qO-", &url]).await?;
        if code == 0 {
            assert_eq!(out.trim(), "crisp-page");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "pod-to-pod wget kept failing: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gw = crispd.network().gateway();
    let (code, out) = exec(&mut client, &probe, &["ping", "-c", "1", "-W", "2", &gw]).await?;
    assert_eq!(code, 0, "ping gateway: {out}");
    let _ = server;

    // The host reaches the pod's httpd through the hostPort on 127.0.0.1.
    let page = tokio::task::spawn_blocking(move || http_get(host_port)).await??;
    assert!(page.contains("crisp-page"), "{page}");

    // A hostNetwork pod: no CNI, the host's network namespace, no pod IP of its own.
    let mut host_cfg = TestPod::new_config(crispd, "hostnet")?;
    if let Some(ns) = host_cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.network = NamespaceMode::Node as i32;
    }
    let host_pod = TestPod::run(&mut client, host_cfg).await?;
    let mut on_host = host_pod.container("onhost", &["sleep", "1000"])?;
    if let Some(ns) = on_host
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.network = NamespaceMode::Node as i32;
    }
    let on_host = host_pod.create(&mut client, on_host).await?;
    client.start_container(&on_host).await?;
    let (_, netns) = exec(&mut client, &on_host, &["readlink", "/proc/self/ns/net"]).await?;
    assert_eq!(
        netns.trim(),
        std::fs::read_link("/proc/self/ns/net")?
            .display()
            .to_string(),
        "a hostNetwork container is not in the host's network namespace"
    );
    let (_, ifaces) = exec(&mut client, &on_host, &["cat", "/proc/net/dev"]).await?;
    assert!(
        ifaces.contains(&crispd.network().bridge),
        "the host's bridge is not visible: {ifaces}"
    );
    assert_eq!(pod_ip(&mut client, &host_pod.id).await?, "");
    client.stop_and_remove_pod(&host_pod.id).await?;

    // 50 pods at once get 50 distinct addresses.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut c = client.clone();
        let cfg = TestPod::new_config(crispd, &format!("many{i}"))?;
        tasks.push(tokio::spawn(async move {
            let id = c.run_pod(&cfg).await?;
            let ip = pod_ip(&mut c, &id).await?;
            anyhow::Ok((id, ip))
        }));
    }
    let mut ips = HashSet::new();
    let mut ids = Vec::new();
    for t in tasks {
        let (id, ip) = t.await??;
        assert!(ip.starts_with(&subnet_prefix), "{ip}");
        assert!(ips.insert(ip.clone()), "{ip} handed out twice");
        ids.push(id);
    }
    assert!(!ips.contains(&web_ip) && !ips.contains(&client_ip));

    let all_ids: Vec<String> = ids
        .iter()
        .cloned()
        .chain([web.id.clone(), client_pod.id.clone()])
        .collect();
    for id in &all_ids {
        client.stop_and_remove_pod(id).await?;
    }

    // Nothing of theirs is left on the host.
    let rules = std::process::Command::new("iptables-save").output()?;
    let rules = String::from_utf8_lossy(&rules.stdout);
    for id in &all_ids {
        assert!(
            !rules.contains(id.as_str()),
            "iptables rule for pod {id} left"
        );
    }
    stop_takes_the_pod_off_the_network(&mut client, crispd).await?;

    let brif = format!("/sys/class/net/{}/brif", crispd.network().bridge);
    let ports: Vec<_> = std::fs::read_dir(&brif)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(ports.is_empty(), "veths still on the bridge: {ports:?}");
    let leases: Vec<String> = walk_files(&crispd.dir().join("ipam"))
        .into_iter()
        .filter(|n| n.starts_with("10."))
        .collect();
    assert!(leases.is_empty(), "IPAM leases left: {leases:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", host_port)).is_err(),
        "hostPort still open"
    );
    crispd.assert_no_leaks();
    Ok(())
}

/// StopPodSandbox (without RemovePodSandbox) takes the pod off the network at once: its host
/// veth leaves the bridge and its netns pin goes (containerd removes the netns at stop too);
/// the pair itself is gone soon after (crisp-bridge leaves it to the kernel's netns cleanup).
async fn stop_takes_the_pod_off_the_network(
    client: &mut CriClient,
    crispd: &Crispd,
) -> anyhow::Result<()> {
    let pod = TestPod::start(client, crispd, "stopped").await?;
    let pin = crispd.state().join("pods").join(&pod.id).join("ns/net");
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .args(["ip", "-o", "link", "show", "eth0"])
        .output()?;
    // "2: eth0@if123: <...": the host end's ifindex.
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let peer: u32 = line
        .split_once("@if")
        .and_then(|(_, rest)| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no veth peer in {line:?}"))?;
    let host = std::fs::read_dir("/sys/class/net")?
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("ifindex"))
                .is_ok_and(|i| i.trim() == peer.to_string())
        })
        .map(|e| e.file_name().to_string_lossy().to_string())
        .ok_or_else(|| anyhow::anyhow!("host end {peer} not found"))?;
    let master = format!("/sys/class/net/{host}/master");
    assert!(
        std::path::Path::new(&master).exists(),
        "{host} not on the bridge"
    );

    client
        .runtime
        .stop_pod_sandbox(crisp_tests::cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await?;
    assert!(!pin.exists(), "the netns pin outlived StopPodSandbox");
    assert!(
        !std::path::Path::new(&master).exists(),
        "{host} still on the bridge after StopPodSandbox"
    );
    assert_eq!(pod_ip(client, &pod.id).await?, "");
    // Without its netns a stopped pod has nothing to forward to (and must never reach the
    // host's ports instead).
    let refused = client
        .runtime
        .port_forward(crisp_tests::cri::PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![80],
        })
        .await
        .expect_err("PortForward to a stopped pod");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/sys/class/net/{host}/ifindex"))
        .is_ok_and(|i| i.trim() == peer.to_string())
    {
        assert!(Instant::now() < deadline, "{host} outlived the pod's stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.stop_and_remove_pod(&pod.id).await?;
    Ok(())
}

fn walk_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.file_name().to_string_lossy().to_string());
            }
        }
    }
    out
}
