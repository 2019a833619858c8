//! The CRI gRPC layer: translates requests into `service::Runtime` calls and records into CRI
//! messages. Each call gets a tracing span with the pod/container id it concerns.

pub mod convert;
pub mod image_service;
pub mod pod_metrics;
pub mod pull_progress;
pub mod runtime_service;
pub mod verbose_info;

use std::pin::Pin;
use std::sync::Arc;
use tonic::Status;

/// The object both CRI services (and crisp's `PullProgress`) are implemented on.
#[derive(Clone)]
pub struct Cri {
    pub runtime: Arc<crate::service::Runtime>,
}

/// The answer of a `Stream*` list RPC (KEP-5825): lists of at least one item, then EOF.
pub type ListStream<T> =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Items per message of a `Stream*` RPC: kubelet gathers them all anyway, so this only keeps
/// each message far below gRPC's 16 MiB limit (a container's entry is well under 4 KiB even
/// with many labels and annotations; a pod stats entry with its containers' a few times that).
const STREAM_BATCH: usize = 256;

/// The same items a unary list answers, in messages of [`STREAM_BATCH`]; none for no items.
pub fn in_batches<I: Send + 'static, T: Send + 'static>(
    items: Vec<I>,
    wrap: fn(Vec<I>) -> T,
) -> ListStream<T> {
    let mut batches = Vec::with_capacity(items.len().div_ceil(STREAM_BATCH));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        batches.push(Ok(wrap(items.by_ref().take(STREAM_BATCH).collect())));
    }
    Box::pin(tokio_stream::iter(batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn batches_hold_every_item_once_and_none_is_empty() {
        for n in [0, 1, STREAM_BATCH, STREAM_BATCH + 1, 3 * STREAM_BATCH - 1] {
            let got: Vec<Vec<usize>> = in_batches((0..n).collect(), |v| v)
                .map(|r| r.unwrap())
                .collect()
                .await;
            assert!(got.iter().all(|b| !b.is_empty() && b.len() <= STREAM_BATCH));
            assert_eq!(got.concat(), (0..n).collect::<Vec<_>>());
        }
    }
}
