//! RFC 6455 section 5 framing. Decoding bounds every length before
//! allocating, since the peer chooses it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::WsError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_u8(b: u8) -> Result<Self, WsError> {
        Ok(match b {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xa => Self::Pong,
            other => return Err(WsError::BadOpcode(other)),
        })
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xa,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// One frame as it appears on the wire (payload already unmasked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    pub masked: bool,
    pub payload: Bytes,
}

/// A complete message after reassembly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// Close with its optional status code and reason.
    Close(Option<u16>, Bytes),
}

/// Appends one frame. `mask` is required for client-to-server frames.
pub fn encode(
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut BytesMut,
) {
    out.reserve(payload.len() + 14);
    out.put_u8(if fin { 0x80 } else { 0 } | opcode.as_u8());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.put_u8(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.put_u8(mask_bit | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(mask_bit | 127);
            out.put_u64(n as u64);
        }
    }
    match mask {
        Some(key) => {
            out.put_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.put_slice(payload),
    }
}

/// Takes one frame off the front of `buf`, or `Ok(None)` if incomplete.
pub fn decode(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Frame>, WsError> {
    let Some(&[b0, b1]) = buf.first_chunk::<2>() else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_u8(b0 & 0x0f)?;
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(WsError::BadControlFrame);
    }
    if len > max_payload as u64 {
        return Err(WsError::TooLarge(len));
    }
    let len = len as usize; // <= max_payload
    let key = if masked {
        match buf.get(at..at + 4) {
            Some(k) => {
                let k = [k[0], k[1], k[2], k[3]];
                at += 4;
                Some(k)
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    if buf.len() < at + len {
        buf.reserve(at + len - buf.len());
        return Ok(None);
    }
    buf.advance(at);
    let mut payload = buf.split_to(len);
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Ok(Some(Frame {
        fin,
        opcode,
        masked,
        payload: payload.freeze(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(b: &[u8]) -> Result<Option<Frame>, WsError> {
        decode(&mut BytesMut::from(b), 1 << 20)
    }

    /// The examples of RFC 6455 section 5.7.
    #[test]
    fn rfc_examples() {
        let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let f = dec(&unmasked).unwrap().unwrap();
        assert_eq!(
            (f.fin, f.opcode, &f.payload[..]),
            (true, Opcode::Text, &b"Hello"[..])
        );
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let f = dec(&masked).unwrap().unwrap();
        assert!(f.masked);
        assert_eq!(&f.payload[..], b"Hello");
        let mut out = BytesMut::new();
        encode(
            true,
            Opcode::Text,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
            &mut out,
        );
        assert_eq!(&out[..], &masked);
        // Fragmented "Hel" + "lo".
        let a = dec(&[0x01, 0x03, 0x48, 0x65, 0x6c]).unwrap().unwrap();
        assert!(!a.fin);
        let b = dec(&[0x80, 0x02, 0x6c, 0x6f]).unwrap().unwrap();
        assert_eq!(b.opcode, Opcode::Continuation);
        // 256-byte binary uses the 16-bit length form.
        let mut out = BytesMut::new();
        encode(true, Opcode::Binary, &[0u8; 256], None, &mut out);
        assert_eq!(&out[..4], &[0x82, 0x7e, 0x01, 0x00]);
        // 64 KiB uses the 64-bit form.
        let mut out = BytesMut::new();
        encode(true, Opcode::Binary, &[0u8; 65536], None, &mut out);
        assert_eq!(&out[..10], &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(dec(&out).unwrap().unwrap().payload.len(), 65536);
    }

    #[test]
    fn incomplete_waits_and_bad_input_errors() {
        let mut out = BytesMut::new();
        encode(
            true,
            Opcode::Binary,
            &[7u8; 300],
            Some([1, 2, 3, 4]),
            &mut out,
        );
        for cut in 0..out.len() {
            assert_eq!(dec(&out[..cut]).unwrap(), None);
        }
        assert!(matches!(dec(&[0xc2, 0x00]), Err(WsError::ReservedBits)));
        assert!(matches!(dec(&[0x83, 0x00]), Err(WsError::BadOpcode(3))));
        assert!(matches!(dec(&[0x09, 0x00]), Err(WsError::BadControlFrame)));
        assert!(matches!(
            dec(&[0x89, 126, 0, 200]),
            Err(WsError::BadControlFrame)
        ));
        assert!(matches!(
            dec(&[0x82, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(WsError::TooLarge(_))
        ));
    }
}
