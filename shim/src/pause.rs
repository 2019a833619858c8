//! `crisp-shim pause`: PID 1 of a pod's shared PID namespace (`shareProcessNamespace`).
//!
//! A PID namespace dies with its init, so a pod whose containers share one needs a process that
//! lives as long as the pod: this one. crispd starts it with `CLONE_NEWPID` unshared, so our
//! first child is PID 1 of a new namespace. That child detaches and reaps whatever is orphaned
//! into the namespace, as Kubernetes' pause does; we print its pid and exit. Stopping the pod
//! SIGKILLs it, which the kernel turns into SIGKILL for everything in the namespace.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{fork, ForkResult, Pid};
use std::os::fd::AsRawFd;

pub fn run() -> i32 {
    // SAFETY: nothing has started a thread in this process yet (main dispatches here right
    // after parsing arguments), so the child may run arbitrary code after fork.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            println!("{child}");
            0
        }
        Ok(ForkResult::Child) => reap_forever(),
        Err(e) => {
            eprintln!("crisp-shim pause: fork: {e}");
            1
        }
    }
}

fn reap_forever() -> ! {
    let _ = nix::unistd::setsid();
    // crispd reads our parent's stdout to EOF: do not hold it open.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    let _ = std::env::set_current_dir("/");
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let _ = chld.thread_block();
    loop {
        let _ = chld.wait();
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
    }
}
