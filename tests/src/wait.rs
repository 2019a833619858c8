use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` until it yields a value or `timeout` passes.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls a file (e.g. a container log, written asynchronously by the shim)
/// until its content satisfies `done`, and returns that content.
pub async fn wait_for_file(
    path: &Path,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let result = wait_until(&format!("{}", path.display()), timeout, || {
        let content = std::fs::read_to_string(path).ok()?;
        done(&content).then_some(content)
    })
    .await;
    result.map_err(|error| {
        let content =
            std::fs::read_to_string(path).unwrap_or_else(|e| format!("<unreadable: {e}>"));
        error.context(format!("{} now holds: {content:?}", path.display()))
    })
}
