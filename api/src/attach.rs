//! The attach socket: how crispd reaches a running container's main process (CRI `Attach`).
//!
//! The shim owns the container's stdio for its whole life (crispd may restart in between), so
//! attach goes to the shim, not to crispd's memory: the shim listens on a unix socket next to
//! its Task API socket and speaks this framing on each connection. Every frame is a 5-byte
//! header (kind, then the payload length as big-endian u32) and the payload.
//!
//! shim → client: [`Kind::Stdout`] and [`Kind::Stderr`] carry the process's output as it is
//! written (from the moment the client connected; history is in the CRI log); the shim closes
//! the connection once the process exited and its output is drained.
//! client → shim: [`Kind::Stdin`] is written to the container's stdin (dropped if the container
//! was created without stdin); [`Kind::StdinClose`], or the client's end of the connection,
//! ends this client's input, which closes the container's stdin when it was created with
//! `stdin_once`. Only a client that sent at least one input frame has input: one that reads
//! output only (and sends nothing) never closes the container's stdin.

/// Size of a frame header.
pub const HEADER_LEN: usize = 5;
/// Larger frames are refused: a peer sending one is broken or hostile.
pub const MAX_PAYLOAD: u32 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
    StdinClose = 3,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unknown attach frame kind {0}")]
    UnknownKind(u8),
    #[error("attach frame of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(u32),
}

/// The header of a frame carrying `len` bytes.
pub fn header(kind: Kind, len: usize) -> [u8; HEADER_LEN] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [kind as u8, len[0], len[1], len[2], len[3]]
}

/// A whole frame; `payload` must not exceed [`MAX_PAYLOAD`] (callers chunk their data).
pub fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER_LEN + payload.len());
    f.extend_from_slice(&header(kind, payload.len()));
    f.extend_from_slice(payload);
    f
}

/// Decodes a header into the frame's kind and payload length.
pub fn parse_header(h: [u8; HEADER_LEN]) -> Result<(Kind, usize), FrameError> {
    let kind = match h[0] {
        0 => Kind::Stdin,
        1 => Kind::Stdout,
        2 => Kind::Stderr,
        3 => Kind::StdinClose,
        k => return Err(FrameError::UnknownKind(k)),
    };
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    Ok((kind, len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let f = frame(Kind::Stderr, b"oops");
        assert_eq!(f.len(), HEADER_LEN + 4);
        let h: [u8; HEADER_LEN] = f[..HEADER_LEN].try_into().unwrap();
        assert_eq!(parse_header(h), Ok((Kind::Stderr, 4)));
        assert_eq!(&f[HEADER_LEN..], b"oops");
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(
            parse_header([9, 0, 0, 0, 1]),
            Err(FrameError::UnknownKind(9))
        );
        assert_eq!(
            parse_header([0, 0xff, 0, 0, 0]),
            Err(FrameError::TooLarge(0xff00_0000))
        );
    }
}
