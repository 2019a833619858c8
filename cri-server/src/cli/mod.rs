//! crispd's commands other than the daemon: `crispd images import` and `crispd images pull`,
//! which share one progress display.

pub mod import;
pub mod progress;
pub mod pull;
