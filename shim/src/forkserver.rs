//! The fork server: a copy of the shim taken while it still had one thread, which clones
//! runtime helpers on request.
//!
//! Every libcontainer call runs in a single-threaded process of its own (see `helper`).
//! Exec'ing `/proc/self/exe __runtime …` for each one cost ~2 ms per container create, start
//! and exec (the exec, loading and relocating the binary, Rust's start-up): a fifth of an
//! ExecSync. A clone of the fork server is single-threaded as well and already loaded, so it
//! goes straight to the operation.
//!
//! Helpers are cloned with `CLONE_PARENT`, so they are the shim's children exactly as exec'd
//! helpers were: the shim's reaper collects their exit status, and the container init they
//! leave behind is re-parented to the shim (the subreaper). The fork server itself never
//! waits for anything and holds no container's fd between requests.
//!
//! Protocol, one `SOCK_SEQPACKET` message each way: the request is the number `k` of
//! container fds, their `k` target fd numbers, then the helper's arguments (after
//! `__runtime`), NUL-separated; `SCM_RIGHTS` carries the helper's stdout and stderr and the
//! `k` container fds. The reply is the helper's pid, or a negated errno, as an `i32`.

use crate::helper;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::time::{TimeVal, TimeValLike};
use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// A request's container fds (stdin, stdout, stderr) at most.
const MAX_CONTAINER_FDS: usize = 3;
/// How long the shim waits for the fork server's reply.
const REPLY_TIMEOUT_S: i64 = 10;
/// Arguments are paths and ids: far below this.
const MAX_REQUEST: usize = 64 * 1024;
/// Where helpers get the container's stdio (see `helper`).
const HELPER_FDS: [RawFd; 3] = [
    helper::CHILD_STDIN_FD,
    helper::CHILD_STDOUT_FD,
    helper::CHILD_STDERR_FD,
];

/// The shim's handle on its fork server.
pub struct ForkServer {
    /// One request in flight at a time: a reply must reach the thread that asked.
    sock: Mutex<OwnedFd>,
    /// Set when a reply did not come in time (or the fork server cannot clone): it is not asked
    /// again, since a late reply would answer the next request.
    broken: AtomicBool,
    /// To SIGKILL it when it stalls, without a pid that could have been reused.
    pidfd: Option<OwnedFd>,
}

/// Why no helper was cloned.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// The request never reached the fork server (it is gone): exec'ing the helper instead is
    /// safe, nothing ran.
    #[error("the fork server is unavailable: {0}")]
    Unavailable(std::io::Error),
    /// The request was sent; whether a helper runs is unknown or it failed to clone.
    #[error("the fork server failed: {0}")]
    Failed(std::io::Error),
}

/// A helper the fork server cloned: the shim's child.
pub struct Spawned {
    pub pid: i32,
    pub stdout: std::fs::File,
    pub stderr: std::fs::File,
}

impl ForkServer {
    /// Forks the fork server. Must run while the calling process has a single thread.
    pub fn start() -> std::io::Result<ForkServer> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // SAFETY: the caller guarantees a single thread, so the child's copy of every lock and
        // of the allocator is consistent; the child never returns from `serve`.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                drop(ours);
                serve(theirs)
            }
            nix::unistd::ForkResult::Parent { child } => {
                // It only clones: a reply taking seconds means it is stopped or stuck.
                setsockopt(
                    &ours,
                    sockopt::ReceiveTimeout,
                    &TimeVal::seconds(REPLY_TIMEOUT_S),
                )?;
                // SAFETY: pidfd_open takes a pid and flags, no pointers.
                let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
                // SAFETY: on success pidfd_open returned a new fd that nothing else owns.
                let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
                Ok(ForkServer {
                    sock: Mutex::new(ours),
                    broken: AtomicBool::new(false),
                    pidfd,
                })
            }
        }
    }

    /// Clones a helper running `__runtime <args>`, with each `(fd, target)` of `fds` at
    /// `target` in it.
    pub fn spawn(
        &self,
        args: &[OsString],
        fds: &[(BorrowedFd<'_>, RawFd)],
    ) -> Result<Spawned, ForkError> {
        if fds.len() > MAX_CONTAINER_FDS {
            return Err(ForkError::Failed(std::io::Error::from_raw_os_error(
                libc::EINVAL,
            )));
        }
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| ForkError::Failed(e.into()))
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let mut request = vec![fds.len() as u8];
        request.extend(fds.iter().map(|(_, target)| *target as u8));
        for arg in args {
            request.extend_from_slice(arg.as_bytes());
            request.push(0);
        }
        let mut raw = vec![out_w.as_raw_fd(), err_w.as_raw_fd()];
        raw.extend(fds.iter().map(|(fd, _)| fd.as_raw_fd()));

        let sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        if self.broken.load(Ordering::Relaxed) {
            return Err(ForkError::Unavailable(std::io::Error::other(
                "an earlier reply timed out",
            )));
        }
        sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&request)],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| ForkError::Unavailable(e.into()))?;
        let mut reply = [0u8; 4];
        let n = loop {
            match nix::sys::socket::recv(sock.as_raw_fd(), &mut reply, MsgFlags::empty()) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    self.retire();
                    return Err(ForkError::Failed(e.into()));
                }
                Ok(n) => break n,
            }
        };
        drop(sock);
        if n != reply.len() {
            self.retire();
            return Err(ForkError::Failed(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "no reply",
            )));
        }
        let pid = i32::from_le_bytes(reply);
        if pid <= 0 {
            // Nothing was cloned. Short of memory or processes, an exec would fail as well;
            // anything else (a seccomp filter refusing clone, say) stays: stop asking.
            if ![libc::EAGAIN, libc::ENOMEM].contains(&-pid) {
                self.broken.store(true, Ordering::Relaxed);
            }
            return Err(ForkError::Unavailable(std::io::Error::from_raw_os_error(
                -pid,
            )));
        }
        // Our write ends close here: the helper holds the only ones, so EOF means it is done.
        drop((out_w, err_w));
        Ok(Spawned {
            pid,
            stdout: out_r.into(),
            stderr: err_r.into(),
        })
    }
}

impl ForkServer {
    /// Stops using the fork server and kills it: a request it has queued but not served must not
    /// run later, behind the back of whatever the shim did meanwhile.
    fn retire(&self) {
        self.broken.store(true, Ordering::Relaxed);
        if let Some(pidfd) = &self.pidfd {
            // SAFETY: pidfd_send_signal takes our pidfd, a signal number and a null siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
    }
}

/// The fork server's loop; exits when the shim closes its end (or dies).
fn serve(sock: OwnedFd) -> ! {
    let _ = nix::sys::prctl::set_name(c"shim-forkserver");
    detach_stdio(&sock);
    let sock = reserve_helper_fds(sock);
    // The cgroup v1 mount points were pinned before the fork (`serve`): every clone builds
    // its cgroup manager from them instead of parsing mountinfo.
    loop {
        let mut buf = vec![0u8; MAX_REQUEST];
        let mut cmsg = nix::cmsg_space!([RawFd; 2 + MAX_CONTAINER_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (len, fds) = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) if msg.bytes > 0 => {
                let mut fds = Vec::new();
                for c in msg.cmsgs().into_iter().flatten() {
                    if let ControlMessageOwned::ScmRights(received) = c {
                        // SAFETY: SCM_RIGHTS installed these fds in our table just now and
                        // nothing else refers to them.
                        fds.extend(
                            received
                                .into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                (msg.bytes, fds)
            }
            Err(nix::errno::Errno::EINTR) => continue,
            // EOF or a broken socket: the shim is gone.
            _ => exit_now(0),
        };
        let pid = match parse(&buf[..len], fds.len()) {
            Some((targets, args)) => match clone_sibling() {
                Ok(0) => helper_main(&sock, fds, &targets, args),
                Ok(pid) => pid,
                Err(errno) => -errno,
            },
            None => -libc::EINVAL,
        };
        // A shim that stopped listening: nothing to do but serve the next request.
        let _ =
            nix::sys::socket::send(sock.as_raw_fd(), &pid.to_le_bytes(), MsgFlags::MSG_NOSIGNAL);
        // `fds` dropped here: the helper has its own copies.
    }
}

/// Splits a request into the container fds' targets and the arguments.
fn parse(request: &[u8], nfds: usize) -> Option<(Vec<RawFd>, Vec<OsString>)> {
    let (&k, rest) = request.split_first()?;
    let k = usize::from(k);
    if k > MAX_CONTAINER_FDS || nfds != 2 + k || rest.len() < k {
        return None;
    }
    let (targets, args) = rest.split_at(k);
    let targets: Vec<RawFd> = targets.iter().map(|&t| RawFd::from(t)).collect();
    // Only where helpers take the container's stdio: 0-2 are the helper's own.
    if targets.iter().any(|t| !HELPER_FDS.contains(t)) {
        return None;
    }
    let args = args
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    Some((targets, args))
}

/// The fork server keeps stderr (the shim's log) and nothing else of the shim: crispd reads the
/// shim's stdout until "ready" and must see EOF if the shim dies before that.
fn detach_stdio(sock: &OwnedFd) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    let keep = sock.as_raw_fd() as libc::c_uint;
    // SAFETY: close_range only closes fds; none of those ranges holds one we still use (the
    // socket is excluded, and nothing else of the shim's is needed here).
    unsafe {
        libc::close_range(3, keep - 1, 0);
        libc::close_range(keep + 1, libc::c_uint::MAX, 0);
    }
}

/// Keeps fds 3-5, where helpers get the container's stdio, free of anything the fork server
/// holds: `/dev/null` placeholders take them, and the socket moves above them. Otherwise the
/// procfs handle pathrs caches (opened by the mount point pinning) could land there: a helper's
/// dup2 would replace it, and pathrs, no longer trusting its cache, would mount a new procfs for
/// every path it resolves (29 times per container create, measured).
fn reserve_helper_fds(sock: OwnedFd) -> OwnedFd {
    let sock = match nix::fcntl::fcntl(sock.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(16))
    {
        Ok(high) => {
            drop(sock);
            // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(high) }
        }
        Err(_) => sock,
    };
    if HELPER_FDS.contains(&sock.as_raw_fd()) {
        return sock;
    }
    // Opened at the lowest free fd, 3, which is itself a placeholder then.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let null = OwnedFd::from(null);
        for fd in HELPER_FDS.into_iter().filter(|fd| *fd != null.as_raw_fd()) {
            let _ = nix::unistd::dup3(null.as_raw_fd(), fd, nix::fcntl::OFlag::O_CLOEXEC);
        }
        if HELPER_FDS.contains(&null.as_raw_fd()) {
            let _ = null.into_raw_fd();
        }
    }
    sock
}

/// Clones the calling process as a sibling (the new process's parent is our parent, the
/// shim). Returns 0 in the child, like fork.
fn clone_sibling() -> Result<i32, i32> {
    // `struct clone_args` up to `tls`, the size clone3 first shipped with.
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
    }
    // With CLONE_PARENT the child inherits our exit signal (SIGCHLD): the kernel refuses
    // another one, so `exit_signal` stays 0.
    let mut args = CloneArgs {
        flags: libc::CLONE_PARENT as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork: the child gets a
    // copy of this single-threaded process. `args` outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret >= 0 {
        return Ok(ret as i32);
    }
    let errno = nix::errno::Errno::last_raw();
    // ENOSYS: kernels before 5.3. EPERM: seccomp profiles that refuse clone3 outright.
    if errno != libc::ENOSYS && errno != libc::EPERM {
        return Err(errno);
    }
    // clone(2) with a null stack is fork as well.
    // SAFETY: as above; the remaining arguments (stack, tids, tls) are null, passed at the
    // width the kernel reads them.
    let null: libc::c_long = 0;
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_PARENT as libc::c_long,
            null,
            null,
            null,
            null,
        )
    };
    if ret >= 0 {
        Ok(ret as i32)
    } else {
        Err(nix::errno::Errno::last_raw())
    }
}

/// In the cloned helper: lay out the fd table as the exec'd helper had it, run the operation
/// and exit without returning to the fork server's loop.
fn helper_main(sock: &OwnedFd, fds: Vec<OwnedFd>, targets: &[RawFd], args: Vec<OsString>) -> ! {
    // Not to be taken for the fork server (libcontainer renames its own children).
    let _ = nix::sys::prctl::set_name(c"shim-helper");
    let dests = [1, 2].into_iter().chain(targets.iter().copied());
    let received: Vec<RawFd> = fds.into_iter().map(IntoRawFd::into_raw_fd).collect();
    let pairs: Vec<(RawFd, RawFd)> = received.iter().copied().zip(dests).collect();
    if helper::place_fds(&pairs).is_err() {
        exit_now(127);
    }
    // The originals, our copy of the socket and the placeholders no container fd replaced go
    // (an exec'd helper had nothing there either), unless a placed fd took their number.
    let placed: Vec<RawFd> = pairs.iter().map(|(_, target)| *target).collect();
    for fd in received
        .into_iter()
        .chain([sock.as_raw_fd()])
        .chain(HELPER_FDS)
        .filter(|fd| !placed.contains(fd))
    {
        let _ = nix::unistd::close(fd);
    }
    let code = match helper::parse_op(args) {
        Ok(op) => helper::run_op(op),
        Err(e) => {
            eprintln!("{e}");
            2
        }
    };
    let _ = std::io::stdout().flush();
    exit_now(code)
}

/// `_exit`: no atexit handlers or destructors of the shim's, whose copy this process is.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes no pointers and does not return.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_targets_and_args() {
        let mut req = vec![2, 4, 5];
        req.extend_from_slice(b"exec\0--id\0c1\0");
        let (targets, args) = parse(&req, 4).expect("valid request");
        assert_eq!(targets, vec![4, 5]);
        assert_eq!(
            args,
            vec![OsString::from("exec"), "--id".into(), "c1".into()]
        );
    }

    #[test]
    fn parse_refuses_bad_requests() {
        assert!(parse(&[], 2).is_none(), "empty");
        assert!(parse(&[1, 4], 2).is_none(), "fd count mismatch");
        assert!(parse(&[4, 3, 4, 5, 6], 6).is_none(), "too many fds");
        assert!(parse(&[1, 1], 3).is_none(), "target over stdout");
        assert!(parse(&[1, 200], 3).is_none(), "target too high");
    }
}
