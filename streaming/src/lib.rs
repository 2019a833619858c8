//! crisp's CRI streaming server.
//!
//! kubelet and crictl run `exec`, `attach` and `port-forward` through the
//! CRI: the `Exec`/`Attach`/`PortForward` RPCs return a URL minted by
//! [`Server::get_exec`] and friends; the client then connects to that URL
//! and upgrades to SPDY/3.1 or WebSocket. This crate is that server,
//! independent of the runtime behind the [`Runtime`] trait.
//!
//! Protocols served:
//! * exec/attach over SPDY/3.1: remotecommand `v4.channel.k8s.io`,
//!   `v3.channel.k8s.io`, `v2.channel.k8s.io`, `channel.k8s.io`;
//! * exec/attach over WebSocket: `v5.channel.k8s.io` (crictl's
//!   `--transport websocket`), `v4.channel.k8s.io`, `v3`/`v2`,
//!   `channel.k8s.io` and the `base64.` variants;
//! * port-forward over SPDY (`portforward.k8s.io`), over WebSocket
//!   (`portforward.k8s.io` / `base64.portforward.k8s.io` with `?port=`), and
//!   SPDY tunnelled in WebSocket (`SPDY/3.1+portforward.k8s.io`).

mod error;
mod exec;
mod http;
mod negotiate;
mod resize;
mod runtime;
mod server;
mod session;
mod status;
mod token;

pub mod spdy;
pub mod ws;

pub use error::StreamingError;
pub use runtime::{ExecIo, Runtime, TermSize};
pub use server::{Config, Server};

/// Protocol names, for clients and tests.
pub mod protocols {
    pub use crate::negotiate::{
        PORT_FORWARD, SPDY_PROTOCOL_HEADER, WS_PROTOCOL_HEADER, WS_SPDY_TUNNEL,
    };
}
