//! Links `crisp-shim` as a position-dependent executable.
//!
//! A shim runs per container, so its private memory is multiplied by the pods on a node. In a
//! PIE every pointer in the binary's read-only data (vtables, string tables: 400 KiB here) is
//! relocated at start, which copies those pages into each process; position-dependent, they
//! stay the file's pages, shared by every shim. containerd's Go shims are not PIE either.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
