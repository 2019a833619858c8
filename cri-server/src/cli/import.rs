//! `crispd images import FILE`: an OCI layout, OCI archive or `docker save` tar into crispd's
//! image store, with progress (`progress.rs`).
//!
//! The store belongs to whoever holds the root lock. Without a running crispd the import runs
//! here, directly into the store. With one, the file is copied into its import directory
//! (under a hidden name, then renamed, so the daemon never sees half a file); the daemon
//! imports it when a pull of one of its names misses, or at its next start.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::progress::{Item, Reporter};
use crate::config::Config;
use crate::image::import_dir::names_for;
use crate::image::store::ImageStore;
use crate::lock;

pub fn run(cfg: &Config, file: &Path) -> Result<()> {
    let meta = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
    let total = size_of(file, &meta);
    std::fs::create_dir_all(&cfg.root)
        .with_context(|| format!("creating {}", cfg.root.display()))?;
    let progress = Progress::start(file, total);
    let result = match lock::acquire(
        &cfg.root.join("crispd.lock"),
        &format!("root {}", cfg.root.display()),
    ) {
        Ok(_lock) => import_here(cfg, file),
        Err(lock::LockError::Held { .. }) => hand_to_daemon(cfg, file, meta.is_dir()),
        Err(e) => Err(e.into()),
    };
    // The result after the display's last word: on a terminal that redraws its lines.
    progress.stop(result.is_ok());
    let said = result?;
    if !said.is_empty() {
        println!("{said}");
    }
    Ok(())
}

/// Imports into the store; says what (a line per image: id, tags).
fn import_here(cfg: &Config, file: &Path) -> Result<String> {
    let snapshotter =
        crisp_snapshotter::Snapshotter::open(&cfg.root).context("opening the snapshotter")?;
    let flusher = crate::store::Flusher::default();
    let images = ImageStore::open(cfg.root.join("images"), flusher.clone())?;
    let found = crisp_snapshotter::import_path(&snapshotter, file)
        .with_context(|| format!("importing {}", file.display()))?;
    let mut said = Vec::new();
    for img in &found {
        let rec = images.add(img, &names_for(file, &img.names))?;
        said.push(format!("{} {}", rec.id, rec.repo_tags.join(" ")));
    }
    flusher.flush_now();
    Ok(said.join("\n"))
}

fn hand_to_daemon(cfg: &Config, file: &Path, is_dir: bool) -> Result<String> {
    let dir = cfg.import_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let Some(name) = file.file_name() else {
        bail!("{} has no file name", file.display());
    };
    let dest = dir.join(name);
    if dest.exists() {
        bail!("{} already exists", dest.display());
    }
    let tmp = dir.join(format!(".{}.partial", name.to_string_lossy()));
    // `cp -a` keeps a layout's tree as is; a hidden name keeps the daemon's scan away until the
    // rename publishes it whole.
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(file)
        .arg(&tmp)
        .status()
        .context("running cp")?;
    if !status.success() {
        let _ = if is_dir {
            std::fs::remove_dir_all(&tmp)
        } else {
            std::fs::remove_file(&tmp)
        };
        bail!(
            "copying {} to {} failed ({status})",
            file.display(),
            tmp.display()
        );
    }
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    Ok(format!(
        "crispd is running: copied to {}; it is imported when one of its names is pulled, or \
         at crispd's next start",
        dest.display()
    ))
}

fn size_of(path: &Path, meta: &std::fs::Metadata) -> u64 {
    if !meta.is_dir() {
        return meta.len();
    }
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The import's progress: bytes this process has read so far (`rchar` in /proc/self/io),
/// against the input's size. Reading is what an import does, so this tracks it without
/// threading a counter through the importer.
struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Reporter>>,
    item: Item,
    /// `rchar` when the import started.
    base: u64,
}

impl Progress {
    fn start(file: &Path, total: u64) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let base = read_chars();
        let item = Item {
            label: file.display().to_string(),
            state: "importing",
            done: 0,
            total,
        };
        let (d, mut it) = (done.clone(), item.clone());
        let thread = std::thread::spawn(move || {
            let mut reporter = Reporter::stderr();
            while !d.load(Ordering::Relaxed) {
                it.done = read_chars().saturating_sub(base).min(total);
                reporter.update(std::slice::from_ref(&it));
                std::thread::sleep(Duration::from_millis(300));
            }
            reporter
        });
        Progress {
            done,
            thread: Some(thread),
            item,
            base,
        }
    }

    fn stop(mut self, ok: bool) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(mut reporter) = self.thread.take().and_then(|t| t.join().ok()) {
            let mut it = self.item.clone();
            (it.state, it.done) = if ok {
                ("imported", it.total)
            } else {
                (
                    "failed",
                    read_chars().saturating_sub(self.base).min(it.total),
                )
            };
            reporter.finish(&[it]);
        }
    }
}

fn read_chars() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("rchar: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}
