//! End-to-end tests: a real server on loopback, a fake runtime, and test
//! clients speaking SPDY/3.1 and WebSocket the way kubectl/crictl do.

mod client;
mod exec;
mod fake;
mod http;
mod portforward;
