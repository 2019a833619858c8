use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::bins::{repo_root, target_dir};

/// The OCI image layout of the busybox test image, built on first use.
///
/// Tests run in parallel processes (nextest), so the build is serialised with
/// an flock on a file next to the layout; whoever comes second finds
/// `index.json` and reuses the result.
pub fn busybox_layout() -> PathBuf {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(build_busybox_layout).clone()
}

fn build_busybox_layout() -> PathBuf {
    let images = target_dir().join("crisp-test-images");
    let layout = images.join("busybox");
    fs::create_dir_all(&images)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", images.display()));
    let lock_path = images.join("busybox.lock");
    let lock = File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock_exclusive(&lock, &lock_path);

    let script = repo_root().join("tests/images/build-busybox.sh");
    let script_text =
        fs::read(&script).unwrap_or_else(|e| panic!("cannot read {}: {e}", script.display()));
    // The layout records the script it was built by: a changed script (say, another
    // /etc/group) rebuilds it in a `target/` made before the change.
    let stamp = images.join("busybox.script");
    if layout.join("index.json").is_file() && fs::read(&stamp).ok() == Some(script_text.clone()) {
        return layout;
    }
    // No index.json means an earlier build died half-way; start over.
    if layout.exists() {
        fs::remove_dir_all(&layout)
            .unwrap_or_else(|e| panic!("cannot remove partial {}: {e}", layout.display()));
    }
    let output = Command::new("bash")
        .arg(&script)
        .arg(&layout)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    if !output.status.success() || !layout.join("index.json").is_file() {
        panic!(
            "{} {} failed ({}):\n{}{}",
            script.display(),
            layout.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    fs::write(&stamp, &script_text)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", stamp.display()));
    layout
    // `lock` is closed here, which releases the flock.
}

fn lock_exclusive(file: &File, path: &Path) {
    loop {
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            panic!("cannot lock {}: {error}", path.display());
        }
    }
}
