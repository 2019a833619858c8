//! The CRI gRPC layer: translates requests into `service::Runtime` calls and records into CRI
//! messages. Each call gets a tracing span with the pod/container id it concerns.

pub mod convert;
pub mod image_service;
pub mod pod_metrics;
pub mod pull_progress;
pub mod runtime_service;
pub mod verbose_info;

use std::sync::Arc;

/// The object both CRI services (and crisp's `PullProgress`) are implemented on.
#[derive(Clone)]
pub struct Cri {
    pub runtime: Arc<crate::service::Runtime>,
}
