//! One benchmark run: its temp dir, the daemons it starts, and a `Drop` that
//! takes down everything the run made.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::procs;

pub const CRISP_BRIDGE: &str = "cbench0";
pub const CRISP_SUBNET: &str = "10.89.250";
pub const CTRD_BRIDGE: &str = "cbench1";
pub const CTRD_SUBNET: &str = "10.89.251";
pub const CGROUP_PARENT: &str = "crisp-bench";
pub const PAUSE_IMAGE: &str = "localhost/bench/pause:latest";
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:latest";
const CONTAINERD: &str = "/usr/bin/containerd";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Where containerd's runc shims put their sockets, whatever its config says.
const CONTAINERD_RUN: &str = "/run/containerd";

pub struct Run {
    /// `/tmp/cb<8 hex>`: short, because crispd's shim sockets live 90 bytes below it.
    pub dir: PathBuf,
    crispd: Option<Child>,
    containerd: Option<Child>,
    /// containerd's `k8s.io` cgroup dirs that existed before the run.
    k8s_cgroups_before: HashSet<PathBuf>,
    containerd_run_existed: bool,
}

impl Run {
    pub fn new() -> anyhow::Result<Run> {
        let mut bytes = [0u8; 4];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("reading /dev/urandom")?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = PathBuf::from(format!("/tmp/cb{id}"));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Both runtimes' state dirs go on a tmpfs, as /run is on a node: their per-pod
        // runtime files (bundles, sockets, pid files, netns pins) then cost what they cost
        // there, not a disk journal's commits. Cleanup unmounts it with everything else.
        let run_dir = dir.join("run");
        fs::create_dir(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        run_cmd(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1g,mode=0755", "tmpfs"])
                .arg(&run_dir),
        )
        .context("mounting a tmpfs for the state dirs")?;
        let mut k8s_cgroups_before = HashSet::new();
        for k8s in k8s_cgroup_roots() {
            collect_dirs(&k8s, &mut k8s_cgroups_before);
        }
        Ok(Run {
            dir,
            crispd: None,
            containerd: None,
            k8s_cgroups_before,
            containerd_run_existed: Path::new(CONTAINERD_RUN).exists(),
        })
    }

    /// A runtime's state dir, on the run's tmpfs.
    fn state_dir(&self, runtime: &str) -> PathBuf {
        self.dir.join("run").join(runtime)
    }

    pub fn marker(&self) -> String {
        self.dir.display().to_string()
    }

    /// Builds the busybox and pause OCI layouts; returns (busybox, pause).
    pub fn build_images(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/images/build-busybox.sh");
        let busybox = self.dir.join("images/busybox");
        let pause = self.dir.join("images/pause");
        run_cmd(
            Command::new("bash")
                .arg(&script)
                .arg(&busybox)
                .arg(BUSYBOX_IMAGE),
        )?;
        run_cmd(
            Command::new("bash")
                .arg(&script)
                .arg(&pause)
                .arg(PAUSE_IMAGE)
                .arg(r#"["sleep","2147483647"]"#),
        )?;
        Ok((busybox, pause))
    }

    pub fn crisp_socket(&self) -> PathBuf {
        self.state_dir("crisp").join("crisp.sock")
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/c.sock")
    }

    pub fn crispd_pid(&self) -> Option<i32> {
        self.crispd.as_ref().map(|c| c.id() as i32)
    }

    pub fn containerd_pid(&self) -> Option<i32> {
        self.containerd.as_ref().map(|c| c.id() as i32)
    }

    /// `hosts_dir`: a registry hosts dir (containerd's `certs.d` layout) for the pull phase.
    pub fn start_crispd(
        &mut self,
        bin_dir: &Path,
        busybox: &Path,
        hosts_dir: Option<&Path>,
    ) -> anyhow::Result<()> {
        let base = self.dir.join("crisp");
        let (root, state, net) = (
            base.join("root"),
            self.state_dir("crisp"),
            base.join("net.d"),
        );
        for d in [&root, &state, &net] {
            fs::create_dir_all(d)?;
        }
        fs::create_dir_all(root.join("import"))?;
        run_cmd(
            Command::new("cp")
                .arg("-a")
                .arg(busybox)
                .arg(root.join("import/busybox")),
        )?;
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "crisp-bench",
            "plugins": [{
                "type": "crisp-bridge",
                "bridge": CRISP_BRIDGE,
                "subnet": format!("{CRISP_SUBNET}.0/24"),
                "gateway": format!("{CRISP_SUBNET}.1"),
                "hairpinMode": true,
                "ipMasq": false,
                "dataDir": base.join("ipam"),
                "capabilities": { "portMappings": true }
            }]
        });
        fs::write(net.join("10-crisp-bench.conflist"), conflist.to_string())?;
        let config = base.join("config.toml");
        let registry = hosts_dir
            .map(|d| format!("[registry]\nconfig_path = \"{}\"\n", d.display()))
            .unwrap_or_default();
        fs::write(
            &config,
            format!(
                "cgroup_parent = \"/{CGROUP_PARENT}\"\n[cni]\nconf_dir = \"{}\"\nbin_dirs = []\n{registry}",
                net.display()
            ),
        )?;
        let log = File::create(base.join("crispd.log"))?;
        let crispd = bin_dir.join("crispd");
        let child = Command::new(&crispd)
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .arg("--socket")
            .arg(self.crisp_socket())
            .env("NO_COLOR", "1")
            .env("CRISP_SHIM_BIN", bin_dir.join("crisp-shim"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Own process group: a terminal's Ctrl-C reaches only us, and we
            // take the daemons down in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawning {}", crispd.display()))?;
        self.crispd = Some(child);
        Ok(())
    }

    pub fn crispd_log(&self) -> String {
        fs::read_to_string(self.dir.join("crisp/crispd.log")).unwrap_or_default()
    }

    pub fn containerd_log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd/containerd.log")).unwrap_or_default()
    }

    /// Whether Debian's containerd is installed; its version line.
    pub fn containerd_version() -> Option<String> {
        let out = Command::new(CONTAINERD).arg("--version").output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `hosts_dir`: as for [`start_crispd`](Self::start_crispd); containerd 1.6 reads the same
    /// layout through its CRI `registry.config_path`.
    pub fn start_containerd(&mut self, hosts_dir: Option<&Path>) -> anyhow::Result<()> {
        let base = self.dir.join("containerd");
        let net = self.dir.join("containerd-net.d");
        fs::create_dir_all(&base)?;
        fs::create_dir_all(&net)?;
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "containerd-bench",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": CTRD_BRIDGE,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{
                            "subnet": format!("{CTRD_SUBNET}.0/24"),
                            "gateway": format!("{CTRD_SUBNET}.1")
                        }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": base.join("ipam")
                    }
                },
                { "type": "portmap", "capabilities": { "portMappings": true } },
                { "type": "loopback" }
            ]
        });
        fs::write(
            net.join("10-containerd-bench.conflist"),
            conflist.to_string(),
        )?;
        let d = base.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  # Sandboxes without CAP_SYS_RESOURCE cannot lower oom_score_adj to -998
  # (runc then fails with "can't get final child's PID from pipe"); cap it at
  # containerd's own value instead.
  restrict_oom_score_adj = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{d}/runc"
{binary_name}
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{net}"
  max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{hosts}"
"#,
            hosts = hosts_dir
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            sock = self.containerd_socket().display(),
            // Debugging knob: CRISP_BENCH_RUNC=/path/to/runc-wrapper.
            binary_name = std::env::var("CRISP_BENCH_RUNC")
                .map(|b| format!("  BinaryName = \"{b}\"\n"))
                .unwrap_or_default(),
            net = net.display(),
            state = self.state_dir("containerd").display(),
        );
        let config_path = base.join("config.toml");
        fs::write(&config_path, config)?;
        let log = File::create(base.join("containerd.log"))?;
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Own process group: a terminal's Ctrl-C reaches only us, and we
            // take the daemons down in order.
            .process_group(0)
            .spawn()
            .context("spawning containerd")?;
        self.containerd = Some(child);
        Ok(())
    }

    /// `ctr images import` of an OCI layout (tarred first) into `k8s.io`.
    pub fn containerd_import(&self, layout: &Path) -> anyhow::Result<()> {
        let tar = layout.with_extension("tar");
        run_cmd(
            Command::new("tar")
                .arg("-C")
                .arg(layout)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        )?;
        run_cmd(
            self.ctr()
                .args(["images", "import", "--all-platforms"])
                .arg(&tar),
        )?;
        Ok(())
    }

    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.containerd_socket())
            .args(["-n", "k8s.io"]);
        cmd
    }

    /// Fails if the daemon exited; used while waiting for it to answer.
    pub fn check_alive(&mut self, crisp: bool) -> anyhow::Result<()> {
        let child = if crisp {
            self.crispd.as_mut()
        } else {
            self.containerd.as_mut()
        };
        if let Some(child) = child {
            if let Some(status) = child.try_wait()? {
                bail!("daemon exited ({status})");
            }
        }
        Ok(())
    }

    /// SIGTERM, up to 5 s, then SIGKILL; only the daemons this run started.
    pub fn stop_daemon(&mut self, crisp: bool) {
        let child = if crisp {
            self.crispd.take()
        } else {
            self.containerd.take()
        };
        let Some(mut child) = child else { return };
        procs::signal(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn cleanup(&mut self) {
        let mut problems = Vec::new();
        self.stop_daemon(true);
        self.stop_daemon(false);

        // Shims (and anything else started with our paths), then whatever
        // still runs in the pods' cgroups.
        procs::kill_all(&procs::mentioning(&self.marker()));
        let mut cgroups = Vec::new();
        for controller in cgroup_controllers() {
            if let Ok(entries) = fs::read_dir(&controller) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(CGROUP_PARENT) {
                        cgroups.push(e.path());
                    }
                }
            }
        }
        let mut new_k8s = HashSet::new();
        for k8s in k8s_cgroup_roots() {
            collect_dirs(&k8s, &mut new_k8s);
        }
        let new_k8s: Vec<PathBuf> = new_k8s
            .difference(&self.k8s_cgroups_before)
            .cloned()
            .collect();
        let mut victims = Vec::new();
        for dir in cgroups.iter().chain(&new_k8s) {
            victims.extend(procs::cgroup_procs(dir));
        }
        procs::kill_all(&victims);

        // Mounts: ours are all under the temp dir, plus the shim sockets' dir
        // if this run created it.
        let mut mount_roots = vec![self.dir.clone()];
        if !self.containerd_run_existed {
            mount_roots.push(PathBuf::from(CONTAINERD_RUN));
        }
        for root in &mount_roots {
            problems.extend(unmount_under(root));
        }

        for bridge in [CRISP_BRIDGE, CTRD_BRIDGE] {
            let _ = Command::new("ip")
                .args(["link", "del", bridge])
                .stderr(Stdio::null())
                .status();
        }

        // cgroups, deepest first; rmdir only removes empty ones.
        for dir in &cgroups {
            problems.extend(rmdir_tree(dir));
        }
        let mut new_k8s = new_k8s;
        new_k8s.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for dir in &new_k8s {
            if dir.exists() && fs::remove_dir(dir).is_err() {
                problems.push(format!("cgroup {} not removed", dir.display()));
            }
        }

        problems.extend(remove_iptables_rules(&[
            CRISP_BRIDGE,
            CTRD_BRIDGE,
            &format!("{CRISP_SUBNET}."),
            &format!("{CTRD_SUBNET}."),
            &self.marker(),
            "crisp-bench",
            "containerd-bench",
        ]));

        for root in &mount_roots {
            if !mounts_under(root).is_empty() {
                problems.push(format!("{} kept: still has mounts", root.display()));
            } else if root.exists() {
                if let Err(e) = fs::remove_dir_all(root) {
                    problems.push(format!("removing {}: {e}", root.display()));
                }
            }
        }
        if problems.is_empty() {
            eprintln!("cleanup: done");
        } else {
            eprintln!("cleanup: left behind:");
            for p in problems {
                eprintln!("  {p}");
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every cgroup hierarchy root: v1 controllers under /sys/fs/cgroup, or the
/// unified root itself.
fn cgroup_controllers() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            // Skip the symlinks (cpu -> cpu,cpuacct) so each hierarchy counts once.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
            }
        }
    }
    out
}

fn k8s_cgroup_roots() -> Vec<PathBuf> {
    cgroup_controllers()
        .into_iter()
        .map(|c| c.join("k8s.io"))
        .collect()
}

/// `dir` (if it exists) and every directory below it.
fn collect_dirs(dir: &Path, out: &mut HashSet<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.insert(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

fn rmdir_tree(dir: &Path) -> Vec<String> {
    let mut all = HashSet::new();
    collect_dirs(dir, &mut all);
    let mut all: Vec<_> = all.into_iter().collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut problems = Vec::new();
    for d in all {
        // A few retries: the kernel frees a cgroup shortly after its last task.
        let mut ok = false;
        for _ in 0..50 {
            if fs::remove_dir(&d).is_ok() || !d.exists() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !ok {
            problems.push(format!("cgroup {} not removed", d.display()));
        }
    }
    problems
}

/// Mount points at or below `root`, from /proc/self/mountinfo.
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(root))
        .collect()
}

fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything below `root`, deepest first, until none remain.
fn unmount_under(root: &Path) -> Vec<String> {
    for _ in 0..10 {
        let mut mounts = mounts_under(root);
        if mounts.is_empty() {
            return Vec::new();
        }
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        mounts.dedup();
        for m in mounts {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: a valid NUL-terminated path.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
    mounts_under(root)
        .into_iter()
        .map(|m| format!("mount {} not unmounted", m.display()))
        .collect()
}

/// Deletes iptables rules (all tables) mentioning any of `needles`.
fn remove_iptables_rules(needles: &[&str]) -> Vec<String> {
    let Ok(out) = Command::new("iptables-save").stderr(Stdio::null()).output() else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut table = String::new();
    let mut problems = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
            continue;
        }
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        if !needles.iter().any(|n| rule.contains(n)) {
            continue;
        }
        // iptables-save quotes like a shell would; let sh split it.
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("iptables -w -t {table} -D {rule}"))
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            problems.push(format!("iptables -t {table} rule not removed: {rule}"));
        }
    }
    problems
}
