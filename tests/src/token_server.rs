//! A Docker token server on 127.0.0.1 for registries started with
//! [`TestRegistry::start_with_token_auth`](crate::TestRegistry::start_with_token_auth): it
//! issues RS256 JWTs (signed with `openssl dgst`, the certificate in the `x5c` header, as
//! distribution verifies them against its `rootcertbundle`) for
//! - an OAuth2 refresh-token grant (`POST`, `grant_type=refresh_token`) with the right token;
//! - a token `GET` with HTTP basic auth: the push user, or an empty user and the refresh token
//!   (how clients fall back when a server takes no `POST`).
//!
//! Every request is recorded for the test to inspect. `Drop` stops the server thread.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::Engine as _;

pub const TOKEN_SERVICE: &str = "crisp-test-registry";
pub const TOKEN_ISSUER: &str = "crisp-test-issuer";

/// One request the token server saw.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub method: String,
    /// Form fields (POST) or query parameters (GET); `scope` may repeat, so values are joined
    /// with a space.
    pub params: HashMap<String, String>,
    /// The basic-auth `user:password`, if any.
    pub basic: Option<String>,
    pub status: u16,
}

#[derive(Clone)]
struct Policy {
    refresh_token: String,
    push_basic: String,
    /// Answer POSTs with 404, as token servers without OAuth2 support do.
    refuse_post: bool,
    key: PathBuf,
    x5c: String,
}

pub struct TokenServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenServer {
    /// Makes the signing key and certificate in `dir` (`token.key`, `token.pem`, the registry's
    /// `rootcertbundle`) and starts serving.
    pub(crate) fn start(
        dir: &Path,
        refresh_token: &str,
        push_basic: &str,
        refuse_post: bool,
    ) -> anyhow::Result<TokenServer> {
        crate::registry::openssl(
            dir,
            &[&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "token.key",
                "-out",
                "token.pem",
                "-days",
                "1",
                "-subj",
                "/CN=crisp-test-token",
            ]],
        )?;
        // x5c is the certificate's DER in standard base64: the PEM body.
        let pem = std::fs::read_to_string(dir.join("token.pem"))?;
        let x5c: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let policy = Policy {
            refresh_token: refresh_token.to_string(),
            push_basic: push_basic.to_string(),
            refuse_post,
            key: dir.join("token.key"),
            x5c,
        };
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the token server")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || serve(listener, policy, s, r));
        Ok(TokenServer {
            port,
            stop,
            thread: Some(thread),
            requests,
        })
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: TcpListener,
    policy: Policy,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                if let Some(req) = handle(conn, &policy) {
                    requests.lock().unwrap_or_else(|e| e.into_inner()).push(req);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_params(s: &str) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = HashMap::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (url_decode(k), url_decode(v));
        m.entry(k)
            .and_modify(|e| {
                e.push(' ');
                e.push_str(&v)
            })
            .or_insert(v);
    }
    m
}

/// Reads one HTTP/1.1 request, answers it and closes the connection.
fn handle(mut conn: TcpStream, policy: &Policy) -> Option<TokenRequest> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let mut headers = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let params = if method == "POST" {
        parse_params(&body)
    } else {
        parse_params(query)
    };
    let basic = headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());

    let allowed = match method.as_str() {
        "POST" if policy.refuse_post => None,
        "POST" => Some(
            params.get("grant_type").map(String::as_str) == Some("refresh_token")
                && params.get("refresh_token") == Some(&policy.refresh_token),
        ),
        "GET" => Some(
            basic.as_deref() == Some(policy.push_basic.as_str())
                || basic.as_deref() == Some(format!(":{}", policy.refresh_token).as_str()),
        ),
        _ => None,
    };
    let (status, body) = match allowed {
        None => (404, "{\"error\":\"not found\"}".to_string()),
        Some(false) => (401, "{\"error\":\"invalid credentials\"}".to_string()),
        Some(true) => match sign(policy, params.get("scope").map(String::as_str)) {
            Ok(jwt) => (
                200,
                format!("{{\"token\":\"{jwt}\",\"access_token\":\"{jwt}\",\"expires_in\":3600}}"),
            ),
            Err(e) => (500, format!("{{\"error\":{:?}}}", e.to_string())),
        },
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Error",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    Some(TokenRequest {
        method,
        params,
        basic,
        status,
    })
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A JWT granting what `scope` (space-separated `repository:<name>:<actions>`) asks for.
fn sign(policy: &Policy, scope: Option<&str>) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let access: Vec<serde_json::Value> = scope
        .unwrap_or("")
        .split(' ')
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [policy.x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": "crisp-test",
        "aud": TOKEN_SERVICE,
        "exp": now + 3600,
        "nbf": now - 60,
        "iat": now - 60,
        "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(&header)?),
        b64url(&serde_json::to_vec(&claims)?)
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&policy.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running openssl dgst")?;
    child
        .stdin
        .take()
        .context("openssl stdin")?
        .write_all(signing_input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "openssl dgst failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(format!("{signing_input}.{}", b64url(&out.stdout)))
}
