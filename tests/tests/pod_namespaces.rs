//! Containers of a pod share network, UTS and IPC namespaces but not mount
//! namespaces; the pod's network namespace is its own, holding only `lo`, up.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use crisp_tests::cri::ContainerState;
use crisp_tests::{crispd_test, parse_cri_log, wait_for_file, CriClient, Crispd, TestPod, BUSYBOX};

const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Prints `key=value` lines: namespace links, the interfaces in
/// /proc/net/dev (per network namespace, unlike a possibly host-wide /sys),
/// and lo's flags. It then stays alive: the kernel reuses a dead namespace's
/// inode number, so namespaces only compare meaningfully while both exist.
const PROBE: &str = "\
for ns in net uts ipc mnt; do echo $ns=$(readlink /proc/self/ns/$ns); done; \
echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '); \
echo loflags=$(cat /sys/class/net/lo/flags); \
exec sleep 1000";

crispd_test!(pod_namespaces, check);

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "namespaces").await?;

    let one = probe(&mut client, &pod, "one").await?;
    let two = probe(&mut client, &pod, "two").await?;

    for ns in ["net", "uts", "ipc"] {
        assert_eq!(
            one.get(ns),
            two.get(ns),
            "{ns} namespace differs: {one:?} {two:?}"
        );
        let host = host_namespace(ns)?;
        assert_ne!(
            one.get(ns),
            Some(&host),
            "pod shares the host's {ns} namespace"
        );
    }
    assert_ne!(
        one.get("mnt"),
        two.get("mnt"),
        "containers share a mount namespace"
    );

    // loopback, plus the CNI interface of the test's private network.
    assert_eq!(
        one.get("ifaces").map(|s| s.trim()),
        Some("lo eth0"),
        "interfaces in the pod: {one:?}"
    );
    let flags = one.get("loflags").context("no loflags")?;
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16)
        .with_context(|| format!("lo flags {flags:?}"))?;
    assert_eq!(
        flags & libc::IFF_UP as u32,
        libc::IFF_UP as u32,
        "lo is down: {flags:#x}"
    );

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}

/// Runs the probe in a new container of `pod` and returns its `key=value`
/// output once printed; the container keeps running.
async fn probe(
    client: &mut CriClient,
    pod: &TestPod,
    name: &str,
) -> anyhow::Result<HashMap<String, String>> {
    let id = pod
        .start_container(client, name, &["sh", "-c", PROBE])
        .await?;
    let log = wait_for_file(&pod.log_file(name), LOG_TIMEOUT, |log| {
        log.contains("loflags=")
    })
    .await?;
    let status = client.container_status(&id).await?;
    assert_eq!(
        status.state(),
        ContainerState::ContainerRunning,
        "probe {name} died: {status:?}\n{log}"
    );
    let lines = parse_cri_log(&log).map_err(anyhow::Error::msg)?;
    Ok(lines
        .iter()
        .filter_map(|line| line.content.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect())
}

fn host_namespace(ns: &str) -> anyhow::Result<String> {
    let link = std::fs::read_link(format!("/proc/self/ns/{ns}"))
        .with_context(|| format!("reading our own {ns} namespace"))?;
    Ok(link.display().to_string())
}
