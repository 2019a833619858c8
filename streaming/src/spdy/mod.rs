//! SPDY/3.1, as far as Kubernetes streaming needs it: the frame codec
//! ([`frame`]), header-block compression ([`headers`]) and a multiplexed
//! connection with per-stream flow control ([`conn`]).

pub mod conn;
pub mod dictionary;
pub mod frame;
pub mod headers;

pub use conn::{
    Acceptor, ConnError, Connection, FlowControl, RecvStream, Role, SendStream, Stream,
};
pub use frame::{Decoder, Encoder, Frame};
pub use headers::Headers;

/// A frame or header block that cannot be decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("unsupported SPDY version {0} (only 3 is spoken)")]
    UnsupportedVersion(u16),
    #[error("control frame type {frame_type} has invalid length {len}")]
    BadLength { frame_type: u16, len: usize },
    #[error("invalid header block: {0}")]
    HeaderBlock(&'static str),
    #[error("frame payload exceeds the 24-bit length field")]
    TooLarge,
    #[error("cannot encode unknown control frame type {0}")]
    UnknownType(u16),
}
