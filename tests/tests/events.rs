//! GetContainerEvents (evented PLEG): a full pod lifecycle arrives in order, with statuses,
//! to two subscribers at once; and across a crispd restart, where the subscriber reconnects and
//! the lifecycle goes on.

use std::time::Duration;

use crisp_tests::cri::{ContainerEventResponse, ContainerEventType, GetEventsRequest};
use crisp_tests::{crispd_test, require_root, CriClient, Crispd, TestPod, BUSYBOX};
use tokio_stream_lite::next;

mod tokio_stream_lite {
    /// The next message of a tonic stream, or an error after a timeout.
    pub async fn next(
        s: &mut tonic::Streaming<crisp_tests::cri::ContainerEventResponse>,
    ) -> anyhow::Result<crisp_tests::cri::ContainerEventResponse> {
        tokio::time::timeout(std::time::Duration::from_secs(20), s.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("event stream ended"))
    }
}

crispd_test!(events, check);

async fn subscribe(
    client: &mut CriClient,
) -> anyhow::Result<tonic::Streaming<ContainerEventResponse>> {
    Ok(client
        .runtime
        .get_container_events(GetEventsRequest {})
        .await?
        .into_inner())
}

async fn check(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let mut first = subscribe(&mut client).await?;
    let mut second = subscribe(&mut client).await?;

    let pod = TestPod::start(&mut client, crispd, "evented").await?;
    let c = pod.start_container(&mut client, "brief", &["true"]).await?;
    client.wait_exited(&c, Duration::from_secs(10)).await?;
    client.stop_and_remove_pod(&pod.id).await?;

    use ContainerEventType::*;
    let want = [
        (pod.id.as_str(), ContainerCreatedEvent),
        (pod.id.as_str(), ContainerStartedEvent),
        (c.as_str(), ContainerCreatedEvent),
        (c.as_str(), ContainerStartedEvent),
        (c.as_str(), ContainerStoppedEvent),
        (pod.id.as_str(), ContainerStoppedEvent),
        (c.as_str(), ContainerDeletedEvent),
        (pod.id.as_str(), ContainerDeletedEvent),
    ];
    for stream in [&mut first, &mut second] {
        let mut last_at = 0;
        for (id, kind) in want {
            let ev = next(stream).await?;
            assert_eq!(
                (ev.container_id.as_str(), ev.container_event_type()),
                (id, kind),
                "{ev:?}"
            );
            assert!(ev.created_at >= last_at);
            last_at = ev.created_at;
            let status = ev
                .pod_sandbox_status
                .as_ref()
                .expect("pod status with every event");
            assert_eq!(status.id, pod.id);
            if kind == ContainerStoppedEvent && id == c {
                let cs = ev
                    .containers_statuses
                    .iter()
                    .find(|s| s.id == c)
                    .expect("container status");
                assert_eq!(cs.exit_code, 0);
                assert_eq!(cs.reason, "Completed");
            }
        }
    }
    crispd.assert_no_leaks();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_across_restart() {
    if !require_root() {
        return;
    }
    let mut crispd = Crispd::start().await.expect("starting crispd");
    let result = across_restart(&mut crispd).await;
    crispd.expect_ok(result);
}

async fn across_restart(crispd: &mut Crispd) -> anyhow::Result<()> {
    use ContainerEventType::*;
    let mut client = crispd.client().await?;
    client.pull(BUSYBOX).await?;
    let mut events = subscribe(&mut client).await?;
    let pod = TestPod::start(&mut client, crispd, "restarted").await?;
    let c = pod
        .start_container(&mut client, "long", &["sleep", "1000"])
        .await?;
    for (id, kind) in [
        (pod.id.as_str(), ContainerCreatedEvent),
        (pod.id.as_str(), ContainerStartedEvent),
        (c.as_str(), ContainerCreatedEvent),
        (c.as_str(), ContainerStartedEvent),
    ] {
        let ev = next(&mut events).await?;
        assert_eq!(
            (ev.container_id.as_str(), ev.container_event_type()),
            (id, kind)
        );
    }

    // crispd dies: the stream ends (as kubelet sees it); the subscriber reconnects.
    crispd.kill9();
    assert!(
        next(&mut events).await.is_err(),
        "the event stream outlived crispd"
    );
    crispd.restart().await?;
    let mut client = crispd.client().await?;
    let mut events = subscribe(&mut client).await?;
    client.stop_and_remove_pod(&pod.id).await?;
    let mut last_at = 0;
    for (id, kind) in [
        (c.as_str(), ContainerStoppedEvent),
        (pod.id.as_str(), ContainerStoppedEvent),
        (c.as_str(), ContainerDeletedEvent),
        (pod.id.as_str(), ContainerDeletedEvent),
    ] {
        let ev = next(&mut events).await?;
        assert_eq!(
            (ev.container_id.as_str(), ev.container_event_type()),
            (id, kind),
            "{ev:?}"
        );
        assert!(ev.created_at >= last_at);
        last_at = ev.created_at;
    }
    crispd.assert_no_leaks();
    Ok(())
}
