//! A private Docker distribution registry (Debian's `docker-registry`) on 127.0.0.1 for pull
//! tests, pushed to with `skopeo`. Its storage lives in a temp dir; `Drop` kills the registry
//! by PID and removes the dir.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::token_server::{TokenServer, TOKEN_ISSUER, TOKEN_SERVICE};

const READY_TIMEOUT: Duration = Duration::from_secs(15);

pub struct TestRegistry {
    child: Option<Child>,
    config: PathBuf,
    dir: PathBuf,
    port: u16,
    /// `user:password` when started with htpasswd or token auth (for pushes).
    creds: Option<String>,
    token: Option<TokenServer>,
    /// Clients need a certificate; pushes use `skopeo-certs/` (`client.cert`, `client.key`).
    mtls: bool,
    /// Serves another registry's storage (not ours to remove) under this URL path prefix.
    view_of: Option<(PathBuf, String)>,
}

/// How a [`TestRegistry`] authenticates.
enum Auth<'a> {
    None,
    Htpasswd(&'a str, &'a str),
    /// Docker token auth through a [`TokenServer`].
    Token {
        refresh_token: &'a str,
        refuse_post: bool,
    },
    /// TLS client certificates from the registry's CA (mutual TLS).
    ClientCert,
}

/// The user the harness pushes as to a token-auth registry.
const TOKEN_PUSH_CREDS: &str = "pusher:push-secret";

impl TestRegistry {
    /// An open registry.
    pub fn start() -> anyhow::Result<TestRegistry> {
        Self::launch(Auth::None, false)
    }

    /// A registry that wants HTTP basic auth (htpasswd, bcrypt) as `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> anyhow::Result<TestRegistry> {
        Self::launch(Auth::Htpasswd(user, password), false)
    }

    /// A registry with Docker token auth: pulls need a bearer token from a [`TokenServer`] on
    /// 127.0.0.1 ([`token_server`](Self::token_server)), which grants one for an OAuth2
    /// refresh-token grant with `refresh_token` (or, when `refuse_post`, only for a token GET
    /// with it as the basic-auth password).
    pub fn start_with_token_auth(
        refresh_token: &str,
        refuse_post: bool,
    ) -> anyhow::Result<TestRegistry> {
        Self::launch(
            Auth::Token {
                refresh_token,
                refuse_post,
            },
            false,
        )
    }

    /// An open registry serving HTTPS with a certificate for 127.0.0.1 from a private CA
    /// ([`ca_path`](Self::ca_path)).
    pub fn start_tls() -> anyhow::Result<TestRegistry> {
        Self::launch(Auth::None, true)
    }

    /// Like [`start_tls`](Self::start_tls), and clients must present a certificate from the
    /// same CA (mutual TLS): [`client_cert_path`](Self::client_cert_path) and its key.
    pub fn start_mtls() -> anyhow::Result<TestRegistry> {
        Self::launch(Auth::ClientCert, true)
    }

    /// The client certificate (PEM) of a registry started with [`start_mtls`](Self::start_mtls);
    /// its key is [`client_key_path`](Self::client_key_path).
    pub fn client_cert_path(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    pub fn client_key_path(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// The token server of a registry started with
    /// [`start_with_token_auth`](Self::start_with_token_auth).
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// The PEM CA that signed a TLS registry's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A second registry process serving this registry's storage under the URL path prefix
    /// `prefix` (distribution's `http.prefix`: the API is at `<prefix>/v2/`), for endpoints
    /// whose API does not live at `/v2`. Push to `self`, pull from the view.
    pub fn prefixed_view(&self, prefix: &str) -> anyhow::Result<TestRegistry> {
        Self::launch_view(
            Auth::None,
            false,
            Some((self.storage(), prefix.to_string())),
        )
    }

    fn launch(auth: Auth, tls: bool) -> anyhow::Result<TestRegistry> {
        Self::launch_view(auth, tls, None)
    }

    fn launch_view(
        auth: Auth,
        tls: bool,
        view_of: Option<(PathBuf, String)>,
    ) -> anyhow::Result<TestRegistry> {
        let dir = tempfile::Builder::new()
            .prefix("crisp-registry-")
            .tempdir()
            .context("creating the registry's temp dir")?
            .keep();
        // From here on, Drop removes the dir.
        let mut reg = TestRegistry {
            child: None,
            config: dir.join("config.yml"),
            dir,
            port: 0,
            creds: None,
            token: None,
            mtls: false,
            view_of: view_of.clone(),
        };
        let mut auth_yaml = String::new();
        if let Auth::Token {
            refresh_token,
            refuse_post,
        } = auth
        {
            let server =
                TokenServer::start(&reg.dir, refresh_token, TOKEN_PUSH_CREDS, refuse_post)?;
            auth_yaml = format!(
                "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    \
                 issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                server.realm(),
                reg.dir.join("token.pem").display()
            );
            reg.token = Some(server);
            reg.creds = Some(TOKEN_PUSH_CREDS.to_string());
        }
        if let Auth::Htpasswd(user, password) = auth {
            reg.creds = Some(format!("{user}:{password}"));
            let htpasswd = reg.dir.join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .context("running htpasswd (apt-get install apache2-utils)")?;
            if !out.status.success() {
                bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            fs::write(&htpasswd, &out.stdout)?;
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: crisp-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let mut tls_yaml = String::new();
        if tls {
            reg.make_certs()?;
            tls_yaml = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                reg.dir.join("server.pem").display(),
                reg.dir.join("server.key").display()
            );
        }
        if let Auth::ClientCert = auth {
            reg.make_client_cert()?;
            tls_yaml.push_str(&format!(
                "    clientcas:\n      - {}\n",
                reg.ca_path().display()
            ));
            reg.mtls = true;
        }
        if let Some((_, prefix)) = &reg.view_of {
            tls_yaml.push_str(&format!("  prefix: {prefix}\n"));
        }
        // A port that was free a moment ago; a lost race shows as the registry exiting, and
        // we try another.
        for _ in 0..5 {
            reg.port = free_port()?;
            fs::write(
                &reg.config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: 127.0.0.1:{}\n{tls_yaml}{auth_yaml}",
                    reg.storage().display(),
                    reg.port
                ),
            )?;
            reg.spawn()?;
            if reg.wait_ready()? {
                return Ok(reg);
            }
        }
        bail!("docker-registry did not start; its log:\n{}", reg.log())
    }

    /// A throwaway CA and a server certificate for 127.0.0.1 signed by it (EC P-256: fast).
    fn make_certs(&self) -> anyhow::Result<()> {
        let d = &self.dir;
        fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n")?;
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=crisp-test-ca",
            ],
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "1",
                "-extfile",
                "san.ext",
            ],
        ];
        openssl(d, &steps)?;
        Ok(())
    }

    /// A client certificate signed by the CA of [`make_certs`](Self::make_certs), plus the same
    /// pair in skopeo's cert-dir layout for pushes.
    fn make_client_cert(&self) -> anyhow::Result<()> {
        let d = &self.dir;
        let steps: [&[&str]; 2] = [
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "client.key",
                "-out",
                "client.csr",
                "-subj",
                "/CN=crisp-test-client",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "client.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "client.pem",
                "-days",
                "1",
                "-extfile",
                "client.ext",
            ],
        ];
        // Extensions make it an X.509 v3 certificate; rustls refuses v1 ones.
        fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
        openssl(d, &steps)?;
        let skopeo = d.join("skopeo-certs");
        fs::create_dir_all(&skopeo)?;
        fs::copy(d.join("client.pem"), skopeo.join("client.cert"))?;
        fs::copy(d.join("client.key"), skopeo.join("client.key"))?;
        Ok(())
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning docker-registry (apt-get install docker-registry)")?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the registry again (after [`kill`](Self::kill)) on the same port and storage.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()?;
        if !self.wait_ready()? {
            bail!("docker-registry did not restart:\n{}", self.log());
        }
        Ok(())
    }

    /// `Ok(false)` if the registry exited (port taken); waits for it to accept connections.
    fn wait_ready(&mut self) -> anyhow::Result<bool> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait()?.is_some() {
                    self.child = None;
                    return Ok(false);
                }
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                bail!(
                    "docker-registry not ready within {READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn storage(&self) -> PathBuf {
        match &self.view_of {
            Some((storage, _)) => storage.clone(),
            None => self.dir.join("storage"),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The file the registry serves blob `digest` (`sha256:<hex>`) from.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2.min(hex.len())])
            .join(hex)
            .join("data")
    }

    /// `skopeo copy` of `src` (e.g. `oci:/path:tag`) to `<this registry>/<repo_tag>`, with
    /// extra skopeo arguments (e.g. `--all`, `--dest-compress-format zstd`).
    pub fn push(&self, src: &str, repo_tag: &str, extra: &[&str]) -> anyhow::Result<()> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = &self.creds {
            cmd.arg("--dest-creds").arg(c);
        }
        if self.mtls {
            cmd.arg("--dest-cert-dir")
                .arg(self.dir.join("skopeo-certs"));
        }
        cmd.args(extra)
            .arg(src)
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        let out = cmd.output().context("running skopeo")?;
        if !out.status.success() {
            bail!(
                "skopeo copy {src} {repo_tag} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The manifest (or index) bytes the registry serves for `repo_tag`.
    pub fn raw_manifest(&self, repo_tag: &str) -> anyhow::Result<Vec<u8>> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some(c) = &self.creds {
            cmd.arg("--creds").arg(c);
        }
        let out = cmd
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .output()
            .context("running skopeo inspect")?;
        if !out.status.success() {
            bail!(
                "skopeo inspect {repo_tag} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out.stdout)
    }

    /// Stops the registry (SIGSTOP): connections stay open and requests hang, as with a
    /// stalled server, until [`resume`](Self::resume).
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            crate::procs::signal(child.id() as i32, nix::sys::signal::Signal::SIGSTOP);
        }
    }

    /// Lets a [`pause`](Self::pause)d registry go on (SIGCONT).
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            crate::procs::signal(child.id() as i32, nix::sys::signal::Signal::SIGCONT);
        }
    }

    /// Kills the registry (e.g. to simulate an outage); `Drop` still cleans up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== registry log ({}) ====\n{}\n==== end of registry log ====",
                self.host(),
                self.log()
            );
        }
        self.kill();
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("crisp-tests: cannot remove {}: {e}", self.dir.display());
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A fresh temp dir for an OCI layout to push from.
pub fn temp_layout() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("crisp-layout-").tempdir()?)
}

/// Nothing half-done left in a crispd root's content store and snapshotter (after a pull,
/// failed or not).
pub fn assert_no_partial_pull(root: &Path) -> anyhow::Result<()> {
    for dir in ["content/ingest", "snapshots/tmp"] {
        let p = root.join(dir);
        let left: Vec<_> = fs::read_dir(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if !left.is_empty() {
            bail!("{} is not empty: {left:?}", p.display());
        }
    }
    Ok(())
}

/// `registry_test!(name, body)`: a root-only test `name` that runs
/// `body(&Crispd, &TestRegistry) -> anyhow::Result<()>` against a fresh crispd and an open
/// [`TestRegistry`].
#[macro_export]
macro_rules! registry_test {
    ($name:ident, $body:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            if !$crate::require_root() {
                return;
            }
            let registry = $crate::TestRegistry::start().expect("starting the registry");
            let crispd = $crate::Crispd::start().await.expect("starting crispd");
            crispd.expect_ok($body(&crispd, &registry).await);
        }
    };
}

/// Overwrites a file with the same number of bytes, each flipped, keeping the original at
/// `<file>.orig` for [`restore`].
pub fn corrupt(path: &Path) -> anyhow::Result<()> {
    let orig = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    fs::write(path.with_extension("orig"), &orig)?;
    let flipped: Vec<u8> = orig.iter().map(|b| !b).collect();
    fs::write(path, flipped).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Undoes [`corrupt`].
pub fn restore(path: &Path) -> anyhow::Result<()> {
    fs::rename(path.with_extension("orig"), path)
        .with_context(|| format!("restoring {}", path.display()))
}

/// Runs `openssl` once per argument list in `dir`; fails with its stderr.
pub(crate) fn openssl(dir: &Path, steps: &[&[&str]]) -> anyhow::Result<()> {
    for args in steps {
        let out = Command::new("openssl")
            .args(*args)
            .current_dir(dir)
            .output()
            .context("running openssl")?;
        if !out.status.success() {
            bail!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}
