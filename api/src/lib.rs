//! Types and conventions shared by `crispd` and `crisp-shim`.
//!
//! The two processes meet in three places: the containerd Task API over ttrpc (types from
//! `containerd-shim-protos`), the per-container directory the shim keeps its socket and exit
//! record in, and the way crispd asks the shim to write a CRI log. All three are defined here so
//! neither side can drift from the other. A fourth, the attach socket, carries a running
//! container's stdio between the shim and crispd's streaming server ([`attach`]). Small
//! pieces the other crates share live here too ([`atomic_file`], [`boot`], [`process_exit`]),
//! how a container's cgroup is named in its spec ([`cgroups_path`]), the cgroup v1 mount points
//! crispd hands each shim ([`cgroup_mounts`]), and the one annotation
//! crispd passes to the shim's executor ([`raw_env`]).

pub mod atomic_file;
pub mod attach;
pub mod boot;
pub mod cgroup_mounts;
pub mod cgroups_path;
pub mod exit_record;
pub mod process_exit;
pub mod raw_env;
pub mod shim_dir;
pub mod stdio_target;

pub use exit_record::ExitRecord;
pub use shim_dir::ShimDir;
pub use stdio_target::StdioTarget;
