//! Registry hosts in containerd's `hosts.toml` directory format, so a node's containerd registry
//! config carries over unchanged: `<config_path>/<host>/hosts.toml`, else
//! `<config_path>/_default/hosts.toml`, with
//!
//! ```toml
//! server = "https://registry-1.docker.io"     # optional; default https://<host>
//! [host."http://10.0.0.5:5000"]              # mirrors, tried in file order
//!   capabilities = ["pull", "resolve"]
//!   skip_verify = false
//!   ca = "/etc/crisp/certs.d/docker.io/ca.crt"  # or a list; relative to the hosts.toml dir
//! ```
//!
//! Not supported (logged and skipped): client certificates, extra headers, and endpoints with
//! a path other than `/v2` or `override_path` (the registry client always talks to `/v2/`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// One place to fetch from, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// `host[:port]`.
    pub host: String,
    /// May resolve a tag to a digest.
    pub resolve: bool,
    /// May serve manifests and blobs by digest.
    pub pull: bool,
    pub skip_verify: bool,
    /// Extra PEM CA files trusted besides the system store.
    pub ca: Vec<PathBuf>,
    /// A mirror serves another registry's repositories (requests carry `?ns=<registry>`).
    pub mirror: bool,
}

impl Endpoint {
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", self.host)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HostsFile {
    server: Option<String>,
    capabilities: Option<Vec<String>>,
    skip_verify: Option<bool>,
    ca: Option<OneOrMany>,
    client: Option<toml::Value>,
    header: Option<toml::Value>,
    /// `[host."…"]` tables in file order (toml's map keeps insertion order only with a feature
    /// we do not enable, so the order is recovered from the text; see [`host_order`]).
    host: std::collections::BTreeMap<String, HostEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HostEntry {
    capabilities: Option<Vec<String>>,
    skip_verify: Option<bool>,
    ca: Option<OneOrMany>,
    client: Option<toml::Value>,
    header: Option<toml::Value>,
    override_path: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn paths(&self, base: &Path) -> Vec<PathBuf> {
        let v = match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        };
        v.into_iter().map(|p| base.join(p)).collect()
    }
}

/// The registry host config directory (`[registry] config_path`).
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    dir: Option<PathBuf>,
}

impl Hosts {
    pub fn new(dir: Option<PathBuf>) -> Hosts {
        Hosts {
            dir: dir.filter(|d| !d.as_os_str().is_empty()),
        }
    }

    /// The endpoints for `registry` (a reference's domain, `host[:port]`), in the order to try
    /// them. Read at every pull so edits apply without a restart, as in containerd.
    pub fn endpoints(&self, registry: &str) -> Result<Vec<Endpoint>> {
        if let Some(dir) = &self.dir {
            for sub in [registry, "_default"] {
                let file = dir.join(sub).join("hosts.toml");
                match std::fs::read_to_string(&file) {
                    Ok(text) => return parse(registry, &text, &file),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::FailedPrecondition(format!(
                            "reading registry host config {}: {e}",
                            file.display()
                        )))
                    }
                }
            }
        }
        Ok(default_endpoints(registry))
    }
}

/// Where `registry` is served when no hosts.toml says otherwise.
fn default_server(registry: &str) -> String {
    if registry == "docker.io" {
        "registry-1.docker.io".into()
    } else {
        registry.into()
    }
}

fn is_loopback(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn server_endpoints(host: String) -> Vec<Endpoint> {
    let https = Endpoint {
        scheme: Scheme::Https,
        host,
        resolve: true,
        pull: true,
        skip_verify: false,
        ca: Vec::new(),
        mirror: false,
    };
    // Like containerd: a registry on this machine is usually a test or cache registry without
    // TLS; try HTTPS first, then plain HTTP (nothing leaves the host either way).
    if is_loopback(&https.host) {
        let http = Endpoint {
            scheme: Scheme::Http,
            ..https.clone()
        };
        vec![https, http]
    } else {
        vec![https]
    }
}

fn default_endpoints(registry: &str) -> Vec<Endpoint> {
    server_endpoints(default_server(registry))
}

/// Splits `scheme://host[:port][/v2]`; a bare host means HTTPS, as in containerd.
fn parse_url(url: &str, file: &Path) -> Result<(Scheme, String)> {
    let bad = |why: &str| {
        Error::FailedPrecondition(format!(
            "registry host config {}: endpoint {url:?}: {why}",
            file.display()
        ))
    };
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", r)) => (Scheme::Http, r),
        Some(("https", r)) => (Scheme::Https, r),
        Some((s, _)) => return Err(bad(&format!("unsupported scheme {s:?}"))),
        None => (Scheme::Https, url),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if !matches!(path.trim_end_matches('/'), "" | "/v2") {
        return Err(bad("a path other than /v2 is not supported"));
    }
    Ok((scheme, host.to_string()))
}

fn caps(list: &Option<Vec<String>>) -> (bool, bool) {
    match list {
        None => (true, true),
        Some(l) => (
            l.iter().any(|c| c == "resolve"),
            l.iter().any(|c| c == "pull"),
        ),
    }
}

fn warn_unsupported(
    file: &Path,
    what: &str,
    client: &Option<toml::Value>,
    header: &Option<toml::Value>,
) {
    if client.is_some() {
        tracing::warn!(file = %file.display(), endpoint = what, "client certificates in hosts.toml are not supported; ignored");
    }
    if header.is_some() {
        tracing::warn!(file = %file.display(), endpoint = what, "extra headers in hosts.toml are not supported; ignored");
    }
}

/// The `[host."…"]` keys in the order they appear in the file (mirror order matters).
fn host_order(text: &str, keys: impl Iterator<Item = String>) -> Vec<String> {
    let mut keyed: Vec<(usize, String)> = keys
        .map(|k| {
            let pos = [format!("host.\"{k}\""), format!("host.'{k}'")]
                .iter()
                .filter_map(|p| text.find(p.as_str()))
                .min()
                .unwrap_or(usize::MAX);
            (pos, k)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, k)| k).collect()
}

fn parse(registry: &str, text: &str, file: &Path) -> Result<Vec<Endpoint>> {
    let cfg: HostsFile = toml::from_str(text).map_err(|e| {
        Error::FailedPrecondition(format!(
            "invalid registry host config {}: {e}",
            file.display()
        ))
    })?;
    let base = file.parent().unwrap_or(Path::new("/"));
    let mut out = Vec::new();
    for key in host_order(text, cfg.host.keys().cloned()) {
        let Some(h) = cfg.host.get(&key) else {
            continue;
        };
        warn_unsupported(file, &key, &h.client, &h.header);
        if h.override_path == Some(true) {
            tracing::warn!(file = %file.display(), endpoint = %key, "override_path is not supported; endpoint skipped");
            continue;
        }
        let (scheme, host) = match parse_url(&key, file) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "registry endpoint skipped");
                continue;
            }
        };
        let (resolve, pull) = caps(&h.capabilities);
        out.push(Endpoint {
            mirror: host != default_server(registry),
            scheme,
            host,
            resolve,
            pull,
            skip_verify: h.skip_verify.unwrap_or(false),
            ca: h.ca.as_ref().map(|c| c.paths(base)).unwrap_or_default(),
        });
    }
    warn_unsupported(file, "server", &cfg.client, &cfg.header);
    let (resolve, pull) = caps(&cfg.capabilities);
    let mut servers = match &cfg.server {
        Some(s) => {
            let (scheme, host) = parse_url(s, file)?;
            // The server is the registry itself, wherever it lives: no `?ns=`.
            vec![Endpoint {
                mirror: false,
                scheme,
                host,
                resolve: true,
                pull: true,
                skip_verify: false,
                ca: Vec::new(),
            }]
        }
        None => default_endpoints(registry),
    };
    for s in &mut servers {
        s.resolve = resolve;
        s.pull = pull;
        s.skip_verify = cfg.skip_verify.unwrap_or(false);
        s.ca = cfg.ca.as_ref().map(|c| c.paths(base)).unwrap_or_default();
    }
    out.extend(servers);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(registry: &str, text: &str) -> Vec<Endpoint> {
        parse(registry, text, Path::new("/etc/crisp/certs.d/x/hosts.toml")).unwrap()
    }

    #[test]
    fn defaults() {
        let e = Hosts::new(None).endpoints("docker.io").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].url(), "https://registry-1.docker.io");
        let e = Hosts::new(None).endpoints("127.0.0.1:5000").unwrap();
        let urls: Vec<String> = e.iter().map(Endpoint::url).collect();
        assert_eq!(urls, ["https://127.0.0.1:5000", "http://127.0.0.1:5000"]);
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com"));
    }

    #[test]
    fn mirrors_in_file_order_then_server() {
        let e = parse_str(
            "docker.io",
            r#"
server = "https://registry-1.docker.io"

[host."http://zeta.local:5000"]
  capabilities = ["pull", "resolve"]

[host."https://alpha.local"]
  capabilities = ["pull"]
  skip_verify = true
  ca = "ca.crt"
"#,
        );
        let urls: Vec<String> = e.iter().map(Endpoint::url).collect();
        assert_eq!(
            urls,
            [
                "http://zeta.local:5000",
                "https://alpha.local",
                "https://registry-1.docker.io"
            ]
        );
        assert!(e[0].mirror && e[0].resolve && e[0].pull);
        assert!(!e[1].resolve && e[1].pull && e[1].skip_verify);
        assert_eq!(e[1].ca, [PathBuf::from("/etc/crisp/certs.d/x/ca.crt")]);
        assert!(!e[2].mirror);
    }

    #[test]
    fn bad_server_is_an_error_and_bad_mirror_is_skipped() {
        assert!(parse("x.io", "server = \"ftp://x\"", Path::new("/h")).is_err());
        let e = parse_str("x.io", "[host.\"https://m.io/some/prefix\"]\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].url(), "https://x.io");
    }
}
