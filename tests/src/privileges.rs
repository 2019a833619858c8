/// Whether the test may run: crispd needs root for namespaces, mounts and
/// cgroups. Tests call this first and return early (passing) when it is false,
/// so `cargo test` as a normal user stays green.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping: needs root");
        false
    }
}
