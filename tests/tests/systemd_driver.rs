//! The systemd cgroup driver, as kubelet with `cgroupDriver: systemd` (kubeadm's default) uses
//! it: RuntimeConfig says SYSTEMD; a pod's cgroup parent is a slice
//! (`…-besteffort-pod<uid>.slice`); each container runs in a transient scope
//! `crisp-<id>.scope` in it that systemd lists while the container runs, with the container's
//! limits, changed live, and that vanishes with the container; stats and OOMKilled come from
//! it; a pod sharing its PID namespace has its pause in a scope too; a pod crispd made the
//! parent for gets a slice of its own that goes with it; a cgroupfs parent is refused.
//!
//! Needs systemd as PID 1 on cgroup v2: `scripts/test-vm.sh` boots one in the VM
//! (`scripts/vm-systemd.sh`). Elsewhere it says why it stopped and passes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crisp_tests::cri::{
    LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig, RuntimeConfigRequest,
    UpdateContainerResourcesRequest,
};
use crisp_tests::{expect_code, sh, wait_until, CriClient, Crispd, TestPod, BUSYBOX};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_driver() {
    if !crisp_tests::require_root() {
        return;
    }
    if let Some(why) = no_systemd() {
        eprintln!("systemd_driver: skipped, {why} (scripts/test-vm.sh runs it under systemd)");
        return;
    }
    let crispd = Crispd::start_with_systemd_driver()
        .await
        .expect("starting crispd");
    crispd.expect_ok(check(&crispd).await);
}

fn no_systemd() -> Option<&'static str> {
    let comm = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if comm.trim() != "systemd" || !Path::new("/run/systemd/system").is_dir() {
        return Some("systemd is not PID 1");
    }
    if !crisp_tests::cgroup_v2() {
        return Some("the driver needs cgroup v2");
    }
    None
}

const CGROUP: &str = "/sys/fs/cgroup";

/// The directory systemd gives `slice` (`a-b.slice` is `a.slice/a-b.slice`).
fn slice_dir(slice: &str) -> PathBuf {
    let stem = slice.trim_end_matches(".slice");
    let mut dir = PathBuf::from(CGROUP);
    let mut prefix = String::new();
    for part in stem.split('-') {
        dir.push(format!("{prefix}{part}.slice"));
        prefix.push_str(part);
        prefix.push('-');
    }
    dir
}

/// systemd's `ActiveState` of `unit` (`inactive` for one it does not know).
fn unit_state(unit: &str) -> String {
    let out = Command::new("systemctl")
        .args(["show", "--property=ActiveState", "--value", unit])
        .output()
        .expect("running systemctl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn gone(what: &str, dir: &Path, unit: &str) -> anyhow::Result<()> {
    wait_until(what, Duration::from_secs(10), || {
        (!dir.exists() && unit_state(unit) != "active").then_some(())
    })
    .await
}

fn memory_limit(bytes: i64) -> Option<LinuxContainerConfig> {
    Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: bytes,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// RunPodSandbox of a pod whose cgroup parent is `parent`, which must be INVALID_ARGUMENT.
async fn refused(
    client: &mut CriClient,
    crispd: &Crispd,
    parent: &str,
) -> anyhow::Result<tonic::Status> {
    let mut config = TestPod::new_config(crispd, "refused")?;
    config.linux = Some(LinuxPodSandboxConfig {
        cgroup_parent: parent.into(),
        ..Default::default()
    });
    expect_code(
        client
            .runtime
            .run_pod_sandbox(crisp_tests::cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await,
        tonic::Code::InvalidArgument,
        &format!("a pod with cgroup parent {parent}"),
    )
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;

    let config = client
        .runtime
        .runtime_config(RuntimeConfigRequest {})
        .await?
        .into_inner();
    let driver = config.linux.map(|l| l.cgroup_driver);
    anyhow::ensure!(
        driver == Some(crisp_tests::cri::CgroupDriver::Systemd as i32),
        "RuntimeConfig reports cgroup driver {driver:?}"
    );

    // A cgroupfs parent is kubelet configured with the other driver: refused, naming both.
    let status = refused(&mut client, crispd, "/kubepods/besteffort/pod1").await?;
    anyhow::ensure!(
        status.message().contains("systemd"),
        "refusal: {}",
        status.message()
    );
    // A slice's path must be systemd's: elsewhere the pod's cgroups would be in two places.
    refused(&mut client, crispd, "/elsewhere/kubepods-pod1.slice").await?;

    // A pod under a slice named as kubelet names it, below this instance's parent.
    let stem = crispd
        .cgroup_parent()
        .trim_end_matches(".slice")
        .to_string();
    let slice = format!("{stem}-besteffort-pod{}.slice", crispd.id());
    let pod_dir = slice_dir(&slice);
    let mut config = TestPod::shared_pid_config(crispd, "sliced")?;
    config.linux = Some(LinuxPodSandboxConfig {
        // As kubelet sends it: systemd's path of the slice (containerd and CRI-O take its last
        // part; a bare name works too, see the refusal above and the config's parent).
        cgroup_parent: pod_dir
            .strip_prefix(CGROUP)?
            .to_str()
            .map(|p| format!("/{p}"))
            .unwrap_or_default(),
        ..config.linux.unwrap_or_default()
    });
    let pod = TestPod::run(&mut client, config).await?;

    // The pause of the shared PID namespace has a scope named for the pod.
    let pause_unit = format!("crisp-{}.scope", pod.id);
    let pause_dir = pod_dir.join(&pause_unit);
    anyhow::ensure!(
        unit_state(&pause_unit) == "active" && pause_dir.join("cgroup.procs").is_file(),
        "the pause's scope {pause_unit}: {}",
        unit_state(&pause_unit)
    );

    let mut limited = pod.container("limited", &["sleep", "3600"])?;
    limited.linux = memory_limit(96 << 20);
    let id = pod.create(&mut client, limited).await?;
    client.start_container(&id).await?;
    let unit = format!("crisp-{id}.scope");
    let dir = pod_dir.join(&unit);
    anyhow::ensure!(
        unit_state(&unit) == "active",
        "{unit} is {} while its container runs",
        unit_state(&unit)
    );
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    let status = client.container_status(&id).await?;
    anyhow::ensure!(
        !procs.trim().is_empty(),
        "no process in {}: {status:?}",
        dir.display()
    );
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map(|s| s.trim().to_string());
    anyhow::ensure!(read("memory.max")? == (96u64 << 20).to_string());
    anyhow::ensure!(
        read("cpu.max")? == "50000 100000",
        "cpu.max {}",
        read("cpu.max")?
    );

    // The container sees its scope as its cgroup root, and exec joins it.
    let (code, out) = sh(
        &mut client,
        &id,
        "cat /proc/self/cgroup; cat /sys/fs/cgroup/memory.max",
    )
    .await?;
    anyhow::ensure!(
        code == 0 && out.contains("0::/") && out.contains(&(96u64 << 20).to_string()),
        "exec: {code} {out}"
    );

    // Live update: through systemd, so a daemon-reload does not undo it.
    client
        .runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: memory_limit(128 << 20).and_then(|l| l.resources),
            ..Default::default()
        })
        .await?;
    anyhow::ensure!(read("memory.max")? == (128u64 << 20).to_string());
    let prop = Command::new("systemctl")
        .args(["show", "--property=MemoryMax", "--value", &unit])
        .output()?;
    let prop = String::from_utf8_lossy(&prop.stdout).trim().to_string();
    anyhow::ensure!(
        prop == (128u64 << 20).to_string(),
        "systemd's MemoryMax of {unit}: {prop}"
    );

    // Stats come from the scope.
    let stats = client
        .runtime
        .container_stats(crisp_tests::cri::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await?
        .into_inner()
        .stats
        .and_then(|s| s.memory)
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value)
        .unwrap_or(0);
    anyhow::ensure!(stats > 0, "no memory working set from {unit}");

    // Stopped: the scope is gone (systemd stops an emptied scope; the shim's delete stops it).
    crisp_tests::timed_stop(&mut client, &id, 0).await?;
    client.remove_container(&id).await?;
    gone(&format!("{unit} after RemoveContainer"), &dir, &unit).await?;

    client.stop_and_remove_pod(&pod.id).await?;
    gone(
        "the pause's scope after RemovePodSandbox",
        &pause_dir,
        &pause_unit,
    )
    .await?;
    // The slice is kubelet's: crispd leaves it (kubelet removes it with the pod).
    anyhow::ensure!(pod_dir.exists(), "crispd removed kubelet's slice {slice}");
    // kubelet's part: its QoS slice and the pod's in it.
    let _ = Command::new("systemctl")
        .args(["stop", &format!("{stem}-besteffort.slice")])
        .status();

    // A pod without a parent: a slice of crispd's own, removed with the pod.
    let own = TestPod::start(&mut client, crispd, "own-slice").await?;
    let c = own
        .start_container(&mut client, "c", &["sleep", "3600"])
        .await?;
    let short = own.id.get(..12).unwrap_or(&own.id);
    let own_slice = format!("{stem}-pod{short}.slice");
    let own_dir = slice_dir(&own_slice);
    anyhow::ensure!(
        own_dir.join(format!("crisp-{c}.scope")).is_dir() && unit_state(&own_slice) == "active",
        "no {} for a pod without a parent",
        own_dir.display()
    );
    client.stop_and_remove_pod(&own.id).await?;
    gone(
        "crispd's own pod slice after RemovePodSandbox",
        &own_dir,
        &own_slice,
    )
    .await?;

    crispd.assert_no_leaks();
    Ok(())
}
