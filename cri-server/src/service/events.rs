//! Container events for kubelet's evented PLEG (`GetContainerEvents`): every lifecycle change
//! of a container or pod sandbox, with the pod's status and its containers' statuses as they
//! are right after the change. A broadcast channel fans them out: each subscriber has its own
//! bounded backlog, and one that falls behind loses the oldest events (kubelet then relists)
//! instead of ever blocking the runtime.

use super::{now_ns, Runtime};
use crate::cri::convert;
use crisp_cri_api::v1 as cri;
use crisp_cri_api::v1::ContainerEventType;
use tokio::sync::broadcast;

/// Events a subscriber may lag behind before it starts losing them.
pub const BACKLOG: usize = 1024;

pub fn channel() -> broadcast::Sender<cri::ContainerEventResponse> {
    broadcast::channel(BACKLOG).0
}

impl Runtime {
    pub fn subscribe_events(&self) -> broadcast::Receiver<cri::ContainerEventResponse> {
        self.events.subscribe()
    }

    /// Publishes `kind` for `object_id` (a container, or a pod sandbox for the sandbox's own
    /// events) in pod `pod_id`.
    pub(super) fn publish(&self, object_id: &str, pod_id: &str, kind: ContainerEventType) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let (pod, containers) = {
            let objs = self.objects();
            let pod = objs.pods.get(pod_id).map(convert::pod_status);
            let containers = objs
                .containers
                .values()
                .filter(|c| c.rec.pod_id == pod_id)
                .map(|c| convert::container_status(&c.rec))
                .collect();
            (pod, containers)
        };
        let _ = self.events.send(cri::ContainerEventResponse {
            container_id: object_id.to_string(),
            container_event_type: kind as i32,
            created_at: now_ns(),
            pod_sandbox_status: pod,
            containers_statuses: containers,
        });
    }
}
