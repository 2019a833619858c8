//! One module per (operation, transport) pair; each drives an upgraded
//! connection to completion.

pub mod spdy_exec;
pub mod spdy_portforward;
pub mod ws_exec;
pub mod ws_link;
pub mod ws_portforward;
pub mod ws_tunnel;

use std::time::Duration;

/// How long the client may take to open the streams a session needs
/// (kubelet's streamCreationTimeout).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// After the runtime returns, how long its output pipes may take to drain
/// before the status is sent anyway (guards against a runtime that leaked
/// a writer handle into a background task).
pub const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest WebSocket message accepted from a client.
pub const MAX_WS_MESSAGE: usize = 8 * 1024 * 1024;

/// Read size when pumping process output to the client.
pub const OUTPUT_CHUNK: usize = 32 * 1024;

/// Aborts the task when dropped, so a session that is itself aborted (on
/// server shutdown) does not leave its socket reader running.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
