//! Generates crisp's own gRPC service (`proto/pull_progress.proto`). A .proto with
//! tonic-prost-build rather than hand-written prost messages and service glue: the CRI API crate (cri-api/) already
//! builds its protos with the same crate and `protoc`, so this adds no crate to the tree and
//! keeps the wire contract in one readable file.

fn main() {
    println!("cargo:rerun-if-changed=proto/pull_progress.proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/pull_progress.proto"], &["proto"])
        .unwrap_or_else(|e| panic!("compiling proto/pull_progress.proto (needs protoc): {e}"));
}
