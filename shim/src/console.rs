//! Terminals: the console socket libcontainer sends a pty master through, and resizing it.
//!
//! With `process.terminal`, the container's init (or exec'd process) opens a pty inside the
//! container's own devpts and passes the master over a unix socket whose path the runtime was
//! given, exactly as runc's `--console-socket`. The shim binds that socket before the helper runs
//! and collects the master afterwards; the master then carries the process's input and output.

use nix::sys::socket::{
    accept, bind, listen, recvmsg, socket, AddressFamily, Backlog, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console socket {path}: {source}")]
    Socket { path: PathBuf, source: nix::Error },
    #[error("no pty master arrived on {0} (the process did not open a terminal)")]
    NoMaster(PathBuf),
    #[error("resizing the terminal: {0}")]
    Resize(nix::Error),
}

/// A listening console socket; removed from the filesystem when dropped.
pub struct ConsoleSocket {
    path: PathBuf,
    fd: OwnedFd,
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> Result<ConsoleSocket, ConsoleError> {
        let fail = |source| ConsoleError::Socket {
            path: path.to_path_buf(),
            source,
        };
        let _ = std::fs::remove_file(path);
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(fail)?;
        bind(fd.as_raw_fd(), &UnixAddr::new(path).map_err(fail)?).map_err(fail)?;
        listen(&fd, Backlog::new(1).map_err(fail)?).map_err(fail)?;
        Ok(ConsoleSocket {
            path: path.to_path_buf(),
            fd,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Collects the pty master. The runtime has connected and sent it by the time its create or
    /// exec returned, so this only waits briefly for a slow kernel.
    pub fn receive_master(&self, timeout: Duration) -> Result<File, ConsoleError> {
        let deadline = Instant::now() + timeout;
        let conn = loop {
            match accept(self.fd.as_raw_fd()) {
                // SAFETY: accept returned a new descriptor that nothing else owns.
                Ok(fd) => break unsafe { OwnedFd::from_raw_fd(fd) },
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR)
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(nix::errno::Errno::EAGAIN) => {
                    return Err(ConsoleError::NoMaster(self.path.clone()))
                }
                Err(source) => {
                    return Err(ConsoleError::Socket {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        };
        let mut name = [0u8; 256];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<UnixAddr>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|source| ConsoleError::Socket {
            path: self.path.clone(),
            source,
        })?;
        let mut master = None;
        for cmsg in msg.cmsgs().map_err(|source| ConsoleError::Socket {
            path: self.path.clone(),
            source,
        })? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: SCM_RIGHTS installed this descriptor in our table for us alone.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if master.is_none() {
                        master = Some(File::from(owned));
                    }
                }
            }
        }
        master.ok_or_else(|| ConsoleError::NoMaster(self.path.clone()))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sets the terminal size the process sees (and delivers SIGWINCH to its foreground group).
pub fn resize(master: &File, width: u16, height: u16) -> Result<(), ConsoleError> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(ConsoleError::Resize(nix::errno::Errno::last()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn passes_a_master_and_resizes_it() {
        let dir = std::env::temp_dir().join(format!("crisp-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.sock");
        let sock = ConsoleSocket::bind(&path).unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        // What libcontainer does on the container side.
        let peer = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let fds = [pty.master.as_raw_fd()];
        nix::sys::socket::sendmsg::<UnixAddr>(
            peer.as_raw_fd(),
            &[std::io::IoSlice::new(b"/dev/ptmx")],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let mut master = sock.receive_master(Duration::from_secs(1)).unwrap();
        resize(&master, 100, 40).unwrap();
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the valid pointer.
        assert_eq!(
            unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) },
            0
        );
        assert_eq!((ws.ws_col, ws.ws_row), (100, 40));
        master.write_all(b"x\n").unwrap();
        let mut slave = File::from(pty.slave);
        let mut b = [0u8; 2];
        slave.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x\n");
        drop(sock);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_master_is_an_error() {
        let dir = std::env::temp_dir().join(format!("crisp-console-none-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = ConsoleSocket::bind(&dir.join("c.sock")).unwrap();
        assert!(matches!(
            sock.receive_master(Duration::from_millis(20)),
            Err(ConsoleError::NoMaster(_))
        ));
        drop(sock);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
