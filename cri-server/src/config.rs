//! crispd's configuration: embedded defaults, optionally a TOML file, then command-line flags.
//! Unknown keys are errors (a typo must not silently fall back to a default).

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent data: metadata, content store, snapshots, import dir.
    pub root: PathBuf,
    /// Runtime state that dies with a reboot: pod namespaces, bundles, shim sockets.
    pub state: PathBuf,
    /// The CRI socket.
    pub socket: PathBuf,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    pub log_level: String,
    /// `text` (human-readable lines) or `json` (one JSON object per line, for log shippers).
    pub log_format: LogFormat,
    /// kubelet's `cgroupDriver`: `cgroupfs` or `systemd` (a scope per container, in the pod's
    /// slice); kubelet must be configured with the same (it asks through RuntimeConfig).
    pub cgroup_driver: crate::cgroups::driver::CgroupDriver,
    /// Where pod cgroups go when the pod config names no `cgroup_parent`: a cgroupfs path, or a
    /// slice with the systemd driver. Empty: the driver's default (`/crisp`, `crisp.slice`).
    pub cgroup_parent: String,
    pub images: ImagesConfig,
    pub registry: RegistryConfig,
    pub shim: ShimConfig,
    pub cni: CniSection,
    pub streaming: StreamingSection,
    pub metrics: MetricsSection,
    pub cdi: CdiSection,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CdiSection {
    /// Where CDI spec files are read from; a later directory wins over an earlier one.
    pub spec_dirs: Vec<PathBuf>,
}

impl Default for CdiSection {
    fn default() -> Self {
        CdiSection {
            spec_dirs: vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Where Prometheus metrics are served (`GET /metrics`); none when unset (opt-in).
    pub addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingSection {
    /// Where the exec/attach/port-forward server listens (port 0 = any free port). Must be a
    /// concrete address: it goes into the URLs handed to kubelet and crictl.
    pub addr: std::net::SocketAddr,
}

impl Default for StreamingSection {
    fn default() -> Self {
        StreamingSection {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CniSection {
    /// The first network config (lexical order) here is used; without one, crispd uses its
    /// embedded default network for `crisp-bridge`.
    pub conf_dir: PathBuf,
    /// Where plugins are looked up (crispd's own directory, for `crisp-bridge`, is added last).
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for CniSection {
    fn default() -> Self {
        CniSection {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// OCI layouts and image archives placed here are imported (default `<root>/import`).
    pub import_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// A containerd-style `certs.d` directory: `<config_path>/<host>/hosts.toml` (and
    /// `_default/hosts.toml`) name mirrors, plain-HTTP endpoints, CAs. Empty: none.
    pub config_path: Option<PathBuf>,
    /// Credentials per registry host (`[registry.auths."host[:port]"]`), used when a pull
    /// request carries none (kubelet sends pull secrets with the request; crictl may not).
    pub auths: std::collections::BTreeMap<String, RegistryAuthConfig>,
}

#[derive(Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryAuthConfig {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`, as in a docker config.json.
    pub auth: String,
    /// A bearer token used as is.
    pub registry_token: String,
    /// An OAuth2 refresh token, exchanged at the registry's token server for each pull
    /// (containerd's `identitytoken`).
    pub identity_token: String,
}

/// Secrets stay out of logs and `{:?}` dumps of the config.
impl std::fmt::Debug for RegistryAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuthConfig")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ShimConfig {
    /// The `crisp-shim` binary (default: next to crispd, then `$PATH`).
    pub path: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/crisp"),
            state: PathBuf::from("/run/crisp"),
            socket: PathBuf::from("/run/crisp/crisp.sock"),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            cgroup_driver: Default::default(),
            cgroup_parent: String::new(),
            images: ImagesConfig::default(),
            registry: RegistryConfig::default(),
            shim: ShimConfig::default(),
            cni: CniSection::default(),
            streaming: StreamingSection::default(),
            metrics: MetricsSection::default(),
            cdi: CdiSection::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The documented default config, every key with its default and what it does.
pub const DEFAULT_TOML: &str = include_str!("default_config.toml");

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error names the offending key (toml's message does).
    pub fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        for (key, p) in [
            ("root", &self.root),
            ("state", &self.state),
            ("socket", &self.socket),
        ] {
            if !p.is_absolute() {
                return Err(format!(
                    "`{key}` must be an absolute path, got {}",
                    p.display()
                ));
            }
        }
        self.cgroup_driver
            .check_parent(self.pods_cgroup_parent())
            .map_err(|e| format!("`cgroup_parent`: {e}"))?;
        Ok(())
    }

    /// The parent of pods whose config names none.
    pub fn pods_cgroup_parent(&self) -> &str {
        if self.cgroup_parent.is_empty() {
            self.cgroup_driver.default_parent()
        } else {
            &self.cgroup_parent
        }
    }

    pub fn import_dir(&self) -> PathBuf {
        self.images
            .import_dir
            .clone()
            .unwrap_or_else(|| self.root.join("import"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn documented_defaults_are_the_defaults() {
        assert_eq!(Config::parse(DEFAULT_TOML).unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("roott = \"/x\"").unwrap_err();
        assert!(e.contains("roott"), "{e}");
        let e = Config::parse("[images]\nimport_dri = \"/x\"").unwrap_err();
        assert!(e.contains("import_dri"), "{e}");
    }

    #[test]
    fn registry_auths() {
        let c = Config::parse(
            "[registry]\nconfig_path = \"/etc/crisp/certs.d\"\n\
             [registry.auths.\"reg.example.com:5000\"]\nusername = \"u\"\npassword = \"p\"\n",
        )
        .unwrap();
        assert_eq!(c.registry.auths["reg.example.com:5000"].username, "u");
        assert!(!format!("{c:?}").contains("\"p\""));
        let e = Config::parse("[registry.auths.x]\nuser = \"u\"").unwrap_err();
        assert!(e.contains("user"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Config::parse("root = 3").unwrap_err();
        assert!(e.contains("root"), "{e}");
        let e = Config::parse("root = \"relative\"").unwrap_err();
        assert!(e.contains("root"), "{e}");
    }
}
