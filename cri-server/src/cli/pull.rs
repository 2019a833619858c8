//! `crispd images pull REF [--creds USER:PASS]`: an image from a registry (or the import dir)
//! into crispd's image store, with progress (`progress.rs`).
//!
//! The store belongs to whoever holds the root lock. With crispd running, crispd pulls: CRI
//! PullImage over its socket (the lock file names it), so its registry config, hosts.toml and
//! credentials apply and the image lands in its store, while `crisp.images.v1.PullProgress/
//! Watch` on the same socket streams what the pull does. Without one, the pull runs here,
//! under the root lock, through the same code as crispd's (`ImagePulls`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use crisp_cri_api::v1::image_service_client::ImageServiceClient;
use crisp_cri_api::v1::{AuthConfig, ImageSpec, PullImageRequest};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tonic::{Code, Status};

use super::progress::{Item, Reporter};
use crate::api::images_v1::pull_progress_client::PullProgressClient;
use crate::api::images_v1::{LayerState, Phase, PullStatus, WatchRequest};
use crate::config::Config;
use crate::image::pull::auth::Credentials;
use crate::image::pulls::ImagePulls;
use crate::image::reference::Reference;
use crate::lock;
use crate::store::Flusher;

/// After its own PullImage has answered, how long the display waits for the watch's final
/// snapshot: other pulls of the same reference may keep the watch going longer.
const GRACE: Duration = Duration::from_secs(2);
/// Plain output wants a nudge now and then to repeat moving items (see `Reporter`).
const NUDGE: Duration = Duration::from_secs(1);

type Snapshots = BoxStream<'static, Result<PullStatus, Status>>;

pub fn run(cfg: &Config, spec: &str, creds: Option<&str>) -> Result<()> {
    let reference = Reference::parse(spec)?;
    let auth = creds.map(auth_config).transpose()?;
    std::fs::create_dir_all(&cfg.root)
        .with_context(|| format!("creating {}", cfg.root.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let lock_path = cfg.root.join("crispd.lock");
    let id = match lock::acquire(&lock_path, &format!("root {}", cfg.root.display())) {
        Ok(_lock) => rt.block_on(pull_here(cfg, &reference, spec, auth))?,
        Err(lock::LockError::Held { .. }) => {
            let socket = lock::socket_of(&lock_path).unwrap_or_else(|| cfg.socket.clone());
            rt.block_on(through_daemon(cfg, &socket, &reference, spec, auth))?
        }
        Err(e) => return Err(e.into()),
    };
    // As `crictl pull` says it, with the reference the image now answers to.
    println!("Image is up to date for {id} ({reference})");
    Ok(())
}

/// `USER:PASS` as CRI's `AuthConfig` (the password may contain colons).
fn auth_config(creds: &str) -> Result<AuthConfig> {
    match creds.split_once(':') {
        Some((user, pass)) if !user.is_empty() => Ok(AuthConfig {
            username: user.to_string(),
            password: pass.to_string(),
            ..Default::default()
        }),
        _ => bail!("--creds wants USER:PASS"),
    }
}

fn failed(reference: &Reference, s: &Status) -> anyhow::Error {
    anyhow!(
        "pulling {reference} failed: {:?}: {}",
        s.code(),
        s.message()
    )
}

async fn through_daemon(
    cfg: &Config,
    socket: &Path,
    reference: &Reference,
    spec: &str,
    auth: Option<AuthConfig>,
) -> Result<String> {
    let channel = crisp_client::channel(socket).await.with_context(|| {
        format!(
            "crispd holds root {} but does not answer on {}",
            cfg.root.display(),
            socket.display()
        )
    })?;
    // The server subscribes before it answers, so once this returns, the PullImage below
    // cannot start unseen.
    let watch = PullProgressClient::new(channel.clone())
        .watch(WatchRequest {
            reference: spec.to_string(),
        })
        .await;
    let snapshots: Snapshots = match watch {
        Ok(r) => r.into_inner().boxed(),
        Err(s) if s.code() == Code::Unimplemented => {
            eprintln!("crispd serves no pull progress (an older crispd?); pulling without it");
            futures_util::stream::empty().boxed()
        }
        Err(s) => return Err(failed(reference, &s)),
    };
    let display = Display::start(snapshots);
    let pulled = ImageServiceClient::new(channel)
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: spec.to_string(),
                ..Default::default()
            }),
            auth,
            ..Default::default()
        })
        .await;
    display.end().await;
    pulled
        .map(|r| r.into_inner().image_ref)
        .map_err(|s| failed(reference, &s))
}

async fn pull_here(
    cfg: &Config,
    reference: &Reference,
    spec: &str,
    auth: Option<AuthConfig>,
) -> Result<String> {
    let creds = Credentials::from_cri(auth)?;
    let pulls = Arc::new(ImagePulls::open(cfg, Flusher::default())?);
    // Subscribed before the pull starts, as over the socket.
    let snapshots: Snapshots = pulls.watch(spec)?.map(|s| s.map_err(Status::from)).boxed();
    let display = Display::start(snapshots);
    let pulled = pulls.pull(spec, &creds).await;
    // crispd writes pulled layers and its records back in the background; this process is
    // about to end.
    let p = pulls.clone();
    let synced = tokio::task::spawn_blocking(move || p.flush_to_disk()).await;
    display.end().await;
    let id = pulled
        .map(|p| p.record.id)
        .map_err(|e| failed(reference, &e.into()))?;
    synced
        .context("sync task")?
        .context("syncing the pulled layers")?;
    Ok(id)
}

/// The progress display, drawn by a task of its own while the pull runs.
struct Display {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Display {
    fn start(snapshots: Snapshots) -> Display {
        let (stop, stopped) = oneshot::channel();
        Display {
            stop,
            task: tokio::spawn(show(snapshots, stopped)),
        }
    }

    /// This command's pull is over: the display ends with the pull's final snapshot.
    async fn end(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Draws the snapshots until the final one, or until `GRACE` after `stop` (this command's
/// own pull is over).
async fn show(mut snapshots: Snapshots, mut stop: oneshot::Receiver<()>) {
    let mut reporter = Reporter::stderr();
    let mut items: Vec<Item> = Vec::new();
    let mut stop_at: Option<tokio::time::Instant> = None;
    loop {
        let grace_over = async {
            match stop_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            next = snapshots.next() => match next {
                Some(Ok(status)) => {
                    items = items_of(&status);
                    if matches!(status.phase(), Phase::Done | Phase::Failed) {
                        break;
                    }
                    reporter.update(&items);
                }
                Some(Err(s)) => {
                    eprintln!("no progress from crispd: {:?}: {}", s.code(), s.message());
                    break;
                }
                None => break,
            },
            _ = &mut stop, if stop_at.is_none() => {
                stop_at = Some(tokio::time::Instant::now() + GRACE);
            }
            _ = grace_over => break,
            _ = tokio::time::sleep(NUDGE) => reporter.update(&items),
        }
    }
    reporter.finish(&items);
}

/// The display's lines: each layer, then the whole pull (its phase, the bytes of all layers)
/// as the last word.
fn items_of(status: &PullStatus) -> Vec<Item> {
    let phase = match status.phase() {
        Phase::Unspecified | Phase::Waiting => "waiting",
        Phase::Resolving => "resolving",
        Phase::Pulling => "pulling",
        Phase::Done => "done",
        Phase::Failed => "failed",
    };
    let whole = Item {
        label: status.reference.clone(),
        state: phase,
        done: status.layers.iter().map(|l| l.done).sum(),
        total: status.layers.iter().map(|l| l.total).sum(),
    };
    let layers = status.layers.iter().map(|l| Item {
        label: l.digest.clone(),
        state: match l.state() {
            LayerState::Unspecified | LayerState::Waiting => "waiting",
            LayerState::Downloading => "downloading",
            LayerState::Unpacking => "unpacking",
            LayerState::Unpacked => "unpacked",
            LayerState::Done => "done",
            LayerState::Exists => "exists",
        },
        done: l.done,
        total: l.total,
    });
    layers.chain(std::iter::once(whole)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::images_v1::Layer;

    #[test]
    fn creds() {
        let a = auth_config("me:pa:ss").unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("me", "pa:ss"));
        assert!(auth_config("nocolon").is_err());
        assert!(auth_config(":x").is_err());
    }

    /// The pull's line sums its layers.
    #[test]
    fn items_sum_the_layers() {
        let status = PullStatus {
            reference: "docker.io/library/app:v1".into(),
            phase: Phase::Pulling as i32,
            layers: vec![
                Layer {
                    digest: "sha256:a".into(),
                    done: 5,
                    total: 5,
                    state: LayerState::Exists as i32,
                },
                Layer {
                    digest: "sha256:b".into(),
                    done: 2,
                    total: 10,
                    state: LayerState::Downloading as i32,
                },
            ],
            ..Default::default()
        };
        let items = items_of(&status);
        assert_eq!(
            items
                .iter()
                .map(|i| (i.label.as_str(), i.state, i.done, i.total))
                .collect::<Vec<_>>(),
            vec![
                ("sha256:a", "exists", 5, 5),
                ("sha256:b", "downloading", 2, 10),
                ("docker.io/library/app:v1", "pulling", 7, 15),
            ]
        );
    }
}
