use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crisp_client::{connect, CriClient};
use nix::sys::signal::Signal;

use crate::bins::{bin_path, find_bin};
use crate::image::busybox_layout;
use crate::{cgroups, cleanup, procs};

/// Where the tests' crispd sends pulls of Docker Hub names (and, with
/// [`Crispd::blackhole_other_registries`], of any registry without a host config): a loopback
/// port nothing listens on, so a pull fails at once instead of leaving the machine. Every test
/// image is in the import dir or on a registry the test starts on 127.0.0.1.
pub const BLACKHOLE_REGISTRY: &str = "http://127.0.0.1:9";

/// How long crispd may take from spawn to answering `Version`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// `CRISP_TEST_SLOWDOWN` (default 1), by which crispd's start and stop bounds grow where the
/// tests run under software emulation (scripts/test-vm.sh sets it).
fn slowdown() -> u32 {
    std::env::var("CRISP_TEST_SLOWDOWN")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1)
}

fn ready_timeout() -> Duration {
    READY_TIMEOUT * slowdown()
}
/// How long `stop()` waits after SIGTERM before giving up.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Teardown is less patient: the test is over either way.
const TEARDOWN_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(20);
/// crispd's own debug output, without the HTTP/2 frame dumps of its gRPC
/// stack that would bury it.
const LOG_FILTER: &str = "debug,h2=info,hyper=info,hyper_util=info,tower=info";

/// One crispd instance private to a test: its own root, state dir, socket,
/// cgroup parent and log, all under one temp dir that `Drop` removes after
/// killing, unmounting and deleting everything the instance made.
pub struct Crispd {
    id: String,
    /// Canonical, so it compares equal to paths in mountinfo and cmdlines.
    dir: PathBuf,
    child: Option<Child>,
    network: Option<crate::network::TestNetwork>,
    /// `--log-level` for crispd; `None` leaves the level to the config file (and SIGHUP).
    log_level: Option<String>,
    /// The root dir is a tmpfs the harness mounted (see `start_with_small_root`).
    root_tmpfs: bool,
    /// Where crispd, crisp-shim and crisp-bridge come from when not from this build (another
    /// release's, for the upgrade test): crispd finds the other two next to itself.
    bin_dir: Option<PathBuf>,
    driver: Driver,
}

/// crispd's `cgroup_driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Cgroupfs,
    Systemd,
}

impl Crispd {
    /// Prepares a fresh instance (busybox in its import dir) and starts crispd.
    pub async fn start() -> anyhow::Result<Crispd> {
        Self::start_inner(
            crate::network::Plugins::CrispBridge,
            |_| String::new(),
            None,
            None,
            Driver::Cgroupfs,
        )
        .await
    }

    /// [`Crispd::start`] with the binaries in `bin_dir` (crispd, and the crisp-shim and
    /// crisp-bridge it finds next to itself) instead of this build's: another release's, see
    /// [`crate::upgrade_baseline`]. [`Crispd::restart_with_bin_dir`] switches later.
    pub async fn start_from(bin_dir: &Path) -> anyhow::Result<Crispd> {
        Self::start_inner(
            crate::network::Plugins::CrispBridge,
            |_| String::new(),
            None,
            Some(bin_dir.to_path_buf()),
            Driver::Cgroupfs,
        )
        .await
    }

    /// [`Crispd::start`] with `cgroup_driver = "systemd"`: pods without a parent go into
    /// slices below the instance's own, `crisp-test-<id>.slice`. Needs systemd as PID 1.
    pub async fn start_with_systemd_driver() -> anyhow::Result<Crispd> {
        Self::start_inner(
            crate::network::Plugins::CrispBridge,
            |_| String::new(),
            None,
            None,
            Driver::Systemd,
        )
        .await
    }

    /// [`Crispd::start`] with the pod network served by `plugins`.
    pub async fn start_with(plugins: crate::network::Plugins) -> anyhow::Result<Crispd> {
        Self::start_inner(plugins, |_| String::new(), None, None, Driver::Cgroupfs).await
    }

    /// Like [`start`](Self::start), with more TOML appended to crispd's config (after its
    /// `[registry]` table, so new tables only, e.g. `[registry.auths."host"]`). `extra` gets
    /// the instance's temp dir. Registry host configs go into [`Self::registry_hosts_dir`].
    pub async fn start_with_config(extra: impl FnOnce(&Path) -> String) -> anyhow::Result<Crispd> {
        Self::start_inner(
            crate::network::Plugins::CrispBridge,
            extra,
            None,
            None,
            Driver::Cgroupfs,
        )
        .await
    }

    /// [`Crispd::start`] with its root dir (content store, layers) on a tmpfs of `bytes`, for
    /// tests of a full disk. `Drop` unmounts it with everything else below the temp dir.
    pub async fn start_with_small_root(bytes: u64) -> anyhow::Result<Crispd> {
        Self::start_inner(
            crate::network::Plugins::CrispBridge,
            |_| String::new(),
            Some(bytes),
            None,
            Driver::Cgroupfs,
        )
        .await
    }

    async fn start_inner(
        plugins: crate::network::Plugins,
        extra: impl FnOnce(&Path) -> String,
        root_tmpfs: Option<u64>,
        bin_dir: Option<PathBuf>,
        driver: Driver,
    ) -> anyhow::Result<Crispd> {
        let layout = tokio::task::spawn_blocking(busybox_layout)
            .await
            .unwrap_or_else(|join_error| match join_error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(join_error) => panic!("building the busybox image: {join_error}"),
            });

        let id = random_id()?;
        // `/tmp/c<id>`, short on purpose: unix socket paths are limited to
        // 107 bytes, and crispd's shim sockets
        // (`state/containers/<64 hex>/shim.sock`) use up 92 of them below this
        // dir. The random id alone makes it unique.
        let dir = tempfile::Builder::new()
            .prefix(&format!("c{id}"))
            .rand_bytes(0)
            .tempdir()
            .context("creating the test's temp dir")?
            .keep();
        let dir = dir
            .canonicalize()
            .with_context(|| format!("canonicalizing {}", dir.display()))?;
        // From here on, Drop cleans up whatever happens.
        let mut crispd = Crispd {
            id,
            dir,
            child: None,
            network: None,
            log_level: Some(LOG_FILTER.to_string()),
            root_tmpfs: false,
            bin_dir,
            driver,
        };

        for dir in [crispd.root(), crispd.state(), crispd.log_dir()] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if let Some(bytes) = root_tmpfs {
            nix::mount::mount(
                Some("tmpfs"),
                &crispd.root(),
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={bytes}").as_str()),
            )
            .context("mounting a tmpfs on the root dir")?;
            crispd.root_tmpfs = true;
        }
        crispd.import_image(&layout, "busybox")?;
        let conf_dir = crispd.dir.join("net.d");
        crispd.network = Some(crate::network::TestNetwork::claim(
            &crispd.id,
            &conf_dir,
            &crispd.dir.join("ipam"),
            plugins,
        )?);
        crispd
            .write_registry_hosts("docker.io", &format!("server = \"{BLACKHOLE_REGISTRY}\"\n"))?;
        let config = format!(
            "{}cgroup_parent = \"{}\"\n[cni]\nconf_dir = \"{}\"\nbin_dirs = {:?}\n\
             [registry]\nconfig_path = \"{}\"\n{}",
            // Only when not the default: the upgrade test's older crispd has no such key.
            match driver {
                Driver::Cgroupfs => "",
                Driver::Systemd => "cgroup_driver = \"systemd\"\n",
            },
            crispd.cgroup_parent(),
            conf_dir.display(),
            plugins.bin_dirs(),
            crispd.registry_hosts_dir().display(),
            extra(&crispd.dir)
        );
        fs::write(crispd.config_path(), config).context("writing config.toml")?;

        crispd.spawn()?;
        crispd.wait_ready().await?;
        Ok(crispd)
    }

    pub(crate) fn root_on_tmpfs(&self) -> bool {
        self.root_tmpfs
    }

    /// The instance's `[registry] config_path` (containerd's `certs.d` layout). crispd reads
    /// it at every pull, so tests add host configs while it runs.
    pub fn registry_hosts_dir(&self) -> PathBuf {
        self.dir.join("certs.d")
    }

    /// Writes `<registry_hosts_dir>/<host>/hosts.toml`.
    pub fn write_registry_hosts(&self, host: &str, hosts_toml: &str) -> anyhow::Result<()> {
        let dir = self.registry_hosts_dir().join(host);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join("hosts.toml"), hosts_toml).context("writing hosts.toml")
    }

    /// Sends every registry without a host config of its own to [`BLACKHOLE_REGISTRY`], for
    /// tests that pull names of arbitrary registries: tests never reach beyond loopback.
    pub fn blackhole_other_registries(&self) -> anyhow::Result<()> {
        self.write_registry_hosts("_default", &format!("server = \"{BLACKHOLE_REGISTRY}\"\n"))
    }

    /// Starts crispd again on the same root, state, socket and config.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_none() {
                bail!("restart: crispd (pid {}) is still running", child.id());
            }
        }
        self.spawn()?;
        self.wait_ready().await
    }

    /// Starts a stopped crispd again with the binaries in `bin_dir`, `None` for this build's:
    /// the upgrade (or downgrade) of a node's crisp, on the same root, state, socket and config.
    pub async fn restart_with_bin_dir(&mut self, bin_dir: Option<&Path>) -> anyhow::Result<()> {
        self.bin_dir = bin_dir.map(Path::to_path_buf);
        self.restart().await
    }

    /// The crispd binary this instance runs (see [`Crispd::start_from`]).
    pub fn crispd_bin(&self) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join("crispd"),
            None => bin_path("crispd"),
        }
    }

    /// Starts a stopped crispd again with more in its config file: `top_level` keys go first,
    /// `tables` (e.g. `[metrics]` sections) last. With `log_level` `None` there is no
    /// `--log-level`, so the level is the file's (and SIGHUP can change it).
    pub async fn restart_with_config(
        &mut self,
        top_level: &str,
        tables: &str,
        log_level: Option<&str>,
    ) -> anyhow::Result<()> {
        let old = fs::read_to_string(self.config_path()).context("reading config.toml")?;
        fs::write(
            self.config_path(),
            format!("{top_level}\n{old}\n{tables}\n"),
        )
        .context("writing config.toml")?;
        self.log_level = log_level.map(str::to_string);
        self.restart().await
    }

    /// SIGKILLs crispd and reaps it, leaving shims and containers alone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already-exited is fine: we only want it gone.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs crispd and waits for it to exit; fails if it takes longer
    /// than 10 s (it is then killed).
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("stop: crispd is not running")?;
        procs::signal(child.id() as i32, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT * slowdown();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("crispd did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A new client connected to this instance's socket.
    pub async fn client(&self) -> anyhow::Result<CriClient> {
        Ok(connect(&self.socket()).await?)
    }

    /// `crispd images import FILE` on this instance's root and state (through its import dir
    /// while it runs), with this instance's crispd binary; its stdout.
    pub fn images_import(&self, file: &Path) -> anyhow::Result<String> {
        images_import_with(&self.crispd_bin(), &self.root(), &self.state(), file)
    }

    /// `crispd images …` on this instance's config, root and state (the subcommand is the
    /// caller's to add). crispd's socket is not given: the command finds it through the root.
    pub fn images_command(&self) -> Command {
        images_command_with(
            &self.crispd_bin(),
            &self.root(),
            &self.state(),
            Some(&self.config_path()),
        )
    }

    /// Waits until a layer's download is under way in this instance's content store: a
    /// download past 1 MiB, more than any config or manifest.
    pub async fn wait_for_layer_download(&self, timeout: Duration) -> anyhow::Result<()> {
        let ingest = self.root().join("content/ingest");
        crate::wait_until("a layer download", timeout, || {
            fs::read_dir(&ingest)
                .ok()?
                .flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.len() > 1 << 20))
                .then_some(())
        })
        .await
    }

    /// How many times crispd's log says it downloaded blob `digest`.
    pub fn downloads_of(&self, digest: &str) -> usize {
        self.crispd_log()
            .lines()
            .filter(|l| l.contains("downloaded") && l.contains(digest))
            .count()
    }

    /// A crispd command line for this instance's config, root and state but
    /// the given socket, for tests that start extra instances themselves.
    pub fn command(&self, socket: &Path) -> Command {
        let mut command = Command::new(self.crispd_bin());
        command
            .arg("--config")
            .arg(self.config_path())
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--socket")
            .arg(socket)
            // The log is read from a file, where colour codes are noise.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        if let Some(level) = &self.log_level {
            command.arg("--log-level").arg(level);
        }
        // crispd finds its shim next to itself; this only matters when the
        // binaries were overridden to live elsewhere. Another release's crispd keeps its own.
        if self.bin_dir.is_none() {
            if let Some(shim) = find_bin("crisp-shim") {
                command.env("CRISP_SHIM_BIN", shim);
            }
        }
        command
    }

    /// Panics with `result`'s error (and its causes), so that `Drop` sees a
    /// failing test and prints crispd's log. Test bodies return
    /// `anyhow::Result` and end with `crispd.expect_ok(body(&crispd).await)`.
    pub fn expect_ok(&self, result: anyhow::Result<()>) {
        if let Err(error) = result {
            panic!("test failed: {error:#}");
        }
    }

    /// The 8 hex digits that make this instance's names unique.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The temp dir holding everything below.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The pid in container `id`'s `shim.pid` (the shim writes it when it starts).
    pub fn shim_pid(&self, id: &str) -> anyhow::Result<i32> {
        let path = self.state().join("containers").join(id).join("shim.pid");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{}: {text:?}", path.display()))
    }

    /// Whether the content store holds blob `digest`.
    pub fn blob_stored(&self, digest: &str) -> bool {
        self.root()
            .join("content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
            .exists()
    }

    pub fn socket(&self) -> PathBuf {
        self.state().join("crisp.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// Where tests put pod log directories (kubelet's /var/log/pods).
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("pods")
    }

    /// This instance's private pod network.
    pub fn network(&self) -> &crate::network::TestNetwork {
        self.network.as_ref().expect("every instance has a network")
    }

    /// The cgroup parent from config.toml, e.g. `/crisp-test-0123abcd` (with the systemd
    /// driver the slice `crisp-test-0123abcd.slice`).
    pub fn cgroup_parent(&self) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("/crisp-test-{}", self.id),
            Driver::Systemd => format!("crisp-test-{}.slice", self.id),
        }
    }

    /// The cgroup parent's directory, relative to each hierarchy's root (a slice's is nested:
    /// `crisp.slice/crisp-test.slice/crisp-test-<id>.slice`).
    pub fn cgroup_name(&self) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("crisp-test-{}", self.id),
            Driver::Systemd => format!("crisp.slice/crisp-test.slice/crisp-test-{}.slice", self.id),
        }
    }

    /// The cgroup parent in the hierarchy that surely tracks container
    /// processes: `memory` on cgroup v1, the unified tree on v2.
    pub fn cgroup_dir(&self) -> PathBuf {
        cgroups::primary_parent_dir(&self.cgroup_name())
    }

    /// PIDs of every process in a cgroup below the cgroup parent.
    pub fn cgroup_pids(&self) -> Vec<i32> {
        cgroups::procs_recursive(&self.cgroup_dir())
    }

    /// PID of the running crispd, if any.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|child| child.id() as i32)
    }

    pub fn crispd_log_path(&self) -> PathBuf {
        self.dir.join("crispd.log")
    }

    /// Everything crispd wrote to stdout and stderr so far, across restarts.
    pub fn crispd_log(&self) -> String {
        fs::read(self.crispd_log_path())
            .map(|raw| String::from_utf8_lossy(&raw).into_owned())
            .unwrap_or_else(|e| format!("<cannot read crispd log: {e}>"))
    }

    fn import_image(&self, layout: &Path, name: &str) -> anyhow::Result<()> {
        let import = self.root().join("import");
        fs::create_dir_all(&import).with_context(|| format!("creating {}", import.display()))?;
        let output = Command::new("cp")
            .arg("-a")
            .arg(layout)
            .arg(import.join(name))
            .output()
            .context("running cp")?;
        if !output.status.success() {
            bail!(
                "cp -a {} failed: {}",
                layout.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.crispd_log_path())
            .context("opening crispd.log")?;
        // Marks restarts in the log so a failure's output is easy to follow.
        writeln!(log, "==== crisp-tests: starting crispd ====")?;
        let child = self
            .command(&self.socket())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.crispd_bin().display()))?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + ready_timeout();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "crispd exited ({status}) before answering Version; its log:\n{}",
                        self.crispd_log()
                    );
                }
            }
            if self.answers_version().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "crispd did not answer Version within {:?}; its log:\n{}",
                    ready_timeout(),
                    self.crispd_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn answers_version(&self) -> bool {
        // Bounded so a crispd that accepts but never answers cannot stall us.
        let attempt = async {
            let mut client = connect(&self.socket()).await.ok()?;
            client.version().await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), attempt).await,
            Ok(Some(_))
        )
    }

    /// SIGTERM, a short grace period, then SIGKILL.
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        procs::signal(child.id() as i32, Signal::SIGTERM);
        let deadline = Instant::now() + TEARDOWN_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Crispd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== crispd log ({}) ====\n{}\n==== end of crispd log ====",
                self.crispd_log_path().display(),
                self.crispd_log()
            );
        }
        self.terminate();
        // Shims first: they would otherwise restart or reap containers while
        // we kill them.
        cleanup::kill_processes_mentioning(&self.dir);
        cleanup::kill_cgroup_processes(&self.cgroup_name());
        if self.driver == Driver::Systemd {
            // systemd's slices are removed by systemd; it stops what is left in them too.
            let _ = Command::new("systemctl")
                .args(["stop", &self.cgroup_parent()])
                .status();
        }

        let mut problems = Vec::new();
        let stuck_mounts = cleanup::unmount_under(&self.dir);
        problems.extend(stuck_mounts.iter().map(|m| format!("mount {m}")));
        problems.extend(
            cleanup::remove_cgroups(&self.cgroup_name())
                .into_iter()
                .map(|dir| format!("cgroup {dir}")),
        );
        if stuck_mounts.is_empty() {
            problems.extend(cleanup::remove_tree(&self.dir));
        } else {
            problems.push(format!("{} (kept: still has mounts)", self.dir.display()));
        }
        if !problems.is_empty() {
            let mut report = String::new();
            for problem in &problems {
                let _ = write!(report, "\n  {problem}");
            }
            eprintln!(
                "crisp-tests: teardown of crispd {} left behind:{report}",
                self.id
            );
        }
    }
}

fn random_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `crispd [--config CONFIG] --root ROOT --state STATE images`, stdin closed, for the caller
/// to add the subcommand.
pub fn images_command(root: &Path, state: &Path, config: Option<&Path>) -> Command {
    images_command_with(&bin_path("crispd"), root, state, config)
}

fn images_command_with(crispd: &Path, root: &Path, state: &Path, config: Option<&Path>) -> Command {
    let mut command = Command::new(crispd);
    if let Some(c) = config {
        command.arg("--config").arg(c);
    }
    command
        .arg("--root")
        .arg(root)
        .arg("--state")
        .arg(state)
        .arg("images")
        .stdin(Stdio::null());
    command
}

/// `crispd --root ROOT --state STATE images import FILE`; its stdout, or an error with its
/// stderr.
pub fn images_import(root: &Path, state: &Path, file: &Path) -> anyhow::Result<String> {
    images_import_with(&bin_path("crispd"), root, state, file)
}

fn images_import_with(
    crispd: &Path,
    root: &Path,
    state: &Path,
    file: &Path,
) -> anyhow::Result<String> {
    let out = images_command_with(crispd, root, state, None)
        .arg("import")
        .arg(file)
        .output()
        .context("running crispd images import")?;
    if !out.status.success() {
        bail!(
            "crispd images import {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `crispd_test!(name, body)`: a root-only test `name` that runs
/// `body(&Crispd) -> anyhow::Result<()>` against a fresh crispd (a failure prints its log).
#[macro_export]
macro_rules! crispd_test {
    ($name:ident, $body:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            if !$crate::require_root() {
                return;
            }
            let crispd = $crate::Crispd::start().await.expect("starting crispd");
            crispd.expect_ok($body(&crispd).await);
        }
    };
}
