//! Generates the CRI v1 types, clients and servers from the vendored `api.proto`
//! (see `proto/VENDOR.md`). Every message derives serde too: crispd keeps pod and container
//! configs in its state records as JSON, and reads those an older crispd wrote.

use std::path::PathBuf;

const PROTO: &str = "proto/runtime/v1/api.proto";

fn main() {
    println!("cargo:rerun-if-changed={PROTO}");
    let text = std::fs::read_to_string(PROTO).unwrap_or_else(|e| panic!("reading {PROTO}: {e}"));
    // `debug_redact` needs protoc >= 22 (Debian 12 ships 3.21) and changes nothing in Rust code.
    let text = text.replace(" [debug_redact = true]", "");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("proto/runtime/v1");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let copy = dir.join("api.proto");
    std::fs::write(&copy, text).unwrap_or_else(|e| panic!("writing {}: {e}", copy.display()));

    tonic_prost_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // A record written before a field existed (by an older crispd) still reads.
        .message_attribute(".", "#[serde(default)]")
        .field_attribute(
            ".runtime.v1.KeyValue.value",
            "#[serde(with = \"crate::env_value\")]",
        )
        .compile_protos(&[copy], &[out.join("proto")])
        .unwrap_or_else(|e| panic!("compiling {PROTO} (needs protoc): {e}"));
}
