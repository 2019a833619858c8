//! crispd's library half: the binary (`main.rs`) is only its command line. The library exists
//! so that `fuzz/` can drive the image reference parser and the OCI spec builder directly.

pub mod api;
pub mod cgroups;
pub mod cli;
pub mod config;
pub mod container;
pub mod cri;
pub mod daemon;
pub mod error;
pub mod ids;
pub mod image;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod pod;
pub mod service;
pub mod store;
