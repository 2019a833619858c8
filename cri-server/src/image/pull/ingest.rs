//! Streams a blob from the network into the content store without holding it in memory. The
//! content store's `ingest` (blocking: it hashes and fsyncs) verifies digest and size and
//! publishes the blob atomically; this module only feeds it chunks through a small channel.

use std::io::{self, Read};

use bytes::Bytes;
use crisp_snapshotter::{ContentStore, Digest};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::progress::LayerProgress;

/// Why a blob did not make it into the store.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The connection failed or stalled: worth trying another endpoint or a retry.
    #[error("transfer failed: {0}")]
    Transfer(io::Error),
    /// The bytes arrived but are not the blob they claim to be.
    #[error("{0}")]
    Corrupt(String),
    /// Writing to the local store failed (full disk, I/O error).
    #[error("storing: {0}")]
    Store(crisp_snapshotter::Error),
}

/// Chunks in flight between the network task and the hashing writer: enough to keep both busy,
/// small enough that a slow disk does not buffer a layer in memory.
const CHANNEL_CHUNKS: usize = 16;

/// Streams `stream` into `store` as blob `digest` of `size` bytes, counting what arrives into
/// `progress`.
pub async fn ingest_stream(
    store: ContentStore,
    digest: Digest,
    size: u64,
    mut stream: BoxStream<'static, io::Result<Bytes>>,
    progress: Option<&LayerProgress>,
) -> Result<(), IngestError> {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let d = digest.clone();
    let writer = tokio::task::spawn_blocking(move || {
        store.ingest(
            &d,
            Some(size),
            ChannelReader {
                rx,
                chunk: Bytes::new(),
            },
        )
    });
    let mut transfer: Option<io::Error> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => {
                if let Some(p) = progress {
                    p.add(b.len() as u64);
                }
                // The writer stops reading once it has more than `size` bytes; that is its
                // error to report, not ours.
                if tx.send(Ok(b)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = tx
                    .send(Err(io::Error::other(format!("download failed: {e}"))))
                    .await;
                transfer = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let stored = writer
        .await
        .map_err(|e| IngestError::Transfer(io::Error::other(format!("ingest task: {e}"))))?;
    if let Some(e) = transfer {
        // oci-client checks the digest itself at the end of the stream and reports a mismatch
        // as an I/O error wrapping its `DigestError`.
        let corrupt = e
            .get_ref()
            .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>());
        return Err(if corrupt {
            IngestError::Corrupt(format!("content does not match digest {digest}: {e}"))
        } else {
            IngestError::Transfer(e)
        });
    }
    match stored {
        Ok(_) => Ok(()),
        Err(
            e @ (crisp_snapshotter::Error::DigestMismatch { .. }
            | crisp_snapshotter::Error::SizeMismatch { .. }),
        ) => Err(IngestError::Corrupt(e.to_string())),
        Err(e) => Err(IngestError::Store(e)),
    }
}

/// The blocking side of the channel, as a `Read` for `ContentStore::ingest`.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(parts: Vec<io::Result<Bytes>>) -> BoxStream<'static, io::Result<Bytes>> {
        futures_util::stream::iter(parts).boxed()
    }

    #[tokio::test]
    async fn verifies_and_classifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let data = b"hello world";
        let d = Digest::sha256_of(data);
        let ok = stream(vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ]);
        ingest_stream(store.clone(), d.clone(), 11, ok, None)
            .await
            .unwrap();
        assert!(store.contains(&d));

        let other = Digest::sha256_of(b"other");
        let bad = stream(vec![Ok(Bytes::from_static(b"hello world"))]);
        let e = ingest_stream(store.clone(), other.clone(), 11, bad, None)
            .await
            .unwrap_err();
        assert!(matches!(e, IngestError::Corrupt(_)), "{e}");

        let cut = stream(vec![
            Ok(Bytes::from_static(b"hel")),
            Err(io::Error::other("connection reset")),
        ]);
        let e = ingest_stream(store.clone(), other.clone(), 11, cut, None)
            .await
            .unwrap_err();
        assert!(matches!(e, IngestError::Transfer(_)), "{e}");
        assert!(!store.contains(&other));
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
    }
}
