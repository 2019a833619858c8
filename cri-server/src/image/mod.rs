//! The image service: image records (id = config digest, tags, digests), lookups by any of
//! them, images brought in from the import directory, and pulls from registries. Layers live in the snapshotter.

pub mod import_dir;
pub mod pull;
pub mod pulls;
pub mod reference;
pub mod store;

pub use store::{ImageRecord, ImageStore};
