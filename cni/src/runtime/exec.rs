//! Running one plugin binary (libcni's `invoke` package).
//!
//! Plugins are executed directly with `std::process::Command`. The `cni-plugin` crate is not
//! used: it is archived, and its delegation helper panicked here.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::CniError;
use crate::types::ErrorResult;

/// Finds the executable `name` in `dirs` (first match wins).
pub fn find_plugin(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    use std::os::unix::fs::PermissionsExt;
    for d in dirs {
        let p = d.join(name);
        if let Ok(md) = std::fs::metadata(&p) {
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(CniError::PluginNotFound {
        plugin: name.to_string(),
        dirs: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    })
}

/// The CNI_* environment of one invocation.
pub struct Env<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub cni_args: &'a str,
    pub cni_path: &'a str,
}

/// Runs the plugin at `path` with `stdin` and returns its stdout. A non-zero exit becomes
/// [`CniError::Plugin`] carrying the plugin's own error (`{"code","msg","details"}` on stdout,
/// else its stderr). After `timeout` the plugin's process group is killed.
pub fn run(
    plugin: &str,
    path: &Path,
    env: &Env<'_>,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, CniError> {
    use std::os::unix::process::CommandExt;
    let exec_err = |msg: String| CniError::Exec {
        plugin: plugin.to_string(),
        msg,
    };
    let mut child = Command::new(path)
        .env("CNI_COMMAND", env.command)
        .env("CNI_CONTAINERID", env.container_id)
        .env("CNI_NETNS", env.netns)
        .env("CNI_IFNAME", env.ifname)
        .env("CNI_ARGS", env.cni_args)
        .env("CNI_PATH", env.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung plugin can be killed with whatever it started.
        .process_group(0)
        .spawn()
        .map_err(|e| exec_err(format!("starting {}: {e}", path.display())))?;
    let pid = child.id() as i32;

    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        let _ = tx.send((true, buf));
    });
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        let _ = tx2.send((false, buf));
    });
    {
        let mut input = child.stdin.take().expect("piped stdin");
        let data = stdin.to_vec();
        // A plugin that never reads stdin must not block us: write from a thread.
        std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
    }

    let deadline = Instant::now() + timeout;
    let exited = crisp_api::process_exit::wait_until(pid, deadline)
        .map_err(|e| exec_err(format!("waiting: {e}")))?;
    if !exited {
        // Kill the group we created (the plugin's pid is its pgid).
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        return Err(CniError::Timeout {
            plugin: plugin.to_string(),
            command: env.command.to_string(),
            after: timeout,
        });
    }
    let status = child
        .wait()
        .map_err(|e| exec_err(format!("waiting: {e}")))?;

    // The pipes close when the plugin and its children are gone; a daemon it left behind
    // holding them must not hang us.
    let mut stdout = None;
    let mut stderr = None;
    let grace = Instant::now() + Duration::from_secs(5);
    while stdout.is_none() || stderr.is_none() {
        let left = grace.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, b)) => stdout = Some(b),
            Ok((false, b)) => stderr = Some(b),
            Err(_) => break,
        }
    }
    let stdout = stdout.unwrap_or_default();
    let stderr = stderr.unwrap_or_default();

    if status.success() {
        return Ok(stdout);
    }
    let stderr_text = String::from_utf8_lossy(&stderr).trim().to_string();
    match serde_json::from_slice::<ErrorResult>(&stdout) {
        Ok(e) if !e.msg.is_empty() || e.code != 0 => Err(CniError::Plugin {
            plugin: plugin.to_string(),
            command: env.command.to_string(),
            code: Some(e.code),
            msg: e.msg,
            details: if e.details.is_empty() {
                stderr_text
            } else {
                e.details
            },
        }),
        _ => {
            let stdout_text = String::from_utf8_lossy(&stdout).trim().to_string();
            let msg = match (stderr_text.is_empty(), stdout_text.is_empty()) {
                (false, _) => stderr_text,
                (true, false) => stdout_text,
                (true, true) => format!("exited with {status} and no output"),
            };
            Err(CniError::Plugin {
                plugin: plugin.to_string(),
                command: env.command.to_string(),
                code: None,
                msg,
                details: String::new(),
            })
        }
    }
}
