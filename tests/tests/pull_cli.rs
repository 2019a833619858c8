//! `crispd images pull REF`: through a running crispd (CRI PullImage, with crisp's
//! `PullProgress/Watch` on the same socket for the progress) and straight into the store
//! without one. Progress comes as plain lines here: the tests' stderr is no terminal.

use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use crisp_tests::cri::ListImagesRequest;
use crisp_tests::registry_test as root_test;
use crisp_tests::{
    assert_no_partial_pull, images_command, layered_image, pseudo_random, require_root,
    temp_layout, BuiltImage, Crispd, Entry, TestRegistry,
};
use tokio::io::AsyncBufReadExt;

/// Pushes busybox plus one layer of pseudo-random bytes per entry of `sizes` as
/// `<registry>/<repo_tag>`.
fn push(registry: &TestRegistry, repo_tag: &str, sizes: &[usize]) -> anyhow::Result<BuiltImage> {
    let dir = temp_layout()?;
    let data: Vec<Vec<u8>> = sizes
        .iter()
        .zip(11..)
        .map(|(n, seed)| pseudo_random(seed, *n, false))
        .collect();
    let layers: Vec<Vec<Entry>> = data
        .iter()
        .map(|d| vec![Entry::File("data/blob", d.as_slice())])
        .collect();
    let img = layered_image(dir.path(), "v1", &layers)?;
    registry.push(&format!("oci:{}:v1", dir.path().display()), repo_tag, &[])?;
    Ok(img)
}

/// `crispd images pull ARGS…` (`command` is an `images_command`), started with stdout and
/// stderr piped; killed if dropped.
fn spawn_pull(
    mut command: std::process::Command,
    args: &[&str],
) -> anyhow::Result<tokio::process::Child> {
    command
        .arg("pull")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .context("running crispd images pull")
}

/// [`spawn_pull`], run to the end.
async fn pull(command: std::process::Command, args: &[&str]) -> anyhow::Result<Output> {
    Ok(spawn_pull(command, args)?.wait_with_output().await?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A pull that succeeded: stdout is the result line alone, stderr the progress in plain lines
/// ending with every layer's final state and bytes. The bottom `existing` layers were there
/// before the pull.
fn check_pulled(
    out: &Output,
    img: &BuiltImage,
    reference: &str,
    existing: usize,
) -> anyhow::Result<()> {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if !out.status.success() {
        bail!(
            "crispd images pull {reference} failed ({}): {stderr}",
            out.status
        );
    }
    assert_eq!(
        stdout,
        format!("Image is up to date for {} ({reference})\n", img.config)
    );
    assert!(
        !stderr.contains('\x1b'),
        "no terminal, no escapes: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    for (i, (layer, size)) in img.layers.iter().zip(&img.layer_sizes).enumerate() {
        let state = if i < existing { "exists" } else { "done" };
        let want = format!("{layer} {state} {size}/{size} bytes");
        assert!(lines.contains(&want.as_str()), "{want:?} not in:\n{stderr}");
    }
    let total: u64 = img.layer_sizes.iter().sum();
    let want = format!("{reference} done {total}/{total} bytes");
    assert!(lines.contains(&want.as_str()), "{want:?} not in:\n{stderr}");
    Ok(())
}

root_test!(pull_through_crispd_shows_progress, through_crispd);

async fn through_crispd(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let img = push(registry, "app:v1", &[300 << 10, 700 << 10])?;
    let reference = format!("{}/app:v1", registry.host());
    let out = pull(crispd.images_command(), &[&reference]).await?;
    // busybox, the bottom layer, is in crispd's store from its import dir.
    check_pulled(&out, &img, &reference, 1)?;
    let stderr = text(&out.stderr);
    for layer in &img.layers[1..] {
        assert!(
            stderr.contains(&format!("{layer} waiting"))
                || stderr.contains(&format!("{layer} downloading")),
            "{layer} is seen before it is done:\n{stderr}"
        );
    }

    // crispd pulled it: its store has it.
    let mut client = crispd.client().await?;
    let images = client
        .image
        .list_images(ListImagesRequest::default())
        .await?
        .into_inner()
        .images;
    let listed = images
        .iter()
        .find(|i| i.id == img.config)
        .context("the pulled image is not listed")?;
    assert!(listed.repo_tags.contains(&reference), "{listed:?}");

    // Again: nothing to fetch.
    let out = pull(crispd.images_command(), &[&reference]).await?;
    check_pulled(&out, &img, &reference, img.layers.len())?;
    Ok(())
}

root_test!(pull_of_a_missing_image_fails, missing);

async fn missing(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let reference = format!("{}/missing:v1", registry.host());
    let out = pull(crispd.images_command(), &[&reference]).await?;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(
        stderr.contains(&format!("pulling {reference} failed: NotFound: ")),
        "{stderr}"
    );
    assert!(stderr.contains("missing"), "{stderr}");
    let last_word = format!("{reference} failed");
    assert!(
        stderr.lines().any(|l| l == last_word),
        "the progress ends failed:\n{stderr}"
    );
    // Not a reference at all: refused before anything is asked.
    let out = pull(crispd.images_command(), &["UPPER/case"]).await?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid image reference"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

/// A second `crispd images pull` of a reference whose pull is in flight (held there by a
/// stalled registry) joins it: its first word on the reference is the pull under way, not a
/// pull of its own starting. Both finish with the image; the layer came down once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pull_joins_the_one_in_flight() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::start().expect("starting the registry");
    let crispd = Crispd::start().await.expect("starting crispd");
    let result = joins(&crispd, &registry).await;
    // Whatever happened, the registry must not stay stopped for the teardown.
    registry.resume();
    crispd.expect_ok(result);
}

async fn joins(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let img = push(registry, "big:v1", &[96 << 20])?;
    let reference = format!("{}/big:v1", registry.host());
    let first = spawn_pull(crispd.images_command(), &[&reference])?;
    let started = crispd
        .wait_for_layer_download(Duration::from_secs(30))
        .await;
    registry.pause();
    started?;

    let mut second = spawn_pull(crispd.images_command(), &[&reference])?;
    let mut lines = tokio::io::BufReader::new(second.stderr.take().context("stderr")?).lines();
    let mut seen = Vec::new();
    let joined = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            let about_reference = line.starts_with(&format!("{reference} "));
            seen.push(line);
            if about_reference {
                return anyhow::Ok(());
            }
        }
        bail!("the second pull's progress ended early")
    })
    .await;
    registry.resume();
    joined
        .context("waiting for the second pull's progress")?
        .with_context(|| format!("its stderr so far: {seen:?}"))?;
    let first_word = seen.last().cloned().unwrap_or_default();
    assert!(
        first_word.starts_with(&format!("{reference} pulling ")),
        "the second pull joined the first: {seen:?}"
    );
    while let Some(line) = lines.next_line().await? {
        seen.push(line);
    }
    let mut out = second.wait_with_output().await?;
    out.stderr = seen.join("\n").into_bytes();
    check_pulled(&out, &img, &reference, 1)?;
    check_pulled(&first.wait_with_output().await?, &img, &reference, 1)?;

    let layer = &img.layers[1];
    let n = crispd.downloads_of(layer);
    assert_eq!(n, 1, "layer {layer} downloaded {n} times");
    Ok(())
}

/// No crispd on the root: the pull runs in the command, into the store, with the same
/// progress; a second pull finds every layer there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_without_a_daemon() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::start().expect("starting the registry");
    let dir = tempfile::tempdir().expect("temp dir");
    let (root, state) = (dir.path().join("root"), dir.path().join("state"));
    let body = async {
        let img = push(&registry, "here:v1", &[200 << 10])?;
        let reference = format!("{}/here:v1", registry.host());
        let out = pull(images_command(&root, &state, None), &[&reference]).await?;
        // A fresh store: busybox's layer is pulled too.
        check_pulled(&out, &img, &reference, 0)?;
        let records = std::fs::read_dir(root.join("images"))?.count();
        assert_eq!(records, 1);
        let out = pull(images_command(&root, &state, None), &[&reference]).await?;
        check_pulled(&out, &img, &reference, img.layers.len())?;
        assert_no_partial_pull(&root)?;
        anyhow::Ok(())
    };
    if let Err(e) = body.await {
        panic!("{e:#}\nregistry log:\n{}", registry.log());
    }
}

/// `--creds` reaches the registry through crispd; without them the registry's refusal is the
/// command's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_with_credentials() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::start_with_auth("alice", "s3cret").expect("starting the registry");
    let crispd = Crispd::start().await.expect("starting crispd");
    crispd.expect_ok(creds(&crispd, &registry).await);
}

async fn creds(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let img = push(registry, "private:v1", &[100 << 10])?;
    let reference = format!("{}/private:v1", registry.host());
    let out = pull(crispd.images_command(), &[&reference]).await?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("failed: Unauthenticated: "),
        "{}",
        text(&out.stderr)
    );
    let out = pull(
        crispd.images_command(),
        &["--creds", "alice:s3cret", &reference],
    )
    .await?;
    check_pulled(&out, &img, &reference, 1)?;
    Ok(())
}
