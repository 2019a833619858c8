//! crisp-snapshotter: the content store and overlay2 snapshotter used by
//! crispd. See [`Snapshotter`] for the on-disk layout.

pub mod content;
pub mod diff;
pub mod digest;
pub mod error;
pub mod idmap;
pub mod image;
pub mod import;
pub mod manifest;
pub mod overlay;
mod snapshots;
mod tmpname;
pub mod unpack;
pub mod usage;
mod zstd;

pub use content::ContentStore;
pub use digest::{chain_id, Digest};
pub use error::{Error, Result};
pub use image::ImageConfig;
pub use import::{import_path, ImportedImage};
pub use snapshots::{
    validate_key, ActiveSnapshot, CommittedMeta, Compression, Snapshotter, StagedLayer,
};
pub use unpack::{unpack_layer, UnpackStats};
