//! RFC 6455 WebSocket, hand-rolled: the server side needs only the
//! handshake key, the frame codec and message reassembly (about 300 lines),
//! whereas tokio-tungstenite would add tungstenite, its own HTTP parser and
//! RNG to the tree just to duplicate what hyper already did for us.

pub mod frame;
pub mod handshake;
pub mod io;

pub use frame::{Message, Opcode};
pub use io::{MessageReader, MessageWriter};

/// A WebSocket protocol violation or transport failure.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("unknown WebSocket opcode {0:#x}")]
    BadOpcode(u8),
    #[error("control frame is fragmented or longer than 125 bytes")]
    BadControlFrame,
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(u64),
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is in progress")]
    InterleavedMessage,
    #[error("client frames must be masked")]
    Unmasked,
    #[error("WebSocket I/O: {0}")]
    Io(#[from] std::io::Error),
}
