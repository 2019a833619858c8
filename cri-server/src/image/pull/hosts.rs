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
//!   client = [["client.crt", "client.key"]]     # mTLS; or "both.pem" (cert and key in one)
//!   [host."http://10.0.0.5:5000".header]
//!     x-custom = "value"                          # or a list of values
//! [host."https://cache.local/v2/dockerhub"]
//!   override_path = true                          # the API lives at this path, not at /v2
//! ```
//!
//! As in containerd, an endpoint path without `override_path` gets `/v2` appended unless it
//! ends with it; only the first client certificate pair is used (the TLS stack takes one).

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
    /// The API root when not `/v2` (a path prefix, or `override_path`).
    pub api_path: Option<String>,
    /// Client certificate and key (`None`: the key is in the certificate's file).
    pub client: Option<(PathBuf, Option<PathBuf>)>,
    /// Extra request headers (`[header]`), in file order per name.
    pub headers: Vec<(String, String)>,
}

impl Endpoint {
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", self.host)
    }

    /// The API root URL, e.g. `https://host/v2`.
    pub fn api_url(&self) -> String {
        format!(
            "{}{}",
            self.url(),
            self.api_path.as_deref().unwrap_or("/v2")
        )
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
    override_path: Option<bool>,
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
        api_path: None,
        client: None,
        headers: Vec::new(),
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

/// Splits `scheme://host[:port][/path]` into scheme, host and API path (`None` for `/v2`); a
/// bare host means HTTPS, as in containerd. With `override_path` the path is the API root;
/// otherwise `/v2` is appended unless the path ends with it.
fn parse_url(
    url: &str,
    override_path: bool,
    file: &Path,
) -> Result<(Scheme, String, Option<String>)> {
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
    if path.contains(['?', '#']) || path.split('/').any(|seg| seg == "..") {
        return Err(bad(
            "a path with a query, fragment or `..` is not supported",
        ));
    }
    let path = path.trim_end_matches('/');
    let api = if override_path || path.ends_with("/v2") {
        path.to_string()
    } else {
        format!("{path}/v2")
    };
    Ok((scheme, host.to_string(), (api != "/v2").then_some(api)))
}

fn client_pair(
    file: &Path,
    base: &Path,
    v: &Option<toml::Value>,
) -> Result<Option<(PathBuf, Option<PathBuf>)>> {
    let bad = || {
        Error::FailedPrecondition(format!(
            "registry host config {}: `client` must be a path, or a list of paths or of \
             [cert, key] pairs",
            file.display()
        ))
    };
    let one = |v: &toml::Value| -> Result<(PathBuf, Option<PathBuf>)> {
        match v {
            toml::Value::String(c) => Ok((base.join(c), None)),
            toml::Value::Array(p) => match &p[..] {
                [toml::Value::String(c)] => Ok((base.join(c), None)),
                [toml::Value::String(c), toml::Value::String(k)] => {
                    Ok((base.join(c), Some(base.join(k))))
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    };
    let pairs = match v {
        None => return Ok(None),
        // As in containerd, `["a", "b"]` is two certificates, each with its key inside.
        Some(toml::Value::Array(list)) => list.iter().map(one).collect::<Result<Vec<_>>>()?,
        Some(other) => vec![one(other)?],
    };
    if pairs.len() > 1 {
        tracing::warn!(file = %file.display(), "several client certificates in hosts.toml; using the first");
    }
    Ok(pairs.into_iter().next())
}

fn headers(file: &Path, v: &Option<toml::Value>) -> Result<Vec<(String, String)>> {
    let bad = |k: &str| {
        Error::FailedPrecondition(format!(
            "registry host config {}: header {k:?} must be a string or a list of strings",
            file.display()
        ))
    };
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let Some(table) = v.as_table() else {
        return Err(Error::FailedPrecondition(format!(
            "registry host config {}: `header` must be a table",
            file.display()
        )));
    };
    let mut out = Vec::new();
    for (k, v) in table {
        match v {
            toml::Value::String(s) => out.push((k.clone(), s.clone())),
            toml::Value::Array(list) => {
                for x in list {
                    out.push((k.clone(), x.as_str().ok_or_else(|| bad(k))?.to_string()));
                }
            }
            _ => return Err(bad(k)),
        }
    }
    Ok(out)
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
        let parsed = parse_url(&key, h.override_path == Some(true), file).and_then(|u| {
            Ok((
                u,
                client_pair(file, base, &h.client)?,
                headers(file, &h.header)?,
            ))
        });
        let ((scheme, host, api_path), client, headers) = match parsed {
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
            api_path,
            client,
            headers,
        });
    }
    let (resolve, pull) = caps(&cfg.capabilities);
    let mut servers = match &cfg.server {
        Some(s) => {
            let (scheme, host, api_path) = parse_url(s, cfg.override_path == Some(true), file)?;
            // The server is the registry itself, wherever it lives: no `?ns=`.
            vec![Endpoint {
                mirror: false,
                scheme,
                host,
                resolve: true,
                pull: true,
                skip_verify: false,
                ca: Vec::new(),
                api_path,
                client: None,
                headers: Vec::new(),
            }]
        }
        None => default_endpoints(registry),
    };
    let client = client_pair(file, base, &cfg.client)?;
    let hdrs = headers(file, &cfg.header)?;
    for s in &mut servers {
        s.resolve = resolve;
        s.pull = pull;
        s.skip_verify = cfg.skip_verify.unwrap_or(false);
        s.ca = cfg.ca.as_ref().map(|c| c.paths(base)).unwrap_or_default();
        s.client = client.clone();
        s.headers = hdrs.clone();
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
        let e = parse_str("x.io", "[host.\"https://m.io/a/../b\"]\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].url(), "https://x.io");
        let e = parse_str("x.io", "[host.\"https://m.io\"]\nclient = 5\n");
        assert_eq!(e.len(), 1, "a bad client setting skips the mirror");
    }

    #[test]
    fn paths_clients_and_headers() {
        let e = parse_str(
            "docker.io",
            r#"
[host."https://cache.local/v2/dockerhub"]
  override_path = true
  client = [["c.pem", "c.key"]]
  [host."https://cache.local/v2/dockerhub".header]
    x-one = "1"
    x-many = ["a", "b"]

[host."https://pfx.local/some/prefix/"]
  client = "both.pem"

[host."https://plain.local/v2"]
"#,
        );
        assert_eq!(e[0].api_url(), "https://cache.local/v2/dockerhub");
        assert_eq!(
            e[0].client,
            Some((
                PathBuf::from("/etc/crisp/certs.d/x/c.pem"),
                Some(PathBuf::from("/etc/crisp/certs.d/x/c.key"))
            ))
        );
        let mut h = e[0].headers.clone();
        h.sort();
        assert_eq!(
            h,
            [
                ("x-many".to_string(), "a".to_string()),
                ("x-many".to_string(), "b".to_string()),
                ("x-one".to_string(), "1".to_string())
            ]
        );
        assert_eq!(e[1].api_url(), "https://pfx.local/some/prefix/v2");
        assert_eq!(
            e[1].client,
            Some((PathBuf::from("/etc/crisp/certs.d/x/both.pem"), None))
        );
        assert_eq!(e[2].api_path, None);
        assert_eq!(e[2].api_url(), "https://plain.local/v2");
    }
}
