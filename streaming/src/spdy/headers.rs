//! SPDY/3 name/value header blocks: the (de)serialisation of the block and
//! its zlib compression with the SPDY dictionary.
//!
//! Each direction of a connection uses one zlib stream for all its header
//! blocks; every block ends with a sync flush so the peer can decode it
//! without waiting for more. Hence the compressor/decompressor must live as
//! long as the connection and see every block in frame order.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::dictionary;
use super::FrameError;

/// Upper bound on a decompressed header block: k8s clients send a handful
/// of short headers, so anything near this is a zip bomb.
pub const MAX_DECOMPRESSED: usize = 256 * 1024;
/// Upper bound on name/value pairs in one block, for the same reason.
pub const MAX_PAIRS: usize = 1024;

/// An ordered list of header name/value pairs. Names are lower-case (SPDY
/// requires it on the wire; we lower-case on decode to be lenient). A name
/// may repeat; on the wire repeated values are joined with NUL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pair; the name is lower-cased.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Serialises to the uncompressed SPDY/3 block layout:
    /// `u32 count, { u32 len, name, u32 len, value }*`, merging repeated
    /// names into one NUL-separated value (SPDY forbids duplicate names).
    pub fn to_block(&self) -> Vec<u8> {
        let mut merged: Vec<(String, String)> = Vec::new();
        for (n, v) in &self.0 {
            match merged.iter_mut().find(|(m, _)| m == n) {
                Some((_, mv)) => {
                    mv.push('\0');
                    mv.push_str(v);
                }
                None => merged.push((n.clone(), v.clone())),
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&len32(merged.len()).to_be_bytes());
        for (n, v) in &merged {
            out.extend_from_slice(&len32(n.len()).to_be_bytes());
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(&len32(v.len()).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// Parses an uncompressed block; every length is bounds-checked since
    /// the block comes from the peer.
    pub fn from_block(block: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader(block);
        let count = r.u32()? as usize;
        if count > MAX_PAIRS {
            return Err(FrameError::HeaderBlock("too many header pairs"));
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let name = r.bytes()?;
            if name.is_empty() {
                return Err(FrameError::HeaderBlock("empty header name"));
            }
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            let value = r.bytes()?;
            for v in value.split(|&b| b == 0) {
                pairs.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
            }
        }
        if !r.0.is_empty() {
            return Err(FrameError::HeaderBlock("trailing bytes after header pairs"));
        }
        Ok(Headers(pairs))
    }
}

/// Header strings we emit are tiny; saturate rather than panic if a caller
/// ever passes something absurd (the peer will then reject the block).
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, FrameError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or(FrameError::HeaderBlock("truncated length"))?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let n = self.u32()? as usize;
        if n > self.0.len() {
            return Err(FrameError::HeaderBlock("length exceeds block"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
}

/// Compresses outgoing header blocks (one per connection direction).
pub struct HeaderCompressor {
    z: Compress,
}

impl HeaderCompressor {
    pub fn new() -> Self {
        // Level 9 is what Go's framer uses; blocks are tiny so speed is moot.
        let mut z = Compress::new(Compression::best(), true);
        // Only fails on an invalid stream state, which a fresh one is not;
        // if it ever did, the peer would fail to inflate and drop us.
        let _ = z.set_dictionary(dictionary());
        Self { z }
    }

    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let input = headers.to_block();
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|_| FrameError::HeaderBlock("zlib compression failed"))?;
            consumed += (self.z.total_in() - before) as usize;
            // A sync flush is complete once all input is taken and zlib
            // left spare room in the output buffer.
            if consumed >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

/// Decompresses incoming header blocks (one per connection direction).
pub struct HeaderDecompressor {
    z: Decompress,
}

impl HeaderDecompressor {
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }

    pub fn decompress(&mut self, input: &[u8]) -> Result<Headers, FrameError> {
        let mut out: Vec<u8> = Vec::with_capacity((input.len() * 4).clamp(256, 16 * 1024));
        let mut consumed = 0usize;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_DECOMPRESSED {
                    return Err(FrameError::HeaderBlock("decompressed block too large"));
                }
                out.reserve(out.len().clamp(256, MAX_DECOMPRESSED - out.len()));
            }
            let before_in = self.z.total_in();
            let before_out = out.len();
            let status =
                match self
                    .z
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                {
                    Ok(s) => s,
                    Err(e) => match e.needs_dictionary() {
                        // The first block's zlib header names a preset
                        // dictionary; only the SPDY one is acceptable.
                        Some(id) if id == super::dictionary::DICTIONARY_ID => {
                            consumed += (self.z.total_in() - before_in) as usize;
                            self.z
                                .set_dictionary(dictionary())
                                .map_err(|_| FrameError::HeaderBlock("zlib dictionary rejected"))?;
                            continue;
                        }
                        Some(_) => return Err(FrameError::HeaderBlock("unknown zlib dictionary")),
                        None => return Err(FrameError::HeaderBlock("corrupt zlib data")),
                    },
                };
            let took = (self.z.total_in() - before_in) as usize;
            consumed += took;
            if status == Status::StreamEnd {
                return Err(FrameError::HeaderBlock("peer ended its zlib stream"));
            }
            if consumed >= input.len() && out.len() < out.capacity() {
                break;
            }
            if took == 0 && out.len() == before_out && out.len() < out.capacity() {
                return Err(FrameError::HeaderBlock("truncated zlib data"));
            }
        }
        Headers::from_block(&out)
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_layout_is_byte_exact() {
        let h = Headers::new().with("streamType", "error").with("a", "1");
        let b = h.to_block();
        let mut want = vec![0, 0, 0, 2];
        want.extend_from_slice(b"\0\0\0\x0astreamtype\0\0\0\x05error");
        want.extend_from_slice(b"\0\0\0\x01a\0\0\0\x011");
        assert_eq!(b, want);
        assert_eq!(Headers::from_block(&b).unwrap(), h);
    }

    #[test]
    fn repeated_names_join_with_nul() {
        let h = Headers::new().with("x", "1").with("x", "2");
        let b = h.to_block();
        assert_eq!(b, b"\0\0\0\x01\0\0\0\x01x\0\0\0\x031\x002".to_vec());
        assert_eq!(Headers::from_block(&b).unwrap(), h);
    }

    #[test]
    fn compressed_stream_starts_with_spdy_dictionary_header() {
        let mut c = HeaderCompressor::new();
        let out = c.compress(&Headers::new().with("port", "8080")).unwrap();
        // CMF 0x78 (deflate, 32K window), FLG with FDICT + level 3, DICTID.
        assert_eq!(&out[..6], &[0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2]);
        // Sync flush ends with the empty stored block marker.
        assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    }

    #[test]
    fn round_trip_over_shared_stream() {
        let mut c = HeaderCompressor::new();
        let mut d = HeaderDecompressor::new();
        for i in 0..20 {
            let h = Headers::new()
                .with("streamtype", "data")
                .with("port", &format!("{}", 8000 + i))
                .with("requestid", &i.to_string());
            let z = c.compress(&h).unwrap();
            assert_eq!(d.decompress(&z).unwrap(), h);
        }
    }

    /// A block built by hand from RFC 1950/1951: zlib header naming the SPDY
    /// dictionary, then a non-final stored block holding the raw pairs, then
    /// the sync-flush marker. Any conforming SPDY/3 decoder must accept it.
    #[test]
    fn decodes_hand_built_stored_block() {
        let raw = Headers::new().with("streamtype", "stdin").to_block();
        let mut z = vec![0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2];
        z.push(0x00); // BFINAL=0, BTYPE=00 (stored)
        let n = raw.len() as u16;
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&(!n).to_le_bytes());
        z.extend_from_slice(&raw);
        z.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        let mut d = HeaderDecompressor::new();
        let h = d.decompress(&z).unwrap();
        assert_eq!(h.get("streamtype"), Some("stdin"));
    }

    #[test]
    fn hostile_blocks_are_errors_not_panics() {
        let mut d = HeaderDecompressor::new();
        assert!(d.decompress(b"garbage").is_err());
        assert!(Headers::from_block(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(Headers::from_block(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(Headers::from_block(&[0, 0]).is_err());
        // Wrong dictionary id.
        let mut d = HeaderDecompressor::new();
        assert!(d
            .decompress(&[0x78, 0xf9, 1, 2, 3, 4, 0, 0, 0, 0xff, 0xff])
            .is_err());
    }

    #[test]
    fn zip_bomb_is_rejected() {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(dictionary()).unwrap();
        let mut block = vec![0, 0, 0, 1, 0, 0, 0, 1, b'a'];
        block.extend_from_slice(&(4_000_000u32).to_be_bytes());
        block.extend(std::iter::repeat_n(b'x', 4_000_000));
        let mut out = Vec::with_capacity(1 << 20);
        z.compress_vec(&block, &mut out, FlushCompress::Sync)
            .unwrap();
        let mut d = HeaderDecompressor::new();
        assert!(d.decompress(&out).is_err());
    }
}
