//! Metadata on disk: one JSON file per object, replaced atomically, so a SIGKILL at any point
//! leaves either the old or the new record.
//!
//! Saves are group-committed: a record is replaced at once (enough for any crash of crispd,
//! the page cache outlives it) and fsynced by the [`Flusher`] within [`FLUSH_DELAY`] (what a
//! machine crash needs). A pod start saves five records; fsyncing each in line (file and
//! directory) cost more than everything else crispd does for it on a busy disk.

use crate::error::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a saved record may wait for its fsync.
pub const FLUSH_DELAY: Duration = Duration::from_millis(500);

/// Files (and directories whose entries changed) waiting for an fsync.
#[derive(Clone, Default)]
pub struct Flusher {
    pending: Arc<Mutex<BTreeSet<PathBuf>>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Flusher {
    fn mark(&self, paths: impl IntoIterator<Item = PathBuf>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend(paths);
        self.wake.notify_one();
    }

    /// Flushes what is pending, then whatever is marked later, batched per [`FLUSH_DELAY`].
    pub async fn run(self) {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(FLUSH_DELAY).await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.flush_now()).await;
        }
    }

    /// Fsyncs everything pending now (also at shutdown).
    pub fn flush_now(&self) {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for path in batch {
            // Gone again since (a removed record): its directory is in the batch too.
            match std::fs::File::open(&path).and_then(|f| f.sync_all()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), error = %e, "fsync failed")
                }
                _ => {}
            }
        }
    }
}

pub struct RecordStore<T> {
    dir: PathBuf,
    flusher: Flusher,
    _t: PhantomData<T>,
}

impl<T: Serialize + DeserializeOwned> RecordStore<T> {
    pub fn open(dir: PathBuf, flusher: Flusher) -> Result<Self> {
        std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        Ok(RecordStore {
            dir,
            flusher,
            _t: PhantomData,
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn save(&self, id: &str, record: &T) -> Result<()> {
        let bytes = serde_json::to_vec(record).context(|| format!("encoding record {id}"))?;
        let path = self.path(id);
        crisp_api::atomic_file::replace(&path, &bytes)
            .context(|| format!("writing record {id}"))?;
        self.flusher.mark([path, self.dir.clone()]);
        Ok(())
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(
                crate::error::Error::internal(format!("removing record {id}"), e),
            ),
            _ => {
                self.flusher.mark([self.dir.clone()]);
                Ok(())
            }
        }
    }

    /// Every record; unreadable ones are reported and skipped rather than stopping startup.
    pub fn load_all(&self) -> Result<Vec<(String, T)>> {
        let mut out = Vec::new();
        let entries =
            std::fs::read_dir(&self.dir).context(|| format!("reading {}", self.dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|n| !n.starts_with('.'))
            else {
                continue;
            };
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(rec) => out.push((id.to_string(), rec)),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "skipping unreadable record")
                }
            }
        }
        Ok(out)
    }
}
