//! The security context, checked from inside the container: user and groups, read-only
//! rootfs, capabilities, no_new_privs, seccomp, sysctls, bind mounts, PID namespace modes; and
//! bad input that must fail cleanly.

use crisp_tests::cri::{
    Capability, Int64Value, LinuxContainerSecurityContext, Mount, NamespaceMode, NamespaceOption,
    SecurityProfile,
};
use crisp_tests::{crispd_test, sh, with_sc, Crispd, TestPod, BUSYBOX};
use tonic::Code;

crispd_test!(security, check);

fn status_line(status: &str, key: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l[key.len()..].trim().to_string())
        .unwrap_or_default()
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let mut pod_cfg = TestPod::new_config(crispd, "secure")?;
    pod_cfg
        .linux
        .get_or_insert_with(Default::default)
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "80".into());
    let pod = TestPod::run(&mut client, pod_cfg).await?;
    let sleep = ["sleep", "1000"];

    // A hardened container: non-root, read-only rootfs, all capabilities dropped but one,
    // no_new_privs and the runtime's default seccomp profile.
    let hardened = with_sc(
        pod.container("hardened", &sleep)?,
        LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            run_as_group: Some(Int64Value { value: 2000 }),
            supplemental_groups: vec![3000],
            readonly_rootfs: true,
            no_new_privs: true,
            capabilities: Some(Capability {
                drop_capabilities: vec!["ALL".into()],
                add_capabilities: vec!["NET_BIND_SERVICE".into()],
                ..Default::default()
            }),
            seccomp: Some(SecurityProfile {
                profile_type: 0,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        },
    );
    let id = pod.create(&mut client, hardened).await?;
    client.start_container(&id).await?;
    let (_, ids) = sh(&mut client, &id, "id").await?;
    assert!(
        ids.contains("uid=1000") && ids.contains("gid=2000") && ids.contains("3000"),
        "{ids}"
    );
    let (code, out) = sh(&mut client, &id, "touch /x").await?;
    assert_ne!(code, 0);
    assert!(out.contains("Read-only file system"), "{out}");
    // The container's own process (PID 1 of its namespace) runs with no_new_privs and the
    // filter, and so does an exec'd one (the vendored libcontainer's tenant fix). Non-root, it
    // has no effective capabilities even with NET_BIND_SERVICE added, exactly as under
    // containerd (no ambient capabilities).
    let (_, own) = sh(&mut client, &id, "cat /proc/self/status").await?;
    assert_eq!(status_line(&own, "Seccomp:"), "2", "exec'd process: {own}");
    assert_eq!(
        status_line(&own, "NoNewPrivs:"),
        "1",
        "exec'd process: {own}"
    );
    let (_, status) = sh(&mut client, &id, "cat /proc/1/status").await?;
    assert_eq!(status_line(&status, "NoNewPrivs:"), "1", "{status}");
    assert_eq!(status_line(&status, "Seccomp:"), "2", "{status}");
    assert_eq!(
        status_line(&status, "CapEff:"),
        "0000000000000000",
        "{status}"
    );
    assert_eq!(
        status_line(&status, "CapBnd:"),
        "0000000000000400",
        "{status}"
    );
    // The pod's namespaced sysctl reached the container.
    let (_, v) = sh(
        &mut client,
        &id,
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
    )
    .await?;
    assert_eq!(v.trim(), "80");
    // As root with ALL dropped and NET_BIND_SERVICE added back: exactly that capability.
    let one_cap = with_sc(
        pod.container("onecap", &sleep)?,
        LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                drop_capabilities: vec!["ALL".into()],
                add_capabilities: vec!["NET_BIND_SERVICE".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let one_cap = pod.create(&mut client, one_cap).await?;
    client.start_container(&one_cap).await?;
    let (_, status) = sh(&mut client, &one_cap, "cat /proc/1/status").await?;
    assert_eq!(
        status_line(&status, "CapEff:"),
        "0000000000000400",
        "{status}"
    );

    // Drop ALL: no effective capabilities at all; unconfined seccomp by default.
    let bare = with_sc(
        pod.container("bare", &sleep)?,
        LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let bare = pod.create(&mut client, bare).await?;
    client.start_container(&bare).await?;
    let (_, status) = sh(&mut client, &bare, "cat /proc/1/status").await?;
    assert_eq!(status_line(&status, "CapEff:"), "0000000000000000");
    assert_eq!(status_line(&status, "Seccomp:"), "0");

    // Bind mounts, read-only and read-write.
    let host = crispd.dir().join("volume");
    std::fs::create_dir_all(&host)?;
    std::fs::write(host.join("hello.txt"), "from the host")?;
    let mut mounted = pod.container("mounted", &sleep)?;
    mounted.mounts = vec![
        Mount {
            container_path: "/ro".into(),
            host_path: host.display().to_string(),
            readonly: true,
            ..Default::default()
        },
        Mount {
            container_path: "/rw".into(),
            host_path: host.display().to_string(),
            ..Default::default()
        },
    ];
    let mounted = pod.create(&mut client, mounted).await?;
    client.start_container(&mounted).await?;
    let (_, out) = sh(&mut client, &mounted, "cat /ro/hello.txt").await?;
    assert_eq!(out, "from the host");
    let (code, _) = sh(&mut client, &mounted, "echo x > /ro/new").await?;
    assert_ne!(code, 0, "wrote through a read-only mount");
    let (code, out) = sh(&mut client, &mounted, "echo written > /rw/new").await?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::read_to_string(host.join("new"))?, "written\n");

    // PID namespaces: the container's own (its command is PID 1), or the node's.
    let (_, one) = sh(&mut client, &mounted, "cat /proc/1/comm").await?;
    assert_eq!(one.trim(), "sleep");
    let node_pid = with_sc(
        pod.container("nodepid", &sleep)?,
        LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let node_pid = pod.create(&mut client, node_pid).await?;
    client.start_container(&node_pid).await?;
    let (_, one) = sh(&mut client, &node_pid, "cat /proc/1/comm").await?;
    let host_one = std::fs::read_to_string("/proc/1/comm")?;
    assert_eq!(one.trim(), host_one.trim());

    // Bad input fails with INVALID_ARGUMENT and leaves nothing behind.
    let unknown_user = with_sc(
        pod.container("nouser", &sleep)?,
        LinuxContainerSecurityContext {
            run_as_username: "no-such-user".into(),
            ..Default::default()
        },
    );
    let e = pod
        .create(&mut client, unknown_user)
        .await
        .expect_err("unknown user");
    assert!(e.to_string().contains("no-such-user"), "{e}");
    // AppArmor is off on this node: a named profile is refused, not silently dropped.
    let apparmor = with_sc(
        pod.container("apparmor", &sleep)?,
        LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: 2, // Localhost
                localhost_ref: "crisp-test-profile".into(),
            }),
            ..Default::default()
        },
    );
    if !std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
    {
        let e = pod
            .create(&mut client, apparmor)
            .await
            .expect_err("apparmor profile without AppArmor");
        assert!(e.to_string().contains("AppArmor is not enabled"), "{e}");
    }
    let dangling = crispd.dir().join("dangling");
    std::os::unix::fs::symlink("/nonexistent/target", &dangling)?;
    let mut bad_mount = pod.container("badmount", &sleep)?;
    bad_mount.mounts = vec![Mount {
        container_path: "/x".into(),
        host_path: dangling.display().to_string(),
        ..Default::default()
    }];
    let e = pod
        .create(&mut client, bad_mount)
        .await
        .expect_err("dangling mount source");
    assert!(e.to_string().contains("dangling"), "{e}");
    let mut host_sysctl = TestPod::new_config(crispd, "hostsysctl")?;
    host_sysctl
        .linux
        .get_or_insert_with(Default::default)
        .sysctls
        .insert("vm.swappiness".into(), "10".into());
    let e = client.run_pod(&host_sysctl).await.expect_err("host sysctl");
    assert!(
        e.status()
            .is_some_and(|s| s.code() == Code::InvalidArgument),
        "{e}"
    );

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
