//! The pause process of a pod whose containers share a PID namespace (`shareProcessNamespace`,
//! CRI `NamespaceMode::POD` for pid).
//!
//! Unlike the network, IPC and UTS namespaces (pinned without any process, see `namespaces`), a
//! PID namespace needs a live init: `crisp-shim pause` is started with `CLONE_NEWPID` unshared
//! and leaves a child that is PID 1 there (and outlives crispd, like the shims). Its namespace is
//! pinned at `<pod dir>/ns/pid`; containers join it through the pin, so a dead pause makes their
//! creation fail instead of joining some other namespace.

use super::namespaces;
use crate::cgroups::driver::PodCgroup;
use crate::error::{Error, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Pause {
    pub pid: u32,
    /// The pinned PID namespace.
    pub pin: PathBuf,
}

/// The cgroup of a pod's pause (cgroupfs driver). On cgroup v2 a leaf below the pod's: a
/// process in the pod's own cgroup makes it a thread root once its threaded controllers (cpu,
/// cpuset, pids) are enabled for the containers, and the kernel then refuses every container's
/// cgroup as an invalid domain (EOPNOTSUPP); containerd likewise gives the sandbox a cgroup of
/// its own. On v1 the pod's own, where a new cpuset cgroup would have no cpus to join. With
/// the systemd driver the pause has a scope of its own in the pod's slice, named for the pod.
fn cgroup_of(pod_cgroup: &str) -> Option<String> {
    crate::cgroups::unified().then(|| format!("{}/pause", pod_cgroup.trim_end_matches('/')))
}

/// Puts the pod `pod_id`'s pause `pid` in its cgroup; failures are logged (the pause then
/// stays in crispd's cgroup, where it still works).
fn place(pod_cgroup: &str, pod_id: &str, pid: u32) {
    let pod = PodCgroup::of(pod_cgroup);
    match pod {
        PodCgroup::Slice(_) => {
            let scope = pod.child(pod_id).to_string();
            if let Err(e) = crate::cgroups::systemd::start_scope(&scope, pod_id, pid) {
                tracing::warn!(pid, error = %e, "pause left out of its scope");
            }
        }
        PodCgroup::Fs(_) => {
            let own = cgroup_of(pod_cgroup).unwrap_or_else(|| pod_cgroup.to_string());
            for (hierarchy, e) in crate::cgroups::add_process(&own, pid) {
                tracing::debug!(pid, hierarchy = %hierarchy.display(), error = %e, "pause left out of a cgroup");
            }
        }
    }
}

/// Removes the cgroup `place` gave the pause, once it is gone.
fn unplace(pod_cgroup: &str, pod_id: &str) {
    let pod = PodCgroup::of(pod_cgroup);
    match pod {
        PodCgroup::Slice(_) => {
            // systemd stops an emptied scope by itself; this is for one it still lists.
            let scope = pod.child(pod_id).to_string();
            if let Err(e) = crate::cgroups::systemd::stop_scope(&scope) {
                tracing::warn!(error = %e, "stopping the pause's scope");
            }
        }
        PodCgroup::Fs(_) => {
            // The pod's cgroup may be kubelet's, which crispd does not remove: the leaf is ours.
            if let Some(leaf) = cgroup_of(pod_cgroup) {
                let left = crate::cgroups::remove_tree(&leaf);
                if !left.is_empty() {
                    tracing::warn!(?left, "the pause's cgroup is still busy");
                }
            }
        }
    }
}

/// Starts the pause of the pod whose directory is `dir`, in its cgroup below the pod's `cgroup`
/// (where its resources are accounted, and where any cgroup sweep finds it). With `userns` (the pod's user
/// namespace pin) the PID namespace is made inside it, so that it belongs to the pod's user
/// namespace and its containers may mount their /proc.
pub fn start(
    shim: &Path,
    dir: &Path,
    pod_id: &str,
    cgroup: &str,
    userns: Option<&Path>,
) -> Result<Pause> {
    let mut cmd = Command::new(shim);
    cmd.arg("pause")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let userns = userns
        .map(|p| {
            std::fs::File::open(p)
                .map_err(|e| Error::internal(format!("opening {}", p.display()), e))
        })
        .transpose()?;
    // SAFETY: runs in the forked child before exec and only calls setns(2) and unshare(2),
    // which are async-signal-safe and allocate nothing; the file was opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(u) = &userns {
                nix::sched::setns(u, nix::sched::CloneFlags::CLONE_NEWUSER)
                    .map_err(std::io::Error::from)?;
            }
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).map_err(std::io::Error::from)
        });
    }
    let out = cmd
        .output()
        .map_err(|e| Error::internal(format!("starting {} pause", shim.display()), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pid: u32 = match text.trim().parse() {
        Ok(pid) if out.status.success() => pid,
        _ => {
            return Err(Error::Internal(format!(
                "the pod's pause process did not start: {} {}",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    };
    place(cgroup, pod_id, pid);
    match namespaces::pin_of_process(&dir.join("ns"), "pid", pid) {
        Ok(pin) => Ok(Pause { pid, pin }),
        Err(e) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            Err(e)
        }
    }
}

/// Kills the pause (and with it every process left in the pod's PID namespace) and unpins the
/// namespace. The pid is only signalled while it still runs in the pinned namespace: after a
/// reboot or a crash it may belong to someone else. Idempotent.
pub fn stop(pin: &Path, pid: u32, pod_id: &str, pod_cgroup: &str) {
    if pid > 0 && same_namespace(pin, pid) {
        if let Err(e) = kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
            tracing::warn!(pid, error = %e, "killing the pod's pause");
        }
        // Not our child (it was orphaned at start): wait for it to be gone from its cgroup,
        // which the pod's removal deletes next (its pidfd is readable once it is a zombie, out
        // of its cgroups).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        if let Err(e) = crisp_api::process_exit::wait_until(pid as i32, deadline) {
            tracing::warn!(pid, error = %e, "waiting for the pod's pause to end");
        }
    }
    namespaces::remove(&namespaces::Pinned {
        pid: Some(pin.to_path_buf()),
        ..Default::default()
    });
    // A pod without a pause (pid 0: none, or stopped already) has no cgroup of it to remove.
    if pid > 0 {
        unplace(pod_cgroup, pod_id);
    }
}

fn same_namespace(pin: &Path, pid: u32) -> bool {
    let ino = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    match (ino(pin), ino(Path::new(&format!("/proc/{pid}/ns/pid")))) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
