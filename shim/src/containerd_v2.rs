//! Running under a stock containerd as `containerd-shim-crisp-v2` (runtime
//! `io.containerd.crisp.v2`), through containerd's shim v2 process protocol:
//!
//! - `… -namespace NS -address A -publish-binary P -id ID start`, in the bundle directory:
//!   start the long-lived Task server (`crisp-shim serve`, its own session), print its ttrpc
//!   address and exit. containerd reads all our output, so the server must not inherit it.
//! - `… -id ID -bundle B delete`: clean up after a shim that died (kill what is left, remove the
//!   runtime state, unmount the rootfs) and print a `DeleteResponse`.
//!
//! containerd passes these Go-style single-dash flags, which is why they are parsed here and
//! not by clap. Task events are not published (containerd 1.6 learns of exits through `Wait`).

use crate::helper::RuntimeHelper;
use crate::reaper::Reaper;
use anyhow::{bail, Context, Result};
use containerd_shim_protos::protobuf::Message;
use crisp_api::ShimDir;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The shim's own files inside containerd's bundle directory.
const PRIVATE_DIR: &str = ".crisp";

pub enum Action {
    Start,
    Delete,
}

pub struct Invocation {
    pub action: Action,
    pub flags: HashMap<String, String>,
}

/// Recognises containerd's invocation: flags, then `start` or `delete` last.
pub fn parse(args: &[String]) -> Option<Invocation> {
    let action = match args.last()?.as_str() {
        "start" => Action::Start,
        "delete" => Action::Delete,
        _ => return None,
    };
    let mut flags = HashMap::new();
    let mut it = args[1..args.len() - 1].iter();
    while let Some(a) = it.next() {
        let name = a.strip_prefix("--").or_else(|| a.strip_prefix('-'))?;
        match name.split_once('=') {
            Some((k, v)) => {
                flags.insert(k.to_string(), v.to_string());
            }
            // Boolean flags (`-debug`) take no value.
            None if name == "debug" => {
                flags.insert(name.to_string(), "true".into());
            }
            None => {
                flags.insert(name.to_string(), it.next()?.clone());
            }
        }
    }
    flags
        .contains_key("id")
        .then_some(Invocation { action, flags })
}

/// The shim directory and socket for a containerd task: the directory in the bundle (which
/// containerd removes with the task), the socket at a short path.
fn shim_dir(bundle: &Path, namespace: &str, id: &str) -> ShimDir {
    let hash = crisp_api::shim_dir::short_hash(&format!("{namespace}/{id}"));
    ShimDir::new(
        bundle.join(PRIVATE_DIR),
        PathBuf::from("/run/crisp-shim/s").join(format!("{hash}.sock")),
    )
}

pub fn run(inv: Invocation) -> i32 {
    let result = match inv.action {
        Action::Start => start(&inv.flags),
        Action::Delete => delete(&inv.flags),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-crisp-v2: {e:#}");
            1
        }
    }
}

fn start(flags: &HashMap<String, String>) -> Result<()> {
    let id = &flags["id"];
    let namespace = flags
        .get("namespace")
        .map(String::as_str)
        .unwrap_or("default");
    let bundle = std::env::current_dir().context("the bundle (our working directory)")?;
    let dir = shim_dir(&bundle, namespace, id);
    std::fs::create_dir_all(dir.path())
        .with_context(|| format!("creating {}", dir.path().display()))?;
    let log = std::fs::File::create(dir.shim_log()).context("creating the shim log")?;
    let exe = std::env::current_exe().context("locating our binary")?;
    let mut child = Command::new(exe)
        .args(dir.serve_args(id))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting the shim server")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line).ok();
    }
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "the shim server did not start: {}",
            std::fs::read_to_string(dir.shim_log())
                .unwrap_or_default()
                .trim()
        );
    }
    // containerd reconnects through this file after a restart.
    let address = dir.address();
    std::fs::write(bundle.join("address"), &address).context("writing the address file")?;
    let mut out = std::io::stdout().lock();
    write!(out, "{address}")?;
    out.flush()?;
    Ok(())
}

fn delete(flags: &HashMap<String, String>) -> Result<()> {
    let id = &flags["id"];
    let namespace = flags
        .get("namespace")
        .map(String::as_str)
        .unwrap_or("default");
    let bundle = match flags.get("bundle") {
        Some(b) => PathBuf::from(b),
        None => std::env::current_dir().context("the bundle (our working directory)")?,
    };
    let dir = shim_dir(&bundle, namespace, id);
    let reaper = Reaper::start().context("becoming a subreaper")?;
    if let Err(e) = RuntimeHelper::new(reaper, dir.runtime_root()).delete(id) {
        eprintln!("containerd-shim-crisp-v2 delete {id}: {e}");
    }
    crate::rootfs::unmount_all(&bundle.join("rootfs"));
    dir.remove_sockets();
    let mut resp = containerd_shim_protos::api::DeleteResponse::new();
    // What containerd-shim-runc-v2 reports for a task it could not wait for: SIGKILL.
    resp.exit_status = 128 + 9;
    let now = chrono::Utc::now();
    let mut ts = containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp::new();
    ts.seconds = now.timestamp();
    ts.nanos = now.timestamp_subsec_nanos() as i32;
    resp.exited_at = containerd_shim_protos::protobuf::MessageField::some(ts);
    let bytes = resp
        .write_to_bytes()
        .context("encoding the DeleteResponse")?;
    std::io::stdout().lock().write_all(&bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_containerds_flags() {
        let inv = parse(&args(
            "containerd-shim-crisp-v2 -namespace k8s -address /run/c.sock -publish-binary /usr/bin/containerd -id abc -debug start",
        ))
        .unwrap();
        assert!(matches!(inv.action, Action::Start));
        assert_eq!(inv.flags["id"], "abc");
        assert_eq!(inv.flags["namespace"], "k8s");
        assert_eq!(inv.flags["debug"], "true");
        let inv = parse(&args("x -id=abc --bundle /b delete")).unwrap();
        assert!(matches!(inv.action, Action::Delete));
        assert_eq!(inv.flags["bundle"], "/b");
        assert!(parse(&args("crisp-shim serve --id x")).is_none());
        assert!(parse(&args("x -namespace n start")).is_none(), "no id");
    }
}
