//! Pulls from a real registry: Debian's `docker-registry` on 127.0.0.1 (one per test), images
//! pushed with `skopeo`. Multi-layer images with whiteouts, a multi-arch index, zstd layers,
//! htpasswd auth, a corrupt blob, an outage, a docker.io mirror from hosts.toml, bad refs.

use std::time::Duration;

use anyhow::{bail, Context};
use crisp_tests::cri::{AuthConfig, ImageSpec, ImageStatusRequest, PullImageRequest};
use crisp_tests::registry_test as root_test;
use crisp_tests::{
    assert_no_partial_pull, busybox_layout, container_config, corrupt, crispd_test, expect_code,
    layered_image, multi_arch_index, pseudo_random, require_root, restore, temp_layout, CriClient,
    Crispd, Entry, TestPod, TestRegistry, BLACKHOLE_REGISTRY,
};
use sha2::{Digest as _, Sha256};
use tonic::Code;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

fn pull_request(image: &str, auth: Option<(&str, &str)>) -> PullImageRequest {
    PullImageRequest {
        image: spec(image),
        auth: auth.map(|(u, p)| AuthConfig {
            username: u.into(),
            password: p.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn image_status(
    client: &mut CriClient,
    image: &str,
) -> anyhow::Result<Option<crisp_tests::cri::Image>> {
    Ok(client
        .image
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await?
        .into_inner()
        .image)
}

/// Runs `sh -c script` in a container of `image` in a fresh pod; returns its log.
async fn run(
    client: &mut CriClient,
    crispd: &Crispd,
    pod_name: &str,
    image: &str,
    script: &str,
) -> anyhow::Result<String> {
    let pod = TestPod::start(client, crispd, pod_name).await?;
    std::fs::create_dir_all(pod.log_dir.join("c"))?;
    let config = container_config("c", image, &["sh", "-c", script], "c/0.log");
    let id = pod.create(client, config).await?;
    client.start_container(&id).await?;
    let status = client.wait_exited(&id, Duration::from_secs(20)).await?;
    let log = pod.read_log("c");
    client.stop_and_remove_pod(&pod.id).await?;
    if status.exit_code != 0 {
        bail!("container exited {}: {log}", status.exit_code);
    }
    Ok(log)
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

root_test!(pull_multi_layer_image_and_run_it, multi_layer);

async fn multi_layer(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let dir = temp_layout()?;
    let img = layered_image(
        dir.path(),
        "v1",
        &[
            vec![
                Entry::File("etc/added", b"from layer two\n"),
                Entry::File("etc/doomed", b"deleted by layer three\n"),
                Entry::File("opaque/old", b"hidden by layer three\n"),
            ],
            vec![
                Entry::Whiteout("etc/doomed"),
                Entry::File("etc/third", b"3\n"),
                Entry::Opaque("opaque"),
                Entry::File("opaque/new", b"new\n"),
            ],
        ],
    )?;
    registry.push(
        &format!("oci:{}:v1", dir.path().display()),
        "layered:v1",
        &[],
    )?;
    let image = format!("{}/layered:v1", registry.host());

    let mut client = crispd.client().await?;
    let id = client.pull(&image).await?;
    assert_eq!(id, img.config, "PullImage returns the config digest");
    let status = image_status(&mut client, &image)
        .await?
        .context("pulled image has no status")?;
    assert_eq!(status.repo_tags, vec![image.clone()]);
    let repo_digest = format!("{}/layered@{}", registry.host(), img.manifest);
    assert!(
        status.repo_digests.contains(&repo_digest),
        "{repo_digest} not in {:?}",
        status.repo_digests
    );
    // By digest too, and a second pull is a no-op returning the same image.
    assert_eq!(client.pull(&repo_digest).await?, img.config);
    assert_eq!(client.pull(&image).await?, img.config);

    let log = run(
        &mut client,
        crispd,
        "layered",
        &image,
        "cat /etc/added /etc/third; test -e /etc/doomed || echo doomed-is-gone; \
         echo opaque: $(ls /opaque)",
    )
    .await?;
    for want in ["from layer two", "3", "doomed-is-gone", "opaque: new"] {
        assert!(log.contains(want), "{want:?} missing from {log:?}");
    }
    assert_no_partial_pull(&crispd.root())?;
    Ok(())
}

root_test!(multi_arch_index_picks_linux_amd64, multi_arch);

async fn multi_arch(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let dir = temp_layout()?;
    let amd64 = layered_image(
        dir.path(),
        "amd",
        &[vec![Entry::File("etc/arch", b"amd64\n")]],
    )?;
    let arm64 = layered_image(
        dir.path(),
        "arm",
        &[vec![Entry::File("etc/arch", b"arm64\n")]],
    )?;
    multi_arch_index(dir.path(), "v1", &amd64, &arm64)?;
    registry.push(
        &format!("oci:{}:v1", dir.path().display()),
        "multi:v1",
        &["--all"],
    )?;
    let index_digest = sha256(&registry.raw_manifest("multi:v1")?);
    assert_ne!(index_digest, amd64.manifest);

    let image = format!("{}/multi:v1", registry.host());
    let mut client = crispd.client().await?;
    assert_eq!(client.pull(&image).await?, amd64.config, "picked amd64");
    let status = image_status(&mut client, &image)
        .await?
        .context("no status")?;
    let repo_digest = format!("{}/multi@{index_digest}", registry.host());
    assert!(
        status.repo_digests.contains(&repo_digest),
        "the index digest {repo_digest} is the repo digest: {:?}",
        status.repo_digests
    );
    // kubelet asks by the repo digest it saw.
    assert!(image_status(&mut client, &repo_digest).await?.is_some());
    let log = run(&mut client, crispd, "multi", &image, "cat /etc/arch").await?;
    assert!(log.contains("amd64"), "{log}");
    Ok(())
}

root_test!(zstd_layers, zstd);

async fn zstd(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let dir = temp_layout()?;
    layered_image(
        dir.path(),
        "v1",
        &[vec![Entry::File("etc/zz", b"zstd layer\n")]],
    )?;
    registry.push(
        &format!("oci:{}:v1", dir.path().display()),
        "zstd:v1",
        &["--dest-compress-format", "zstd", "--format", "oci"],
    )?;
    let manifest = String::from_utf8(registry.raw_manifest("zstd:v1")?)?;
    assert!(
        manifest.contains("tar+zstd"),
        "skopeo did not write zstd layers: {manifest}"
    );
    let image = format!("{}/zstd:v1", registry.host());
    let mut client = crispd.client().await?;
    client.pull(&image).await?;
    let log = run(&mut client, crispd, "zstd", &image, "cat /etc/zz").await?;
    assert!(log.contains("zstd layer"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_auth() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::start_with_auth("alice", "s3cret").expect("starting the registry");
    let crispd = Crispd::start().await.expect("starting crispd");
    crispd.expect_ok(auth(&crispd, &registry).await);
}

async fn auth(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let layout = busybox_layout();
    registry.push(
        &format!("oci:{}:latest", layout.display()),
        "private/bb:v1",
        &[],
    )?;
    let image = format!("{}/private/bb:v1", registry.host());
    let mut client = crispd.client().await?;

    let anonymous = client.image.pull_image(pull_request(&image, None)).await;
    let s = expect_code(anonymous, Code::Unauthenticated, "anonymous pull")?;
    assert!(s.message().contains(&registry.host()), "{s}");
    let wrong = client
        .image
        .pull_image(pull_request(&image, Some(("alice", "wrong"))))
        .await;
    let s = expect_code(wrong, Code::Unauthenticated, "pull with a wrong password")?;
    assert!(s.message().contains("private/bb"), "{s}");
    assert!(image_status(&mut client, &image).await?.is_none());

    let ok = client
        .image
        .pull_image(pull_request(&image, Some(("alice", "s3cret"))))
        .await?
        .into_inner();
    assert!(ok.image_ref.starts_with("sha256:"), "{ok:?}");
    assert!(image_status(&mut client, &image).await?.is_some());

    // crispd keeps registry clients between pulls: never one that alice's pull authenticated
    // for a pull that brings other credentials, or none.
    client
        .image
        .remove_image(crisp_tests::cri::RemoveImageRequest {
            image: Some(crisp_tests::cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
        })
        .await?;
    let wrong = client
        .image
        .pull_image(pull_request(&image, Some(("alice", "wrong"))))
        .await;
    expect_code(
        wrong,
        Code::Unauthenticated,
        "a wrong password after alice's pull",
    )?;
    let anonymous = client.image.pull_image(pull_request(&image, None)).await;
    expect_code(
        anonymous,
        Code::Unauthenticated,
        "no credentials after alice's pull",
    )?;
    assert!(image_status(&mut client, &image).await?.is_none());
    Ok(())
}

/// `[registry.auths]` in crispd's config serves pulls whose request has no credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_credentials() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::start_with_auth("bob", "hunter2").expect("starting the registry");
    let host = registry.host();
    let crispd = Crispd::start_with_config(|_| {
        format!("[registry.auths.\"{host}\"]\nusername = \"bob\"\npassword = \"hunter2\"\n")
    })
    .await
    .expect("starting crispd");
    crispd.expect_ok(configured(&crispd, &registry).await);
}

async fn configured(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let layout = busybox_layout();
    registry.push(
        &format!("oci:{}:latest", layout.display()),
        "cfg/bb:v1",
        &[],
    )?;
    let image = format!("{}/cfg/bb:v1", registry.host());
    let mut client = crispd.client().await?;
    // The request's own (wrong) credentials win over the config's.
    let wrong = client
        .image
        .pull_image(pull_request(&image, Some(("bob", "nope"))))
        .await;
    expect_code(
        wrong,
        Code::Unauthenticated,
        "pull with wrong request credentials",
    )?;
    client.pull(&image).await?;
    Ok(())
}

fn identity_request(image: &str, token: &str) -> PullImageRequest {
    PullImageRequest {
        image: spec(image),
        auth: Some(AuthConfig {
            identity_token: token.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An identity token (OAuth2 refresh token) is exchanged at the registry's token server with a
/// refresh-token grant POST, as containerd does; the access token it gets pulls the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_token_auth() {
    if !require_root() {
        return;
    }
    let registry =
        TestRegistry::start_with_token_auth("refresh-123", false).expect("starting the registry");
    let crispd = Crispd::start().await.expect("starting crispd");
    crispd.expect_ok(identity(&crispd, &registry, false).await);
}

/// A token server that takes no POST (as GCR once did) is asked with a GET carrying the
/// identity token as the basic-auth password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_token_auth_get_fallback() {
    if !require_root() {
        return;
    }
    let registry =
        TestRegistry::start_with_token_auth("refresh-123", true).expect("starting the registry");
    let crispd = Crispd::start().await.expect("starting crispd");
    crispd.expect_ok(identity(&crispd, &registry, true).await);
}

async fn identity(
    crispd: &Crispd,
    registry: &TestRegistry,
    refuse_post: bool,
) -> anyhow::Result<()> {
    let layout = busybox_layout();
    registry.push(
        &format!("oci:{}:latest", layout.display()),
        "team/bb:v1",
        &[],
    )?;
    let server = registry.token_server().context("no token server")?;
    let image = format!("{}/team/bb:v1", registry.host());
    let mut client = crispd.client().await?;

    let anonymous = client.image.pull_image(pull_request(&image, None)).await;
    expect_code(anonymous, Code::Unauthenticated, "anonymous pull")?;
    let wrong = client
        .image
        .pull_image(identity_request(&image, "not-the-token"))
        .await;
    let s = expect_code(
        wrong,
        Code::Unauthenticated,
        "pull with a wrong identity token",
    )?;
    assert!(s.message().contains("identity token"), "{s}");
    assert!(s.message().contains(&registry.host()), "{s}");
    assert!(image_status(&mut client, &image).await?.is_none());

    let before = server.requests().len();
    let ok = client
        .image
        .pull_image(identity_request(&image, "refresh-123"))
        .await?
        .into_inner();
    assert!(ok.image_ref.starts_with("sha256:"), "{ok:?}");
    assert!(image_status(&mut client, &image).await?.is_some());

    let seen = &server.requests()[before..];
    let post = seen
        .iter()
        .find(|r| r.method == "POST")
        .context("no POST to the token server")?;
    let p = |k: &str| post.params.get(k).map(String::as_str);
    assert_eq!(p("grant_type"), Some("refresh_token"), "{post:?}");
    assert_eq!(p("refresh_token"), Some("refresh-123"), "{post:?}");
    assert_eq!(p("service"), Some("crisp-test-registry"), "{post:?}");
    assert_eq!(p("scope"), Some("repository:team/bb:pull"), "{post:?}");
    assert!(p("client_id").is_some_and(|c| !c.is_empty()), "{post:?}");
    if refuse_post {
        assert_eq!(post.status, 404);
        let get = seen
            .iter()
            .find(|r| r.method == "GET" && r.status == 200)
            .context("no GET fallback after the refused POST")?;
        assert_eq!(get.basic.as_deref(), Some(":refresh-123"), "{get:?}");
    } else {
        assert_eq!(post.status, 200, "{post:?}");
    }
    Ok(())
}

root_test!(corrupt_blob_fails_cleanly_and_retry_works, corrupt_blob);

async fn corrupt_blob(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let dir = temp_layout()?;
    let img = layered_image(dir.path(), "v1", &[vec![Entry::File("etc/x", b"x\n")]])?;
    registry.push(&format!("oci:{}:v1", dir.path().display()), "bad:v1", &[])?;
    let top = img.layers.last().context("no layers")?.clone();
    let data = registry.blob_data(&top);
    corrupt(&data)?;

    let image = format!("{}/bad:v1", registry.host());
    let mut client = crispd.client().await?;
    let r = client.image.pull_image(pull_request(&image, None)).await;
    let s = expect_code(r, Code::DataLoss, "pull of a corrupt blob")?;
    assert!(s.message().contains(&top), "error names the blob: {s}");
    assert!(
        s.message().contains(&registry.host()),
        "error names the registry: {s}"
    );
    assert!(image_status(&mut client, &image).await?.is_none());
    assert!(!crispd.blob_stored(&top), "corrupt blob stored");
    assert_no_partial_pull(&crispd.root())?;

    restore(&data)?;
    assert_eq!(client.pull(&image).await?, img.config);
    assert!(crispd.blob_stored(&top));
    assert_no_partial_pull(&crispd.root())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_is_unavailable() {
    if !require_root() {
        return;
    }
    let mut registry = TestRegistry::start().expect("starting the registry");
    let crispd = Crispd::start().await.expect("starting crispd");
    let host = registry.host();
    registry.kill();
    crispd.expect_ok(unreachable(&crispd, &host).await);
}

async fn unreachable(crispd: &Crispd, host: &str) -> anyhow::Result<()> {
    let image = format!("{host}/gone:v1");
    let mut client = crispd.client().await?;
    let r = client.image.pull_image(pull_request(&image, None)).await;
    let s = expect_code(r, Code::Unavailable, "pull from a dead registry")?;
    assert!(s.message().contains(host), "{s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_killed_mid_pull_then_clean_retry() {
    if !require_root() {
        return;
    }
    let mut registry = TestRegistry::start().expect("starting the registry");
    let crispd = Crispd::start().await.expect("starting crispd");
    crispd.expect_ok(killed_mid_pull(&crispd, &mut registry).await);
}

async fn killed_mid_pull(crispd: &Crispd, registry: &mut TestRegistry) -> anyhow::Result<()> {
    let big = pseudo_random(7, 160 << 20, false);
    let dir = temp_layout()?;
    let img = layered_image(dir.path(), "v1", &[vec![Entry::File("big", &big)]])?;
    drop(big);
    registry.push(&format!("oci:{}:v1", dir.path().display()), "cut:v1", &[])?;
    let image = format!("{}/cut:v1", registry.host());

    let socket = crispd.socket();
    let img_name = image.clone();
    let pull = tokio::spawn(async move {
        let mut client = crisp_client::connect(&socket).await?;
        anyhow::Ok(client.image.pull_image(pull_request(&img_name, None)).await)
    });
    // Kill the registry as soon as the layer download is under way.
    let started = crispd
        .wait_for_layer_download(Duration::from_secs(20))
        .await;
    registry.kill();
    started?;
    let r = pull.await??;
    let s = expect_code(r, Code::Unavailable, "pull cut by a dead registry")?;
    let top = img.layers.last().context("no layers")?;
    assert!(
        s.message().contains(top.as_str()),
        "error names the blob: {s}"
    );
    let mut client = crispd.client().await?;
    assert!(image_status(&mut client, &image).await?.is_none());
    assert!(!crispd.blob_stored(top));
    assert_no_partial_pull(&crispd.root())?;

    registry.restart()?;
    assert_eq!(client.pull(&image).await?, img.config);
    assert_no_partial_pull(&crispd.root())?;
    Ok(())
}

/// HTTPS with a private CA: untrusted without config, then `skip_verify`, then `ca` from
/// hosts.toml (re-read at every pull, so one crispd serves all three cases).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_toml_tls_ca_and_skip_verify() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::start_tls().expect("starting the TLS registry");
    let crispd = Crispd::start().await.expect("starting crispd");
    crispd.expect_ok(tls(&crispd, &registry).await);
}

async fn tls(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let layout = busybox_layout();
    registry.push(
        &format!("oci:{}:latest", layout.display()),
        "secure:v1",
        &[],
    )?;
    let host = registry.host();
    let image = format!("{host}/secure:v1");
    let host_dir = crispd.registry_hosts_dir().join(&host);
    std::fs::create_dir_all(&host_dir)?;
    let hosts_toml = host_dir.join("hosts.toml");
    let server = format!("server = \"https://{host}\"\n");
    let mut client = crispd.client().await?;

    std::fs::write(&hosts_toml, &server)?;
    let r = client.image.pull_image(pull_request(&image, None)).await;
    let s = expect_code(
        r,
        Code::Unavailable,
        "pull from an untrusted HTTPS registry",
    )?;
    assert!(s.message().to_lowercase().contains("certificate"), "{s}");

    std::fs::write(&hosts_toml, format!("{server}skip_verify = true\n"))?;
    client.pull(&image).await?;
    client
        .image
        .remove_image(crisp_tests::cri::RemoveImageRequest {
            image: spec(&image),
        })
        .await?;
    assert!(image_status(&mut client, &image).await?.is_none());

    std::fs::copy(registry.ca_path(), host_dir.join("ca.pem"))?;
    std::fs::write(&hosts_toml, format!("{server}ca = \"ca.pem\"\n"))?;
    client.pull(&image).await?;
    assert!(image_status(&mut client, &image).await?.is_some());
    Ok(())
}

/// hosts.toml `client`: a registry that wants a client certificate (docker-registry with
/// `http.tls.clientcas`) refuses a pull without one and serves it with the configured pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_toml_client_certificate() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::start_mtls().expect("starting the registry");
    let crispd = Crispd::start().await.expect("starting crispd");
    crispd.expect_ok(mtls(&crispd, &registry).await);
}

async fn mtls(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let layout = busybox_layout();
    registry.push(&format!("oci:{}:latest", layout.display()), "mtls:v1", &[])?;
    let host = registry.host();
    let image = format!("{host}/mtls:v1");
    let host_dir = crispd.registry_hosts_dir().join(&host);
    std::fs::create_dir_all(&host_dir)?;
    std::fs::copy(registry.ca_path(), host_dir.join("ca.pem"))?;
    std::fs::copy(registry.client_cert_path(), host_dir.join("client.pem"))?;
    std::fs::copy(registry.client_key_path(), host_dir.join("client.key"))?;
    let hosts_toml = host_dir.join("hosts.toml");
    let base = format!("server = \"https://{host}\"\nca = \"ca.pem\"\n");
    let mut client = crispd.client().await?;

    std::fs::write(&hosts_toml, &base)?;
    let r = client.image.pull_image(pull_request(&image, None)).await;
    let s = expect_code(r, Code::Unavailable, "pull without a client certificate")?;
    assert!(s.message().contains(&host), "{s}");
    assert!(image_status(&mut client, &image).await?.is_none());

    std::fs::write(
        &hosts_toml,
        format!("{base}client = [[\"client.pem\", \"client.key\"]]\n"),
    )?;
    client.pull(&image).await?;
    assert!(image_status(&mut client, &image).await?.is_some());
    Ok(())
}

/// A mirror whose API lives under a path prefix (docker-registry with `http.prefix`): reached
/// through a host URL with the prefix (`/v2` appended, as containerd does) and through
/// `override_path = true` with the full API path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_toml_mirror_under_a_path_prefix() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::start().expect("starting the registry");
    let view = registry
        .prefixed_view("/cache/")
        .expect("starting the prefixed registry");
    let crispd = Crispd::start().await.expect("starting crispd");
    crispd.expect_ok(prefixed(&crispd, &registry, &view).await);
}

async fn prefixed(
    crispd: &Crispd,
    registry: &TestRegistry,
    view: &TestRegistry,
) -> anyhow::Result<()> {
    let layout = busybox_layout();
    registry.push(
        &format!("oci:{}:latest", layout.display()),
        "library/pfx:v1",
        &[],
    )?;
    let image = "docker.io/library/pfx:v1";
    let mut client = crispd.client().await?;
    let blackhole = format!("server = \"{BLACKHOLE_REGISTRY}\"\n");
    for mirror in [
        format!("[host.\"http://{}/cache\"]\n", view.host()),
        format!(
            "[host.\"http://{}/cache/v2\"]\n  override_path = true\n",
            view.host()
        ),
    ] {
        crispd.write_registry_hosts("docker.io", &format!("{blackhole}{mirror}"))?;
        client.pull(image).await.with_context(|| mirror.clone())?;
        assert!(image_status(&mut client, image).await?.is_some());
        client
            .image
            .remove_image(crisp_tests::cri::RemoveImageRequest { image: spec(image) })
            .await?;
    }
    // Without the prefix the mirror has no API: the pull fails over to the (blackholed) server.
    crispd.write_registry_hosts(
        "docker.io",
        &format!("{blackhole}[host.\"http://{}\"]\n", view.host()),
    )?;
    let r = client.image.pull_image(pull_request(image, None)).await;
    let s = expect_code(
        r,
        Code::Unavailable,
        "pull from the mirror without its prefix",
    )?;
    assert!(s.message().contains(&view.host()), "{s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_toml_mirror_serves_docker_hub_names() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::start().expect("starting the registry");
    let host = registry.host();
    let crispd = Crispd::start().await.expect("starting crispd");
    // The mirror first; the server is the harness's blackhole, never the real Docker Hub.
    crispd
        .write_registry_hosts(
            "docker.io",
            &format!(
                "server = \"{BLACKHOLE_REGISTRY}\"\n\n\
                 [host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .expect("writing hosts.toml");
    crispd.expect_ok(mirror(&crispd, &registry).await);
}

async fn mirror(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let dir = temp_layout()?;
    let img = layered_image(
        dir.path(),
        "v1",
        &[vec![Entry::File("etc/m", b"mirrored\n")]],
    )?;
    registry.push(
        &format!("oci:{}:v1", dir.path().display()),
        "library/mirrored:v1",
        &[],
    )?;
    let mut client = crispd.client().await?;
    assert_eq!(client.pull("mirrored:v1").await?, img.config);
    let status = image_status(&mut client, "docker.io/library/mirrored:v1")
        .await?
        .context("no status")?;
    assert_eq!(
        status.repo_tags,
        vec!["docker.io/library/mirrored:v1".to_string()]
    );
    let log = registry.log();
    let top = img.layers.last().context("no layers")?;
    for path in [
        "/v2/library/mirrored/manifests/v1?ns=docker.io".to_string(),
        format!("/v2/library/mirrored/blobs/{top}?ns=docker.io"),
    ] {
        assert!(
            log.contains(&path),
            "the mirror did not serve {path}:\n{log}"
        );
    }
    Ok(())
}

root_test!(concurrent_pulls_download_each_blob_once, concurrent);

async fn concurrent(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let dir = temp_layout()?;
    let img = layered_image(
        dir.path(),
        "v1",
        &[
            vec![Entry::File("etc/a", b"a\n")],
            vec![Entry::File("etc/b", b"b\n")],
        ],
    )?;
    let src = format!("oci:{}:v1", dir.path().display());
    registry.push(&src, "one:v1", &[])?;
    registry.push(&src, "two:v1", &[])?;
    let (mut c1, mut c2) = (crispd.client().await?, crispd.client().await?);
    let one = format!("{}/one:v1", registry.host());
    let two = format!("{}/two:v1", registry.host());
    let (a, b) = tokio::join!(c1.pull(&one), c2.pull(&two));
    assert_eq!(a?, img.config);
    assert_eq!(b?, img.config);
    let log = crispd.crispd_log();
    // The bottom layer is busybox's, imported at startup: nothing to download.
    for layer in &img.layers[1..] {
        let n = crispd.downloads_of(layer);
        assert_eq!(n, 1, "layer {layer} downloaded {n} times");
        let n = log
            .lines()
            .filter(|l| l.contains("unpacked") && l.contains(&format!("layer={layer}")))
            .count();
        assert_eq!(n, 1, "layer {layer} unpacked {n} times");
    }
    assert_no_partial_pull(&crispd.root())?;
    Ok(())
}

crispd_test!(invalid_references_are_invalid_argument, invalid);

async fn invalid(crispd: &Crispd) -> anyhow::Result<()> {
    let mut client = crispd.client().await?;
    for bad in [
        "UPPER/case:v1",
        "busybox@sha256:123",
        "a b",
        "localhost:port/x",
        "busybox:-tag",
    ] {
        let r = client.image.pull_image(pull_request(bad, None)).await;
        let s = expect_code(r, Code::InvalidArgument, bad)?;
        assert!(s.message().contains("invalid image reference"), "{s}");
    }
    Ok(())
}

/// Not a timed test (run by hand: `cargo nextest run -p crisp-tests --test registry
/// --run-ignored only`): prints how long a 5-layer, ~200 MB image takes to pull and unpack from
/// the local registry, and a second image sharing 4 of its layers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn large_image_pull_time() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::start().expect("starting the registry");
    let crispd = Crispd::start().await.expect("starting crispd");
    crispd.expect_ok(large(&crispd, &registry).await);
}

async fn large(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    const LAYER: usize = 40 << 20;
    let data: Vec<Vec<u8>> = (1..=5).map(|i| pseudo_random(i, LAYER, true)).collect();
    let extra = pseudo_random(99, LAYER, true);
    let dir = temp_layout()?;
    fn layers<'a>(base: &'a [Vec<u8>], top: &'a [u8]) -> Vec<Vec<Entry<'a>>> {
        let mut v: Vec<Vec<Entry>> = base
            .iter()
            .map(|d| vec![Entry::File("data/blob", d.as_slice())])
            .collect();
        v.push(vec![Entry::File("data/top", top)]);
        v
    }
    let first = layered_image(dir.path(), "v1", &layers(&data[..4], &data[4]))?;
    registry.push(&format!("oci:{}:v1", dir.path().display()), "big:v1", &[])?;
    let dir2 = temp_layout()?;
    layered_image(dir2.path(), "v2", &layers(&data[..4], &extra))?;
    registry.push(&format!("oci:{}:v2", dir2.path().display()), "big:v2", &[])?;
    let bytes: u64 = first
        .layers
        .iter()
        .map(|l| {
            std::fs::metadata(dir.path().join("blobs/sha256").join(&l[7..]))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();

    let mut client = crispd.client().await?;
    let t = std::time::Instant::now();
    client.pull(&format!("{}/big:v1", registry.host())).await?;
    let full = t.elapsed();
    let t = std::time::Instant::now();
    client.pull(&format!("{}/big:v2", registry.host())).await?;
    let shared = t.elapsed();
    eprintln!(
        "crisp: pull of {} layers, {} MB compressed, {} MB unpacked: {full:?}; \
         image sharing 4 of its layers: {shared:?}",
        first.layers.len(),
        bytes >> 20,
        (5 * LAYER) >> 20
    );
    for line in crispd.crispd_log().lines().filter(|l| {
        ["resolved", "downloaded", "unpacked", "pulled image"]
            .iter()
            .any(|w| l.contains(w))
    }) {
        eprintln!("  {line}");
    }
    if let Some((c_full, c_shared)) = containerd_pull_times(registry)? {
        eprintln!(
            "containerd (ctr pull, overlayfs): {c_full:?}; sharing: {c_shared:?}; \
             crisp/containerd: {:.2} and {:.2}",
            full.as_secs_f64() / c_full.as_secs_f64(),
            shared.as_secs_f64() / c_shared.as_secs_f64()
        );
    }
    Ok(())
}

/// The same two pulls with Debian's containerd (`ctr images pull`, which also unpacks), on a
/// private root; `None` if containerd is not installed.
fn containerd_pull_times(registry: &TestRegistry) -> anyhow::Result<Option<(Duration, Duration)>> {
    use std::process::{Command, Stdio};
    if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        return Ok(None);
    }
    let dir = tempfile::Builder::new().prefix("crisp-ctrd-").tempdir()?;
    let sock = dir.path().join("c.sock");
    std::fs::write(
        dir.path().join("config.toml"),
        "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
    )?;
    let mut daemon = Command::new("containerd")
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--address")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "containerd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let pull = |tag: &str| -> anyhow::Result<Duration> {
            let t = std::time::Instant::now();
            let out = Command::new("ctr")
                .arg("--address")
                .arg(&sock)
                .args(["-n", "bench", "images", "pull", "--plain-http"])
                .arg(format!("{}/big:{tag}", registry.host()))
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "ctr pull failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(t.elapsed())
        };
        Ok(Some((pull("v1")?, pull("v2")?)))
    })();
    let _ = daemon.kill();
    let _ = daemon.wait();
    // containerd's overlay snapshots are plain dirs; nothing stays mounted after ctr pull.
    result
}

/// The image store fills up during a pull (root on a 24 MiB tmpfs, a 40 MiB layer): a clear
/// error naming the cause, no image and nothing half-stored, and crispd keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_during_pull() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::start().expect("starting the registry");
    let crispd = Crispd::start_with_small_root(24 << 20)
        .await
        .expect("starting crispd");
    crispd.expect_ok(full_disk(&crispd, &registry).await);
}

async fn full_disk(crispd: &Crispd, registry: &TestRegistry) -> anyhow::Result<()> {
    let dir = temp_layout()?;
    let big = pseudo_random(11, 40 << 20, false);
    layered_image(dir.path(), "v1", &[vec![Entry::File("big", &big)]])?;
    registry.push(&format!("oci:{}:v1", dir.path().display()), "huge:v1", &[])?;
    registry.push(
        &format!("oci:{}:latest", busybox_layout().display()),
        "small:v1",
        &[],
    )?;
    let mut client = crispd.client().await?;
    let image = format!("{}/huge:v1", registry.host());
    let e = client
        .image
        .pull_image(pull_request(&image, None))
        .await
        .expect_err("a pull larger than the disk");
    assert!(
        e.message().to_lowercase().contains("space"),
        "the error does not name the cause: {e}"
    );
    assert!(image_status(&mut client, &image).await?.is_none());
    assert_no_partial_pull(&crispd.root())?;

    // crispd keeps serving, and a pull that fits works.
    client
        .pull(&format!("{}/small:v1", registry.host()))
        .await?;
    let pod = TestPod::start(&mut client, crispd, "afterfull").await?;
    let c = pod.start_container(&mut client, "c", &["true"]).await?;
    client
        .wait_exited(&c, std::time::Duration::from_secs(10))
        .await?;
    client.stop_and_remove_pod(&pod.id).await?;
    crispd.assert_no_leaks();
    Ok(())
}
