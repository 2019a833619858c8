//! Resource limits checked from inside the container: the memory limit and CPU quota in the
//! container's own cgroup, UpdateContainerResources applied live, an OOM kill reported as
//! `OOMKilled` with exit code 137, and UpdatePodSandboxResources (in-place pod resize) setting
//! the pod's cgroup to its containers' limits plus the overhead.

use std::time::Duration;

use crisp_tests::cri::{
    ContainerState, ExecSyncRequest, HugepageLimit, LinuxContainerConfig, LinuxContainerResources,
    UpdateContainerResourcesRequest, UpdatePodSandboxResourcesRequest,
};
use crisp_tests::{crispd_test, expect_code, CriClient, Crispd, TestPod, BUSYBOX};

crispd_test!(resources, check);

async fn read_in(client: &mut CriClient, id: &str, path: &str) -> anyhow::Result<String> {
    let r = client
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.to_string(),
            cmd: vec!["cat".into(), path.into()],
            timeout: 10,
        })
        .await?
        .into_inner();
    anyhow::ensure!(
        r.exit_code == 0,
        "cat {path}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    Ok(String::from_utf8_lossy(&r.stdout).trim().to_string())
}

/// The pod's cgroup below the hierarchy roots (crispd makes `<parent>/pod-<id prefix>`).
fn pod_cgroup(crispd: &Crispd, pod_id: &str) -> String {
    format!("{}/pod-{}", crispd.cgroup_name(), &pod_id[..12])
}

fn limited(mem: i64, quota: i64) -> LinuxContainerConfig {
    LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: mem,
            cpu_period: 100_000,
            cpu_quota: quota,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "limits").await?;
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (mem_file, quota_file) = if v2 {
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/cpu.max")
    } else {
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        )
    };

    let mut config = pod.container("limited", &["sleep", "1000"])?;
    config.linux = Some(limited(64 << 20, 50_000));
    let id = pod.create(&mut client, config).await?;
    client.start_container(&id).await?;
    assert_eq!(
        read_in(&mut client, &id, mem_file).await?,
        (64u64 << 20).to_string()
    );
    let quota = read_in(&mut client, &id, quota_file).await?;
    assert!(quota.starts_with("50000"), "quota {quota}");

    // cgroup v2: the `unified` map, as kubelet (1.32+, singleProcessOOMKill off) sends
    // memory.oom.group so that an OOM kill takes the whole container.
    if v2 {
        let mut grouped = pod.container("oomgroup", &["sleep", "1000"])?;
        let mut linux = limited(64 << 20, 0);
        if let Some(r) = linux.resources.as_mut() {
            r.unified.insert("memory.oom.group".into(), "1".into());
        }
        grouped.linux = Some(linux);
        let grouped = pod.create(&mut client, grouped).await?;
        client.start_container(&grouped).await?;
        assert_eq!(
            read_in(&mut client, &grouped, "/sys/fs/cgroup/memory.oom.group").await?,
            "1"
        );
    }

    client
        .runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: limited(128 << 20, 20_000).resources,
            ..Default::default()
        })
        .await?;
    assert_eq!(
        read_in(&mut client, &id, mem_file).await?,
        (128u64 << 20).to_string()
    );
    let quota = read_in(&mut client, &id, quota_file).await?;
    assert!(quota.starts_with("20000"), "quota after update {quota}");
    let status = client.container_status(&id).await?;
    let reported = status
        .resources
        .and_then(|r| r.linux)
        .map(|l| l.memory_limit_in_bytes);
    assert_eq!(reported, Some(128 << 20));

    // Updated while created (the runtime creates the container at its start): it starts with
    // the new limits.
    let mut early = pod.container("updated-early", &["sleep", "1000"])?;
    early.linux = Some(limited(64 << 20, 50_000));
    let early = pod.create(&mut client, early).await?;
    client
        .runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: early.clone(),
            linux: limited(96 << 20, 30_000).resources,
            ..Default::default()
        })
        .await?;
    client.start_container(&early).await?;
    assert_eq!(
        read_in(&mut client, &early, mem_file).await?,
        (96u64 << 20).to_string()
    );
    let quota = read_in(&mut client, &early, quota_file).await?;
    assert!(
        quota.starts_with("30000"),
        "quota of one updated before its start {quota}"
    );

    // Hugepage limits: the hugetlb controller is wherever the host has it (on this hybrid
    // host only in the cgroup2 hierarchy at /sys/fs/cgroup/unified).
    let mut huge = pod.container("huge", &["sleep", "1000"])?;
    let mut linux = limited(64 << 20, 0);
    if let Some(r) = linux.resources.as_mut() {
        r.hugepage_limits = vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }];
    }
    huge.linux = Some(linux);
    let huge_id = pod.create(&mut client, huge).await?;
    client.start_container(&huge_id).await?;
    let cgroup = format!("{}/{huge_id}", pod_cgroup(crispd, &pod.id));
    let v1_hugetlb = std::path::Path::new("/sys/fs/cgroup/hugetlb").exists();
    let limit_file = if v2 {
        Some(format!("/sys/fs/cgroup/{cgroup}/hugetlb.2MB.max"))
    } else if v1_hugetlb {
        Some(format!(
            "/sys/fs/cgroup/hugetlb/{cgroup}/hugetlb.2MB.limit_in_bytes"
        ))
    } else {
        // This CI host: hybrid, hugetlb only in the cgroup2 tree. The limit cannot be set
        // through the v1 manager; the container must still run (kubelet sends hugepage limits
        // for every container).
        None
    };
    if let Some(f) = limit_file {
        let limit = std::fs::read_to_string(&f)?;
        assert_eq!(
            limit.trim(),
            (4u64 << 20).to_string(),
            "hugetlb limit in {f}"
        );
    }
    let (code, _) = crisp_tests::sh(&mut client, &huge_id, "true").await?;
    assert_eq!(code, 0, "the container with hugepage limits runs");

    // A memory hog: `tail` buffers /dev/zero (no newline ever) until the OOM killer fires.
    let mut hog = pod.container("hog", &["tail", "/dev/zero"])?;
    hog.linux = Some(limited(16 << 20, 0));
    let hog_id = pod.create(&mut client, hog).await?;
    client.start_container(&hog_id).await?;
    let status = client.wait_exited(&hog_id, Duration::from_secs(60)).await?;
    assert_eq!(status.state(), ContainerState::ContainerExited);
    assert_eq!(status.exit_code, 137);
    assert_eq!(status.reason, "OOMKilled");

    resize_pod(&mut client, crispd, &pod).await?;

    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}

/// The pod cgroup's memory limit and CPU quota, read on the host.
fn pod_limits_on_host(crispd: &Crispd, pod_id: &str) -> anyhow::Result<(String, String)> {
    let cg = pod_cgroup(crispd, pod_id);
    let (mem, cpu) = if crisp_tests::cgroup_v2() {
        (
            format!("/sys/fs/cgroup/{cg}/memory.max"),
            format!("/sys/fs/cgroup/{cg}/cpu.max"),
        )
    } else {
        (
            format!("/sys/fs/cgroup/memory/{cg}/memory.limit_in_bytes"),
            format!("/sys/fs/cgroup/cpu/{cg}/cpu.cfs_quota_us"),
        )
    };
    Ok((
        std::fs::read_to_string(mem)?.trim().to_string(),
        std::fs::read_to_string(cpu)?.trim().to_string(),
    ))
}

async fn resize_pod(client: &mut CriClient, crispd: &Crispd, pod: &TestPod) -> anyhow::Result<()> {
    let request = |pod_sandbox_id: &str| UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod_sandbox_id.to_string(),
        // Above every container's quota: cgroup v1 refuses a parent quota below a child's.
        resources: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 200_000,
            cpu_shares: 1024,
            memory_limit_in_bytes: 512 << 20,
            ..Default::default()
        }),
        overhead: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 10_000,
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
    };
    client
        .runtime
        .update_pod_sandbox_resources(request(&pod.id))
        .await?;
    let (mem, quota) = pod_limits_on_host(crispd, &pod.id)?;
    assert_eq!(mem, (528u64 << 20).to_string(), "pod memory limit");
    assert!(quota.starts_with("210000"), "pod CPU quota {quota}");
    // The containers keep theirs.
    let running = client.list_containers().await?;
    let limited = running
        .iter()
        .find(|c| c.metadata.as_ref().is_some_and(|m| m.name == "limited"))
        .map(|c| c.id.clone())
        .ok_or_else(|| anyhow::anyhow!("container limited not listed"))?;
    let status = client.container_status(&limited).await?;
    let reported = status
        .resources
        .and_then(|r| r.linux)
        .map(|l| l.memory_limit_in_bytes);
    assert_eq!(reported, Some(128 << 20));

    let unknown = client
        .runtime
        .update_pod_sandbox_resources(request("no-such-pod"))
        .await;
    expect_code(unknown, tonic::Code::NotFound, "resize of an unknown pod")?;
    let without = client
        .runtime
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.id.clone(),
            ..Default::default()
        })
        .await;
    let status = expect_code(
        without,
        tonic::Code::InvalidArgument,
        "resize without resources",
    )?;
    assert!(
        status.message().contains("resources"),
        "{}",
        status.message()
    );
    Ok(())
}
