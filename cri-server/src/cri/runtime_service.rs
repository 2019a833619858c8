//! CRI `RuntimeService`.

use super::{convert, in_batches, Cri, ListStream};
use crate::cgroups::driver::CgroupDriver;
use crate::error::Error;
use crisp_cri_api::v1 as cri;
use crisp_cri_api::v1::runtime_service_server::RuntimeService;
use std::pin::Pin;
use tonic::{Request, Response, Status};
use tracing::Instrument;

type R<T> = Result<Response<T>, Status>;

fn streaming_err(e: crisp_streaming::StreamingError) -> Status {
    match e {
        crisp_streaming::StreamingError::InvalidRequest(m) => Status::invalid_argument(m),
        other => Status::unavailable(other.to_string()),
    }
}

/// Runs a call that makes things on the node (mounts, a netns, a shim) to its end even if the
/// client goes away: tonic drops a handler's future when its stream is reset, and a call dropped
/// half-way would leave what it made so far untracked. Its own error path undoes a failure.
async fn to_completion<T: Send + 'static>(
    call: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(call)
        .await
        .map_err(|e| Error::internal("CRI call task", e))?
}

impl Cri {
    /// ListPodSandbox and StreamPodSandboxes.
    fn pods(&self, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        self.runtime
            .list_pods(filter.as_ref())
            .iter()
            .map(convert::pod)
            .collect()
    }

    /// ListContainers and StreamContainers.
    fn containers(&self, filter: Option<cri::ContainerFilter>) -> Vec<cri::Container> {
        self.runtime
            .list_containers(filter.as_ref())
            .iter()
            .map(convert::container)
            .collect()
    }

    /// ListPodSandboxMetrics and StreamPodSandboxMetrics.
    async fn pod_metrics(&self) -> Vec<cri::PodSandboxMetrics> {
        let pods = self.runtime.pod_samples().await;
        pods.iter().map(super::pod_metrics::of_pod).collect()
    }
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(&self, _req: Request<cri::VersionRequest>) -> R<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "crisp".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> R<cri::RunPodSandboxResponse> {
        let req = req.into_inner();
        let name = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let span = tracing::info_span!("RunPodSandbox", pod_name = %name);
        let config = req
            .config
            .ok_or_else(|| Error::InvalidArgument("RunPodSandbox: config is required".into()))?;
        let runtime = self.runtime.clone();
        let id = to_completion(
            async move { runtime.run_pod_sandbox(config, req.runtime_handler).await }
                .instrument(span),
        )
        .await?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> R<cri::StopPodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let span = tracing::info_span!("StopPodSandbox", pod = %id);
        self.runtime.stop_pod_sandbox(&id).instrument(span).await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> R<cri::RemovePodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let span = tracing::info_span!("RemovePodSandbox", pod = %id);
        self.runtime
            .remove_pod_sandbox(&id)
            .instrument(span)
            .await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> R<cri::PodSandboxStatusResponse> {
        let req = req.into_inner();
        let id = req.pod_sandbox_id;
        let _span = tracing::debug_span!("PodSandboxStatus", pod = %id).entered();
        let pod = self.runtime.pod(&id)?;
        let info = if req.verbose {
            super::verbose_info::pod(&pod)
        } else {
            Default::default()
        };
        let containers = self
            .runtime
            .list_containers(Some(&cri::ContainerFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            }))
            .iter()
            .map(convert::container_status)
            .collect();
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(convert::pod_status(&pod)),
            info,
            containers_statuses: containers,
            timestamp: crate::service::now_ns(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> R<cri::ListPodSandboxResponse> {
        let items = self.pods(req.into_inner().filter);
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    type StreamPodSandboxesStream = ListStream<cri::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        req: Request<cri::StreamPodSandboxesRequest>,
    ) -> R<Self::StreamPodSandboxesStream> {
        let items = self.pods(req.into_inner().filter);
        Ok(Response::new(in_batches(items, |pod_sandboxes| {
            cri::StreamPodSandboxesResponse { pod_sandboxes }
        })))
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> R<cri::CreateContainerResponse> {
        let req = req.into_inner();
        let span = tracing::info_span!("CreateContainer", pod = %req.pod_sandbox_id);
        let config = req
            .config
            .ok_or_else(|| Error::InvalidArgument("CreateContainer: config is required".into()))?;
        let runtime = self.runtime.clone();
        let id = to_completion(
            async move { runtime.create_container(&req.pod_sandbox_id, config).await }
                .instrument(span),
        )
        .await?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> R<cri::StartContainerResponse> {
        let id = req.into_inner().container_id;
        let span = tracing::info_span!("StartContainer", container = %id);
        self.runtime.start_container(&id).instrument(span).await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> R<cri::StopContainerResponse> {
        let req = req.into_inner();
        let span = tracing::info_span!("StopContainer", container = %req.container_id, timeout = req.timeout);
        self.runtime
            .stop_container(&req.container_id, req.timeout)
            .instrument(span)
            .await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> R<cri::RemoveContainerResponse> {
        let id = req.into_inner().container_id;
        let span = tracing::info_span!("RemoveContainer", container = %id);
        self.runtime.remove_container(&id).instrument(span).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> R<cri::ListContainersResponse> {
        let containers = self.containers(req.into_inner().filter);
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    type StreamContainersStream = ListStream<cri::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        req: Request<cri::StreamContainersRequest>,
    ) -> R<Self::StreamContainersStream> {
        let items = self.containers(req.into_inner().filter);
        Ok(Response::new(in_batches(items, |containers| {
            cri::StreamContainersResponse { containers }
        })))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> R<cri::ContainerStatusResponse> {
        let req = req.into_inner();
        let id = req.container_id;
        let _span = tracing::debug_span!("ContainerStatus", container = %id).entered();
        let c = self.runtime.container(&id)?;
        let info = if req.verbose {
            super::verbose_info::container(&c, self.runtime.container_spec(&c.id))
        } else {
            Default::default()
        };
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(convert::container_status(&c)),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> R<cri::UpdateContainerResourcesResponse> {
        let req = req.into_inner();
        let span = tracing::info_span!("UpdateContainerResources", container = %req.container_id);
        let linux = req.linux.ok_or_else(|| {
            Error::InvalidArgument("UpdateContainerResources: linux resources are required".into())
        })?;
        self.runtime
            .update_container_resources(&req.container_id, linux)
            .instrument(span)
            .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> R<cri::ReopenContainerLogResponse> {
        let id = req.into_inner().container_id;
        let span = tracing::info_span!("ReopenContainerLog", container = %id);
        self.runtime
            .reopen_container_log(&id)
            .instrument(span)
            .await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> R<cri::ExecSyncResponse> {
        let req = req.into_inner();
        let span = tracing::debug_span!("ExecSync", container = %req.container_id);
        let out = self
            .runtime
            .exec_sync(&req.container_id, req.cmd, req.timeout)
            .instrument(span)
            .await?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(&self, req: Request<cri::ExecRequest>) -> R<cri::ExecResponse> {
        let req = req.into_inner();
        let _span = tracing::info_span!("Exec", container = %req.container_id).entered();
        let id = self.runtime.resolve_container(&req.container_id)?;
        let c = self.runtime.container(&id)?;
        if c.state != crate::container::ContainerState::Running {
            return Err(Error::FailedPrecondition(format!("container {id} is not running")).into());
        }
        let url = self
            .runtime
            .streaming()?
            .get_exec(cri::ExecRequest {
                container_id: id,
                ..req
            })
            .map_err(streaming_err)?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, req: Request<cri::AttachRequest>) -> R<cri::AttachResponse> {
        let req = req.into_inner();
        let _span = tracing::info_span!("Attach", container = %req.container_id).entered();
        let id = self.runtime.resolve_container(&req.container_id)?;
        let c = self.runtime.container(&id)?;
        if c.state != crate::container::ContainerState::Running {
            return Err(Error::FailedPrecondition(format!("container {id} is not running")).into());
        }
        if req.tty != c.config.tty {
            return Err(Error::InvalidArgument(format!(
                "attach: tty={} but container {id} was created with tty={}",
                req.tty, c.config.tty
            ))
            .into());
        }
        let url = self
            .runtime
            .streaming()?
            .get_attach(cri::AttachRequest {
                container_id: id,
                ..req
            })
            .map_err(streaming_err)?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> R<cri::PortForwardResponse> {
        let req = req.into_inner();
        let _span = tracing::info_span!("PortForward", pod = %req.pod_sandbox_id).entered();
        let pod = self.runtime.pod(&req.pod_sandbox_id)?;
        pod.require_ready("port-forward")?;
        if req.port.iter().any(|p| !(1..=65535).contains(p)) {
            return Err(Error::InvalidArgument(format!("invalid port in {:?}", req.port)).into());
        }
        let url = self
            .runtime
            .streaming()?
            .get_port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.id,
                ..req
            })
            .map_err(streaming_err)?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> R<cri::ContainerStatsResponse> {
        let id = req.into_inner().container_id;
        let stats = self.runtime.container_stats(&id).await?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> R<cri::ListContainerStatsResponse> {
        let filter = req.into_inner().filter;
        let stats = self.runtime.list_container_stats(filter.as_ref()).await;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    type StreamContainerStatsStream = ListStream<cri::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        req: Request<cri::StreamContainerStatsRequest>,
    ) -> R<Self::StreamContainerStatsStream> {
        let filter = req.into_inner().filter;
        let stats = self.runtime.list_container_stats(filter.as_ref()).await;
        Ok(Response::new(in_batches(stats, |container_stats| {
            cri::StreamContainerStatsResponse { container_stats }
        })))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> R<cri::PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let stats = self.runtime.pod_stats(&id).await?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> R<cri::ListPodSandboxStatsResponse> {
        let filter = req.into_inner().filter;
        let stats = self.runtime.list_pod_stats(filter.as_ref()).await;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    type StreamPodSandboxStatsStream = ListStream<cri::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> R<Self::StreamPodSandboxStatsStream> {
        let filter = req.into_inner().filter;
        let stats = self.runtime.list_pod_stats(filter.as_ref()).await;
        Ok(Response::new(in_batches(stats, |pod_sandbox_stats| {
            cri::StreamPodSandboxStatsResponse { pod_sandbox_stats }
        })))
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> R<cri::UpdateRuntimeConfigResponse> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        let _span = tracing::info_span!("UpdateRuntimeConfig", pod_cidr = %cidr).entered();
        self.runtime.set_pod_cidr(&cidr)?;
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, _req: Request<cri::StatusRequest>) -> R<cri::StatusResponse> {
        let conditions = vec![
            cri::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            match self.runtime.network_ready() {
                Ok(()) => cri::RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                },
                Err(why) => cri::RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: false,
                    reason: "NetworkPluginNotReady".into(),
                    message: format!("CNI network is not ready: {why}"),
                },
            },
        ];
        let user_namespaces = self.runtime.user_namespaces_supported();
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info: Default::default(),
            // The default handler and the names RunPodSandbox accepts for it; all the same.
            runtime_handlers: ["", "crisp", "runc"]
                .into_iter()
                .map(|name| cri::RuntimeHandler {
                    name: name.to_string(),
                    features: Some(cri::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: true,
                        user_namespaces,
                    }),
                })
                .collect(),
            // Merge and Strict, and the effective groups in ContainerStatus.user.
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
                // RunPodSandbox refuses a user namespace with the host's network (as kubelet's
                // own validation did before this feature).
                user_namespaces_host_network: false,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        req: Request<cri::CheckpointContainerRequest>,
    ) -> R<cri::CheckpointContainerResponse> {
        let req = req.into_inner();
        let span = tracing::info_span!("CheckpointContainer", container = %req.container_id);
        self.runtime
            .checkpoint_container(&req.container_id, &req.location, req.timeout)
            .instrument(span)
            .await?;
        Ok(Response::new(cri::CheckpointContainerResponse {}))
    }

    type GetContainerEventsStream = Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn get_container_events(
        &self,
        _req: Request<cri::GetEventsRequest>,
    ) -> R<Self::GetContainerEventsStream> {
        use tokio_stream::StreamExt;
        let events = tokio_stream::wrappers::BroadcastStream::new(self.runtime.subscribe_events())
            .filter_map(|e| match e {
                Ok(ev) => Some(Ok(ev)),
                // Lagged: this subscriber lost events; kubelet's periodic relist covers them.
                Err(_) => None,
            });
        Ok(Response::new(Box::pin(events)))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<cri::ListMetricDescriptorsRequest>,
    ) -> R<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: super::pod_metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> R<cri::ListPodSandboxMetricsResponse> {
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics: self.pod_metrics().await,
        }))
    }

    type StreamPodSandboxMetricsStream = ListStream<cri::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _req: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> R<Self::StreamPodSandboxMetricsStream> {
        let metrics = self.pod_metrics().await;
        Ok(Response::new(in_batches(metrics, |pod_sandbox_metrics| {
            cri::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            }
        })))
    }

    async fn update_pod_sandbox_resources(
        &self,
        req: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> R<cri::UpdatePodSandboxResourcesResponse> {
        let req = req.into_inner();
        let span = tracing::info_span!("UpdatePodSandboxResources", pod = %req.pod_sandbox_id);
        let runtime = self.runtime.clone();
        to_completion(
            async move {
                runtime
                    .update_pod_resources(&req.pod_sandbox_id, req.overhead, req.resources)
                    .await
            }
            .instrument(span),
        )
        .await?;
        Ok(Response::new(cri::UpdatePodSandboxResourcesResponse {}))
    }

    async fn runtime_config(
        &self,
        _req: Request<cri::RuntimeConfigRequest>,
    ) -> R<cri::RuntimeConfigResponse> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: match self.runtime.cgroup_driver() {
                    CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
                    CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
                } as i32,
            }),
        }))
    }
}
