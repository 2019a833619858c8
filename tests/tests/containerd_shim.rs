//! crisp-shim under a stock containerd: installed as `containerd-shim-crisp-v2`, Debian's
//! containerd 1.6 runs a container through it (`ctr run --runtime io.containerd.crisp.v2`),
//! and nothing is left afterwards. The containerd instance is private to the test (its own
//! root, state and sockets in a scratch directory, the CRI plugin off).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crisp_tests::{bin_path, busybox_layout, require_root, teardown_dir};

/// containerd, its scratch directory and its namespace, all removed on drop.
struct Containerd {
    dir: PathBuf,
    child: Option<Child>,
    namespace: String,
}

impl Containerd {
    fn start() -> anyhow::Result<Containerd> {
        let id = format!(
            "{:08x}",
            std::process::id() ^ (Instant::now().elapsed().subsec_nanos())
        );
        let dir = PathBuf::from(format!("/tmp/ctrd{id}"));
        std::fs::create_dir_all(dir.join("bin"))?;
        let mut me = Containerd {
            dir: dir.clone(),
            child: None,
            namespace: format!("crisptest{id}"),
        };
        // containerd finds runtime `io.containerd.crisp.v2` as `containerd-shim-crisp-v2` on
        // its PATH.
        std::os::unix::fs::symlink(
            bin_path("crisp-shim"),
            dir.join("bin/containerd-shim-crisp-v2"),
        )?;
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n",
                d = dir.display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let path = format!(
            "{}:{}",
            dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        me.child = Some(
            Command::new("containerd")
                .arg("--config")
                .arg(dir.join("config.toml"))
                .env("PATH", path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting containerd (apt-get install containerd)")?,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !me.ctr(&["version"]).is_ok_and(|o| o.status.success()) {
            if Instant::now() > deadline {
                bail!("containerd did not come up: {}", me.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(me)
    }

    fn ctr(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.join("c.sock"))
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let left = teardown_dir(&self.dir);
        if !left.is_empty() {
            eprintln!("containerd test: left behind {left:?}");
        }
        // containerd's cgroups go under /<namespace>/<container id>.
        for h in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let _ = std::fs::remove_dir(Path::new(h).join(&self.namespace));
        }
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path().join(&self.namespace));
            }
        }
    }
}

#[test]
fn containerd_runs_a_container_through_crisp_shim() {
    if !require_root() {
        return;
    }
    if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("containerd is not installed (scripts/install-deps.sh installs it)");
    }
    let containerd = Containerd::start().expect("starting containerd");
    if let Err(e) = check(&containerd) {
        panic!("{e:#}\ncontainerd log:\n{}", containerd.log());
    }
}

fn check(c: &Containerd) -> anyhow::Result<()> {
    let layout = busybox_layout();
    let archive = c.dir.join("busybox.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()?
        .success();
    anyhow::ensure!(ok, "archiving the busybox layout");
    let out = c.ctr(&["images", "import", &archive.display().to_string()])?;
    anyhow::ensure!(
        out.status.success(),
        "ctr import: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.crisp.v2",
        "docker.io/library/busybox:latest",
        "t1",
        "sh",
        "-c",
        "echo hello-from-crisp-shim; exit 3",
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        stdout.contains("hello-from-crisp-shim"),
        "ctr run printed {stdout:?}, stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ctr exits with the container's exit code.
    anyhow::ensure!(out.status.code() == Some(3), "ctr run: {:?}", out.status);

    // A detached task: containerd's metrics through the shim's Stats, then kill and delete.
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = c.ctr(args)?;
        anyhow::ensure!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(&[
        "run",
        "-d",
        "--runtime",
        "io.containerd.crisp.v2",
        "docker.io/library/busybox:latest",
        "t2",
        "sleep",
        "300",
    ])?;
    let metrics = run(&["task", "metrics", "t2"])?;
    anyhow::ensure!(
        metrics.contains("pids.current") || metrics.contains("pids"),
        "ctr task metrics: {metrics}"
    );
    run(&["task", "kill", "--signal", "SIGKILL", "t2"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !run(&["task", "ls"])?.contains("STOPPED") {
        anyhow::ensure!(Instant::now() < deadline, "t2 never stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
    run(&["task", "delete", "t2"])?;
    run(&["container", "delete", "t2"])?;

    // Everything was deleted: no shim, no mount, no task left.
    let tasks = c.ctr(&["tasks", "ls", "-q"])?;
    anyhow::ensure!(
        String::from_utf8_lossy(&tasks.stdout).trim().is_empty(),
        "tasks left: {}",
        String::from_utf8_lossy(&tasks.stdout)
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    anyhow::ensure!(
        !mounts.contains(&c.dir.display().to_string()),
        "mounts left under {}",
        c.dir.display()
    );
    Ok(())
}
