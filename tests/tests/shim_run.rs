//! `crisp-shim run --bundle DIR`: the shim alone runs an OCI bundle in the foreground, attached
//! to its stdio, and exits with the container's exit code (like `runc run`).

use std::path::Path;
use std::process::Command;

use crisp_tests::{bin_path, busybox_layout, require_root};

#[test]
fn shim_runs_a_bundle_standalone() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let bundle = tmp.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs dir");
    unpack_busybox(&rootfs);
    let id: String = format!("run{}", std::process::id());
    let cgroup = format!("/crisp-run-test-{id}");
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh", "-c", "echo hello from $(hostname); exit 3"],
            "env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "runner",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"] }
        ],
        "linux": {
            "namespaces": [{ "type": "pid" }, { "type": "mount" }, { "type": "ipc" }, { "type": "uts" }, { "type": "network" }],
            "cgroupsPath": format!("{cgroup}/c")
        }
    });
    std::fs::write(bundle.join("config.json"), spec.to_string()).expect("config.json");

    let out = Command::new(bin_path("crisp-shim"))
        .args(["run", "--id", &id, "--bundle"])
        .arg(&bundle)
        .arg("--root")
        .arg(tmp.path().join("state"))
        .output()
        .expect("running crisp-shim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Clean the cgroup parent before asserting, so a failure leaves nothing behind.
    let leftover = remove_cgroup_parent(&cgroup);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout {stdout}\nstderr {stderr}"
    );
    assert_eq!(stdout.trim(), "hello from runner");
    assert!(leftover.is_empty(), "container cgroups left: {leftover:?}");
}

/// Extracts the busybox test image's layer (the one gzip blob of the layout).
fn unpack_busybox(rootfs: &Path) {
    let blobs = busybox_layout().join("blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .expect("blobs")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::read(p)
                .map(|b| b.starts_with(&[0x1f, 0x8b]))
                .unwrap_or(false)
        })
        .expect("a gzip layer");
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(rootfs)
        .status()
        .expect("tar");
    assert!(st.success(), "unpacking the layer");
}

/// Removes `/sys/fs/cgroup/*/<parent>` (empty once the container is gone); returns what stays.
fn remove_cgroup_parent(parent: &str) -> Vec<String> {
    let mut left = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = h.path().join(parent.trim_start_matches('/'));
        if !dir.exists() {
            continue;
        }
        // Only the parent may remain: libcontainer removed the container's own cgroup.
        if std::fs::read_dir(&dir)
            .map(|d| d.flatten().any(|e| e.path().is_dir()))
            .unwrap_or(false)
        {
            left.push(dir.display().to_string());
        }
        let _ = std::fs::remove_dir(&dir);
    }
    left
}
