//! `crispd images import FILE`: straight into the store without a daemon, through the import
//! dir with one.

use crisp_tests::{
    busybox_layout, crispd_test, images_import, layered_image, require_root, Crispd, Entry,
};

#[test]
fn import_without_a_daemon() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (root, state) = (dir.path().join("root"), dir.path().join("state"));
    let out = images_import(&root, &state, &busybox_layout()).expect("import");
    assert!(out.contains("docker.io/library/busybox:latest"), "{out}");
    assert!(out.starts_with("sha256:"), "{out}");
    let records = std::fs::read_dir(root.join("images"))
        .expect("images dir")
        .count();
    assert_eq!(records, 1);
    // Again: the same image, nothing new.
    let again = images_import(&root, &state, &busybox_layout()).expect("second import");
    assert_eq!(again, out);
}

crispd_test!(import_with_a_running_daemon, with_daemon);

async fn with_daemon(crispd: &Crispd) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let layout = dir.path().join("extra");
    let img = layered_image(&layout, "v1", &[vec![Entry::File("etc/extra", b"x\n")]])?;
    let out = crispd.images_import(&layout)?;
    assert!(out.contains("crispd is running"), "{out}");
    let mut client = crispd.client().await?;
    assert_eq!(client.pull("extra:v1").await?, img.config);
    Ok(())
}
