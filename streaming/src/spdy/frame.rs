//! SPDY/3.1 frame types and their wire codec (draft-mbelshe-httpbis-spdy-00
//! plus the 3.1 session flow control). Decoding never trusts a length from
//! the wire: every field is bounds-checked, and errors name the cause.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::headers::{HeaderCompressor, HeaderDecompressor, Headers};
use super::FrameError;

pub const VERSION: u16 = 3;
/// Frame header size for both control and data frames.
pub const HEADER_LEN: usize = 8;
/// Largest payload a 24-bit length can express.
pub const MAX_PAYLOAD: usize = 0x00ff_ffff;

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;

pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_SETTINGS: u16 = 4;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const TYPE_WINDOW_UPDATE: u16 = 9;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        slot: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame type we do not know (e.g. CREDENTIAL); the spec says
    /// to ignore those rather than fail.
    Unknown {
        frame_type: u16,
    },
}

/// Encodes frames; owns the connection's outgoing header zlib stream.
#[derive(Default)]
pub struct Encoder {
    headers: HeaderCompressor,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                headers,
            } => {
                let block = self.headers.compress(headers)?;
                control(out, TYPE_SYN_STREAM, *flags, 10 + block.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(associated_to & 0x7fff_ffff);
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(*slot);
                out.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.headers.compress(headers)?;
                control(out, TYPE_SYN_REPLY, *flags, 4 + block.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_slice(&block);
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let block = self.headers.compress(headers)?;
                control(out, TYPE_HEADERS, *flags, 4 + block.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, TYPE_RST_STREAM, 0, 8)?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control(out, TYPE_SETTINGS, *flags, 4 + 8 * entries.len())?;
                out.put_u32(u32::try_from(entries.len()).map_err(|_| FrameError::TooLarge)?);
                for e in entries {
                    out.put_u32((u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff));
                    out.put_u32(e.value);
                }
            }
            Frame::Ping { id } => {
                control(out, TYPE_PING, 0, 4)?;
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control(out, TYPE_GOAWAY, 0, 8)?;
                out.put_u32(last_good_stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, TYPE_WINDOW_UPDATE, 0, 8)?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(FrameError::TooLarge);
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32((u32::from(*flags) << 24) | data.len() as u32);
                out.put_slice(data);
            }
            Frame::Unknown { frame_type } => {
                return Err(FrameError::UnknownType(*frame_type));
            }
        }
        Ok(())
    }
}

fn control(out: &mut BytesMut, ty: u16, flags: u8, len: usize) -> Result<(), FrameError> {
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge);
    }
    out.put_u16(0x8000 | VERSION);
    out.put_u16(ty);
    out.put_u32((u32::from(flags) << 24) | len as u32);
    Ok(())
}

/// Decodes frames; owns the connection's incoming header zlib stream, so
/// every header block must pass through it in order (even for streams we
/// are about to refuse).
#[derive(Default)]
pub struct Decoder {
    headers: HeaderDecompressor,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one complete frame off the front of `buf`, or returns
    /// `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let word0 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if buf.len() < HEADER_LEN + len {
            // Reserve only what the (bounded, 24-bit) length asks for.
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let mut payload = buf.split_to(len).freeze();

        if word0 & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: word0,
                flags,
                data: payload,
            }));
        }
        let version = ((word0 >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let ty = (word0 & 0xffff) as u16;
        let need = |min: usize, exact: bool| -> Result<(), FrameError> {
            if len < min || (exact && len != min) {
                Err(FrameError::BadLength {
                    frame_type: ty,
                    len,
                })
            } else {
                Ok(())
            }
        };
        let frame = match ty {
            TYPE_SYN_STREAM => {
                need(10, false)?;
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                let associated_to = payload.get_u32() & 0x7fff_ffff;
                let priority = payload.get_u8() >> 5;
                let slot = payload.get_u8();
                let headers = self.block(&payload)?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    slot,
                    flags,
                    headers,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(4, false)?;
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                let headers = self.block(&payload)?;
                if ty == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need(8, true)?;
                Frame::RstStream {
                    stream_id: payload.get_u32() & 0x7fff_ffff,
                    status: payload.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                need(4, false)?;
                let n = payload.get_u32() as usize;
                // n is peer-controlled: compare without multiplying it.
                if payload.len() / 8 != n || payload.len() % 8 != 0 {
                    return Err(FrameError::BadLength {
                        frame_type: ty,
                        len,
                    });
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let w = payload.get_u32();
                    entries.push(Setting {
                        flags: (w >> 24) as u8,
                        id: w & 0x00ff_ffff,
                        value: payload.get_u32(),
                    });
                }
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                need(4, true)?;
                Frame::Ping {
                    id: payload.get_u32(),
                }
            }
            TYPE_GOAWAY => {
                // SPDY/2 peers send 4 bytes, SPDY/3 sends 8; take either.
                need(4, false)?;
                let last_good_stream_id = payload.get_u32() & 0x7fff_ffff;
                let status = if payload.len() >= 4 {
                    payload.get_u32()
                } else {
                    0
                };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(8, true)?;
                Frame::WindowUpdate {
                    stream_id: payload.get_u32() & 0x7fff_ffff,
                    delta: payload.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { frame_type: other },
        };
        Ok(Some(frame))
    }

    fn block(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        if compressed.is_empty() {
            return Ok(Headers::new());
        }
        self.headers.decompress(compressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        Encoder::new().encode(f, &mut out).unwrap();
        out.to_vec()
    }

    fn dec(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
        let mut b = BytesMut::from(bytes);
        Decoder::new().decode(&mut b)
    }

    #[test]
    fn data_frame_bytes() {
        let f = Frame::Data {
            stream_id: 5,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hi"),
        };
        let b = enc(&f);
        assert_eq!(b, [0, 0, 0, 5, 0x01, 0, 0, 2, b'h', b'i']);
        assert_eq!(dec(&b).unwrap(), Some(f));
    }

    #[test]
    fn fixed_size_control_frames_bytes() {
        let cases: Vec<(Frame, Vec<u8>)> = vec![
            (
                Frame::Ping { id: 7 },
                vec![0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7],
            ),
            (
                Frame::RstStream {
                    stream_id: 3,
                    status: rst::CANCEL,
                },
                vec![0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5],
            ),
            (
                Frame::WindowUpdate {
                    stream_id: 1,
                    delta: 0x1_0000,
                },
                vec![0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 1, 0, 0],
            ),
            (
                Frame::GoAway {
                    last_good_stream_id: 9,
                    status: goaway::OK,
                },
                vec![0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 0],
            ),
            (
                Frame::Settings {
                    flags: 0,
                    entries: vec![Setting {
                        flags: 0,
                        id: SETTINGS_INITIAL_WINDOW_SIZE,
                        value: 1 << 20,
                    }],
                },
                vec![
                    0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0x10, 0, 0,
                ],
            ),
        ];
        for (f, want) in cases {
            assert_eq!(enc(&f), want, "{f:?}");
            assert_eq!(dec(&want).unwrap(), Some(f));
        }
    }

    /// A SYN_STREAM as Go's spdy framer (used by spdystream, i.e. kubectl and
    /// crictl) emits for the remotecommand error stream: control bit,
    /// version 3, type 1, no flags, stream 1, no associated stream,
    /// priority 0, then a header block. The block is a hand-built zlib
    /// stream (dictionary header + stored deflate block + sync marker), so
    /// the bytes are fixed by the spec, not by any compressor.
    #[test]
    fn decodes_go_style_syn_stream() {
        let raw = Headers::new().with("streamtype", "error").to_block();
        let mut block = vec![0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x00];
        let n = raw.len() as u16;
        block.extend_from_slice(&n.to_le_bytes());
        block.extend_from_slice(&(!n).to_le_bytes());
        block.extend_from_slice(&raw);
        block.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
        let len = 10 + block.len();
        let mut frame = vec![0x80, 0x03, 0x00, 0x01, 0x00, 0, 0, len as u8];
        frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        frame.extend_from_slice(&block);
        match dec(&frame).unwrap() {
            Some(Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers,
                ..
            }) => assert_eq!(headers.get("streamtype"), Some("error")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn header_frames_round_trip_through_shared_zlib_streams() {
        let mut e = Encoder::new();
        let mut d = Decoder::new();
        let mut wire = BytesMut::new();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                slot: 0,
                flags: FLAG_FIN,
                headers: Headers::new().with("streamtype", "error"),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::Headers {
                stream_id: 1,
                flags: 0,
                headers: Headers::new().with("x", "y"),
            },
        ];
        for f in &frames {
            e.encode(f, &mut wire).unwrap();
        }
        // SYN_REPLY prefix is byte-exact: type 2, stream id after header.
        assert_eq!(&wire[..2], &[0x80, 0x03]);
        for f in &frames {
            assert_eq!(d.decode(&mut wire).unwrap().as_ref(), Some(f));
        }
        assert!(wire.is_empty());
    }

    #[test]
    fn partial_input_waits() {
        let b = enc(&Frame::Ping { id: 1 });
        for cut in 0..b.len() {
            assert_eq!(dec(&b[..cut]).unwrap(), None);
        }
    }

    #[test]
    fn rejects_bad_version_and_lengths() {
        assert!(matches!(
            dec(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]),
            Err(FrameError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            dec(&[0x80, 3, 0, 6, 0, 0, 0, 3, 0, 0, 0]),
            Err(FrameError::BadLength { .. })
        ));
        // SETTINGS claiming 2^32-1 entries.
        assert!(dec(&[0x80, 3, 0, 4, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).is_err());
        // Unknown control type is ignored, not an error.
        assert_eq!(
            dec(&[0x80, 3, 0, 10, 0, 0, 0, 0]).unwrap(),
            Some(Frame::Unknown { frame_type: 10 })
        );
    }
}
