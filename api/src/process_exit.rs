//! Waiting for a process to exit, with a deadline, without polling.
//!
//! A pidfd becomes readable when its process exits, so one `poll` covers both the exit and the
//! timeout. Polling `try_wait` with growing sleeps (what the CNI runner did) noticed a 4 ms
//! plugin run only after 7 ms.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// Blocks until process `pid` has exited (`Ok(true)`) or `deadline` passed (`Ok(false)`). For a
/// child, the exit still has to be reaped; for any other process it is gone then.
pub fn wait_until(pid: i32, deadline: Instant) -> io::Result<bool> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return match io::Error::last_os_error().raw_os_error() {
            // No such process (any more).
            Some(libc::ESRCH) => Ok(true),
            // No pidfds (before Linux 5.3, a seccomp filter, out of fds): look at /proc.
            _ => Ok(poll_proc(pid, deadline)),
        };
    }
    // SAFETY: pidfd_open returned a new fd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Round up, so a wait never ends just short of the deadline and spins.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `pfd` is one valid pollfd that outlives the call.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            n if n > 0 => return Ok(true),
            0 if left.is_zero() => return Ok(false),
            0 => {}
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// The fallback: whether `pid` is gone or a zombie (exited, not yet reaped), checked every
/// millisecond until `deadline`.
fn poll_proc(pid: i32, deadline: Instant) -> bool {
    loop {
        let exited = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state letter follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_none_or(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
            Err(_) => true,
        };
        if exited {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `wait` on a child that runs until killed: false by a deadline 50 ms away, true once the
    /// child is killed (a zombie until reaped, which counts as exited).
    fn check_with(wait: impl Fn(i32, Instant) -> bool) {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let pid = sleeper.id() as i32;
        let t = Instant::now();
        assert!(!wait(pid, t + Duration::from_millis(50)));
        assert!(t.elapsed() >= Duration::from_millis(50));
        sleeper.kill().expect("kill");
        assert!(wait(pid, Instant::now() + Duration::from_secs(5)));
        sleeper.wait().expect("reap");
    }

    #[test]
    fn pidfd_sees_an_exit_and_a_deadline() {
        check_with(|pid, deadline| wait_until(pid, deadline).expect("wait"));
        let mut quick = std::process::Command::new("true").spawn().expect("true");
        let t = Instant::now();
        assert!(wait_until(quick.id() as i32, t + Duration::from_secs(5)).expect("wait"));
        assert!(t.elapsed() < Duration::from_secs(2));
        quick.wait().expect("reap");
    }

    #[test]
    fn proc_fallback_sees_an_exit_and_a_deadline() {
        check_with(poll_proc);
    }
}
