//! The CNI side of crisp. For now it holds what every pod needs before any CNI plugin runs: a
//! loopback interface that is up (what the reference `loopback` plugin does). The conflist
//! runtime and the `crisp-bridge` plugin build on this crate.

pub mod loopback;
