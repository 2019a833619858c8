//! Churn: 500 pod create/start/stop/remove cycles. crispd's open files, threads and memory do
//! not grow with them, and nothing is left on the host afterwards.

use crisp_tests::{crispd_test, Crispd, TestPod, BUSYBOX};

const CYCLES: usize = 500;
/// Concurrent workers (see `run`), as kubelet starts several pods at once.
const WORKERS: usize = 4;
/// Cycles before the baseline is taken: caches, lazily started tasks, the allocator's pools.
const WARMUP: usize = 40;

crispd_test!(churn, check);

#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_kib: u64,
}

fn usage(pid: i32) -> anyhow::Result<Usage> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok(Usage {
        fds,
        threads: field("Threads:") as usize,
        rss_kib: field("VmRSS:"),
    })
}

async fn cycles(crispd: &Crispd, worker: usize, n: usize, offset: usize) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    for i in 0..n {
        let name = format!("churn-{worker}-{}", offset + i);
        let pod = TestPod::start(&mut client, crispd, &name).await?;
        pod.start_container(&mut client, "c", &["sleep", "600"])
            .await?;
        client.stop_and_remove_pod(&pod.id).await?;
        let _ = std::fs::remove_dir_all(&pod.log_dir);
    }
    Ok(())
}

/// `total` cycles spread over four concurrent workers.
async fn run(crispd: &Crispd, total: usize, offset: usize) -> anyhow::Result<()> {
    let share = |w: usize| total / WORKERS + usize::from(w < total % WORKERS);
    let (a, b, c, d) = tokio::join!(
        cycles(crispd, 0, share(0), offset),
        cycles(crispd, 1, share(1), offset),
        cycles(crispd, 2, share(2), offset),
        cycles(crispd, 3, share(3), offset),
    );
    a.and(b).and(c).and(d)
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pid = crispd
        .pid()
        .ok_or_else(|| anyhow::anyhow!("crispd not running"))?;

    run(crispd, WARMUP, 0).await?;
    let before = usage(pid)?;
    run(crispd, CYCLES - WARMUP, WARMUP).await?;
    let after = usage(pid)?;
    eprintln!("crispd before {before:?}, after {after:?} ({CYCLES} cycles)");

    assert!(
        after.fds <= before.fds + 4,
        "open files grew: {before:?} → {after:?}"
    );
    assert!(
        after.threads <= before.threads + 4,
        "threads grew: {before:?} → {after:?}"
    );
    assert!(
        after.rss_kib <= before.rss_kib + 16 * 1024,
        "memory grew by more than 16 MiB: {before:?} → {after:?}"
    );
    let left = client
        .runtime
        .list_pod_sandbox(crisp_tests::cri::ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items;
    assert!(left.is_empty(), "pods left: {left:?}");
    crispd.assert_no_leaks();
    Ok(())
}
