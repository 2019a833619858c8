//! One pull's conversation with a registry and its mirrors: a registry client per endpoint
//! (each with its own TLS settings and this pull's credentials), and every request tried on
//! the endpoints in order until one answers.
//!
//! Built on `oci-client` for the distribution API and its token dance, but only its raw
//! manifest fetch and blob *stream* are used: its `pull()` holds whole layers in memory.
//! Clients are kept between pulls per endpoint and credentials (`clients.rs`): `oci-client`
//! keeps the first credentials it saw for a registry, and two pulls may carry different ones.

use std::time::Duration;

use bytes::Bytes;
use crisp_snapshotter::manifest::{ACCEPTED_MANIFESTS, MAX_JSON};
use crisp_snapshotter::{ContentStore, Digest};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;

use super::auth::Credentials;
use super::clients::ClientCache;
use super::hosts::{Endpoint, Scheme};
use super::ingest::{ingest_stream, IngestError};
use super::progress::LayerProgress;
use super::token;
use crate::error::Error;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// No byte for this long on an open connection means the registry is gone.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("crisp/", env!("CARGO_PKG_VERSION"));

struct Remote {
    endpoint: Endpoint,
    client: oci_client::Client,
    auth: RegistryAuth,
}

pub struct Session {
    /// The reference's domain, e.g. `docker.io`.
    registry: String,
    /// The repository path within it, e.g. `library/busybox`.
    repository: String,
    remotes: Vec<Remote>,
    /// Endpoints that could not even be set up (e.g. an unreadable CA file, a refused identity
    /// token), reported if nothing else works.
    setup_errors: Vec<(String, Kind)>,
}

/// What an endpoint answered for a tag or digest.
pub struct Resolved {
    pub bytes: Bytes,
    pub digest: Digest,
    pub endpoint: String,
}

impl Session {
    /// Sets up a client per endpoint. An identity token is exchanged for an access token here,
    /// once per endpoint it goes to; an endpoint whose exchange fails is left out (the failure
    /// is reported if no other endpoint serves the pull).
    pub async fn new(
        registry: &str,
        repository: &str,
        endpoints: Vec<Endpoint>,
        creds: &Credentials,
        clients: &ClientCache,
    ) -> Session {
        let mut remotes = Vec::new();
        let mut setup_errors = Vec::new();
        for ep in endpoints {
            let identity = creds.identity_token_for(registry, &ep.host).is_some();
            let auth = match creds.identity_token_for(registry, &ep.host) {
                None => creds.for_endpoint(registry, &ep.host),
                Some(refresh) => match identity_auth(&ep, repository, refresh).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(endpoint = %ep, error = e.message(), "identity token exchange failed");
                        setup_errors.push((ep.url(), e));
                        continue;
                    }
                },
            };
            // An identity token is exchanged for a new access token at every pull: a client
            // kept under it would never be used again.
            let client = if identity {
                client_for(&ep)
            } else {
                clients.get(&ep, &auth, client_for)
            };
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    setup_errors.push((ep.url(), Kind::Other(e)));
                    continue;
                }
            };
            remotes.push(Remote {
                auth,
                endpoint: ep,
                client,
            });
        }
        Session {
            registry: registry.to_string(),
            repository: repository.to_string(),
            remotes,
            setup_errors,
        }
    }

    fn image(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    fn reference(
        &self,
        ep: &Endpoint,
        tag: Option<&str>,
        digest: Option<&Digest>,
    ) -> oci_client::Reference {
        // A mirror is asked for the upstream's repository (with `?ns=<registry>`), the server
        // under its own host name.
        let registry = if ep.mirror {
            self.registry.clone()
        } else {
            ep.host.clone()
        };
        let mut r = match (digest, tag) {
            (Some(d), _) => {
                oci_client::Reference::with_digest(registry, self.repository.clone(), d.to_string())
            }
            (None, t) => oci_client::Reference::with_tag(
                registry,
                self.repository.clone(),
                t.unwrap_or("latest").to_string(),
            ),
        };
        if ep.mirror {
            r.set_mirror_registry(ep.host.clone());
        }
        r
    }

    /// Fetches the manifest or index a tag (or digest) names, from the first endpoint allowed
    /// to answer that. The digest is computed here, never taken from the registry's word.
    pub async fn resolve(
        &self,
        tag: Option<&str>,
        digest: Option<&Digest>,
    ) -> Result<Resolved, Error> {
        let what = match (digest, tag) {
            (Some(d), _) => format!("{}@{d}", self.image()),
            (None, t) => format!("{}:{}", self.image(), t.unwrap_or("latest")),
        };
        let mut failures = Vec::new();
        for r in &self.remotes {
            let allowed = if digest.is_some() {
                r.endpoint.pull || r.endpoint.resolve
            } else {
                r.endpoint.resolve
            };
            if !allowed {
                continue;
            }
            let reference = self.reference(&r.endpoint, tag, digest);
            let fetched = r
                .client
                .pull_manifest_raw(&reference, &r.auth, &ACCEPTED_MANIFESTS)
                .await;
            match fetched {
                Ok((bytes, _)) => match check_manifest(&bytes, digest) {
                    Ok(actual) => {
                        tracing::debug!(manifest = %what, endpoint = %r.endpoint, digest = %actual, "resolved");
                        return Ok(Resolved {
                            bytes,
                            digest: actual,
                            endpoint: r.endpoint.url(),
                        });
                    }
                    Err(e) => failures.push((r.endpoint.url(), e)),
                },
                Err(e) => failures.push((r.endpoint.url(), classify(e))),
            }
        }
        Err(self.give_up(&format!("manifest {what}"), failures))
    }

    /// Downloads blob `digest` (`size` bytes) into `store`, verified, from the first endpoint
    /// that serves it whole, counting its bytes into `progress`.
    pub async fn fetch_blob(
        &self,
        store: &ContentStore,
        digest: &Digest,
        size: u64,
        progress: Option<&LayerProgress>,
    ) -> Result<(), Error> {
        let mut failures = Vec::new();
        for r in self.remotes.iter().filter(|r| r.endpoint.pull) {
            let reference = self.reference(&r.endpoint, None, Some(digest));
            r.client
                .store_auth_if_needed(reference.resolve_registry(), &r.auth)
                .await;
            let ds = digest.to_string();
            let stream = match r.client.pull_blob_stream(&reference, ds.as_str()).await {
                Ok(s) => s,
                Err(e) => {
                    failures.push((r.endpoint.url(), classify(e)));
                    continue;
                }
            };
            if let Some(n) = stream.content_length.filter(|n| *n != size) {
                failures.push((
                    r.endpoint.url(),
                    Kind::Corrupt(format!("served {n} bytes, the manifest says {size}")),
                ));
                continue;
            }
            if let Some(p) = progress {
                p.downloading();
            }
            match ingest_stream(store.clone(), digest.clone(), size, stream.stream, progress).await
            {
                Ok(()) => {
                    tracing::debug!(blob = %digest, endpoint = %r.endpoint, size, "downloaded");
                    return Ok(());
                }
                Err(IngestError::Store(e)) => {
                    // A local problem (full disk): another endpoint will not help.
                    return Err(Error::Internal(format!(
                        "storing blob {digest} of {} from {}: {e}",
                        self.image(),
                        r.endpoint
                    )));
                }
                Err(IngestError::Corrupt(m)) => failures.push((r.endpoint.url(), Kind::Corrupt(m))),
                Err(IngestError::Transfer(e)) => {
                    failures.push((r.endpoint.url(), Kind::Unavailable(e.to_string())))
                }
            }
        }
        Err(self.give_up(&format!("blob {digest} of {}", self.image()), failures))
    }

    /// Every endpoint failed: the last one's kind of failure decides the gRPC code (it is the
    /// server, the authority, when mirrors are configured), and the message lists them all.
    fn give_up(&self, what: &str, failures: Vec<(String, Kind)>) -> Error {
        let parts: Vec<String> = failures
            .iter()
            .chain(&self.setup_errors)
            .map(|(ep, k)| format!("{ep}: {}", k.message()))
            .collect();
        let msg = if parts.is_empty() {
            format!("pulling {what}: no registry endpoint may serve it (check capabilities in hosts.toml)")
        } else {
            format!("pulling {what}: {}", parts.join("; "))
        };
        // Endpoints that were set up answer for the code; else why setting up failed.
        match failures.last().or(self.setup_errors.last()).map(|(_, k)| k) {
            Some(Kind::NotFound(_)) => Error::NotFound(msg),
            Some(Kind::Unauthenticated(_)) => Error::Unauthenticated(msg),
            Some(Kind::Denied(_)) => Error::PermissionDenied(msg),
            Some(Kind::Corrupt(_)) => Error::DataLoss(msg),
            Some(Kind::Invalid(_)) => Error::InvalidArgument(msg),
            Some(Kind::Unavailable(_)) => Error::Unavailable(msg),
            Some(Kind::Other(_)) | None => Error::FailedPrecondition(msg),
        }
    }
}

/// A registry failure sorted by what the caller should do about it.
#[derive(Debug)]
enum Kind {
    NotFound(String),
    Unauthenticated(String),
    Denied(String),
    Corrupt(String),
    Invalid(String),
    Unavailable(String),
    Other(String),
}

impl Kind {
    fn message(&self) -> &str {
        match self {
            Kind::NotFound(m)
            | Kind::Unauthenticated(m)
            | Kind::Denied(m)
            | Kind::Corrupt(m)
            | Kind::Invalid(m)
            | Kind::Unavailable(m)
            | Kind::Other(m) => m,
        }
    }
}

fn check_manifest(bytes: &[u8], expected: Option<&Digest>) -> Result<Digest, Kind> {
    if bytes.len() as u64 > MAX_JSON {
        return Err(Kind::Corrupt(format!(
            "manifest of {} bytes is too large",
            bytes.len()
        )));
    }
    let actual = Digest::sha256_of(bytes);
    match expected {
        Some(want) if *want != actual => Err(Kind::Corrupt(format!(
            "manifest content has digest {actual}, not the requested {want}"
        ))),
        _ => Ok(actual),
    }
}

fn status_kind(code: u16, msg: String) -> Kind {
    match code {
        401 => Kind::Unauthenticated(msg),
        403 => Kind::Denied(msg),
        404 => Kind::NotFound(msg),
        408 | 429 | 500..=599 => Kind::Unavailable(msg),
        _ => Kind::Other(msg),
    }
}

fn classify(e: OciDistributionError) -> Kind {
    let msg = e.to_string();
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Kind::Unauthenticated(msg),
        OciDistributionError::ImageManifestNotFoundError(_) => Kind::NotFound(msg),
        OciDistributionError::DigestError(_) => Kind::Corrupt(msg),
        OciDistributionError::ServerError { code, .. } => status_kind(code, msg),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let has = |c: OciErrorCode| codes.contains(&&c);
            if has(OciErrorCode::Unauthorized) {
                Kind::Unauthenticated(msg)
            } else if has(OciErrorCode::Denied) {
                Kind::Denied(msg)
            } else if has(OciErrorCode::ManifestUnknown)
                || has(OciErrorCode::BlobUnknown)
                || has(OciErrorCode::NameUnknown)
                || has(OciErrorCode::NotFound)
            {
                Kind::NotFound(msg)
            } else if has(OciErrorCode::Toomanyrequests) {
                Kind::Unavailable(msg)
            } else if has(OciErrorCode::NameInvalid) || has(OciErrorCode::TagInvalid) {
                Kind::Invalid(msg)
            } else {
                Kind::Other(msg)
            }
        }
        OciDistributionError::RequestError(re) => {
            // Connection refused, DNS failure, TLS failure, timeouts: the endpoint is not
            // usable now. reqwest's Display hides the cause chain; show it.
            let mut m = re.to_string();
            let mut src = std::error::Error::source(&re);
            while let Some(s) = src {
                m.push_str(": ");
                m.push_str(&s.to_string());
                src = s.source();
            }
            match re.status() {
                Some(s) => status_kind(s.as_u16(), m),
                None => Kind::Unavailable(m),
            }
        }
        OciDistributionError::IoError(_) => Kind::Unavailable(msg),
        _ => Kind::Other(msg),
    }
}

async fn identity_auth(
    ep: &Endpoint,
    repository: &str,
    refresh: &str,
) -> Result<RegistryAuth, Kind> {
    let http = http_for(ep).map_err(Kind::Other)?;
    token::exchange(&http, &ep.api_url(), repository, refresh)
        .await
        .map_err(|e| match e {
            token::TokenError::Refused { .. } => Kind::Unauthenticated(e.to_string()),
            token::TokenError::Unavailable(_) => Kind::Unavailable(e.to_string()),
        })
}

/// A plain HTTP client with the endpoint's TLS settings, for the token exchange (the token
/// server is trusted as the registry is, as in containerd).
fn http_for(ep: &Endpoint) -> Result<reqwest::Client, String> {
    let mut certs = Vec::new();
    for p in &ep.ca {
        let data = std::fs::read(p).map_err(|e| format!("reading CA {}: {e}", p.display()))?;
        certs.extend(
            reqwest::Certificate::from_pem_bundle(&data)
                .map_err(|e| format!("CA {}: {e}", p.display()))?,
        );
    }
    let mut b = reqwest::Client::builder()
        .danger_accept_invalid_certs(ep.skip_verify)
        .tls_certs_merge(certs)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(USER_AGENT)
        .default_headers(header_map(ep)?);
    if let Some(pem) = client_identity(ep)? {
        b = b.identity(
            reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("client certificate: {}", chain_msg(&e)))?,
        );
    }
    b.build()
        .map_err(|e| format!("setting up the token client: {e}"))
}

/// hosts.toml `[header]` as a header map; a name or value HTTP does not allow is an error.
fn header_map(ep: &Endpoint) -> Result<reqwest::header::HeaderMap, String> {
    use reqwest::header::{HeaderName, HeaderValue};
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in &ep.headers {
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header name {k:?}: {e}"))?;
        let value = HeaderValue::from_str(v).map_err(|e| format!("header {k:?} value: {e}"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// The client certificate and key as one PEM (what reqwest takes), if configured.
fn client_identity(ep: &Endpoint) -> Result<Option<Vec<u8>>, String> {
    let Some((cert, key)) = &ep.client else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("reading client certificate {}: {e}", p.display()))
    };
    let mut pem = read(cert)?;
    if let Some(k) = key {
        pem.push(b'\n');
        pem.extend(read(k)?);
    }
    Ok(Some(pem))
}

/// An error with its causes: reqwest's and rustls' Display hides them (connection refused,
/// the TLS reason).
pub(super) fn chain_msg(e: &dyn std::error::Error) -> String {
    let mut m = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        m.push_str(": ");
        m.push_str(&s.to_string());
        src = s.source();
    }
    m
}

pub(super) fn client_for(ep: &Endpoint) -> Result<oci_client::Client, String> {
    let mut extra = Vec::new();
    for p in &ep.ca {
        let data = std::fs::read(p).map_err(|e| format!("reading CA {}: {e}", p.display()))?;
        extra.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    let cfg = ClientConfig {
        protocol: match ep.scheme {
            Scheme::Http => ClientProtocol::Http,
            Scheme::Https => ClientProtocol::Https,
        },
        accept_invalid_certificates: ep.skip_verify,
        extra_root_certificates: extra,
        // Platform selection is ours (shared with import); an index must come back as is.
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: USER_AGENT,
        client_identity_pem: client_identity(ep)?,
        default_headers: header_map(ep)?,
        api_path: ep.api_path.clone(),
        ..Default::default()
    };
    oci_client::Client::try_from(cfg)
        .map_err(|e| format!("setting up the registry client: {}", chain_msg(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(headers: &[(&str, &str)]) -> Endpoint {
        let mut ep = super::super::hosts::Hosts::new(None)
            .endpoints("registry.example")
            .unwrap()
            .remove(0);
        ep.headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ep
    }

    /// hosts.toml `[header]` reaches the registry client (and the token client) as default
    /// headers, repeated names kept; names or values HTTP does not allow fail the endpoint.
    #[test]
    fn headers_from_hosts_toml() {
        // As `Puller::new` does in crispd.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ep = endpoint(&[("X-Team", "crisp"), ("x-many", "a"), ("x-many", "b")]);
        let map = header_map(&ep).unwrap();
        assert_eq!(map.get("x-team").unwrap(), "crisp");
        let many: Vec<_> = map.get_all("x-many").iter().collect();
        assert_eq!(many, ["a", "b"]);
        assert!(client_for(&ep).is_ok());
        assert!(http_for(&ep).is_ok());
        let bad = endpoint(&[("bad header", "x")]);
        assert!(header_map(&bad).unwrap_err().contains("bad header"));
        assert!(client_for(&bad).is_err());
        let bad = endpoint(&[("x-ok", "line\nbreak")]);
        assert!(header_map(&bad).is_err());
    }
}
