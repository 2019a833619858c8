//! Hostile input: a thousand malformed or random CRI requests (path-like ids, huge strings,
//! bad enums, missing fields, escaping paths) each get a clear gRPC error or a harmless answer,
//! the daemon stays up, and nothing is left on the host.

use crisp_tests::cri::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerStateValue,
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ImageSpec, ImageStatusRequest,
    ListContainersRequest, Mount, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    PullImageRequest, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopContainerRequest, VersionRequest,
};
use crisp_tests::{require_root, Crispd, TestPod, BUSYBOX};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input() {
    if !require_root() {
        return;
    }
    let crispd = Crispd::start().await.expect("starting crispd");
    // Random well-formed image names name random registries: keep their pulls on loopback.
    crispd
        .blackhole_other_registries()
        .expect("registry host config");
    crispd.expect_ok(check(&crispd).await);
}

/// xorshift: deterministic, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }

    fn string(&mut self) -> String {
        match self.next() % 6 {
            0 => String::new(),
            1 => "../../../../etc/passwd".into(),
            2 => "x".repeat(1 << 20),
            3 => (0..(self.next() % 64))
                .map(|_| char::from((self.next() % 94 + 33) as u8))
                .collect(),
            4 => "a/b\0c\n".into(),
            _ => self
                .pick(&[
                    "busybox",
                    "nosuch:tag",
                    "/abs/path",
                    "sha256:zz",
                    "UPPER",
                    "a@b",
                ])
                .into(),
        }
    }
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let pod = TestPod::start(&mut client, crispd, "target").await?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..1000 {
        let s = rng.string();
        let r: Result<(), tonic::Status> = match i % 12 {
            0 => client
                .runtime
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: s,
                    verbose: true,
                })
                .await
                .map(drop),
            1 => client
                .runtime
                .container_status(ContainerStatusRequest {
                    container_id: s,
                    verbose: true,
                })
                .await
                .map(drop),
            2 => client
                .runtime
                .start_container(StartContainerRequest { container_id: s })
                .await
                .map(drop),
            3 => client
                .runtime
                .stop_container(StopContainerRequest {
                    container_id: s,
                    timeout: rng.next() as i64,
                })
                .await
                .map(drop),
            4 => client
                .runtime
                .remove_container(RemoveContainerRequest { container_id: s })
                .await
                .map(drop),
            5 => client
                .runtime
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: s })
                .await
                .map(drop),
            6 => client
                .image
                .pull_image(PullImageRequest {
                    image: Some(ImageSpec {
                        image: s,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .map(drop),
            7 => client
                .image
                .image_status(ImageStatusRequest {
                    image: Some(ImageSpec {
                        image: s,
                        ..Default::default()
                    }),
                    verbose: true,
                })
                .await
                .map(drop),
            8 => client
                .runtime
                .list_containers(ListContainersRequest {
                    filter: Some(ContainerFilter {
                        id: s,
                        state: Some(ContainerStateValue {
                            state: (rng.next() % 1000) as i32,
                        }),
                        ..Default::default()
                    }),
                })
                .await
                .map(drop),
            9 => client
                .runtime
                .exec_sync(ExecSyncRequest {
                    container_id: s.clone(),
                    cmd: vec![s],
                    timeout: 1,
                })
                .await
                .map(drop),
            10 => client
                .runtime
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(PodSandboxConfig {
                        metadata: Some(PodSandboxMetadata {
                            name: s.clone(),
                            namespace: s.clone(),
                            uid: s.clone(),
                            attempt: rng.next() as u32,
                        }),
                        hostname: s.clone(),
                        log_directory: s,
                        ..Default::default()
                    }),
                    runtime_handler: rng.string(),
                })
                .await
                .map(|r| {
                    // A pod that got through is legitimate; remove it again.
                    let _ = r.into_inner();
                }),
            _ => client
                .runtime
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.id.clone(),
                    config: Some(ContainerConfig {
                        metadata: Some(ContainerMetadata {
                            name: s.clone(),
                            attempt: 0,
                        }),
                        image: Some(ImageSpec {
                            image: rng.pick(&["busybox", "nosuch"]).into(),
                            ..Default::default()
                        }),
                        command: vec![s.clone()],
                        working_dir: s.clone(),
                        log_path: s.clone(),
                        mounts: vec![Mount {
                            container_path: s.clone(),
                            host_path: rng.string(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    sandbox_config: None,
                })
                .await
                .map(drop),
        };
        match r {
            Ok(()) => ok += 1,
            Err(status) => {
                refused += 1;
                // A pull of a well-formed name goes to its registry (here the harness's
                // blackhole): that Unavailable is crispd's answer, not a dead crispd.
                let unreachable_registry =
                    status.code() == Code::Unavailable && status.message().starts_with("pulling ");
                assert!(
                    unreachable_registry
                        || !matches!(status.code(), Code::Unknown | Code::Unavailable),
                    "request {i}: unclear error {status:?}"
                );
            }
        }
        if i % 100 == 0 {
            client.runtime.version(VersionRequest::default()).await?;
        }
    }
    eprintln!("hostile input: {ok} answered, {refused} refused");
    assert!(refused > 500, "only {refused} of 1000 refused");
    client.runtime.version(VersionRequest::default()).await?;

    // Remove whatever legitimately got created, then nothing may be left.
    for p in client
        .runtime
        .list_pod_sandbox(crisp_tests::cri::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items
    {
        client.stop_and_remove_pod(&p.id).await?;
    }
    crispd.assert_no_leaks();
    Ok(())
}
