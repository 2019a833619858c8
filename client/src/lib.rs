//! A small CRI v1 client for crisp: connection over a unix socket plus the
//! handful of request builders and call sequences that the tests, the README
//! demo and the benchmarks all need.

mod config;
mod connect;
mod error;
mod ops;

pub use config::{container_config, pod_config};
pub use connect::{channel, connect, CriClient};
pub use error::Error;

/// Re-exported so users of this crate name the same generated CRI types.
pub use crisp_cri_api::v1 as cri;
