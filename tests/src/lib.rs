//! Harness for crisp's integration tests: builds the test image, runs one
//! isolated crispd per test, and tears down everything it made afterwards, so
//! tests can run in parallel (nextest) and never leak mounts, cgroups or
//! processes onto the host.
//!
//! A test looks like this; the body returns `anyhow::Result` and
//! `expect_ok` turns an error into a panic, so that `Crispd`'s `Drop` knows
//! the test failed and prints crispd's log before cleaning up:
//!
//! ```ignore
//! use crisp_tests::{require_root, Crispd, TestPod, BUSYBOX};
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn example() {
//!     if !require_root() {
//!         return;
//!     }
//!     let crispd = Crispd::start().await.expect("starting crispd");
//!     crispd.expect_ok(check(&crispd).await);
//! }
//!
//! async fn check(crispd: &Crispd) -> anyhow::Result<()> {
//!     let mut client = crispd.client().await?;
//!     client.pull(BUSYBOX).await?;
//!     let pod = TestPod::start(&mut client, crispd, "example").await?;
//!     let id = pod.start_container(&mut client, "hello", &["echo", "hi"]).await?;
//!     client.wait_exited(&id, std::time::Duration::from_secs(10)).await?;
//!     client.stop_and_remove_pod(&pod.id).await?;
//!     crispd.assert_no_leaks();
//!     Ok(())
//! }
//! ```

mod bins;
mod cgroups;
mod cleanup;
mod cri_log;
mod crispd;
mod image;
mod layout;
mod leaks;
mod mounts;
mod network;
mod pod;
mod privileges;
mod procs;
mod raw_grpc;
mod registry;
mod stream_client;
mod token_server;
mod upgrade;
mod wait;

pub use bins::{bin_path, repo_root, target_dir};
pub use cgroups::is_v2 as cgroup_v2;
pub use cleanup::teardown_dir;
pub use cri_log::{parse_cri_log, parse_cri_log_line, validate_cri_log_line, CriLogLine};
pub use crispd::{images_command, images_import, Crispd, BLACKHOLE_REGISTRY};
pub use image::busybox_layout;
pub use layout::{layered_image, multi_arch_index, pseudo_random, BuiltImage, Entry};
pub use pod::{
    expect_code, pid_mode, sh, tick_count, timed_stop, with_sc, TestPod, BUSYBOX, TICKER,
};
pub use privileges::require_root;
pub use procs::{children_named, process_alive};
pub use raw_grpc::{unary_call, RawAnswer};
pub use registry::{assert_no_partial_pull, corrupt, restore, temp_layout, TestRegistry};
pub use token_server::{TokenRequest, TokenServer};
pub use upgrade::{upgrade_baseline, Baseline, UPGRADE_FROM_VAR};
pub use wait::{wait_for_file, wait_until};

pub use crisp_client::{container_config, cri, pod_config, CriClient};

pub use network::{Plugins, TestNetwork};
pub use stream_client::{ws_connect, ws_exec, ws_exec_with, ExecResult, WsConn};
