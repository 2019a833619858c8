//! Unique names for temporary files and directories. No RNG crate is needed:
//! pid + time + a process-wide counter cannot collide within one host, and
//! callers create with O_EXCL / mkdir so a collision is an error, not a race.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}
