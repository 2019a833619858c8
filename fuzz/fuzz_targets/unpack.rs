//! The layer unpacker (`snapshotter/src/unpack.rs`) on arbitrary bytes as an uncompressed tar
//! stream, into a fresh directory each time; the sandbox panics if anything outside the layer
//! root changed. Runs as root in CI, so owners, device nodes and trusted xattrs are real.
#![no_main]

use crisp_fuzz::sandbox::Sandbox;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static SANDBOX: OnceLock<Sandbox> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let sandbox = SANDBOX.get_or_init(Sandbox::new);
    let _ = sandbox.unpack(data);
});
