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
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server_address", &self.server_address)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("registry_token", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Converts CRI's `AuthConfig`. The identity token (an OAuth2 refresh token) needs a token
    /// exchange our registry client cannot do; refuse it rather than pull anonymously and fail
    /// with a confusing "unauthorized".
    pub fn from_cri(auth: Option<k8s_cri::v1::AuthConfig>) -> Result<Credentials> {
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
        if !a.identity_token.is_empty() && username.is_empty() && a.registry_token.is_empty() {
            return Err(Error::InvalidArgument(
                "PullImage: identity tokens (OAuth2 refresh tokens) are not supported; pass a \
                 username/password or a registry token"
                    .into(),
            ));
        }
        Ok(Credentials {
            server_address: a.server_address,
            username,
            password,
            registry_token: a.registry_token,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.username.is_empty() && self.registry_token.is_empty()
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
        let cri = k8s_cri::v1::AuthConfig {
            username: a.username.clone(),
            password: a.password.clone(),
            auth: a.auth.clone(),
            registry_token: a.registry_token.clone(),
            server_address: host.clone(),
            ..Default::default()
        };
        Credentials::from_cri(Some(cri)).map(Some).map_err(|e| {
            Error::FailedPrecondition(format!("config [registry.auths.{host:?}]: {e}"))
        })
    }

    /// The credentials to present to `endpoint_host` while pulling from `registry`.
    pub fn for_endpoint(&self, registry: &str, endpoint_host: &str) -> RegistryAuth {
        if !self.server_address.is_empty() {
            let want = normalize_server(&self.server_address);
            if want != normalize_server(endpoint_host) && want != normalize_server(registry) {
                return RegistryAuth::Anonymous;
            }
            // Credentials for the upstream registry stay with it, not with its mirrors.
            if want == normalize_server(registry)
                && normalize_server(endpoint_host) != normalize_server(registry)
            {
                return RegistryAuth::Anonymous;
            }
        }
        if !self.registry_token.is_empty() {
            RegistryAuth::Bearer(self.registry_token.clone())
        } else if !self.username.is_empty() {
            RegistryAuth::Basic(self.username.clone(), self.password.clone())
        } else {
            RegistryAuth::Anonymous
        }
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

    fn cri(server: &str, user: &str) -> k8s_cri::v1::AuthConfig {
        k8s_cri::v1::AuthConfig {
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
        let a = k8s_cri::v1::AuthConfig {
            auth: "dTpwOnc=".into(), // u:p:w
            ..Default::default()
        };
        let c = Credentials::from_cri(Some(a)).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
        let a = k8s_cri::v1::AuthConfig {
            identity_token: "t".into(),
            ..Default::default()
        };
        assert!(Credentials::from_cri(Some(a)).is_err());
    }
}
