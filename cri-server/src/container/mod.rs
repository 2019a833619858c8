//! Containers: the record and its state machine, the OCI spec built from CRI and image config,
//! and the client side of the per-container shim.

pub mod apparmor;
pub mod cdi;
pub mod checkpoint;
pub mod devices;
pub mod idmapped_binds;
pub mod image_volumes;
pub mod record;
pub mod seccomp;
pub mod shim_client;
pub mod spec;
pub mod staged_mounts;
pub mod stop_signal;
pub mod user;

pub use record::{ContainerRecord, ContainerState, ProcessUser};
