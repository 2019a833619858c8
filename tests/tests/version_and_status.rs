//! The runtime identifies itself and reports ready, with the cgroupfs driver.

use anyhow::Context;
use crisp_tests::cri::{CgroupDriver, RuntimeConfigRequest, StatusRequest};
use crisp_tests::{require_root, Crispd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_status() {
    if !require_root() {
        return;
    }
    let crispd = Crispd::start().await.expect("starting crispd");
    crispd.expect_ok(check(&crispd).await);
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;

    let version = client.version().await?;
    assert_eq!(version.runtime_name, "crisp");
    assert_eq!(version.runtime_api_version, "v1");
    assert!(!version.runtime_version.is_empty(), "{version:?}");

    let status = client
        .runtime
        .status(StatusRequest { verbose: false })
        .await?
        .into_inner();
    let conditions = status.status.context("Status without status")?.conditions;
    let ready = conditions
        .iter()
        .find(|condition| condition.r#type == "RuntimeReady")
        .with_context(|| format!("no RuntimeReady condition in {conditions:?}"))?;
    assert!(ready.status, "runtime not ready: {ready:?}");

    let config = client
        .runtime
        .runtime_config(RuntimeConfigRequest {})
        .await?
        .into_inner();
    let linux = config.linux.context("RuntimeConfig without linux")?;
    assert_eq!(linux.cgroup_driver(), CgroupDriver::Cgroupfs);
    Ok(())
}
