//! The per-container directory a shim owns, and its socket. crispd creates the directory
//! (under its state dir) and hands both paths to the shim; both sides derive every file name
//! from here.
//!
//! The socket does not live in the directory: a unix socket path is limited to 107 bytes, and
//! `<state>/containers/<64 hex id>/shim.sock` leaves almost nothing for the state dir. Like
//! containerd (`/run/containerd/s/<hash>`), sockets go to a short `<state>/s/<hash>` instead.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimDir {
    dir: PathBuf,
    socket: PathBuf,
}

/// FNV-1a: a short, stable name for a socket; not a security boundary (ids are random).
pub fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl ShimDir {
    pub fn new(dir: impl Into<PathBuf>, socket: impl Into<PathBuf>) -> Self {
        ShimDir {
            dir: dir.into(),
            socket: socket.into(),
        }
    }

    /// crispd's layout: `<state>/containers/<id>` and `<state>/s/<hash of id>.sock`.
    pub fn under_state(state: &Path, id: &str) -> Self {
        ShimDir::new(
            state.join("containers").join(id),
            state.join("s").join(format!("{}.sock", short_hash(id))),
        )
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
    /// The ttrpc socket of the Task API.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
    /// The attach socket (see [`crate::attach`]), next to the Task API socket.
    pub fn attach_socket(&self) -> PathBuf {
        self.socket.with_extension("attach")
    }
    /// Removes the sockets that live outside the directory (Task API, attach, the init's
    /// console), which a shim that was killed, or shut down before it could clean up, leaves
    /// behind.
    pub fn remove_sockets(&self) {
        for s in [
            self.socket.clone(),
            self.attach_socket(),
            self.console_socket(""),
        ] {
            let _ = std::fs::remove_file(s);
        }
    }
    /// Where libcontainer sends the pty master of a terminal process (`exec_id` empty for the
    /// container's init); short for the same reason as the Task socket.
    pub fn console_socket(&self, exec_id: &str) -> PathBuf {
        let stem = self
            .socket
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = if exec_id.is_empty() {
            format!("{stem}.con")
        } else {
            format!("{stem}.{}.con", short_hash(exec_id))
        };
        self.socket.with_file_name(name)
    }
    /// The arguments of `crisp-shim serve` for container `id` in this directory: how crispd
    /// and the containerd `start` entry both launch the Task server. It prints `ready` on
    /// stdout once it listens.
    pub fn serve_args(&self, id: &str) -> Vec<std::ffi::OsString> {
        vec![
            "serve".into(),
            "--id".into(),
            id.into(),
            "--dir".into(),
            self.dir.clone().into_os_string(),
            "--socket".into(),
            self.socket.clone().into_os_string(),
        ]
    }
    /// The `ttrpc` address form of [`Self::socket`].
    pub fn address(&self) -> String {
        format!("unix://{}", self.socket().display())
    }
    pub fn exit_record(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("shim.pid")
    }
    /// The OCI bundle: `config.json` and the `rootfs` mount point.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    /// libcontainer's state root (it keeps `<root>/<id>/state.json` there).
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.join("runtime")
    }
    /// The OCI process spec of a pending exec (read by the runtime helper, then removed).
    pub fn exec_spec(&self, exec_id: &str) -> PathBuf {
        self.dir.join("exec").join(format!("{exec_id}.json"))
    }
    /// Where CheckpointContainer assembles an archive's contents before they are tarred.
    pub fn checkpoint_work(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }
    /// A restored container's checkpoint archive, unpacked (CRIU images in `checkpoint/`).
    pub fn restore_from(&self) -> PathBuf {
        self.dir.join("restore")
    }
    /// The shim's own diagnostics (not the container's output).
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
}

/// Names the containerd Task service is registered under. containerd 1.6 dials v2; the protos
/// crate (0.12) generates only v3; the shim serves identical handlers under both.
pub const TASK_SERVICE_V3: &str = "containerd.task.v3.Task";
pub const TASK_SERVICE_V2: &str = "containerd.task.v2.Task";
