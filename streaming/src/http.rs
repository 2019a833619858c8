//! The HTTP/1.1 front: routes `/{exec,attach,portforward}/{token}`,
//! redeems the token, negotiates the upgrade and hands the upgraded
//! connection to the matching session.

// Error responses are built at most once per request and returned straight
// to hyper; boxing them would only add an allocation.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::exec::ExecSpec;
use crate::negotiate::{self, ExecVersion, WsExecProto};
use crate::server::Inner;
use crate::session::spdy_portforward::PortForwardSpec;
use crate::session::{spdy_exec, spdy_portforward, ws_exec, ws_portforward, ws_tunnel};
use crate::ws::handshake::accept_key;
use crate::Runtime;

/// Most ports one WebSocket port-forward may ask for (two channels each
/// must fit in a byte).
const MAX_WS_PORTS: usize = 64;

/// What a token stands for.
#[derive(Clone, Debug)]
pub enum Pending {
    Exec(ExecSpec),
    Attach(ExecSpec),
    PortForward(PortForwardSpec),
}

/// A negotiated session, ready to run on the upgraded connection.
enum Plan {
    SpdyExec(ExecVersion, ExecSpec),
    WsExec(WsExecProto, ExecSpec),
    SpdyPortForward(PortForwardSpec),
    WsPortForward(Vec<u16>, bool, PortForwardSpec),
    WsTunnel(PortForwardSpec),
}

type Resp = Response<Full<Bytes>>;

pub async fn handle(mut req: Request<Incoming>, inner: Arc<Inner>) -> Result<Resp, Infallible> {
    Ok(match route(&mut req, &inner) {
        Ok((resp, plan)) => {
            let upgrade = hyper::upgrade::on(&mut req);
            let rt = inner.runtime.clone();
            inner.spawn_session(async move {
                match upgrade.await {
                    Ok(up) => run(plan, TokioIo::new(up), rt).await,
                    Err(e) => tracing::debug!(error = %e, "streaming upgrade failed"),
                }
            });
            resp
        }
        Err(resp) => resp,
    })
}

async fn run(plan: Plan, io: TokioIo<hyper::upgrade::Upgraded>, rt: Arc<dyn Runtime>) {
    match plan {
        Plan::SpdyExec(v, spec) => spdy_exec::serve(io, v, spec, rt).await,
        Plan::WsExec(p, spec) => ws_exec::serve(io, p, spec, rt).await,
        Plan::SpdyPortForward(spec) => spdy_portforward::serve(io, spec, rt).await,
        Plan::WsPortForward(ports, b64, spec) => {
            ws_portforward::serve(io, ports, b64, spec, rt).await
        }
        Plan::WsTunnel(spec) => ws_tunnel::serve(io, spec, rt).await,
    }
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(msg.into() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    Attach,
    PortForward,
}

enum Transport {
    Spdy,
    WebSocket,
}

fn route(req: &mut Request<Incoming>, inner: &Inner) -> Result<(Resp, Plan), Resp> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
    }
    let mut parts = req.uri().path().trim_start_matches('/').split('/');
    let kind = match parts.next() {
        Some("exec") => Kind::Exec,
        Some("attach") => Kind::Attach,
        Some("portforward") => Kind::PortForward,
        _ => return Err(plain(StatusCode::NOT_FOUND, "not found")),
    };
    let (Some(token), None) = (parts.next(), parts.next()) else {
        return Err(plain(StatusCode::NOT_FOUND, "not found"));
    };
    // Consumed even if the rest fails: a token is good for one attempt.
    let Some(pending) = inner.tokens.consume(token) else {
        return Err(plain(
            StatusCode::NOT_FOUND,
            "unknown or expired session token",
        ));
    };
    let transport = transport(req).ok_or_else(|| {
        plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        )
    })?;
    match (kind, pending, transport) {
        (Kind::Exec, Pending::Exec(spec), t) | (Kind::Attach, Pending::Attach(spec), t) => {
            match t {
                Transport::Spdy => spdy_exec_plan(req, spec),
                Transport::WebSocket => ws_exec_plan(req, spec),
            }
        }
        (Kind::PortForward, Pending::PortForward(spec), Transport::Spdy) => {
            let offered = negotiate::offered(req.headers(), negotiate::SPDY_PROTOCOL_HEADER);
            if !offered.is_empty() && !offered.iter().any(|o| o == negotiate::PORT_FORWARD) {
                return Err(forbidden(&[negotiate::PORT_FORWARD]));
            }
            let proto = (!offered.is_empty()).then_some(negotiate::PORT_FORWARD);
            Ok((spdy_101(proto), Plan::SpdyPortForward(spec)))
        }
        (Kind::PortForward, Pending::PortForward(spec), Transport::WebSocket) => {
            ws_port_forward_plan(req, spec)
        }
        _ => Err(plain(
            StatusCode::BAD_REQUEST,
            "session token does not match the requested operation",
        )),
    }
}

fn has_token(req: &Request<Incoming>, name: header::HeaderName, want: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(want))
}

fn transport(req: &Request<Incoming>) -> Option<Transport> {
    if !has_token(req, header::CONNECTION, "upgrade") {
        return None;
    }
    if has_token(req, header::UPGRADE, "SPDY/3.1") {
        Some(Transport::Spdy)
    } else if has_token(req, header::UPGRADE, "websocket") {
        Some(Transport::WebSocket)
    } else {
        None
    }
}

fn forbidden(supported: &[&'static str]) -> Resp {
    let mut r = plain(
        StatusCode::FORBIDDEN,
        format!("unable to upgrade: unable to negotiate protocol: client supports none of {supported:?}"),
    );
    for s in supported {
        r.headers_mut().append(
            negotiate::ACCEPTED_PROTOCOLS_HEADER,
            HeaderValue::from_static(s),
        );
    }
    r
}

fn switching(upgrade: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(upgrade));
    r
}

fn spdy_101(proto: Option<&'static str>) -> Resp {
    let mut r = switching("SPDY/3.1");
    if let Some(p) = proto {
        r.headers_mut()
            .insert(negotiate::SPDY_PROTOCOL_HEADER, HeaderValue::from_static(p));
    }
    r
}

fn spdy_exec_plan(req: &Request<Incoming>, spec: ExecSpec) -> Result<(Resp, Plan), Resp> {
    let offered = negotiate::offered(req.headers(), negotiate::SPDY_PROTOCOL_HEADER);
    if offered.is_empty() {
        // Pre-negotiation clients speak v1 and expect no header back.
        return Ok((spdy_101(None), Plan::SpdyExec(ExecVersion::V1, spec)));
    }
    let Some(&(name, version)) = negotiate::pick(&offered, negotiate::SPDY_EXEC, |s| s.0) else {
        let names: Vec<&'static str> = negotiate::SPDY_EXEC.iter().map(|s| s.0).collect();
        return Err(forbidden(&names));
    };
    Ok((spdy_101(Some(name)), Plan::SpdyExec(version, spec)))
}

/// Validates the WebSocket handshake headers and builds the 101 response.
fn ws_101(req: &Request<Incoming>, proto: Option<&'static str>) -> Result<Resp, Resp> {
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
        .filter(|k| !k.trim().is_empty());
    let (true, Some(key)) = (version_ok, key) else {
        let mut r = plain(StatusCode::BAD_REQUEST, "invalid WebSocket handshake");
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(r);
    };
    let mut r = switching("websocket");
    let accept = HeaderValue::from_str(&accept_key(key))
        .map_err(|_| plain(StatusCode::BAD_REQUEST, "invalid WebSocket key"))?;
    r.headers_mut().insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = proto {
        r.headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    Ok(r)
}

fn ws_exec_plan(req: &Request<Incoming>, spec: ExecSpec) -> Result<(Resp, Plan), Resp> {
    let offered = negotiate::offered(req.headers(), negotiate::WS_PROTOCOL_HEADER);
    let proto = if offered.is_empty() {
        // No sub-protocol: kubelet treats this as channel.k8s.io.
        None
    } else {
        let names: Vec<&'static str> = negotiate::WS_EXEC.iter().map(|p| p.name).collect();
        Some(
            *negotiate::pick(&offered, negotiate::WS_EXEC, |p| p.name)
                .ok_or_else(|| forbidden(&names))?,
        )
    };
    let resp = ws_101(req, proto.map(|p| p.name))?;
    let proto = proto.unwrap_or(WsExecProto {
        name: "channel.k8s.io",
        version: ExecVersion::V1,
        base64: false,
    });
    Ok((resp, Plan::WsExec(proto, spec)))
}

fn ws_port_forward_plan(
    req: &Request<Incoming>,
    spec: PortForwardSpec,
) -> Result<(Resp, Plan), Resp> {
    let offered = negotiate::offered(req.headers(), negotiate::WS_PROTOCOL_HEADER);
    if offered.iter().any(|o| o == negotiate::WS_SPDY_TUNNEL) {
        let resp = ws_101(req, Some(negotiate::WS_SPDY_TUNNEL))?;
        return Ok((resp, Plan::WsTunnel(spec)));
    }
    let (name, base64) = if offered.is_empty() {
        (None, false)
    } else {
        let names: Vec<&'static str> = negotiate::WS_PORT_FORWARD
            .iter()
            .map(|p| p.0)
            .chain([negotiate::WS_SPDY_TUNNEL])
            .collect();
        let &(n, b) = negotiate::pick(&offered, negotiate::WS_PORT_FORWARD, |p| p.0)
            .ok_or_else(|| forbidden(&names))?;
        (Some(n), b)
    };
    let ports = query_ports(req.uri().query().unwrap_or(""), &spec)?;
    let resp = ws_101(req, name)?;
    Ok((resp, Plan::WsPortForward(ports, base64, spec)))
}

/// `port=N` query parameters (repeatable, comma lists allowed), each a
/// valid port the CRI request allowed.
fn query_ports(query: &str, spec: &PortForwardSpec) -> Result<Vec<u16>, Resp> {
    let bad = |m: String| plain(StatusCode::BAD_REQUEST, m);
    let mut ports = Vec::new();
    for pair in query.split('&') {
        let Some(v) = pair.strip_prefix("port=") else {
            continue;
        };
        for p in v.split(',').filter(|p| !p.is_empty()) {
            let port: u16 = p.parse().map_err(|_| bad(format!("invalid port {p:?}")))?;
            if !spec.allows(port) {
                return Err(bad(format!("port {port} is not allowed for this request")));
            }
            ports.push(port);
        }
    }
    if ports.is_empty() && !spec.ports.is_empty() {
        ports = spec.ports.clone();
    }
    if ports.is_empty() {
        return Err(bad("at least one port must be specified".into()));
    }
    if ports.len() > MAX_WS_PORTS {
        return Err(bad(format!("at most {MAX_WS_PORTS} ports per connection")));
    }
    Ok(ports)
}
