//! Identity tokens (OAuth2 refresh tokens, CRI `AuthConfig.identity_token`), exchanged for a
//! registry access token the way containerd's docker resolver does it: ask the endpoint for its
//! challenge (`GET /v2/`), then POST a refresh-token grant to the token realm
//! (`grant_type=refresh_token&refresh_token=…&service=…&scope=…&client_id=…`); a token server
//! that does not take POSTs (404, 401, 400, or 405) is asked with a GET carrying the token as
//! the basic-auth password instead. The access token then goes to the registry client as a
//! bearer token, so the rest of the pull is unchanged.

use super::registry::chain_msg;
use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// What containerd sends as `client_id`; ours names us.
const CLIENT_ID: &str = "crisp";
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token server refused the identity token.
    #[error("token server {realm} refused the identity token: HTTP {status}: {body}")]
    Refused {
        realm: String,
        status: u16,
        body: String,
    },
    /// The endpoint or token server could not be reached or answered nonsense.
    #[error("{0}")]
    Unavailable(String),
}

/// A `WWW-Authenticate` challenge: its scheme and parameters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub realm: String,
    pub service: Option<String>,
}

/// Parses the first challenge of a `WWW-Authenticate` value, e.g.
/// `Bearer realm="https://auth.example/token",service="registry.example",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, mut rest) = match header.split_once(' ') {
        Some((s, r)) => (s, r.trim_start()),
        None => (header, ""),
    };
    let mut c = Challenge {
        scheme: scheme.to_ascii_lowercase(),
        ..Default::default()
    };
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            // A quoted string; `\x` stands for `x`.
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => v.push(ch),
                }
            }
            (v, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        match key.as_str() {
            "realm" => c.realm = value,
            "service" => c.service = Some(value),
            _ => {}
        }
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(c)
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    token: String,
}

impl TokenResponse {
    fn into_token(self) -> Option<String> {
        [self.access_token, self.token]
            .into_iter()
            .find(|t| !t.is_empty())
    }
}

/// What to present to the endpoint whose API root is `api` (`scheme://host/v2`) for pulls of
/// `repository`, given identity token `refresh`.
pub async fn exchange(
    http: &reqwest::Client,
    api: &str,
    repository: &str,
    refresh: &str,
) -> Result<RegistryAuth, TokenError> {
    let probe = format!("{api}/");
    let resp = http
        .get(&probe)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| TokenError::Unavailable(format!("GET {probe}: {}", chain_msg(&e))))?;
    if resp.status().is_success() {
        // An open registry: nothing to exchange.
        return Ok(RegistryAuth::Anonymous);
    }
    let challenge = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_challenge)
        .ok_or_else(|| {
            TokenError::Unavailable(format!(
                "GET {probe}: HTTP {} without an authentication challenge",
                resp.status().as_u16()
            ))
        })?;
    if challenge.scheme == "basic" {
        // As containerd: the identity token is the password of an empty user name.
        return Ok(RegistryAuth::Basic(String::new(), refresh.to_string()));
    }
    if challenge.scheme != "bearer" || challenge.realm.is_empty() {
        return Err(TokenError::Unavailable(format!(
            "GET {probe}: unsupported authentication challenge {:?}",
            challenge.scheme
        )));
    }
    let scope = format!("repository:{repository}:pull");
    let service = challenge.service.clone().unwrap_or_default();
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("client_id", CLIENT_ID),
        ("scope", scope.as_str()),
    ];
    if !service.is_empty() {
        form.push(("service", service.as_str()));
    }
    let realm = challenge.realm.as_str();
    let resp = http
        .post(realm)
        .timeout(TIMEOUT)
        .form(&form)
        .send()
        .await
        .map_err(|e| TokenError::Unavailable(format!("POST {realm}: {}", chain_msg(&e))))?;
    let status = resp.status().as_u16();
    let resp = if matches!(status, 400 | 401 | 404 | 405) {
        // Token servers without OAuth2 POST support (GCR answered 404, Artifactory 401, ACR
        // 400): the docker token GET, with the identity token as the password.
        tracing::debug!(
            realm,
            status,
            "token server refused the OAuth2 POST; trying GET"
        );
        let mut query = vec![("scope", scope.as_str())];
        if !service.is_empty() {
            query.push(("service", service.as_str()));
        }
        http.get(realm)
            .timeout(TIMEOUT)
            .query(&query)
            .basic_auth("", Some(refresh))
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(format!("GET {realm}: {}", chain_msg(&e))))?
    } else {
        resp
    };
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(200).collect();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(TokenError::Unavailable(format!(
                "token server {realm}: HTTP {}: {body}",
                status.as_u16()
            )));
        }
        return Err(TokenError::Refused {
            realm: realm.to_string(),
            status: status.as_u16(),
            body,
        });
    }
    let parsed: TokenResponse = resp.json().await.map_err(|e| {
        TokenError::Unavailable(format!(
            "token server {realm}: bad answer: {}",
            chain_msg(&e)
        ))
    })?;
    let token = parsed.into_token().ok_or_else(|| {
        TokenError::Unavailable(format!("token server {realm}: answer has no token"))
    })?;
    Ok(RegistryAuth::Bearer(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        let c = parse_challenge(r#"Basic realm="a \"quoted\" realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.realm, r#"a "quoted" realm"#);
        let c = parse_challenge("Bearer realm=http://x/t, service=svc").unwrap();
        assert_eq!(
            (c.realm.as_str(), c.service.as_deref()),
            ("http://x/t", Some("svc"))
        );
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }
}
