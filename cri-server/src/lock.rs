//! Exclusive ownership of a root dir and a socket path: a second crispd on either refuses to
//! start. `flock` locks die with the process, so a crashed crispd never leaves a stale lock.
//! The root's lock file also names the socket of the crispd holding it, for the `crispd
//! images` commands, which are given the root.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("opening lock file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} is already in use by another crispd (lock {path} is held)")]
    Held { what: String, path: PathBuf },
}

/// Held for the life of the process.
pub struct Lock {
    file: File,
}

impl Lock {
    /// Writes `socket` into the lock file, for [`socket_of`].
    pub fn name_socket(&self, socket: &Path) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.write_all_at(socket.as_os_str().as_bytes(), 0)
    }
}

/// The socket the lock file at `path` names (see [`Lock::name_socket`]): meaningful while the
/// lock is held.
pub fn socket_of(path: &Path) -> Option<PathBuf> {
    let bytes = std::fs::read(path).ok()?;
    (!bytes.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
}

pub fn acquire(path: &Path, what: &str) -> Result<Lock, LockError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_owned(),
            source,
        })?;
    // SAFETY: flock on a valid fd we own; no pointers involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(LockError::Held {
            what: what.to_string(),
            path: path.to_owned(),
        });
    }
    Ok(Lock { file })
}
