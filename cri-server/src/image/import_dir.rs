//! Images for air-gapped nodes: OCI layouts and archives dropped into the import directory.
//! Entries are imported at startup and again when a pull misses; an entry already imported (same
//! path, size and mtime) is skipped.

use super::reference::Reference;
use super::store::ImageStore;
use crisp_snapshotter::Snapshotter;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

pub struct ImportDir {
    dir: PathBuf,
    seen: Mutex<HashMap<PathBuf, (u64, SystemTime)>>,
}

impl ImportDir {
    pub fn new(dir: PathBuf) -> ImportDir {
        ImportDir {
            dir,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Imports every new entry; returns how many images were added. Called from a blocking
    /// context (hashing and unpacking are CPU and disk bound).
    pub fn scan(&self, snapshotter: &Snapshotter, images: &ImageStore) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        // Hidden names are files still being copied in (`crispd images import`).
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        paths.sort();
        let mut added = 0;
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let stamp = (
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            );
            {
                let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                if seen.get(&path) == Some(&stamp) {
                    continue;
                }
            }
            match crisp_snapshotter::import::import_path(snapshotter, &path) {
                Ok(found) => {
                    for img in &found {
                        let names = names_for(&path, &img.names);
                        match images.add(img, &names) {
                            Ok(rec) => {
                                added += 1;
                                tracing::info!(image = %rec.id, tags = ?rec.repo_tags, from = %path.display(), "imported image");
                            }
                            Err(e) => {
                                tracing::error!(from = %path.display(), error = %e, "recording imported image")
                            }
                        }
                    }
                    self.seen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(path, stamp);
                }
                Err(e) => tracing::warn!(from = %path.display(), error = %e, "import failed"),
            }
        }
        added
    }
}

/// Turns the names found in an archive into references. A bare tag (what `skopeo copy
/// oci:dir:tag` writes as `org.opencontainers.image.ref.name`) is taken as a tag of the entry's
/// own name (`busybox/` or `busybox.tar` → `busybox:<tag>`).
pub(crate) fn names_for(path: &Path, raw: &[String]) -> Vec<Reference> {
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| {
            n.trim_end_matches(".tar.gz")
                .trim_end_matches(".tgz")
                .trim_end_matches(".tar")
        })
        .unwrap_or("image")
        .to_lowercase();
    raw.iter()
        .filter_map(|n| {
            let full = if n.contains('/') || n.contains(':') && !n.starts_with(':') {
                n.clone()
            } else {
                format!("{stem}:{n}")
            };
            match Reference::parse(&full) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(name = %n, error = %e, "ignoring an unusable image name");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_tags_take_the_entry_name() {
        let n = names_for(Path::new("/i/busybox"), &["latest".into()]);
        assert_eq!(n[0].tagged().unwrap(), "docker.io/library/busybox:latest");
        let n = names_for(
            Path::new("/i/x.tar"),
            &["docker.io/library/busybox:1".into()],
        );
        assert_eq!(n[0].tagged().unwrap(), "docker.io/library/busybox:1");
    }
}
