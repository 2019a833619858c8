//! Devices and privileged containers: a CRI `Device` appears as a node under its container path
//! with exactly the asked cgroup permissions; bad device requests are refused; a privileged
//! container gets the host's devices, every capability and no masked paths.

use crisp_tests::cri::{Device, LinuxContainerSecurityContext};
use crisp_tests::{crispd_test, sh, with_sc, Crispd, TestPod, BUSYBOX};

crispd_test!(devices, check);

fn device(host: &str, container: &str, permissions: &str) -> Device {
    Device {
        host_path: host.into(),
        container_path: container.into(),
        permissions: permissions.into(),
    }
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "devices").await?;

    let mut c = pod.container("devs", &["sleep", "3600"])?;
    c.devices = vec![
        device("/dev/null", "/dev/mynull", "rwm"),
        // Not among the devices every container may use (null, zero, ...): only its own rule
        // lets it through.
        device("/dev/cpu_dma_latency", "/dev/readonly-dev", "r"),
    ];
    let devs = pod.create(&mut client, c).await?;
    client.start_container(&devs).await?;
    let (_, ls) = sh(
        &mut client,
        &devs,
        "stat -c '%F %t:%T' /dev/mynull /dev/readonly-dev",
    )
    .await?;
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        ["character special file 1:3", "character special file a:103"],
        "device nodes"
    );
    let (code, _) = sh(&mut client, &devs, "echo x > /dev/mynull").await?;
    assert_eq!(code, 0, "writing a rwm device");
    let (code, out) = sh(
        &mut client,
        &devs,
        "dd if=/dev/readonly-dev of=/dev/null bs=4 count=1 2>&1",
    )
    .await?;
    assert_eq!(code, 0, "reading an r device: {out}");
    let (code, err) = sh(&mut client, &devs, "echo x > /dev/readonly-dev 2>&1").await?;
    assert!(
        code != 0 && err.contains("not permitted"),
        "writing a read-only device must fail: {code} {err}"
    );
    // Not asked for: not there.
    let (code, _) = sh(&mut client, &devs, "test -e /dev/kmsg").await?;
    assert_ne!(code, 0, "/dev/kmsg in an unprivileged container");

    for (name, dev, why) in [
        (
            "nodev",
            device("/dev/does-not-exist", "/dev/x", "rwm"),
            "does-not-exist",
        ),
        (
            "notadev",
            device("/etc/hostname", "/dev/x", "rwm"),
            "not a character or block device",
        ),
        (
            "badperm",
            device("/dev/null", "/dev/x", "rwx"),
            "permissions",
        ),
    ] {
        let mut c = pod.container(name, &["true"])?;
        c.devices = vec![dev];
        let e = pod
            .create(&mut client, c)
            .await
            .expect_err("a bad device must be refused");
        let text = format!("{e:#}");
        assert!(
            text.contains("InvalidArgument") && text.contains(why),
            "{name}: {text}"
        );
    }

    let privileged = with_sc(
        pod.container("privileged", &["sleep", "3600"])?,
        LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        },
    );
    let privileged = pod.create(&mut client, privileged).await?;
    client.start_container(&privileged).await?;
    let (_, out) = sh(
        &mut client,
        &privileged,
        "test -c /dev/kmsg && echo kmsg; grep CapEff /proc/self/status; \
         head -c 1 /proc/kcore > /dev/null && echo kcore; \
         mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo mounted",
    )
    .await?;
    assert!(out.contains("kmsg"), "host devices: {out}");
    assert!(
        out.contains("kcore"),
        "masked paths in a privileged container: {out}"
    );
    assert!(
        out.contains("mounted"),
        "mount in a privileged container: {out}"
    );
    let capeff = out
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .unwrap_or_default();
    let bits = u64::from_str_radix(capeff, 16).unwrap_or_default();
    // Every capability crispd holds (this host's root lacks CAP_SYS_RESOURCE: so does the
    // container, as under containerd).
    let status = std::fs::read_to_string("/proc/self/status")?;
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16))
        .transpose()?
        .unwrap_or_default();
    assert_eq!(
        bits, bounding,
        "a privileged container has every capability crispd holds: CapEff {capeff}"
    );

    client.stop_and_remove_pod(&pod.id).await?;
    Ok(())
}
