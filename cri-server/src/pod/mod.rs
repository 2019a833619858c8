//! Pod sandboxes: the record kept on disk, its state machine, and what a sandbox is made of on
//! the host (namespaces, files, cgroup).

pub mod files;
pub mod namespaces;
pub mod network;
pub mod pause;
pub mod record;
pub mod userns;

pub use record::{SandboxRecord, SandboxState};
