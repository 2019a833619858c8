//! CRIU checkpoint and restore of the shim's container, in the runtime helper (single-threaded:
//! CRIU's `swrk` is forked from it).
//!
//! The dump is libcontainer's (`Container::checkpoint`: bind mounts and the pod's network and
//! PID namespaces declared external, the stdio links kept in `descriptors.json`). libcontainer
//! has no restore, so [`restore`] drives CRIU itself, as runc's `restore` does: the images are
//! restored into the new bundle's rootfs, the bind mounts onto the new bundle's sources, the
//! new pod's network (and PID) namespace and the shim's stdio pipes handed in by `inherit_fd`,
//! its IPC and UTS namespaces joined (`join_ns`, patched into rust-criu), the process tree
//! into the new container's cgroup (CRIU runs inside it, so its children land there), and
//! libcontainer's state written afterwards so kill, exec, stats and delete treat the restored
//! container as one of theirs.

use libcgroups::common::{create_cgroup_manager, CgroupManager, ControllerOpt};
use libcontainer::config::YoukiConfig;
use libcontainer::container::{CheckpointOptions, Container, ContainerStatus};
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Spec};
use rust_criu::rust_criu_protobuf::rpc::Criu_notify;
use rust_criu::{criu_ns_to_key, CgMode, Criu};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

/// CRIU's log in the images directory, kept in the checkpoint archive as CRI-O keeps it.
pub const DUMP_LOG: &str = "dump.log";
const RESTORE_LOG: &str = "restore.log";
/// The stdio links of the dumped init (libcontainer writes it at dump).
const DESCRIPTORS: &str = "descriptors.json";

/// Dumps the running container into `images` and leaves it running.
pub fn dump(root: &Path, id: &str, images: &Path) -> Result<(), String> {
    let mut c = Container::load(root.join(id)).map_err(|e| e.to_string())?;
    let opts = CheckpointOptions {
        // CRI-O's choice: file locks yes; established TCP connections and unix sockets to the
        // outside make the dump fail rather than be restored half-connected.
        ext_unix_sk: false,
        tcp_established: false,
        file_locks: true,
        image_path: images.to_path_buf(),
        leave_running: true,
        shell_job: false,
        work_path: None,
        manage_cgroups_mode: CgMode::SOFT,
        link_remap: false,
    };
    c.checkpoint(&opts)
        .map_err(|e| format!("{e}{}", criu_said(&images.join(DUMP_LOG))))
}

/// Set by [`on_notify`] from CRIU's `post-restore` notification: the restored init's pid.
static RESTORED_PID: AtomicI32 = AtomicI32::new(0);

fn on_notify(script: &str, notify: &Criu_notify, _fd: Option<RawFd>) -> i32 {
    if script == "post-restore" {
        RESTORED_PID.store(notify.pid(), Ordering::SeqCst);
    }
    0
}

/// Restores the images in `images` as container `id` of `bundle`; `stdio` are the fds
/// (without FD_CLOEXEC) that replace the dumped init's stdin, stdout and stderr. Returns the
/// restored init's pid: a child of this helper (`rst_sibling`: a sibling of CRIU), so it is
/// re-parented to the shim, a subreaper, when the helper exits.
pub fn restore(
    root: &Path,
    id: &str,
    bundle: &Path,
    images: &Path,
    stdio: [Option<RawFd>; 3],
) -> Result<u32, String> {
    let spec = Spec::load(bundle.join("config.json"))
        .map_err(|e| format!("reading the bundle of {id}: {e}"))?;
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| bundle.join(r.path()))
        .unwrap_or_else(|| bundle.join("rootfs"));
    let linux = spec.linux().clone().unwrap_or_default();

    // The new container's cgroup, with its limits, holding CRIU and so what CRIU forks.
    join_cgroup(id, &linux)?;

    let mut criu = Criu::new().map_err(|e| format!("starting CRIU: {e}"))?;
    let images_dir = File::open(images).map_err(|e| format!("{}: {e}", images.display()))?;
    criu.set_images_dir_fd(images_dir.as_raw_fd());
    criu.set_log_file(RESTORE_LOG.to_string());
    criu.set_log_level(4);
    criu.set_root(rootfs.display().to_string());
    criu.set_rst_sibling(true);
    criu.set_file_locks(true);
    criu.set_manage_cgroups(false);
    criu.cgroups_mode(CgMode::IGNORE);
    criu.set_notify_scripts(true);
    criu.set_notify_cb(on_notify);

    // Bind mounts were dumped as external, keyed by their destination.
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|o| o == "bind" || o == "rbind");
        if let (true, Some(source)) = (bind, m.source()) {
            criu.set_external_mount(
                m.destination().display().to_string(),
                source.display().to_string(),
            );
        }
    }

    let ns_path = |typ: LinuxNamespaceType| {
        linux
            .namespaces()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|ns| ns.typ() == typ)
            .and_then(|ns| ns.path().clone())
    };
    // The namespaces the dump declared external: the new pod's, by fd.
    let mut keep_open = Vec::new();
    for (typ, name) in [
        (LinuxNamespaceType::Network, "net"),
        (LinuxNamespaceType::Pid, "pid"),
    ] {
        if let Some(path) = ns_path(typ) {
            let f = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            inheritable(f.as_raw_fd())?;
            criu.add_inherit_fd(f.as_raw_fd(), criu_ns_to_key(name))
                .map_err(|e| e.to_string())?;
            keep_open.push(f);
        }
    }

    // The new pod's IPC and UTS namespaces are joined, not the dumped pod's recreated (runc).
    for (typ, name) in [
        (LinuxNamespaceType::Ipc, "ipc"),
        (LinuxNamespaceType::Uts, "uts"),
    ] {
        if let Some(path) = ns_path(typ) {
            criu.add_join_ns(name.to_string(), path.display().to_string());
        }
    }
    // CRIU 3.17 also writes the dumped hostname into a joined UTS namespace: the pod's is
    // read here (from inside it: this helper exits after the restore) and put back after.
    let pod_hostname = match ns_path(LinuxNamespaceType::Uts) {
        Some(path) => Some(pod_hostname(&path)?),
        None => None,
    };

    // The dumped init's stdio pipes become ours.
    for (n, link) in read_descriptors(images)?.iter().enumerate().take(3) {
        if let (true, Some(fd)) = (link.starts_with("pipe:"), stdio[n]) {
            inheritable(fd)?;
            criu.add_inherit_fd(fd, link.clone())
                .map_err(|e| e.to_string())?;
        }
    }

    RESTORED_PID.store(0, Ordering::SeqCst);
    criu.restore()
        .map_err(|e| format!("{e}{}", criu_said(&images.join(RESTORE_LOG))))?;
    drop(keep_open);
    if let Some(name) = pod_hostname {
        nix::unistd::sethostname(&name)
            .map_err(|e| format!("restoring the pod's hostname {name:?}: {e}"))?;
    }
    let pid = RESTORED_PID.load(Ordering::SeqCst);
    if pid <= 0 {
        return Err("CRIU restored the container but reported no pid".into());
    }

    record_state(root, id, bundle, &spec, pid).map_err(|e| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        format!("recording restored container {id}: {e}")
    })?;
    Ok(pid as u32)
}

/// Moves this helper into the container's cgroup (created, with its limits): CRIU, forked
/// from here, and what it restores are born there.
fn join_cgroup(id: &str, linux: &oci_spec::runtime::Linux) -> Result<(), String> {
    let Some(path) = linux.cgroups_path() else {
        return Ok(());
    };
    let manager = create_cgroup_manager(crate::cgroup::config(path, id))
        .map_err(|e| format!("cgroup {} of {id}: {e}", path.display()))?;
    let none = LinuxResources::default();
    manager
        .add_task(nix::unistd::getpid())
        .and_then(|()| {
            manager.apply(&ControllerOpt {
                resources: linux.resources().as_ref().unwrap_or(&none),
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
        })
        .map_err(|e| format!("cgroup {} of {id}: {e}", path.display()))?;
    Ok(())
}

/// Moves this (single-threaded, about to exit) helper into the UTS namespace at `path` and
/// returns its hostname.
fn pod_hostname(path: &Path) -> Result<std::ffi::OsString, String> {
    let ns = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWUTS)
        .map_err(|e| format!("joining {}: {e}", path.display()))?;
    nix::unistd::gethostname().map_err(|e| format!("hostname of {}: {e}", path.display()))
}

/// libcontainer's state of a running container, as its create and start would have left it.
fn record_state(root: &Path, id: &str, bundle: &Path, spec: &Spec, pid: i32) -> Result<(), String> {
    let dir: PathBuf = root.join(id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    YoukiConfig::from_spec(spec, id)
        .and_then(|c| c.save(&dir))
        .map_err(|e| e.to_string())?;
    let mut c = Container::new(id, ContainerStatus::Running, Some(pid), bundle, &dir)
        .map_err(|e| e.to_string())?;
    c.set_creator(nix::unistd::geteuid().as_raw());
    c.save().map_err(|e| e.to_string())
}

fn read_descriptors(images: &Path) -> Result<Vec<String>, String> {
    let path = images.join(DESCRIPTORS);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Clears FD_CLOEXEC so CRIU's `swrk` inherits `fd` (CRIU takes inherit_fd by number).
fn inheritable(fd: RawFd) -> Result<(), String> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map(|_| ())
    .map_err(|e| format!("fd {fd}: {e}"))
}

/// The errors CRIU logged, for the caller's message.
fn criu_said(log: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(log) else {
        return String::new();
    };
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") || l.contains("error"))
        .collect();
    let tail = errors
        .iter()
        .rev()
        .take(3)
        .rev()
        .cloned()
        .collect::<Vec<_>>();
    if tail.is_empty() {
        String::new()
    } else {
        format!(" (CRIU's log {}: {})", log.display(), tail.join("; "))
    }
}
