//! Bringing `lo` up inside a network namespace.
//!
//! Uses the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls rather than netlink: it is two syscalls on a socket
//! created inside the namespace, with no runtime and no dependency, and pod start is latency
//! sensitive.

use std::os::fd::AsRawFd;

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("creating a socket in the pod network namespace: {0}")]
    Socket(nix::Error),
    #[error("reading the flags of lo: {0}")]
    GetFlags(std::io::Error),
    #[error("setting lo up: {0}")]
    SetFlags(std::io::Error),
}

/// Sets `lo` up in the network namespace of the calling thread.
///
/// `setns`/`unshare` of a network namespace is per thread, so the caller must run this on the
/// thread that entered the pod's namespace.
pub fn set_up_in_current_netns() -> Result<(), LoopbackError> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(LoopbackError::Socket)?;

    // SAFETY: ifreq is plain old data; an all-zero value is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `sock` is a valid socket fd and `req` a properly initialised ifreq that outlives
    // the call; SIOCGIFFLAGS only writes `ifr_ifru.ifru_flags`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(LoopbackError::GetFlags(std::io::Error::last_os_error()));
    }
    // SAFETY: the union was just filled in as flags by SIOCGIFFLAGS.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads the name and flags from `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(LoopbackError::SetFlags(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs on its own thread so the unshared namespace dies with the thread.
    #[test]
    fn brings_lo_up_in_a_fresh_netns() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
            let flags = || {
                std::fs::read_to_string("/proc/thread-self/net/dev").expect("read net/dev");
                // sysfs shows the mounting process's namespace, so ask the kernel via ioctl.
                let sock = nix::sys::socket::socket(
                    nix::sys::socket::AddressFamily::Inet,
                    nix::sys::socket::SockType::Datagram,
                    nix::sys::socket::SockFlag::empty(),
                    None,
                )
                .expect("socket");
                // SAFETY: zeroed ifreq is valid; the ioctl writes only the flags.
                let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
                req.ifr_name[0] = b'l' as libc::c_char;
                req.ifr_name[1] = b'o' as libc::c_char;
                // SAFETY: valid fd and ifreq.
                assert!(
                    unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } >= 0
                );
                // SAFETY: filled by SIOCGIFFLAGS.
                unsafe { req.ifr_ifru.ifru_flags }
            };
            assert_eq!(flags() & libc::IFF_UP as libc::c_short, 0);
            set_up_in_current_netns().expect("set lo up");
            assert_ne!(flags() & libc::IFF_UP as libc::c_short, 0);
        })
        .join()
        .expect("thread");
    }
}
