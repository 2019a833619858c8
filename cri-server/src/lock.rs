//! Exclusive ownership of a root dir and a socket path: a second crispd on either refuses to
//! start. `flock` locks die with the process, so a crashed crispd never leaves a stale lock.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
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
    _file: File,
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
    Ok(Lock { _file: file })
}
