//! /proc walking: RSS, finding this run's processes, signalling by PID.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Pss of `pid` in KiB (`/proc/<pid>/smaps_rollup`): resident pages, each shared one divided
/// by the number of processes mapping it. The shims of one runtime share their binary's pages,
/// which RSS counts again for every shim; PSS adds up to what they take together.
pub fn pss_kib(pid: i32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// The number after `key` in a `/proc` file of `key value kB` lines.
fn kib_field(path: &str, key: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
}

fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Basename of the process's executable (falls back to argv[0]).
fn exe_name(pid: i32) -> Option<String> {
    if let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) {
        if let Some(name) = exe.file_name() {
            // A replaced binary reads as "name (deleted)".
            let name = name.to_string_lossy();
            return Some(name.trim_end_matches(" (deleted)").to_string());
        }
    }
    let argv0 = cmdline(pid)?.into_iter().next()?;
    Some(argv0.rsplit('/').next()?.to_string())
}

/// Processes running `name` whose command line or environment mention `marker`.
pub fn find(name: &str, marker: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| exe_name(pid).as_deref() == Some(name) && mentions(pid, marker))
        .collect()
}

/// Whether the process's command line or working directory mention `marker`.
fn mentions(pid: i32, marker: &str) -> bool {
    if cmdline(pid).is_some_and(|args| args.iter().any(|a| a.contains(marker))) {
        return true;
    }
    fs::read_link(format!("/proc/{pid}/cwd"))
        .map(|cwd| cwd.to_string_lossy().contains(marker))
        .unwrap_or(false)
}

/// Every process (but this one) whose command line or cwd mention `marker`.
pub fn mentioning(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me && mentions(pid, marker))
        .collect()
}

pub fn signal(pid: i32, signal: i32) {
    if pid > 1 {
        // SAFETY: kill(2) with a concrete positive pid has no memory effects.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

pub fn alive(pid: i32) -> bool {
    // Zombies count as gone.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGKILLs each pid and waits (briefly) for them to be gone.
pub fn kill_all(pids: &[i32]) {
    for &pid in pids {
        signal(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// PIDs listed in `cgroup.procs` of `dir` and every cgroup below it.
pub fn cgroup_procs(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_procs(&entry.path()));
            }
        }
    }
    pids
}
