//! `crisp-shim run --bundle DIR`: run an OCI bundle in the foreground, like `runc run`, with the
//! container attached to our own stdio, and exit with its exit code.

use crate::helper::{ContainerStdio, RuntimeHelper};
use crate::reaper::Reaper;
use anyhow::{Context, Result};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

pub fn run(bundle: &Path, id: Option<String>, root: Option<PathBuf>) -> Result<i32> {
    let bundle = bundle
        .canonicalize()
        .with_context(|| format!("bundle {}", bundle.display()))?;
    let id = id.unwrap_or_else(|| format!("crisp-run-{}", std::process::id()));
    let root = root.unwrap_or_else(|| PathBuf::from("/run/crisp-shim").join(&id));
    let reaper = Reaper::start().context("becoming a subreaper")?;
    let helper = RuntimeHelper::new(reaper.clone(), root.clone());

    let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned();
    let stdio = ContainerStdio {
        stdin: Some(dup(std::io::stdin().as_fd())?),
        stdout: Some(dup(std::io::stdout().as_fd())?),
        stderr: Some(dup(std::io::stderr().as_fd())?),
        console_socket: None,
    };
    let cgroup = crate::cgroup::of_bundle(&bundle);
    let pid = helper
        .create(&id, &bundle, cgroup.as_deref(), stdio)
        .context("create")?;
    let result = helper
        .start(&id)
        .context("start")
        .map(|()| reaper.wait(pid as i32));
    if result.is_err() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        reaper.wait(pid as i32);
    }
    let deleted = helper.delete(&id).context("delete");
    let _ = std::fs::remove_dir_all(&root);
    let code = result?;
    deleted?;
    Ok(code)
}
