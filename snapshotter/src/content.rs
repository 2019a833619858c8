//! Content-addressed blob store: `content/blobs/sha256/<hex>`.
//!
//! Blobs are written to `content/ingest/` first, fsynced, verified against
//! the expected digest and size, and only then renamed into place, so a blob
//! path that exists always holds verified content.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};
use crate::error::{io_ctx, Error, Result};
use crate::tmpname::unique_name;

#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store rooted at `root` (the `content` dir).
    pub fn open(root: &Path) -> Result<ContentStore> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        for d in [&blobs, &ingest] {
            fs::create_dir_all(d).map_err(io_ctx(|| format!("creating {}", d.display())))?;
        }
        Ok(ContentStore { blobs, ingest })
    }

    /// Removes leftovers of ingests interrupted by a crash. Only safe while no
    /// ingest is running, i.e. at daemon start.
    pub(crate) fn clean_ingest(&self) -> Result<()> {
        let entries = fs::read_dir(&self.ingest)
            .map_err(io_ctx(|| format!("reading {}", self.ingest.display())))?;
        for e in entries.flatten() {
            let p = e.path();
            if let Err(err) = fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %err, "cannot remove stale ingest file");
            }
        }
        Ok(())
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size in bytes of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        match fs::metadata(self.path(digest)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::BlobNotFound(digest.clone()))
            }
            Err(e) => Err(Error::Io {
                context: format!("stat blob {digest}"),
                source: e,
            }),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        File::open(self.path(digest)).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::BlobNotFound(digest.clone())
            } else {
                Error::Io {
                    context: format!("opening blob {digest}"),
                    source: e,
                }
            }
        })
    }

    /// Stores the stream as blob `expected`, verifying digest and (if given)
    /// size. On any mismatch or read error nothing is left behind. If the
    /// blob is already present the reader is not consumed.
    pub fn ingest(
        &self,
        expected: &Digest,
        expected_size: Option<u64>,
        reader: impl Read,
    ) -> Result<PathBuf> {
        let dest = self.path(expected);
        if dest.is_file() {
            return Ok(dest);
        }
        let what = format!("blob {expected}");
        let (tmp, actual, size) = self.write_temp(&what, expected_size, reader)?;
        let cleanup = |e: Error| {
            let _ = fs::remove_file(&tmp);
            e
        };
        if let Some(want) = expected_size {
            if want != size {
                return Err(cleanup(Error::SizeMismatch {
                    what,
                    expected: want,
                    actual: size,
                }));
            }
        }
        if &actual != expected {
            return Err(cleanup(Error::DigestMismatch {
                what,
                expected: expected.clone(),
                actual,
            }));
        }
        self.commit_temp(&tmp, &dest).map_err(cleanup)?;
        Ok(dest)
    }

    /// Stores a stream whose digest is not known in advance (e.g. a
    /// `layer.tar` in a docker-save archive) and returns its digest and size.
    pub fn ingest_unknown(&self, reader: impl Read) -> Result<(Digest, u64)> {
        self.ingest_unknown_tracked(reader).map(|(d, n, _)| (d, n))
    }

    /// Like [`ingest_unknown`](Self::ingest_unknown), also telling whether
    /// the blob was newly added (so an import can undo only its own work).
    pub(crate) fn ingest_unknown_tracked(&self, reader: impl Read) -> Result<(Digest, u64, bool)> {
        let (tmp, digest, size) = self.write_temp("unnamed blob", None, reader)?;
        let dest = self.path(&digest);
        if dest.is_file() {
            let _ = fs::remove_file(&tmp);
            return Ok((digest, size, false));
        }
        if let Err(e) = self.commit_temp(&tmp, &dest) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok((digest, size, true))
    }

    fn write_temp(
        &self,
        what: &str,
        limit: Option<u64>,
        reader: impl Read,
    ) -> Result<(PathBuf, Digest, u64)> {
        let tmp = self.ingest.join(unique_name("ingest"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_ctx(|| format!("creating {}", tmp.display())))?;
        let mut w = HashingWriter::new(file);
        // Read one byte past the expected size so an oversized stream is
        // detected without buffering an unbounded amount of it.
        let copied = match limit {
            Some(n) => io::copy(&mut reader.take(n.saturating_add(1)), &mut w),
            None => io::copy(&mut { reader }, &mut w),
        };
        let res = copied
            .map_err(io_ctx(|| format!("reading {what}")))
            .and_then(|_| {
                w.inner
                    .sync_all()
                    .map_err(io_ctx(|| format!("fsync {}", tmp.display())))
            });
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok((tmp, w.digest(), w.count))
    }

    fn commit_temp(&self, tmp: &Path, dest: &Path) -> Result<()> {
        fs::rename(tmp, dest).map_err(io_ctx(|| {
            format!("renaming {} to {}", tmp.display(), dest.display())
        }))?;
        // Make the rename itself durable; a failure here is only a
        // durability concern, the blob is already correct.
        if let Ok(dir) = File::open(&self.blobs) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Reads a whole blob, re-verifying its digest (used for small JSON
    /// documents, where a corrupted file must not be trusted).
    pub fn read_to_vec(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut buf)
            .map_err(io_ctx(|| format!("reading blob {digest}")))?;
        let actual = Digest::sha256_of(&buf);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {digest} (corrupted on disk)"),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(buf)
    }

    /// Removes a blob; a missing blob is not an error.
    pub fn remove(&self, digest: &Digest) -> Result<()> {
        match fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io {
                context: format!("removing blob {digest}"),
                source: e,
            }),
        }
    }

    /// All stored blob digests (files with invalid names are skipped).
    pub fn list(&self) -> Result<Vec<Digest>> {
        let entries = fs::read_dir(&self.blobs)
            .map_err(io_ctx(|| format!("reading {}", self.blobs.display())))?;
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(io_ctx(|| format!("reading {}", self.blobs.display())))?;
            if let Some(d) = e
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Writes `bytes` as a blob and returns its digest (for documents we create).
pub(crate) fn put_bytes(store: &ContentStore, bytes: &[u8]) -> Result<Digest> {
    let d = Digest::sha256_of(bytes);
    store.ingest(&d, Some(bytes.len() as u64), bytes)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let data = b"hello world";
        let d = Digest::sha256_of(data);
        let p = cs.ingest(&d, Some(11), &data[..]).unwrap();
        assert!(cs.contains(&d));
        assert_eq!(fs::read(p).unwrap(), data);
        assert_eq!(cs.read_to_vec(&d).unwrap(), data);

        let bad = Digest::sha256_of(b"other");
        let err = cs.ingest(&bad, None, &data[..]).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!cs.contains(&bad));
        let other = Digest::sha256_of(b"hello worlds");
        let err = cs
            .ingest(&other, Some(11), &b"hello worlds"[..])
            .unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        assert!(!cs.contains(&other));
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);

        cs.remove(&d).unwrap();
        cs.remove(&d).unwrap();
        assert!(!cs.contains(&d));
        assert!(matches!(cs.read_to_vec(&d), Err(Error::BlobNotFound(_))));
    }
}
