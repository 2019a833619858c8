//! The crate's single error type. Every variant names the object it is about
//! (a digest, a path, a tar entry) so a log line is actionable on its own.

use std::path::PathBuf;

use crate::digest::Digest;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest { input: String, reason: &'static str },

    #[error("unsupported digest algorithm in {0:?} (only sha256 is supported)")]
    UnsupportedDigestAlgorithm(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::errno::Errno,
    },

    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },

    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    #[error("blob {0} not found in the content store")]
    BlobNotFound(Digest),

    #[error("refusing tar entry {path:?}: {reason}")]
    UnsafeEntry { path: String, reason: String },

    #[error("tar entry {path:?}: {context}: {source}")]
    Entry {
        path: String,
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("tar entry {path:?}: {context}: {source}")]
    EntrySys {
        path: String,
        context: String,
        #[source]
        source: nix::errno::Errno,
    },

    #[error("tar entry {path:?} has unsupported type {kind}")]
    UnsupportedEntryType { path: String, kind: String },

    #[error("unsupported: {0}")]
    Unsupported(String),

    #[error("invalid snapshot key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },

    #[error("layer chain {0} is not committed")]
    NotCommitted(Digest),

    #[error("active snapshot {key:?} already exists on top of {existing}, not {requested}")]
    ActiveParentMismatch {
        key: String,
        existing: String,
        requested: String,
    },

    #[error("snapshot chain starting at {0} is longer than {1} layers or has a cycle")]
    ChainTooLong(Digest, usize),

    #[error("overlay mount options for {target} are {len} bytes, over the one-page limit of the legacy mount(2) API")]
    MountOptionsTooLong { target: PathBuf, len: usize },

    #[error("path {path} cannot be used in overlay mount options: {reason}")]
    InvalidMountPath { path: PathBuf, reason: &'static str },

    #[error("cannot parse {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid image {what}: {reason}")]
    InvalidImage { what: String, reason: String },
}

/// Adapter for `map_err` on `std::io` results: `.map_err(io_ctx(|| format!(..)))`.
pub(crate) fn io_ctx<F: FnOnce() -> String>(context: F) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        context: context(),
        source,
    }
}
