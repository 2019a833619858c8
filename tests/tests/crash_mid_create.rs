//! crispd SIGKILLed in the middle of 20 concurrent pod creations, then restarted: every pod is
//! either complete and runnable or cleanly absent, and once they are removed nothing is left
//! (mount, netns, veth, cgroup, IP lease, shim, iptables rule).

use std::time::Duration;

use crisp_tests::cri::ListPodSandboxRequest;
use crisp_tests::{require_root, Crispd, TestPod, BUSYBOX};

const PODS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_create() {
    if !require_root() {
        return;
    }
    let mut crispd = Crispd::start().await.expect("starting crispd");
    let result = check(&mut crispd).await;
    crispd.expect_ok(result);
}

fn leases(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().starts_with("10.") {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

async fn check(crispd: &mut Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let mut tasks = Vec::new();
    for i in 0..PODS {
        let mut c = client.clone();
        let cfg = TestPod::new_config(crispd, &format!("crash{i}"))?;
        tasks.push(tokio::spawn(async move {
            let pod = TestPod::run(&mut c, cfg).await?;
            pod.start_container(&mut c, "c", &["sleep", "600"]).await?;
            anyhow::Ok(())
        }));
    }
    // Let some creations finish and others be half-way.
    tokio::time::sleep(Duration::from_millis(400)).await;
    crispd.kill9();
    for t in tasks {
        // Calls in flight fail with the connection; that is the point.
        let _ = t.await;
    }
    crispd.restart().await?;

    let mut client = crispd.client().await?;
    let pods = client
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items;
    eprintln!("{} of {PODS} pods survived the crash", pods.len());
    for p in &pods {
        // Survivors are complete: ready, and a new container runs in them.
        assert_eq!(
            p.state,
            crisp_tests::cri::PodSandboxState::SandboxReady as i32,
            "{p:?}"
        );
        let name = p
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let pod = TestPod {
            id: p.id.clone(),
            config: TestPod::new_config(crispd, &name)?,
            log_dir: crispd.log_dir().join(&name),
        };
        let c = pod
            .start_container(&mut client, "after", &["sleep", "600"])
            .await?;
        let st = client.container_status(&c).await?;
        assert_eq!(
            st.state,
            crisp_tests::cri::ContainerState::ContainerRunning as i32,
            "{st:?}"
        );
    }
    for p in &pods {
        client.stop_and_remove_pod(&p.id).await?;
    }
    let left = leases(&crispd.dir().join("ipam"));
    assert!(left.is_empty(), "IP leases left: {left:?}");
    crispd.assert_no_leaks();
    Ok(())
}
