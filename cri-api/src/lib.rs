//! The Kubernetes CRI v1 API that crispd serves and crisp's client, bench and tests speak.
//!
//! Generated from the `api.proto` vendored in `proto/` (its version and source are in
//! `proto/VENDOR.md`), with serde derives so crispd can keep the configs it was given.

pub mod env_value;

/// `runtime.v1`: messages, `runtime_service_{client,server}`, `image_service_{client,server}`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}
