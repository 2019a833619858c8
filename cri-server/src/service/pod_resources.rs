//! UpdatePodSandboxResources: in-place pod resize (GA in Kubernetes 1.35). kubelet calls it
//! after it resized the pod's containers and the pod-level cgroup it owns; crispd keeps the
//! resources and overhead in the pod's record (a restarted crispd and the verbose status show
//! what the pod was resized to), and sets the limits itself only on a pod cgroup it made (a pod
//! run without a cgroup parent, as crictl runs them): containers' limits plus the overhead.

use super::Runtime;
use crate::cgroups::limits::PodLimits;
use crate::error::{Error, Result};
use crate::pod::SandboxState;
use crisp_cri_api::v1::LinuxContainerResources;
use std::sync::Arc;

impl Runtime {
    pub async fn update_pod_resources(
        self: &Arc<Self>,
        id: &str,
        overhead: Option<LinuxContainerResources>,
        resources: Option<LinuxContainerResources>,
    ) -> Result<()> {
        let pod = self.pod(id)?;
        let id = pod.id.clone();
        if pod.state != SandboxState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {id} is not ready: cannot update its resources"
            )));
        }
        let resources = resources.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "UpdatePodSandboxResources of pod sandbox {id}: resources are required"
            ))
        })?;
        if pod.owns_cgroup {
            let limits = pod_limits(overhead.as_ref(), &resources);
            // A slice crispd made is written as directly: systemd sets nothing on it, having
            // been given no limits for it.
            let cgroup = crate::cgroups::driver::PodCgroup::of(&pod.cgroup_parent).dir();
            tokio::task::spawn_blocking(move || crate::cgroups::limits::set(&cgroup, limits))
                .await
                .map_err(|e| Error::internal("pod cgroup update task", e))?
                .map_err(|e| Error::Internal(format!("updating pod sandbox {id}: {e}")))?;
        }
        let mut objs = self.objects();
        let rec = objs
            .pods
            .get_mut(&id)
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id} not found")))?;
        let linux = rec.config.linux.get_or_insert_with(Default::default);
        linux.overhead = overhead;
        linux.resources = Some(resources);
        self.pod_store.save(&id, rec)?;
        tracing::info!(pod = %id, cgroup = %pod.cgroup_parent, "pod resources updated");
        Ok(())
    }
}

/// The pod cgroup's limits: what its containers may use plus the pod's overhead, as kubelet
/// sizes the pod cgroup. No limit where the containers have none (a pod with one unlimited
/// container is unlimited).
fn pod_limits(
    overhead: Option<&LinuxContainerResources>,
    resources: &LinuxContainerResources,
) -> PodLimits {
    let none = LinuxContainerResources::default();
    let o = overhead.unwrap_or(&none);
    // The CRI's numbers are signed; nothing negative is a limit.
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    let period = if resources.cpu_period > 0 {
        n(resources.cpu_period)
    } else {
        100_000
    };
    // The overhead's quota in the containers' period.
    let overhead_quota = if o.cpu_period > 0 {
        n(o.cpu_quota).saturating_mul(period) / n(o.cpu_period)
    } else {
        n(o.cpu_quota)
    };
    // No limit where the containers have none.
    let plus = |containers: u64, extra: u64| {
        if containers > 0 {
            containers.saturating_add(extra)
        } else {
            0
        }
    };
    PodLimits {
        cpu_period: if resources.cpu_quota > 0 { period } else { 0 },
        cpu_quota: plus(n(resources.cpu_quota), overhead_quota),
        cpu_shares: plus(n(resources.cpu_shares), n(o.cpu_shares)),
        memory: plus(
            n(resources.memory_limit_in_bytes),
            n(o.memory_limit_in_bytes),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_plus_overhead() {
        let r = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let o = LinuxContainerResources {
            cpu_period: 50_000,
            cpu_quota: 5_000,
            cpu_shares: 10,
            memory_limit_in_bytes: 8 << 20,
            ..Default::default()
        };
        let l = pod_limits(Some(&o), &r);
        assert_eq!(l.cpu_period, 100_000);
        assert_eq!(l.cpu_quota, 60_000);
        assert_eq!(l.cpu_shares, 522);
        assert_eq!(l.memory, 72 << 20);
    }

    #[test]
    fn unlimited_containers_leave_the_pod_unlimited() {
        let r = LinuxContainerResources {
            cpu_shares: 2,
            ..Default::default()
        };
        let o = LinuxContainerResources {
            cpu_quota: 1000,
            memory_limit_in_bytes: 1 << 20,
            ..Default::default()
        };
        let l = pod_limits(Some(&o), &r);
        assert_eq!((l.cpu_quota, l.memory), (0, 0));
        assert_eq!(l.cpu_shares, 2);
    }
}
