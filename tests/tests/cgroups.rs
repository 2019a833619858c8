//! Container processes live in cgroups below the configured cgroup parent,
//! and see that path in their own /proc/self/cgroup (v1), or their own cgroup namespace (v2).

use std::time::Duration;

use crisp_tests::cri::ContainerState;
use crisp_tests::{crispd_test, wait_for_file, wait_until, Crispd, TestPod, BUSYBOX};

crispd_test!(cgroups, check);

/// crispd hands each shim the cgroup v1 mount points (`CRISP_CGROUP_V1_MOUNTS`), so that
/// neither the shim nor its runtime helpers parse mountinfo, which grows with the node's pods:
/// exactly the `cgroup` (v1) mounts, none on a v2 node.
fn check_shim_has_v1_mounts(crispd: &Crispd, id: &str) -> anyhow::Result<()> {
    let environ = std::fs::read(format!("/proc/{}/environ", crispd.shim_pid(id)?))?;
    let value = environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"CRISP_CGROUP_V1_MOUNTS="))
        .ok_or_else(|| anyhow::anyhow!("the shim has no CRISP_CGROUP_V1_MOUNTS"))?;
    let mut passed: Vec<String> = String::from_utf8_lossy(value)
        .split('\n')
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut v1: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next() == Some("cgroup")).then(|| pre.split(' ').nth(4))?
        })
        .map(String::from)
        .collect();
    passed.sort();
    v1.sort();
    assert_eq!(passed, v1, "the shim's cgroup v1 mount points");
    Ok(())
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "cgrouped").await?;
    let id = pod
        .start_container(
            &mut client,
            "reader",
            &["sh", "-c", "cat /proc/self/cgroup; exec sleep 1000"],
        )
        .await?;
    let status = client.container_status(&id).await?;
    assert_eq!(status.state(), ContainerState::ContainerRunning);
    check_shim_has_v1_mounts(crispd, &id)?;

    let cmdlines = |pids: &[i32]| -> Vec<String> {
        pids.iter()
            .map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
            .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
            .collect()
    };
    // The shell may not have exec'd sleep yet when the container reports running.
    let found = wait_until(
        &format!("the container's sleep in {}", crispd.cgroup_dir().display()),
        Duration::from_secs(5),
        || {
            let pids = crispd.cgroup_pids();
            cmdlines(&pids)
                .iter()
                .any(|c| c.starts_with("sleep 1000"))
                .then_some(pids)
        },
    )
    .await;
    if let Err(e) = found {
        let pids = crispd.cgroup_pids();
        panic!("{e:#}; found {pids:?}: {:?}", cmdlines(&pids));
    }

    // v1: the container sees its path below the parent; v2: its own cgroup namespace, whose
    // root is the container's cgroup.
    let name = if crisp_tests::cgroup_v2() {
        "0::/\n".to_string()
    } else {
        crispd.cgroup_name()
    };
    let log = wait_for_file(&pod.log_file("reader"), Duration::from_secs(30), |log| {
        log.contains(&name)
    })
    .await?;
    assert!(log.contains(&name), "log:\n{log}");

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    // assert_no_leaks only sees cgroups below the parent, not the parent's own.
    let left = crispd.cgroup_pids();
    assert!(
        left.is_empty(),
        "processes left in the cgroup parent: {left:?}"
    );
    Ok(())
}
