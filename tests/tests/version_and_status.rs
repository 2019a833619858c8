//! The runtime identifies itself and reports ready, with the cgroupfs driver.

use anyhow::Context;
use crisp_tests::cri::{
    CgroupDriver, NetworkConfig, RuntimeConfig, RuntimeConfigRequest, UpdateRuntimeConfigRequest,
};
use crisp_tests::{crispd_test, expect_code, Crispd};

crispd_test!(version_and_status, check);

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;

    let version = client.version().await?;
    assert_eq!(version.runtime_name, "crisp");
    assert_eq!(version.runtime_api_version, "v1");
    assert!(!version.runtime_version.is_empty(), "{version:?}");

    let status = client.status().await?;
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

    // kubelet's pod CIDR: kept for the embedded network (this crispd has a conflist of its
    // own, which wins); a malformed one is refused.
    let update = |cidr: &str| UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: cidr.into(),
            }),
        }),
    };
    client
        .runtime
        .update_runtime_config(update("10.201.7.0/24,fd00:7::/64"))
        .await?;
    let kept = std::fs::read_to_string(crispd.root().join("cni/pod-cidr"))?;
    assert_eq!(kept.trim(), "10.201.7.0/24");
    expect_code(
        client
            .runtime
            .update_runtime_config(update("10.201.7.0/33"))
            .await,
        tonic::Code::InvalidArgument,
        "a malformed pod CIDR",
    )?;
    Ok(())
}
