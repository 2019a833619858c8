//! The CNI side of crisp:
//! - [`runtime`]: what crispd calls to set up and tear down pod networking by running CNI
//!   plugins from a conflist (libcni's job);
//! - [`bridge`]: the `crisp-bridge` plugin (bridge + host-local + portmap in one binary), with
//!   [`ipam`], [`netlink`] and [`netns`] as its building blocks;
//! - [`loopback`]: bringing `lo` up in a pod's namespace.

pub mod bridge;
pub mod ipam;
pub mod loopback;
pub mod netlink;
pub mod netns;
pub mod runtime;
pub mod types;
