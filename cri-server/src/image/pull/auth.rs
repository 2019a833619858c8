//! Registry credentials from a CRI `PullImageRequest.auth`.

use oci_client::secrets::RegistryAuth;

use std::collections::BTreeMap;

use crate::config::RegistryAuthConfig;
use crate::error::{Error, Result};

/// What kubelet (or crictl `--creds`/`--auth`) sent with a pull.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Empty: the credentials go to every endpoint of the pull (mirrors included), as with
    /// containerd. Otherwise only to the endpoint whose host matches.
    pub server_address: String,
    pub username: String,
    pub password: String,
    /// `auth` (base64 `user:password`) is folded into username/password by [`from_cri`].
    pub registry_token: String,
    /// An OAuth2 refresh token, exchanged at the registry's token server (see `token.rs`).
    pub identity_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server_address", &self.server_address)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("registry_token", &"<redacted>")
            .field("identity_token", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Converts CRI's `AuthConfig`.
    pub fn from_cri(auth: Option<crisp_cri_api::v1::AuthConfig>) -> Result<Credentials> {
        let Some(a) = auth else {
            return Ok(Credentials::default());
        };
        let (mut username, mut password) = (a.username, a.password);
        if username.is_empty() && !a.auth.is_empty() {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(a.auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Error::InvalidArgument(
                        "PullImage: auth.auth is not base64 of \"user:password\"".into(),
                    )
                })?;
            let (u, p) = decoded.split_once(':').ok_or_else(|| {
                Error::InvalidArgument(
                    "PullImage: auth.auth is not base64 of \"user:password\"".into(),
                )
            })?;
            username = u.to_string();
            password = p.to_string();
        }
        Ok(Credentials {
            server_address: a.server_address,
            username,
            password,
            registry_token: a.registry_token,
            identity_token: a.identity_token,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.username.is_empty() && self.registry_token.is_empty() && self.identity_token.is_empty()
    }

    /// The configured credentials (`[registry.auths]`) for `registry`, if any.
    pub fn from_config(
        auths: &BTreeMap<String, RegistryAuthConfig>,
        registry: &str,
    ) -> Result<Option<Credentials>> {
        let want = normalize_server(registry);
        let Some((host, a)) = auths.iter().find(|(k, _)| normalize_server(k) == want) else {
            return Ok(None);
        };
        let cri = crisp_cri_api::v1::AuthConfig {
            username: a.username.clone(),
            password: a.password.clone(),
            auth: a.auth.clone(),
            registry_token: a.registry_token.clone(),
            identity_token: a.identity_token.clone(),
            server_address: host.clone(),
        };
        Credentials::from_cri(Some(cri)).map(Some).map_err(|e| {
            Error::FailedPrecondition(format!("config [registry.auths.{host:?}]: {e}"))
        })
    }

    /// Whether these credentials go to `endpoint_host` while pulling from `registry`.
    fn applies_to(&self, registry: &str, endpoint_host: &str) -> bool {
        if self.server_address.is_empty() {
            return true;
        }
        let want = normalize_server(&self.server_address);
        let (endpoint, registry) = (normalize_server(endpoint_host), normalize_server(registry));
        if want == registry {
            // Credentials for the upstream registry stay with it, not with its mirrors.
            endpoint == registry
        } else {
            want == endpoint
        }
    }

    /// The credentials to present to `endpoint_host` while pulling from `registry`. An identity
    /// token is not among them: see [`identity_token_for`](Self::identity_token_for).
    pub fn for_endpoint(&self, registry: &str, endpoint_host: &str) -> RegistryAuth {
        if !self.applies_to(registry, endpoint_host) {
            RegistryAuth::Anonymous
        } else if !self.registry_token.is_empty() {
            RegistryAuth::Bearer(self.registry_token.clone())
        } else if !self.username.is_empty() {
            RegistryAuth::Basic(self.username.clone(), self.password.clone())
        } else {
            RegistryAuth::Anonymous
        }
    }

    /// The identity token to exchange for `endpoint_host`'s access token, when the request's
    /// credentials are only that (a user name or registry token wins, as in containerd).
    pub fn identity_token_for(&self, registry: &str, endpoint_host: &str) -> Option<&str> {
        (!self.identity_token.is_empty()
            && self.username.is_empty()
            && self.registry_token.is_empty()
            && self.applies_to(registry, endpoint_host))
        .then_some(self.identity_token.as_str())
    }
}

/// `https://index.docker.io/v1/`, `registry-1.docker.io`, `docker.io` → `docker.io`;
/// otherwise the bare `host[:port]`.
fn normalize_server(s: &str) -> String {
    let s = s
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or("");
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cri(server: &str, user: &str) -> crisp_cri_api::v1::AuthConfig {
        crisp_cri_api::v1::AuthConfig {
            server_address: server.into(),
            username: user.into(),
            password: "pw".into(),
            ..Default::default()
        }
    }

    #[test]
    fn scoping() {
        let c = Credentials::from_cri(Some(cri("", "u"))).unwrap();
        assert!(matches!(
            c.for_endpoint("docker.io", "mirror:5000"),
            RegistryAuth::Basic(..)
        ));
        let c = Credentials::from_cri(Some(cri("https://index.docker.io/v1/", "u"))).unwrap();
        assert!(matches!(
            c.for_endpoint("docker.io", "registry-1.docker.io"),
            RegistryAuth::Basic(..)
        ));
        assert!(matches!(
            c.for_endpoint("docker.io", "mirror:5000"),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(
            c.for_endpoint("quay.io", "quay.io"),
            RegistryAuth::Anonymous
        ));
        let c = Credentials::from_cri(Some(cri("mirror:5000", "u"))).unwrap();
        assert!(matches!(
            c.for_endpoint("docker.io", "mirror:5000"),
            RegistryAuth::Basic(..)
        ));
    }

    #[test]
    fn auth_field_and_identity_token() {
        let a = crisp_cri_api::v1::AuthConfig {
            auth: "dTpwOnc=".into(), // u:p:w
            ..Default::default()
        };
        let c = Credentials::from_cri(Some(a)).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
        let a = crisp_cri_api::v1::AuthConfig {
            identity_token: "t".into(),
            server_address: "r.io".into(),
            ..Default::default()
        };
        let c = Credentials::from_cri(Some(a)).unwrap();
        assert!(!c.is_empty());
        assert_eq!(c.identity_token_for("r.io", "r.io"), Some("t"));
        assert_eq!(c.identity_token_for("r.io", "mirror:5000"), None);
        assert!(matches!(
            c.for_endpoint("r.io", "r.io"),
            RegistryAuth::Anonymous
        ));
    }
}
