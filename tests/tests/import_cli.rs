//! `crispd images import FILE`: straight into the store without a daemon, through the import
//! dir with one.

use std::process::Command;

use anyhow::{bail, Context};
use crisp_tests::{bin_path, busybox_layout, layered_image, require_root, Crispd, Entry};

fn import(
    root: &std::path::Path,
    state: &std::path::Path,
    file: &std::path::Path,
) -> anyhow::Result<String> {
    let out = Command::new(bin_path("crispd"))
        .arg("--root")
        .arg(root)
        .arg("--state")
        .arg(state)
        .args(["images", "import"])
        .arg(file)
        .output()
        .context("running crispd images import")?;
    if !out.status.success() {
        bail!(
            "crispd images import {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn import_without_a_daemon() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (root, state) = (dir.path().join("root"), dir.path().join("state"));
    let out = import(&root, &state, &busybox_layout()).expect("import");
    assert!(out.contains("docker.io/library/busybox:latest"), "{out}");
    assert!(out.starts_with("sha256:"), "{out}");
    let records = std::fs::read_dir(root.join("images"))
        .expect("images dir")
        .count();
    assert_eq!(records, 1);
    // Again: the same image, nothing new.
    let again = import(&root, &state, &busybox_layout()).expect("second import");
    assert_eq!(again, out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_with_a_running_daemon() {
    if !require_root() {
        return;
    }
    let crispd = Crispd::start().await.expect("starting crispd");
    crispd.expect_ok(with_daemon(&crispd).await);
}

async fn with_daemon(crispd: &Crispd) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let layout = dir.path().join("extra");
    let img = layered_image(&layout, "v1", &[vec![Entry::File("etc/extra", b"x\n")]])?;
    let out = import(&crispd.root(), &crispd.state(), &layout)?;
    assert!(out.contains("crispd is running"), "{out}");
    let mut client = crispd.client().await?;
    assert_eq!(client.pull("extra:v1").await?, img.config);
    Ok(())
}
