//! Call sequences every user of the client repeats; each maps one CRI call (or
//! a fixed pair) to a plain Rust result.

use std::time::{Duration, Instant};

use crisp_cri_api::v1::{
    Container, ContainerConfig, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, ListContainersRequest, ListPodSandboxRequest, PodSandbox,
    PodSandboxConfig, PodSandboxStatus, PodSandboxStatusRequest, PullImageRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StatusRequest, StatusResponse, StopPodSandboxRequest, VersionRequest, VersionResponse,
};

use crate::{CriClient, Error};

/// How often `wait_exited` asks for the container's status: short enough that
/// tests measuring stop timeouts are not skewed by it.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

impl CriClient {
    pub async fn version(&mut self) -> Result<VersionResponse, Error> {
        let request = VersionRequest {
            version: "v1".to_string(),
        };
        Ok(self
            .runtime
            .version(request)
            .await
            .map_err(Error::rpc("Version"))?
            .into_inner())
    }

    /// The runtime's conditions, handlers and features (not verbose).
    pub async fn status(&mut self) -> Result<StatusResponse, Error> {
        Ok(self
            .runtime
            .status(StatusRequest { verbose: false })
            .await
            .map_err(Error::rpc("Status"))?
            .into_inner())
    }

    /// Pulls `image` and returns the image reference the runtime resolved it to.
    pub async fn pull(&mut self, image: &str) -> Result<String, Error> {
        let request = PullImageRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = self
            .image
            .pull_image(request)
            .await
            .map_err(Error::rpc("PullImage"))?;
        Ok(response.into_inner().image_ref)
    }

    /// Runs a pod sandbox and returns its id.
    pub async fn run_pod(&mut self, config: &PodSandboxConfig) -> Result<String, Error> {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let response = self
            .runtime
            .run_pod_sandbox(request)
            .await
            .map_err(Error::rpc("RunPodSandbox"))?;
        Ok(response.into_inner().pod_sandbox_id)
    }

    /// Creates a container in pod `pod_id` and returns its id.
    pub async fn create_container(
        &mut self,
        pod_id: &str,
        config: ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String, Error> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        };
        let response = self
            .runtime
            .create_container(request)
            .await
            .map_err(Error::rpc("CreateContainer"))?;
        Ok(response.into_inner().container_id)
    }

    pub async fn start_container(&mut self, container_id: &str) -> Result<(), Error> {
        let request = StartContainerRequest {
            container_id: container_id.to_string(),
        };
        self.runtime
            .start_container(request)
            .await
            .map_err(Error::rpc("StartContainer"))?;
        Ok(())
    }

    pub async fn container_status(&mut self, container_id: &str) -> Result<ContainerStatus, Error> {
        let request = ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose: false,
        };
        self.runtime
            .container_status(request)
            .await
            .map_err(Error::rpc("ContainerStatus"))?
            .into_inner()
            .status
            .ok_or(Error::MissingField {
                op: "ContainerStatus",
                field: "status",
            })
    }

    pub async fn pod_status(&mut self, pod_id: &str) -> Result<PodSandboxStatus, Error> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.to_string(),
            verbose: false,
        };
        self.runtime
            .pod_sandbox_status(request)
            .await
            .map_err(Error::rpc("PodSandboxStatus"))?
            .into_inner()
            .status
            .ok_or(Error::MissingField {
                op: "PodSandboxStatus",
                field: "status",
            })
    }

    /// Polls the container's status until it has exited, and returns that
    /// final status.
    pub async fn wait_exited(
        &mut self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<ContainerStatus, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.container_status(container_id).await?;
            if status.state() == ContainerState::ContainerExited {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("container {container_id} to exit"),
                    after: timeout,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Every pod sandbox, unfiltered.
    pub async fn list_pods(&mut self) -> Result<Vec<PodSandbox>, Error> {
        Ok(self
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .map_err(Error::rpc("ListPodSandbox"))?
            .into_inner()
            .items)
    }

    /// Every container, unfiltered.
    pub async fn list_containers(&mut self) -> Result<Vec<Container>, Error> {
        Ok(self
            .runtime
            .list_containers(ListContainersRequest { filter: None })
            .await
            .map_err(Error::rpc("ListContainers"))?
            .into_inner()
            .containers)
    }

    pub async fn remove_container(&mut self, container_id: &str) -> Result<(), Error> {
        self.runtime
            .remove_container(RemoveContainerRequest {
                container_id: container_id.to_string(),
            })
            .await
            .map_err(Error::rpc("RemoveContainer"))?;
        Ok(())
    }

    /// Stops and then removes a pod, the way kubelet tears one down.
    pub async fn stop_and_remove_pod(&mut self, pod_id: &str) -> Result<(), Error> {
        self.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_id.to_string(),
            })
            .await
            .map_err(Error::rpc("StopPodSandbox"))?;
        self.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.to_string(),
            })
            .await
            .map_err(Error::rpc("RemovePodSandbox"))?;
        Ok(())
    }
}
