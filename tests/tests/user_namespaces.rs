//! User namespaces for pods (`userns_options`, Kubernetes `hostUsers: false`): the pod's root is
//! an unprivileged host uid, the image and the volumes read as owned by the pod's own ids through
//! idmapped mounts (nothing chowned), the pod's namespaces belong to its user namespace, and the
//! CRI's invalid combinations are refused.

use crisp_tests::cri::{
    Capability, IdMapping, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption, UserNamespace,
};
use crisp_tests::{require_root, sh, with_sc, Crispd, TestPod, BUSYBOX};
use std::os::unix::fs::MetadataExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespaces() {
    if !require_root() {
        return;
    }
    let mut crispd = Crispd::start().await.expect("starting crispd");
    let result = check(&mut crispd).await;
    crispd.expect_ok(result);
}

/// A host id range of our own: from the pid, so parallel test processes differ, far above any
/// real user.
fn host_base() -> u32 {
    0x2000_0000 + (std::process::id() % 4096) * 65536
}

fn userns(mode: NamespaceMode, base: u32) -> UserNamespace {
    let m = vec![IdMapping {
        host_id: base,
        container_id: 0,
        length: 65536,
    }];
    UserNamespace {
        mode: mode as i32,
        uids: m.clone(),
        gids: m,
    }
}

fn pod_linux(opts: NamespaceOption) -> Option<LinuxPodSandboxConfig> {
    Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(opts),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn container_ns(opts: NamespaceOption) -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        namespace_options: Some(opts),
        ..Default::default()
    }
}

async fn check(crispd: &mut Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    let status = client.status().await?;
    let features = status
        .runtime_handlers
        .iter()
        .filter_map(|h| h.features.as_ref())
        .collect::<Vec<_>>();
    // This machine's kernel (6.18) has idmapped mounts and overlay layers by fd.
    assert!(
        !features.is_empty() && features.iter().all(|f| f.user_namespaces),
        "user namespaces not advertised: {:?}",
        status.runtime_handlers
    );
    client.pull(BUSYBOX).await?;
    let base = host_base();

    // A volume with a file of host root's and one of host uid 1234.
    let vol = crispd.dir().join("userns-volume");
    std::fs::create_dir_all(&vol)?;
    std::fs::write(vol.join("by-root"), "r")?;
    std::fs::write(vol.join("by-1234"), "x")?;
    nix::unistd::chown(
        &vol.join("by-1234"),
        Some(nix::unistd::Uid::from_raw(1234)),
        Some(nix::unistd::Gid::from_raw(1234)),
    )?;

    let opts = NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        userns_options: Some(userns(NamespaceMode::Pod, base)),
        ..Default::default()
    };
    let mut config = TestPod::new_config(crispd, "userns")?;
    config.linux = pod_linux(opts.clone());
    let pod = TestPod::run(&mut client, config).await?;
    // NET_ADMIN is namespaced: with it, the pod's root may configure the pod's network (which
    // its user namespace owns), not the host's.
    let app_sc = LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: vec!["NET_ADMIN".into()],
            ..Default::default()
        }),
        ..container_ns(opts.clone())
    };
    let mut c = with_sc(pod.container("app", &["sleep", "3600"])?, app_sc);
    c.mounts.push(Mount {
        container_path: "/vol".into(),
        host_path: vol.display().to_string(),
        ..Default::default()
    });
    let app = pod.create(&mut client, c).await?;
    client.start_container(&app).await?;

    // Inside: root, in a namespace mapping 0 to our range.
    let (_, map) = sh(
        &mut client,
        &app,
        "cat /proc/self/uid_map /proc/self/gid_map",
    )
    .await?;
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let want = vec!["0".to_string(), base.to_string(), "65536".to_string()];
    assert_eq!(lines.len(), 2, "{map}");
    for l in &lines {
        assert_eq!(l, &want, "{map}");
    }
    let (_, id) = sh(&mut client, &app, "id -u; id -g").await?;
    assert_eq!(id.split_whitespace().collect::<Vec<_>>(), ["0", "0"]);

    // The image and the pod's files read as the pod's root's, through idmapped mounts.
    let (_, owners) = sh(
        &mut client,
        &app,
        "stat -c %u:%g / /bin/busybox /etc/hostname /etc/resolv.conf /vol/by-root /vol/by-1234",
    )
    .await?;
    assert_eq!(
        owners.split_whitespace().collect::<Vec<_>>(),
        ["0:0", "0:0", "0:0", "0:0", "0:0", "1234:1234"],
        "owners inside"
    );
    // Root in the pod can write its rootfs and the volume; on the host, its rootfs file is
    // under our range and the volume's file under the on-disk id the mapping gives back (0).
    sh(
        &mut client,
        &app,
        "echo hi > /made-here && echo v > /vol/made-here && chown 7:7 /vol/made-here",
    )
    .await?;
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(
        crispd.root().join("containers").join(format!("{app}.json")),
    )?)?;
    let pid = rec["pid"].as_i64().unwrap_or_default();
    anyhow::ensure!(pid > 0, "no pid recorded for {app}");
    let host_view = std::fs::metadata(format!("/proc/{pid}/root/made-here"))?;
    assert_eq!((host_view.uid(), host_view.gid()), (base, base));
    let vol_file = std::fs::metadata(vol.join("made-here"))?;
    assert_eq!((vol_file.uid(), vol_file.gid()), (7, 7));
    // The container's root is an ordinary host uid.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    assert!(
        uid_line.split_whitespace().nth(1) == Some(&base.to_string()),
        "host view of the container's uid: {uid_line}"
    );

    // The pod's namespaces belong to it: sysfs mounted, the network configurable by its root.
    let (_, net) = sh(
        &mut client,
        &app,
        "ls /sys/class/net && ip link set lo mtu 1500 && echo ok",
    )
    .await?;
    assert!(net.contains("lo") && net.contains("ok"), "{net}");
    // Containers of the pod share its user namespace (and here its PID namespace).
    let b = pod
        .create(
            &mut client,
            with_sc(
                pod.container("b", &["sleep", "3601"])?,
                container_ns(opts.clone()),
            ),
        )
        .await?;
    client.start_container(&b).await?;
    let (_, a_ns) = sh(&mut client, &app, "readlink /proc/self/ns/user").await?;
    let (_, b_ns) = sh(&mut client, &b, "readlink /proc/self/ns/user; ps -o args").await?;
    assert!(b_ns.contains(a_ns.trim()), "{a_ns} vs {b_ns}");
    assert!(b_ns.contains("sleep 3600"), "b does not see app: {b_ns}");

    // A new crispd picks the pod up: exec still enters its user namespace, and a new
    // container joins it.
    crispd.stop().await?;
    crispd.restart().await?;
    let mut client = crispd.client().await?;
    let (_, again) = sh(&mut client, &app, "readlink /proc/self/ns/user; id -u").await?;
    assert_eq!(
        again.split_whitespace().collect::<Vec<_>>(),
        [a_ns.trim(), "0"]
    );
    let c = pod
        .create(
            &mut client,
            with_sc(
                pod.container("c", &["sleep", "3602"])?,
                container_ns(opts.clone()),
            ),
        )
        .await?;
    client.start_container(&c).await?;
    let (_, c_ns) = sh(&mut client, &c, "readlink /proc/self/ns/user").await?;
    assert_eq!(c_ns.trim(), a_ns.trim());

    // Bad requests.
    let unmapped = LinuxContainerSecurityContext {
        run_as_user: Some(crisp_tests::cri::Int64Value { value: 70000 }),
        ..container_ns(opts.clone())
    };
    let e = pod
        .create(
            &mut client,
            with_sc(pod.container("unmapped", &["true"])?, unmapped),
        )
        .await
        .expect_err("an unmapped uid must be refused");
    assert!(format!("{e:#}").contains("70000"), "{e:#}");
    assert_invalid(&e);

    for (name, opts, why) in [
        (
            "usernsctr",
            NamespaceOption {
                userns_options: Some(userns(NamespaceMode::Container, base)),
                ..Default::default()
            },
            "not supported",
        ),
        (
            "usernshostnet",
            NamespaceOption {
                network: NamespaceMode::Node as i32,
                userns_options: Some(userns(NamespaceMode::Pod, base)),
                ..Default::default()
            },
            "host's network",
        ),
        (
            "usernsnomaps",
            NamespaceOption {
                userns_options: Some(UserNamespace {
                    mode: NamespaceMode::Pod as i32,
                    uids: userns(NamespaceMode::Pod, base).uids,
                    gids: vec![],
                }),
                ..Default::default()
            },
            "gid mappings",
        ),
        (
            "usernstwolines",
            NamespaceOption {
                userns_options: Some(UserNamespace {
                    mode: NamespaceMode::Pod as i32,
                    uids: [0, 1]
                        .map(|i| IdMapping {
                            host_id: base + i * 10,
                            container_id: i * 10,
                            length: 10,
                        })
                        .to_vec(),
                    gids: userns(NamespaceMode::Pod, base).gids,
                }),
                ..Default::default()
            },
            "only one mapping line",
        ),
        (
            "usernsnotzero",
            NamespaceOption {
                userns_options: Some(UserNamespace {
                    mode: NamespaceMode::Pod as i32,
                    uids: vec![IdMapping {
                        host_id: base,
                        container_id: 1,
                        length: 65536,
                    }],
                    gids: userns(NamespaceMode::Pod, base).gids,
                }),
                ..Default::default()
            },
            "uid 0",
        ),
    ] {
        let mut config = TestPod::new_config(crispd, name)?;
        config.linux = pod_linux(opts);
        let e = client
            .run_pod(&config)
            .await
            .expect_err("the pod must be refused");
        assert!(format!("{e:#}").contains(why), "{name}: {e:#}");
        assert_invalid(&e);
    }

    client.stop_and_remove_pod(&pod.id).await?;
    // Nothing of the pod stays mounted: no namespace pins, no idmapped copies, no rootfs.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    for id in [&pod.id, &app, &b, &c] {
        assert!(
            !mounts.contains(id.as_str()),
            "mounts of {id} left:\n{mounts}"
        );
    }
    std::fs::remove_dir_all(&vol)?;
    Ok(())
}

/// The client's error names the gRPC code as `{op} failed: InvalidArgument: …`.
fn assert_invalid(e: &dyn std::fmt::Display) {
    let text = e.to_string();
    assert!(text.contains("InvalidArgument"), "wrong status: {text}");
}
