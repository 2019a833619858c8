//! Errors returned by the public API.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("cannot bind streaming server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid streaming request: {0}")]
    InvalidRequest(&'static str),
    #[error("too many in-flight streaming requests (limit {0})")]
    TooManyInFlight(usize),
    #[error("cannot generate a session token: {0}")]
    Random(String),
    #[error("streaming server is shut down")]
    ShutDown,
}
