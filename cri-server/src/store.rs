//! Metadata on disk: one JSON file per object, replaced atomically, so a SIGKILL at any point
//! leaves either the old or the new record.

use crate::error::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use std::path::PathBuf;

pub struct RecordStore<T> {
    dir: PathBuf,
    _t: PhantomData<T>,
}

impl<T: Serialize + DeserializeOwned> RecordStore<T> {
    pub fn open(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        Ok(RecordStore {
            dir,
            _t: PhantomData,
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn save(&self, id: &str, record: &T) -> Result<()> {
        let bytes = serde_json::to_vec(record).context(|| format!("encoding record {id}"))?;
        crisp_api::atomic_file::write_atomic(&self.path(id), &bytes)
            .context(|| format!("writing record {id}"))
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(
                crate::error::Error::internal(format!("removing record {id}"), e),
            ),
            _ => Ok(()),
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
