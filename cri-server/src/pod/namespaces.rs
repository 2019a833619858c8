//! The pod's network, IPC and UTS namespaces, created without an infra ("pause") process and
//! kept alive by bind-mounting their nsfs files into the pod directory.
//!
//! `unshare` of these namespace types is per thread, so the work happens on a short-lived
//! thread of its own: the rest of crispd never changes namespace, and the thread's namespaces
//! live on only through the pins.

use crate::error::{Error, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct Wanted {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Pinned {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// Only with a pause process (see `pause`).
    pub pid: Option<PathBuf>,
    /// Only for a pod with its own user namespace (see `userns`), which owns the others.
    pub user: Option<PathBuf>,
}

impl Pinned {
    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.net
            .iter()
            .chain(&self.ipc)
            .chain(&self.uts)
            .chain(&self.pid)
            .chain(&self.user)
    }
}

/// Creates the wanted namespaces, sets the hostname and brings `lo` up inside them, and pins
/// them under `dir/ns/`. On failure nothing stays mounted.
pub fn create(dir: &Path, want: Wanted, hostname: String) -> Result<Pinned> {
    let ns_dir = dir.join("ns");
    std::fs::create_dir_all(&ns_dir)
        .map_err(|e| Error::internal(format!("creating {}", ns_dir.display()), e))?;
    std::thread::Builder::new()
        .name("pod-netns".into())
        .spawn(move || create_on_this_thread(&ns_dir, want, &hostname))
        .map_err(|e| Error::internal("starting the namespace thread", e))?
        .join()
        .map_err(|_| Error::Internal("the namespace thread panicked".into()))?
}

fn create_on_this_thread(ns_dir: &Path, want: Wanted, hostname: &str) -> Result<Pinned> {
    let mut flags = CloneFlags::empty();
    for (w, f) in [
        (want.net, CloneFlags::CLONE_NEWNET),
        (want.ipc, CloneFlags::CLONE_NEWIPC),
        (want.uts, CloneFlags::CLONE_NEWUTS),
    ] {
        if w {
            flags |= f;
        }
    }
    if flags.is_empty() {
        return Ok(Pinned::default());
    }
    unshare(flags).map_err(|e| Error::internal("unsharing pod namespaces", e))?;
    if want.uts {
        nix::unistd::sethostname(hostname)
            .map_err(|e| Error::internal(format!("setting hostname {hostname:?}"), e))?;
    }
    if want.net {
        crisp_cni::loopback::set_up_in_current_netns()
            .map_err(|e| Error::internal("pod network namespace", e))?;
    }
    let mut pinned = Pinned::default();
    match pin_wanted(ns_dir, &want, "thread-self", &mut pinned) {
        Ok(()) => Ok(pinned),
        Err(e) => {
            remove(&pinned);
            Err(e)
        }
    }
}

/// Pins the wanted network, IPC and UTS namespaces of `/proc/<task>` (`thread-self` or a pid)
/// into `pinned`.
pub fn pin_wanted(ns_dir: &Path, want: &Wanted, task: &str, pinned: &mut Pinned) -> Result<()> {
    for (w, name, slot) in [
        (want.net, "net", &mut pinned.net),
        (want.ipc, "ipc", &mut pinned.ipc),
        (want.uts, "uts", &mut pinned.uts),
    ] {
        if w {
            *slot = Some(pin_from(ns_dir, name, &format!("/proc/{task}/ns/{name}"))?);
        }
    }
    Ok(())
}

/// Pins namespace `name` of process `pid` (the pod's pause, for its PID namespace).
pub fn pin_of_process(ns_dir: &Path, name: &str, pid: u32) -> Result<PathBuf> {
    pin_from(ns_dir, name, &format!("/proc/{pid}/ns/{name}"))
}

fn pin_from(ns_dir: &Path, name: &str, source: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(ns_dir)
        .map_err(|e| Error::internal(format!("creating {}", ns_dir.display()), e))?;
    let target = ns_dir.join(name);
    std::fs::File::create(&target)
        .map_err(|e| Error::internal(format!("creating {}", target.display()), e))?;
    mount(
        Some(source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        Error::internal(
            format!("pinning {name} namespace at {}", target.display()),
            e,
        )
    })?;
    Ok(target)
}

/// Brings `lo` up in the pinned network namespace `netns`, from a short-lived thread that
/// enters it (setns of a network namespace is per thread).
pub fn loopback_up(netns: &Path) -> Result<()> {
    let file = std::fs::File::open(netns)
        .map_err(|e| Error::internal(format!("opening {}", netns.display()), e))?;
    std::thread::Builder::new()
        .name("pod-netns".into())
        .spawn(move || -> Result<()> {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::internal("entering the pod network namespace", e))?;
            crisp_cni::loopback::set_up_in_current_netns()
                .map_err(|e| Error::internal("pod network namespace", e))
        })
        .map_err(|e| Error::internal("starting the namespace thread", e))?
        .join()
        .map_err(|_| Error::Internal("the namespace thread panicked".into()))?
}

/// Unpins the namespaces (they die once no process is left in them). Idempotent.
pub fn remove(pinned: &Pinned) {
    for p in pinned.paths() {
        match umount2(p, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => tracing::warn!(path = %p.display(), error = %e, "unmounting namespace pin"),
        }
        let _ = std::fs::remove_file(p);
    }
}
