//! The `crisp-bridge` CNI plugin; see `crisp_cni::bridge`.

fn main() {
    std::process::exit(crisp_cni::bridge::plugin_main());
}
