//! sha256 content digests and the OCI chain-id rule.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A `sha256:<64 lowercase hex>` digest. Only sha256 is supported, which is
/// what every registry and builder produces in practice.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(Error::InvalidDigest {
                input: s.to_string(),
                reason: "missing algorithm prefix",
            });
        };
        if alg != "sha256" {
            return Err(Error::UnsupportedDigestAlgorithm(s.to_string()));
        }
        Digest::from_hex(hex).map_err(|_| Error::InvalidDigest {
            input: s.to_string(),
            reason: "expected 64 lowercase hex characters after \"sha256:\"",
        })
    }

    /// Builds a digest from the bare hex part (as used in blob file names).
    pub fn from_hex(hex: &str) -> Result<Digest> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(Error::InvalidDigest {
                input: hex.to_string(),
                reason: "expected 64 lowercase hex characters",
            });
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }
}

/// OCI chain id: the bottom layer's chain id is its diff id; every further
/// layer's is `sha256("<parent chain id> <diff id>")`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::sha256_of(format!("{p} {diff_id}").as_bytes()),
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Reader adapter that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream so the digest covers all of it.
    pub fn drain(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }

    pub fn bytes_read(&self) -> u64 {
        self.count
    }

    pub fn finish(self) -> (Digest, u64) {
        (
            Digest {
                hex: hex::encode(self.hasher.finalize()),
            },
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Writer-side twin of [`HashingReader`], used while ingesting.
pub(crate) struct HashingWriter<W> {
    pub inner: W,
    hasher: Sha256,
    pub count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn digest(&self) -> Digest {
        Digest {
            hex: hex::encode(self.hasher.clone().finalize()),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let d = Digest::sha256_of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(Digest::parse(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
        )
        .is_err());
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("sha512:abc").is_err());
        assert!(Digest::parse("e3b0").is_err());
        assert!(Digest::parse(
            "sha256:../../../../etc/passwd00000000000000000000000000000000000000"
        )
        .is_err());
    }

    #[test]
    fn chain_id_rule() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        assert_eq!(chain_id(None, &a), a);
        let expect = Digest::sha256_of(format!("{a} {b}").as_bytes());
        assert_eq!(chain_id(Some(&a), &b), expect);
    }
}
