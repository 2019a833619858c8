//! Invalid and unknown-object requests get the CRI's status codes, change
//! nothing, and leave crispd serving.

use crisp_tests::cri::{
    ContainerConfig, CreateContainerRequest, ListContainersRequest, PodSandboxConfig,
    PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use crisp_tests::{
    container_config, crispd_test, expect_code, CriClient, Crispd, TestPod, BUSYBOX,
};
use tonic::Code;

crispd_test!(bad_input, check);

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;

    check_bad_pods(&mut client, crispd).await?;
    let pod = TestPod::start(&mut client, crispd, "target").await?;
    let duplicate = run_pod(&mut client, pod.config.clone()).await;
    let status = expect_code(duplicate, Code::AlreadyExists, "same pod twice")?;
    assert!(
        status.message().contains("target"),
        "message does not name the pod: {status}"
    );

    check_unknown_ids(&mut client).await?;
    check_bad_containers(&mut client, &pod).await?;

    client.version().await?;
    let containers = client
        .runtime
        .list_containers(ListContainersRequest { filter: None })
        .await?
        .into_inner()
        .containers;
    assert!(containers.is_empty(), "failed creates left {containers:?}");
    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}

async fn check_bad_pods(client: &mut CriClient, crispd: &Crispd) -> anyhow::Result<()> {
    let mut no_metadata = TestPod::new_config(crispd, "nometa")?;
    no_metadata.metadata = None;
    let result = run_pod(client, no_metadata).await;
    expect_code(result, Code::InvalidArgument, "pod without metadata")?;

    let mut no_name = TestPod::new_config(crispd, "noname")?;
    if let Some(metadata) = no_name.metadata.as_mut() {
        metadata.name.clear();
    }
    let result = run_pod(client, no_name).await;
    expect_code(result, Code::InvalidArgument, "pod with an empty name")?;
    Ok(())
}

async fn check_unknown_ids(client: &mut CriClient) -> anyhow::Result<()> {
    let result = client
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: "nosuch".to_string(),
            verbose: false,
        })
        .await;
    expect_code(result, Code::NotFound, "PodSandboxStatus(nosuch)")?;

    let result = client
        .runtime
        .start_container(StartContainerRequest {
            container_id: "nosuch".to_string(),
        })
        .await;
    expect_code(result, Code::NotFound, "StartContainer(nosuch)")?;

    // The CRI makes removal idempotent: removing what is not there succeeds.
    client
        .runtime
        .remove_container(RemoveContainerRequest {
            container_id: "nosuch".to_string(),
        })
        .await?;
    client
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: "nosuch".to_string(),
        })
        .await?;

    // containerd answers NOT_FOUND here, while the CRI text suggests OK.
    let result = client
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: "nosuch".to_string(),
        })
        .await;
    if let Err(status) = result {
        assert_eq!(
            status.code(),
            Code::NotFound,
            "StopPodSandbox(nosuch): {status}"
        );
    }
    Ok(())
}

async fn check_bad_containers(client: &mut CriClient, pod: &TestPod) -> anyhow::Result<()> {
    let config = pod.container("orphan", &["true"])?;
    let result = create(client, "nosuch", config, &pod.config).await;
    expect_code(result, Code::NotFound, "CreateContainer in an unknown pod")?;

    let config = container_config("ghost", "nosuch:latest", &["true"], "ghost.log");
    let result = create(client, &pod.id, config, &pod.config).await;
    let status = expect_code(
        result,
        Code::NotFound,
        "CreateContainer from an unknown image",
    )?;
    assert!(
        status.message().contains("nosuch"),
        "message does not name the image: {status}"
    );

    for log_path in ["../escape.log", "dir/../../escape.log"] {
        let config = container_config("escaper", BUSYBOX, &["true"], log_path);
        let result = create(client, &pod.id, config, &pod.config).await;
        expect_code(
            result,
            Code::InvalidArgument,
            &format!("log_path {log_path:?}"),
        )?;
    }
    Ok(())
}

async fn run_pod(
    client: &mut CriClient,
    config: PodSandboxConfig,
) -> Result<tonic::Response<crisp_tests::cri::RunPodSandboxResponse>, tonic::Status> {
    client
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
}

async fn create(
    client: &mut CriClient,
    pod_id: &str,
    config: ContainerConfig,
    pod_config: &PodSandboxConfig,
) -> Result<tonic::Response<crisp_tests::cri::CreateContainerResponse>, tonic::Status> {
    client
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
}
