//! `crisp-shim __pod-userns`: makes the user namespace of a pod that asks for one
//! (`userns_options` mode POD), and the pod's network, IPC and UTS namespaces owned by it.
//!
//! A process is needed because `unshare(CLONE_NEWUSER)` refuses a multi-threaded caller (crispd
//! is one), and namespaces owned by the new user namespace can only be made from inside it. They
//! must be owned by it: the container's runtime mounts sysfs (allowed only with a network
//! namespace its user namespace owns) and mqueue (likewise for IPC), and the pod's root may then
//! configure its own network as it could without a user namespace.
//!
//! Protocol with crispd, one line each way per step on stdin/stdout:
//! 1. we unshare the user namespace and print `user`; crispd writes our uid_map and gid_map and
//!    answers with a line;
//! 2. we unshare the other namespaces, set the hostname and print `ready`; crispd pins
//!    `/proc/<pid>/ns/*` and closes our stdin, and we exit.

use nix::sched::{unshare, CloneFlags};
use std::io::{BufRead, Write};

pub fn run(net: bool, ipc: bool, uts: bool, hostname: Option<String>) -> i32 {
    match steps(net, ipc, uts, hostname) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("crisp-shim __pod-userns: {e}");
            1
        }
    }
}

fn steps(net: bool, ipc: bool, uts: bool, hostname: Option<String>) -> Result<(), String> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = String::new();
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unsharing the user namespace: {e}"))?;
    say("user")?;
    match input.read_line(&mut line) {
        Ok(n) if n > 0 => {}
        _ => return Err("crispd went away before writing the id maps".into()),
    }
    let mut flags = CloneFlags::empty();
    for (want, flag) in [
        (net, CloneFlags::CLONE_NEWNET),
        (ipc, CloneFlags::CLONE_NEWIPC),
        (uts, CloneFlags::CLONE_NEWUTS),
    ] {
        if want {
            flags |= flag;
        }
    }
    if !flags.is_empty() {
        unshare(flags).map_err(|e| format!("unsharing the pod namespaces: {e}"))?;
    }
    if let (true, Some(name)) = (uts, hostname) {
        nix::unistd::sethostname(&name).map_err(|e| format!("setting hostname {name:?}: {e}"))?;
    }
    say("ready")?;
    // Live until crispd has pinned the namespaces (it closes stdin then).
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut input, &mut rest);
    Ok(())
}

fn say(word: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{word}")
        .and_then(|_| out.flush())
        .map_err(|e| format!("writing to crispd: {e}"))
}
