//! Pod sandbox operations.

use super::{now_ns, Runtime};
use crate::cgroups::driver::PodCgroup;
use crate::error::{ok_if_gone, Error, Result};
use crate::ids;
use crate::pod::namespaces::{self, Pinned, Wanted};
use crate::pod::network;
use crate::pod::pause;
use crate::pod::userns::{self, IdMap};
use crate::pod::{files, SandboxRecord, SandboxState};
use crisp_cri_api::v1::{ContainerEventType, NamespaceMode, PodSandboxConfig, PodSandboxFilter};
use std::sync::Arc;

impl Runtime {
    pub async fn run_pod_sandbox(
        self: &Arc<Self>,
        config: PodSandboxConfig,
        handler: String,
    ) -> Result<String> {
        let meta = config
            .metadata
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("pod sandbox config has no metadata".into()))?;
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument(
                "pod sandbox name must not be empty".into(),
            ));
        }
        if !handler.is_empty() && handler != "crisp" && handler != "runc" {
            return Err(Error::InvalidArgument(format!(
                "unknown runtime handler {handler:?}"
            )));
        }
        let ns_opts = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let host_net = ns_opts.network == NamespaceMode::Node as i32;
        let host_ipc = ns_opts.ipc == NamespaceMode::Node as i32;
        let idmap = IdMap::from_cri(ns_opts.userns_options.as_ref())?;
        if idmap.is_some() {
            // As kubelet's own validation: host namespaces belong to the host's user namespace,
            // which the pod's root must not be able to act in.
            for (host, what) in [
                (host_net, "network"),
                (host_ipc, "IPC"),
                (ns_opts.pid == NamespaceMode::Node as i32, "PID"),
            ] {
                if host {
                    return Err(Error::InvalidArgument(format!(
                        "a pod with its own user namespace cannot use the host's {what} namespace"
                    )));
                }
            }
            if !self.user_namespaces_supported() {
                return Err(Error::FailedPrecondition(
                    "user namespaces are not supported on this node (idmapped overlay layers \
                     need Linux 6.13 or later)"
                        .into(),
                ));
            }
        }
        let hostname = if config.hostname.is_empty() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        } else {
            config.hostname.clone()
        };
        files::check_hostname(&hostname)?;
        let requested_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.as_str())
            .filter(|p| !p.is_empty())
            .map(|p| self.cfg.cgroup_driver.parent(p))
            .transpose()
            .map_err(Error::InvalidArgument)?
            .unwrap_or_default();
        for key in config
            .linux
            .as_ref()
            .map(|l| l.sysctls.keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            crate::container::spec::check_sysctl(key)?;
        }

        let id = ids::new_id();
        let dir = self.pod_dir(&id);
        let (cgroup_parent, owns_cgroup) = if requested_parent.is_empty() {
            (
                self.cfg
                    .cgroup_driver
                    .owned_pod_parent(self.cfg.pods_cgroup_parent(), &id),
                true,
            )
        } else {
            (requested_parent, false)
        };
        let mut rec = SandboxRecord {
            id: id.clone(),
            config: config.clone(),
            state: SandboxState::Creating,
            created_at_ns: now_ns(),
            runtime_handler: handler,
            dir: dir.clone(),
            netns: None,
            ipcns: None,
            utsns: None,
            pidns: None,
            pause_pid: 0,
            userns: None,
            idmap: idmap.clone(),
            cgroup_parent,
            owns_cgroup,
            ips: Vec::new(),
        };
        {
            let mut objs = self.objects();
            let key = SandboxRecord::name_key(&config);
            if let Some(other) = objs
                .pods
                .values()
                .find(|p| SandboxRecord::name_key(&p.config) == key)
            {
                return Err(Error::AlreadyExists(format!(
                    "pod sandbox {}/{} (uid {:?}, attempt {}) already exists as {}",
                    meta.namespace, meta.name, meta.uid, meta.attempt, other.id
                )));
            }
            // Written before any host object exists, so a crash from here on is cleaned away.
            self.pod_store.save(&id, &rec)?;
            objs.pods.insert(id.clone(), rec.clone());
        }

        let dns = config.dns_config.clone();
        let want = Wanted {
            net: !host_net,
            ipc: !host_ipc,
            uts: !host_net,
        };
        let shared_pid = ns_opts.pid == NamespaceMode::Pod as i32;
        let cgroup_parent = rec.cgroup_parent.clone();
        let me = self.clone();
        let (pod_id, pod_config) = (id.clone(), config.clone());
        let began = std::time::Instant::now();
        let made = tokio::task::spawn_blocking(move || -> Result<(Pinned, u32, Vec<String>)> {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::internal(format!("creating {}", dir.display()), e))?;
            files::write(&dir, &hostname, dns.as_ref())?;
            let mut pinned = match &idmap {
                Some(map) => userns::create(&me.shim_binary, &dir, want, &hostname, map)?,
                None => namespaces::create(&dir, want, hostname)?,
            };
            let mut pause_pid = 0;
            if shared_pid {
                match pause::start(
                    &me.shim_binary,
                    &dir,
                    &pod_id,
                    &cgroup_parent,
                    pinned.user.as_deref(),
                ) {
                    Ok(p) => {
                        pinned.pid = Some(p.pin);
                        pause_pid = p.pid;
                    }
                    Err(e) => {
                        namespaces::remove(&pinned);
                        return Err(e);
                    }
                }
            }
            tracing::debug!(ms = began.elapsed().as_millis(), "namespaces pinned");
            let ips = match &pinned.net {
                Some(netns) => {
                    me.network
                        .attach(&network::pod_network(&pod_id, netns, &pod_config))
                }
                None => Ok(Vec::new()),
            };
            match ips {
                Ok(ips) => Ok((pinned, pause_pid, ips)),
                Err(e) => {
                    if let Some(pin) = &pinned.pid {
                        pause::stop(pin, pause_pid, &pod_id, &cgroup_parent);
                    }
                    namespaces::remove(&pinned);
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| Error::internal("pod setup task", e))
        .and_then(|r| r);
        match made {
            Ok((pinned, pause_pid, ips)) => {
                tracing::debug!(ms = began.elapsed().as_millis(), "network attached");
                rec.ips = ips;
                rec.netns = pinned.net;
                rec.ipcns = pinned.ipc;
                rec.utsns = pinned.uts;
                rec.pidns = pinned.pid;
                rec.userns = pinned.user;
                rec.pause_pid = pause_pid;
                rec.state = rec.state.transition(SandboxState::Ready)?;
                self.pod_store.save(&id, &rec)?;
                self.objects().pods.insert(id.clone(), rec);
                self.publish(&id, &id, ContainerEventType::ContainerCreatedEvent);
                self.publish(&id, &id, ContainerEventType::ContainerStartedEvent);
                tracing::info!(pod = %id, "pod sandbox ready");
                Ok(id)
            }
            Err(e) => {
                self.destroy_pod(&rec);
                self.objects().pods.remove(&id);
                Err(e)
            }
        }
    }

    /// Removes every host object of a pod: namespace pins, its directory, its cgroup, its record.
    pub(super) fn destroy_pod(&self, rec: &SandboxRecord) {
        // A stopped pod was detached by StopPodSandbox; a second DEL would only exec the
        // plugins again on the removal path.
        if rec.state != SandboxState::NotReady {
            self.detach_network(rec);
        }
        pause::stop(
            &rec.pidns.clone().unwrap_or_else(|| rec.dir.join("ns/pid")),
            rec.pause_pid,
            &rec.id,
            &rec.cgroup_parent,
        );
        namespaces::remove(&Pinned {
            net: Some(rec.net_pin()),
            ipc: rec.ipcns.clone().or_else(|| Some(rec.dir.join("ns/ipc"))),
            uts: rec.utsns.clone().or_else(|| Some(rec.dir.join("ns/uts"))),
            pid: None,
            user: rec.userns.clone().or_else(|| Some(rec.dir.join("ns/user"))),
        });
        if let Err(e) = std::fs::remove_dir_all(&rec.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(pod = %rec.id, error = %e, "removing pod dir");
            }
        }
        if rec.owns_cgroup {
            if let PodCgroup::Slice(slice) = PodCgroup::of(&rec.cgroup_parent) {
                if let Err(e) = crate::cgroups::systemd::stop_slice(slice) {
                    tracing::warn!(pod = %rec.id, error = %e, "stopping the pod's slice");
                }
            }
            let left = crate::cgroups::remove_tree(&PodCgroup::of(&rec.cgroup_parent).dir());
            if !left.is_empty() {
                tracing::warn!(pod = %rec.id, ?left, "pod cgroups still busy");
            }
        }
        if let Err(e) = self.pod_store.remove(&rec.id) {
            tracing::warn!(pod = %rec.id, error = %e, "removing pod record");
        }
    }

    /// CNI DEL for a pod that has (or may have had) its own network namespace.
    fn detach_network(&self, rec: &SandboxRecord) {
        let netns = rec.net_pin();
        let host_net = rec
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .is_some_and(|n| n.network == NamespaceMode::Node as i32);
        if host_net {
            return;
        }
        if let Err(e) = self
            .network
            .detach(&network::pod_network(&rec.id, &netns, &rec.config))
        {
            tracing::warn!(pod = %rec.id, error = %e, "CNI DEL");
        }
    }

    pub fn resolve_pod(&self, id: &str) -> Result<String> {
        let objs = self.objects();
        ids::resolve("pod sandbox", id, objs.pods.keys())
    }

    pub fn pod(&self, id: &str) -> Result<SandboxRecord> {
        let id = self.resolve_pod(id)?;
        self.objects()
            .pods
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id} not found")))
    }

    /// Stops a pod; one that does not exist (any more) counts as stopped.
    pub async fn stop_pod_sandbox(self: &Arc<Self>, id: &str) -> Result<()> {
        ok_if_gone(self.stop_existing_pod(id).await)
    }

    async fn stop_existing_pod(self: &Arc<Self>, id: &str) -> Result<()> {
        let id = self.resolve_pod(id)?;
        for cid in self.containers_of(&id) {
            self.stop_container(&cid, 0).await?;
        }
        let rec = self.objects().pods.get(&id).cloned();
        if let Some(rec) = rec.filter(|r| r.state != SandboxState::NotReady) {
            let me = self.clone();
            let r = rec.clone();
            tokio::task::spawn_blocking(move || {
                me.detach_network(&r);
                if let Some(pin) = &r.pidns {
                    // Ends whatever the containers left in the shared PID namespace.
                    pause::stop(pin, r.pause_pid, &r.id, &r.cgroup_parent);
                }
                // As containerd does at stop: the DEL left the veth to go with the netns.
                namespaces::remove(&Pinned {
                    net: Some(r.net_pin()),
                    ..Pinned::default()
                });
            })
            .await
            .map_err(|e| Error::internal("pod teardown task", e))?;
            if let Some(rec) = self.objects().pods.get_mut(&id) {
                rec.state = rec.state.transition(SandboxState::NotReady)?;
                rec.ips.clear();
                // `netns` keeps the path of the (now removed) pin: `None` means the host's
                // network, which a port-forward to a stopped pod must never reach.
                rec.pidns = None;
                rec.pause_pid = 0;
                self.pod_store.save(&id, rec)?;
            }
            self.publish(&id, &id, ContainerEventType::ContainerStoppedEvent);
        }
        tracing::info!(pod = %id, "pod sandbox stopped");
        Ok(())
    }

    /// Removes a pod; one that does not exist (any more) counts as removed.
    pub async fn remove_pod_sandbox(self: &Arc<Self>, id: &str) -> Result<()> {
        ok_if_gone(self.remove_existing_pod(id).await)
    }

    async fn remove_existing_pod(self: &Arc<Self>, id: &str) -> Result<()> {
        let id = self.resolve_pod(id)?;
        for cid in self.containers_of(&id) {
            self.remove_container(&cid).await?;
        }
        let rec = self.objects().pods.get(&id).cloned();
        if let Some(rec) = rec {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.destroy_pod(&rec))
                .await
                .map_err(|e| Error::internal("pod removal task", e))?;
        }
        self.publish(&id, &id, ContainerEventType::ContainerDeletedEvent);
        self.objects().pods.remove(&id);
        tracing::info!(pod = %id, "pod sandbox removed");
        Ok(())
    }

    pub fn list_pods(&self, filter: Option<&PodSandboxFilter>) -> Vec<SandboxRecord> {
        let objs = self.objects();
        objs.pods
            .values()
            .filter(|p| p.state != SandboxState::Creating)
            .filter(|p| {
                let Some(f) = filter else { return true };
                (f.id.is_empty() || p.id.starts_with(&f.id))
                    && f.state
                        .as_ref()
                        .is_none_or(|s| s.state == pod_state_to_cri(p.state) as i32)
                    && f.label_selector
                        .iter()
                        .all(|(k, v)| p.config.labels.get(k) == Some(v))
            })
            .cloned()
            .collect()
    }

    fn containers_of(&self, pod_id: &str) -> Vec<String> {
        self.objects()
            .containers
            .values()
            .filter(|c| c.rec.pod_id == pod_id)
            .map(|c| c.rec.id.clone())
            .collect()
    }
}

pub fn pod_state_to_cri(s: SandboxState) -> crisp_cri_api::v1::PodSandboxState {
    match s {
        SandboxState::Ready => crisp_cri_api::v1::PodSandboxState::SandboxReady,
        _ => crisp_cri_api::v1::PodSandboxState::SandboxNotready,
    }
}
