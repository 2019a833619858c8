//! Networking when things go wrong: crispd killed between CNI ADD and DEL still tears the pod's
//! network down after a restart (from the result cache); a broken conflist or a missing plugin
//! makes NetworkReady false with a reason and pod creation fail clearly, and fixing the config
//! is picked up without a restart.

use crisp_tests::{require_root, CriClient, Crispd, TestPod};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_failures() {
    if !require_root() {
        return;
    }
    let mut crispd = Crispd::start().await.expect("starting crispd");
    let result = check(&mut crispd).await;
    crispd.expect_ok(result);
}

async fn network_ready(client: &mut CriClient) -> anyhow::Result<(bool, String)> {
    let status = client.status().await?;
    let c = status
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.r#type == "NetworkReady")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no NetworkReady condition"))?;
    Ok((c.status, format!("{} {}", c.reason, c.message)))
}

async fn check(crispd: &mut Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;

    // ADD, then crispd dies; DEL after the restart still removes the pod's rules and veth.
    let pod = TestPod::start(&mut client, crispd, "orphaned").await?;
    assert!(
        !crispd.network().iptables_rules().is_empty(),
        "ADD made no rules"
    );
    crispd.kill9();
    crispd.restart().await?;
    let mut client = crispd.client().await?;
    client.stop_and_remove_pod(&pod.id).await?;
    assert!(
        crispd.network().iptables_rules().is_empty(),
        "rules left after DEL across a restart: {:?}",
        crispd.network().iptables_rules()
    );

    // A broken conflist sorts first: NetworkReady=false naming the file, pods refused.
    let conf_dir = crispd.dir().join("net.d");
    let broken = conf_dir.join("00-broken.conflist");
    std::fs::write(&broken, "{ not json")?;
    let (ready, why) = network_ready(&mut client).await?;
    assert!(!ready, "NetworkReady with a broken conflist");
    assert!(why.contains("00-broken.conflist"), "{why}");
    let cfg = TestPod::new_config(crispd, "refused")?;
    let e = client
        .run_pod(&cfg)
        .await
        .expect_err("pod without a usable network");
    assert!(e.to_string().contains("network"), "{e}");

    // A conflist naming a plugin that is not installed.
    std::fs::write(
        &broken,
        r#"{"cniVersion":"1.0.0","name":"missing","plugins":[{"type":"no-such-plugin"}]}"#,
    )?;
    let (ready, why) = network_ready(&mut client).await?;
    assert!(!ready);
    assert!(why.contains("no-such-plugin"), "{why}");

    // Fixed: ready again without a restart, and pods get their network.
    std::fs::remove_file(&broken)?;
    let (ready, why) = network_ready(&mut client).await?;
    assert!(ready, "{why}");
    let pod = TestPod::start(&mut client, crispd, "recovered").await?;
    let ip = client
        .pod_status(&pod.id)
        .await?
        .network
        .map(|n| n.ip)
        .unwrap_or_default();
    assert!(ip.starts_with("10.89."), "ip {ip:?}");
    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
