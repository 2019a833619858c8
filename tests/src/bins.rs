use std::path::{Path, PathBuf};

/// The workspace root (this crate lives one level below it).
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("the tests crate sits inside the workspace")
        .to_path_buf()
}

/// `target/<profile>` of the build that produced the running test binary.
///
/// Found from the executable rather than from `CARGO_TARGET_DIR` because
/// nextest and custom target dirs both keep the `<profile>/deps/<test>` shape.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("cannot find the running test executable");
    let dir = exe
        .parent()
        .expect("the test executable has a parent directory");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent()
            .expect("a deps directory has a parent")
            .to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The cargo target directory (`target/`), where shared test artifacts go.
pub fn target_dir() -> PathBuf {
    let profile = profile_dir();
    profile.parent().map(Path::to_path_buf).unwrap_or(profile)
}

/// Path of a workspace binary: `$CRISPD_BIN` / `$CRISP_SHIM_BIN` when set,
/// else the one built next to the test binary.
pub fn bin_path(name: &str) -> PathBuf {
    if let Some(path) = override_var(name).and_then(std::env::var_os) {
        return PathBuf::from(path);
    }
    let path = profile_dir().join(name);
    if !path.is_file() {
        panic!(
            "{} not found; run cargo build --workspace first (or set {})",
            path.display(),
            override_var(name).unwrap_or("no override variable for this binary"),
        );
    }
    path
}

/// Like [`bin_path`] but `None` instead of panicking when the binary is missing.
pub(crate) fn find_bin(name: &str) -> Option<PathBuf> {
    if let Some(path) = override_var(name).and_then(std::env::var_os) {
        return Some(PathBuf::from(path));
    }
    Some(profile_dir().join(name)).filter(|path| path.is_file())
}

fn override_var(name: &str) -> Option<&'static str> {
    match name {
        "crispd" => Some("CRISPD_BIN"),
        "crisp-shim" => Some("CRISP_SHIM_BIN"),
        _ => None,
    }
}
