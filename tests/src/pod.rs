//! A pod as tests use it: config, id and log directory together, with
//! kubelet's conventions (log dirs created by the client, one
//! `<container>/0.log` per container).

use std::path::PathBuf;

use anyhow::{bail, Context};
use crisp_client::cri::{
    ContainerConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig,
};
use crisp_client::{container_config, pod_config, CriClient};

use crate::Crispd;

/// The test image as tests refer to it; crispd resolves it from its import dir.
pub const BUSYBOX: &str = "busybox";

/// A container command that logs a numbered line every 0.1 s until killed (logs that must keep
/// flowing across a restart or an upgrade).
pub const TICKER: &str = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done";

/// How many complete `tick N` lines a [`TICKER`]'s CRI log holds, checked to run 1, 2, 3, ...
/// without a gap, each a full stdout record (the shim may be mid-line: only complete lines
/// count).
pub fn tick_count(log: &str) -> anyhow::Result<usize> {
    let complete = match log.rfind('\n') {
        Some(end) => &log[..=end],
        None => "",
    };
    let lines = crate::parse_cri_log(complete).map_err(anyhow::Error::msg)?;
    for (index, line) in lines.iter().enumerate() {
        let want = format!("tick {}", index + 1);
        anyhow::ensure!(
            line.content == want && line.stream == "stdout" && line.tag == "F",
            "line {} is {line:?}, want {want:?}",
            index + 1
        );
    }
    Ok(lines.len())
}

const NAMESPACE: &str = "crisp-test";

pub struct TestPod {
    pub id: String,
    pub config: PodSandboxConfig,
    pub log_dir: PathBuf,
}

impl TestPod {
    /// A pod config named `name`, with a uid unique to this crispd instance
    /// and a fresh log directory under `crispd.log_dir()`.
    pub fn new_config(crispd: &Crispd, name: &str) -> anyhow::Result<PodSandboxConfig> {
        let log_dir = crispd.log_dir().join(name);
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let uid = format!("{name}-{}", crispd.id());
        Ok(pod_config(name, NAMESPACE, &uid, &log_dir))
    }

    /// [`new_config`](Self::new_config) for a pod whose containers share one PID namespace
    /// (`shareProcessNamespace`: CRI pid mode POD), with a pause as its PID 1.
    pub fn shared_pid_config(crispd: &Crispd, name: &str) -> anyhow::Result<PodSandboxConfig> {
        let mut config = Self::new_config(crispd, name)?;
        config.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(pid_mode(NamespaceMode::Pod)),
                ..Default::default()
            }),
            ..Default::default()
        });
        Ok(config)
    }

    /// Runs a pod from `config`.
    pub async fn run(client: &mut CriClient, config: PodSandboxConfig) -> anyhow::Result<TestPod> {
        let id = client.run_pod(&config).await?;
        if id.is_empty() {
            bail!("RunPodSandbox returned an empty id");
        }
        Ok(TestPod {
            id,
            log_dir: PathBuf::from(&config.log_directory),
            config,
        })
    }

    /// `new_config` + `run`.
    pub async fn start(
        client: &mut CriClient,
        crispd: &Crispd,
        name: &str,
    ) -> anyhow::Result<TestPod> {
        let config = Self::new_config(crispd, name)?;
        Self::run(client, config).await
    }

    /// Busybox running `command`, logging to `<name>/0.log` (directory
    /// created here, as kubelet does).
    pub fn container(&self, name: &str, command: &[&str]) -> anyhow::Result<ContainerConfig> {
        let dir = self.log_dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(container_config(
            name,
            crate::BUSYBOX,
            command,
            &format!("{name}/0.log"),
        ))
    }

    pub async fn create(
        &self,
        client: &mut CriClient,
        config: ContainerConfig,
    ) -> anyhow::Result<String> {
        Ok(client
            .create_container(&self.id, config, &self.config)
            .await?)
    }

    /// Creates and starts a busybox container; returns its id.
    pub async fn start_container(
        &self,
        client: &mut CriClient,
        name: &str,
        command: &[&str],
    ) -> anyhow::Result<String> {
        let config = self.container(name, command)?;
        let id = self.create(client, config).await?;
        client.start_container(&id).await?;
        Ok(id)
    }

    /// Host path of the log of container `name` (as set up by `container`).
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.log_dir.join(name).join("0.log")
    }

    /// The log's content so far; empty if it does not exist yet.
    pub fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_file(name)).unwrap_or_default()
    }
}

/// Asserts that a CRI call failed with `code`, returning the status so the
/// caller can check the message.
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: tonic::Code,
    what: &str,
) -> anyhow::Result<tonic::Status> {
    match result {
        Ok(response) => bail!(
            "{what}: expected {code:?}, got success: {:?}",
            response.get_ref()
        ),
        Err(status) if status.code() == code => Ok(status),
        Err(status) => bail!("{what}: expected {code:?}, got {status}"),
    }
}

/// Runs `script` with `sh -c` in the container (ExecSync, 10 s timeout); returns the exit code
/// and stdout followed by stderr.
pub async fn sh(client: &mut CriClient, id: &str, script: &str) -> anyhow::Result<(i32, String)> {
    let r = client
        .runtime
        .exec_sync(crisp_client::cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 10,
        })
        .await?
        .into_inner();
    Ok((
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).to_string() + &String::from_utf8_lossy(&r.stderr),
    ))
}

/// `c` with its Linux security context replaced by `sc`.
/// The namespace options of a pod or container whose PID namespace is `mode`.
pub fn pid_mode(mode: NamespaceMode) -> NamespaceOption {
    NamespaceOption {
        pid: mode as i32,
        ..Default::default()
    }
}

pub fn with_sc(
    mut c: ContainerConfig,
    sc: crisp_client::cri::LinuxContainerSecurityContext,
) -> ContainerConfig {
    c.linux = Some(crisp_client::cri::LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    c
}

/// StopContainer with `timeout` seconds; returns how long the call took.
pub async fn timed_stop(
    client: &mut CriClient,
    id: &str,
    timeout: i64,
) -> anyhow::Result<std::time::Duration> {
    let started = std::time::Instant::now();
    client
        .runtime
        .stop_container(crate::cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout,
        })
        .await?;
    Ok(started.elapsed())
}
