//! The pull phase: a local `docker-registry` on 127.0.0.1 (the integration tests' own
//! [`TestRegistry`]), a multi-layer image of realistic size pushed to it, and `PullImage`
//! timed through CRI on each runtime, with the image and its blobs gone before every pull so
//! each one downloads, decompresses and unpacks everything.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use crisp_client::connect;
use crisp_client::cri::{ImageSpec, ImageStatusRequest, RemoveImageRequest};
use crisp_tests::{layered_image, BuiltImage, Entry, TestRegistry};
use serde::Serialize;

use crate::drive::{percentile, Target};

/// Repository and tags of the benchmark images on the registry: v2 is v1 plus one layer.
const REPO_TAG: &str = "bench/big:v1";
const REPO_TAG_V2: &str = "bench/big:v2";

/// The registry with the image on it, and a hosts dir (containerd's `certs.d` layout, read by
/// both runtimes) that sends the registry's name to it over plain HTTP.
pub struct PullSetup {
    /// Held for its `Drop`, which stops the registry and removes its storage.
    _registry: TestRegistry,
    pub image: String,
    /// The same image with one more layer: pulled after `image`, it needs only that layer.
    pub image_v2: String,
    pub hosts_dir: PathBuf,
    pub built: BuiltImage,
    pub built_v2: BuiltImage,
    /// How many layers on top of busybox's.
    added_layers: usize,
    /// Compressed bytes of the layers we added (busybox's own layer not counted).
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PullMetrics {
    pub pulls: usize,
    pub pull_p50_ms: f64,
    pub pull_max_ms: f64,
    /// Compressed MiB per second at the p50.
    pub pull_mib_per_s: f64,
    /// The second image (the first plus one layer) right after the first: only its new layer
    /// should be fetched and unpacked.
    pub shared_base_pull_p50_ms: f64,
}

/// Deterministic xorshift64*: the same image every run, without a rand crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Incompressible bytes (like compiled binaries that are already compressed, media).
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// Text-like bytes that gzip shrinks about 3-4x (source, configs, locale data).
    fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "container",
            "runtime",
            "image",
            "layer",
            "the",
            "of",
            "and",
            "kernel",
            "mount",
            "overlay",
            "registry",
            "manifest",
            "digest",
            "sha256",
            "blob",
            "config",
            "pod",
            "node",
            "namespace",
            "cgroup",
            "process",
            "signal",
            "exit",
            "return",
            "struct",
            "fn",
            "let",
            "impl",
            "match",
            "error",
            "result",
            "=",
            "{",
            "}",
            "(",
            ");",
            "\n",
            "\n    ",
        ];
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            let w = WORDS[(self.next() % WORDS.len() as u64) as usize];
            v.extend_from_slice(w.as_bytes());
            v.push(b' ');
            if self.next() % 13 == 0 {
                // Numbers break up the repetition a little, as real text does.
                v.extend_from_slice(format!("{} ", self.next() % 100_000).as_bytes());
            }
        }
        v.truncate(n);
        v
    }
}

const MIB: usize = 1024 * 1024;

/// The files of each added layer: a mix of a few large incompressible files, large text files
/// and many small files (unpack cost per file), about 200 MiB (210 MB) unpacked in 6 layers (the issue
/// asks for an image of at least 200 MB in at least 5 layers).
fn layer_files(rng: &mut Rng) -> Vec<Vec<(String, Vec<u8>)>> {
    let mut layers = Vec::new();
    // 1: a "runtime" layer: big binaries.
    layers.push(vec![
        ("opt/app/lib/libbig.so".to_string(), rng.bytes(48 * MIB)),
        ("opt/app/bin/server".to_string(), rng.bytes(16 * MIB)),
    ]);
    // 2: text: sources, docs.
    layers.push(
        (0..32)
            .map(|i| {
                (
                    format!("usr/share/doc/app/part{i}.txt"),
                    rng.text(MIB + i * 4096),
                )
            })
            .collect(),
    );
    // 3: many small files (a package manager's worth).
    layers.push(
        (0..3000)
            .map(|i| {
                let data = if i % 3 == 0 {
                    rng.bytes(1024 + (i % 7) * 1024)
                } else {
                    rng.text(2048 + (i % 11) * 512)
                };
                (
                    format!("usr/lib/python3/site-packages/m{}/f{i}.py", i % 60),
                    data,
                )
            })
            .collect(),
    );
    // 4: more binaries.
    layers.push(vec![(
        "opt/app/lib/libml.so".to_string(),
        rng.bytes(56 * MIB),
    )]);
    // 5: data files, compressible.
    layers.push(
        (0..4)
            .map(|i| (format!("srv/data/table{i}.csv"), rng.text(8 * MIB)))
            .collect(),
    );
    // 6: the application itself: a few MiB of mixed files.
    layers.push(
        (0..200)
            .map(|i| {
                let data = if i % 2 == 0 {
                    rng.bytes(16 * 1024)
                } else {
                    rng.text(12 * 1024)
                };
                (format!("app/static/asset{i}"), data)
            })
            .collect(),
    );
    layers
}

/// A hosts dir (containerd's `certs.d` layout, read by both runtimes) at `dir` that sends the
/// registry's name to it over plain HTTP.
pub fn hosts_dir_for(registry: &TestRegistry, dir: &Path) -> anyhow::Result<PathBuf> {
    let host_dir = dir.join(registry.host());
    std::fs::create_dir_all(&host_dir)?;
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!(
            "server = \"http://{h}\"\n\n[host.\"http://{h}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            h = registry.host()
        ),
    )?;
    Ok(dir.to_path_buf())
}

/// A layer's tar entries for its files.
fn entries(files: &[(String, Vec<u8>)]) -> Vec<Entry<'_>> {
    files
        .iter()
        .map(|(p, d)| Entry::File(p.as_str(), d.as_slice()))
        .collect()
}

impl PullSetup {
    /// Builds the image under `dir`, starts the registry, pushes the image and writes the
    /// hosts dir.
    pub fn start(dir: &Path) -> anyhow::Result<PullSetup> {
        let layout = dir.join("images/big");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let files = layer_files(&mut rng);
        let uncompressed_bytes: u64 = files.iter().flatten().map(|(_, d)| d.len() as u64).sum();
        let layers: Vec<Vec<Entry>> = files.iter().map(|l| entries(l)).collect();
        let built = layered_image(&layout, "v1", &layers).context("building the pull image")?;
        // v2: an application update on top (deterministic tars: the shared layers' digests
        // are the same blobs as v1's).
        let update: Vec<(String, Vec<u8>)> = (0..50)
            .map(|i| (format!("app/static/v2/asset{i}"), rng.text(64 * 1024)))
            .collect();
        let mut layers_v2: Vec<Vec<Entry>> = files.iter().map(|l| entries(l)).collect();
        layers_v2.push(entries(&update));
        let layout_v2 = dir.join("images/big-v2");
        let built_v2 =
            layered_image(&layout_v2, "v2", &layers_v2).context("building the second image")?;
        let mut compressed_bytes = 0;
        for l in built.layers.iter().skip(built.layers.len() - layers.len()) {
            let hex = l.trim_start_matches("sha256:");
            compressed_bytes += std::fs::metadata(layout.join("blobs/sha256").join(hex))
                .with_context(|| format!("layer blob {l}"))?
                .len();
        }
        let registry = TestRegistry::start().context("starting docker-registry")?;
        registry
            .push(&format!("oci:{}:v1", layout.display()), REPO_TAG, &[])
            .context("pushing the pull image")?;
        registry
            .push(&format!("oci:{}:v2", layout_v2.display()), REPO_TAG_V2, &[])
            .context("pushing the second image")?;
        let hosts_dir = hosts_dir_for(&registry, &dir.join("certs.d"))?;
        Ok(PullSetup {
            image: format!("{}/{REPO_TAG}", registry.host()),
            image_v2: format!("{}/{REPO_TAG_V2}", registry.host()),
            built_v2,
            _registry: registry,
            hosts_dir,
            added_layers: layers.len(),
            built,
            compressed_bytes,
            uncompressed_bytes,
        })
    }

    /// How many layers the first image adds on top of busybox.
    pub fn added_layers(&self) -> usize {
        self.added_layers
    }

    /// The images' own blob digests: manifests, configs and the layers on top of busybox (whose
    /// layer both runtimes keep for their busybox image).
    pub fn blobs(&self) -> Vec<String> {
        let mut v = vec![
            self.built.manifest.clone(),
            self.built.config.clone(),
            self.built_v2.manifest.clone(),
            self.built_v2.config.clone(),
        ];
        let skip = self.built.layers.len().saturating_sub(self.added_layers);
        v.extend(self.built_v2.layers.iter().skip(skip).cloned());
        v
    }
}

async fn present(target: &Target<'_>, image: &str) -> anyhow::Result<bool> {
    let mut client = connect(&target.socket).await?;
    let status = client
        .image
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .with_context(|| format!("{}: ImageStatus {image}", target.name))?
        .into_inner();
    Ok(status.image.is_some())
}

/// Pulls `setup.image` `n` times through CRI. Before each pull `forget` must leave the runtime
/// without the image's blobs and layers (it runs after RemoveImage).
pub async fn run(
    target: &Target<'_>,
    setup: &PullSetup,
    n: usize,
    mut forget: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<PullMetrics> {
    let mut client = connect(&target.socket).await?;
    let mut samples = Vec::with_capacity(n);
    let mut shared = Vec::with_capacity(n);
    for i in 0..n {
        remove(target, &setup.image_v2).await?;
        remove(target, &setup.image).await?;
        forget()?;
        if present(target, &setup.image).await? {
            bail!(
                "{}: {} still present after RemoveImage",
                target.name,
                setup.image
            );
        }
        crate::drive::settle().await;
        let begin = Instant::now();
        client
            .pull(&setup.image)
            .await
            .with_context(|| format!("{}: PullImage {}", target.name, setup.image))?;
        let ms = begin.elapsed().as_secs_f64() * 1000.0;
        let begin = Instant::now();
        client
            .pull(&setup.image_v2)
            .await
            .with_context(|| format!("{}: PullImage {}", target.name, setup.image_v2))?;
        let ms_v2 = begin.elapsed().as_secs_f64() * 1000.0;
        eprintln!(
            "[{}] pull {}: {ms:.0} ms, then the image sharing its base: {ms_v2:.0} ms",
            target.name,
            i + 1
        );
        samples.push(ms);
        shared.push(ms_v2);
    }
    remove(target, &setup.image_v2).await?;
    remove(target, &setup.image).await?;
    forget()?;
    let p50 = percentile(&samples, 50.0);
    Ok(PullMetrics {
        pulls: n,
        pull_p50_ms: p50,
        pull_max_ms: percentile(&samples, 100.0),
        pull_mib_per_s: setup.compressed_bytes as f64 / MIB as f64 / (p50 / 1000.0),
        shared_base_pull_p50_ms: percentile(&shared, 50.0),
    })
}

/// RemoveImage of `image`.
async fn remove(target: &Target<'_>, image: &str) -> anyhow::Result<()> {
    let mut client = connect(&target.socket).await?;
    client
        .image
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
        })
        .await
        .with_context(|| format!("{}: RemoveImage {image}", target.name))?;
    Ok(())
}
