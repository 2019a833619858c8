//! What pulls are doing, for watchers: crispd's `crisp.images.v1.PullProgress/Watch` and
//! `crispd images pull`.
//!
//! Pulls are tracked by normalised reference: concurrent pulls of one reference share one
//! tracker, and a watch subscribes to it, creating it (phase WAITING) when no pull is in flight
//! yet, so that a watch opened before its PullImage misses nothing. Layer counters are shared
//! by chain id across all pulls, as the locks in `inflight.rs` are: a pull waiting for another
//! pull's download of a layer shows that download's bytes.
//!
//! The pull side never waits for a watcher: bytes and layer states go into atomics, phase
//! changes into a `watch` channel (one value, overwritten). Each watcher reads snapshots at
//! its own pace, so a slow one only skips some.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crisp_snapshotter::Digest;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::inflight::Shared;
use crate::api::images_v1::{Layer, LayerState, Phase, PullStatus};
use crate::error::Error;
use crate::image::reference::Reference;

/// How long a watch waits for a pull of its reference to start.
pub const WAIT_FOR_PULL: Duration = Duration::from_secs(10);
/// How often a watcher looks at the byte counters (phase changes wake it at once).
const TICK: Duration = Duration::from_millis(200);

/// One layer of a pull: its blob's bytes so far and what is being done with it.
pub struct LayerProgress {
    digest: String,
    total: u64,
    done: AtomicU64,
    state: AtomicI32,
}

impl LayerProgress {
    fn new(blob: &Digest, total: u64) -> LayerProgress {
        LayerProgress {
            digest: blob.to_string(),
            total,
            done: AtomicU64::new(0),
            state: AtomicI32::new(LayerState::Waiting as i32),
        }
    }

    /// Bytes of the blob received.
    pub fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A download of the blob starts (again, after a failed endpoint): from zero.
    pub fn downloading(&self) {
        self.done.store(0, Ordering::Relaxed);
        self.set(LayerState::Downloading);
    }

    /// The blob is in the store already: all its bytes are here.
    pub fn blob_present(&self) {
        self.done.store(self.total, Ordering::Relaxed);
    }

    pub fn set(&self, state: LayerState) {
        self.state.store(state as i32, Ordering::Relaxed);
    }

    /// The layer was unpacked before this pull looked: `EXISTS`, unless another pull in
    /// flight has just finished it.
    pub fn exists(&self) {
        self.blob_present();
        if self.state.load(Ordering::Relaxed) != LayerState::Done as i32 {
            self.set(LayerState::Exists);
        }
    }

    fn snapshot(&self) -> Layer {
        Layer {
            digest: self.digest.clone(),
            done: self.done.load(Ordering::Relaxed).min(self.total),
            total: self.total,
            state: self.state.load(Ordering::Relaxed),
        }
    }
}

/// What a tracker's watchers see; byte counts are read from the layers when a snapshot is
/// taken.
#[derive(Clone)]
struct View {
    phase: Phase,
    layers: Vec<Arc<LayerProgress>>,
    image_id: String,
    error: Option<(tonic::Code, String)>,
}

impl View {
    fn status(&self, reference: &str) -> PullStatus {
        let (code, message) = match &self.error {
            Some((c, m)) if self.phase == Phase::Failed => (*c as i32, m.clone()),
            _ => (0, String::new()),
        };
        PullStatus {
            reference: reference.to_string(),
            phase: self.phase as i32,
            layers: self.layers.iter().map(|l| l.snapshot()).collect(),
            image_id: self.image_id.clone(),
            error_code: code,
            error_message: message,
        }
    }
}

struct Entry {
    tracker: Arc<watch::Sender<View>>,
    /// Pulls of the reference in flight.
    pulls: usize,
}

impl Entry {
    fn waiting() -> Entry {
        Entry {
            tracker: Arc::new(watch::Sender::new(View {
                phase: Phase::Waiting,
                layers: Vec::new(),
                image_id: String::new(),
                error: None,
            })),
            pulls: 0,
        }
    }
}

pub struct Progress {
    /// By normalised reference: pulls in flight, and watches waiting for one.
    pulls: Mutex<HashMap<String, Entry>>,
    layers: Shared<LayerProgress>,
    wait_for_pull: Duration,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new(WAIT_FOR_PULL)
    }
}

impl Progress {
    pub fn new(wait_for_pull: Duration) -> Progress {
        Progress {
            pulls: Mutex::new(HashMap::new()),
            layers: Shared::default(),
            wait_for_pull,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        let mut map = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        // A tracker no pull and no watcher holds any more is a watch that gave up waiting.
        map.retain(|_, e| e.pulls > 0 || e.tracker.receiver_count() > 0);
        map
    }

    /// A pull of `reference` starts; it joins the tracker of a pull of the same reference in
    /// flight, or of watches waiting for one. Report its end with [`Tracking::finish`].
    pub fn begin(self: &Arc<Self>, reference: &Reference) -> Tracking {
        let key = reference.to_string();
        let tracker = {
            let mut map = self.lock();
            let e = map.entry(key.clone()).or_insert_with(Entry::waiting);
            e.pulls += 1;
            e.tracker.send_if_modified(|v| {
                let waiting = v.phase == Phase::Waiting;
                if waiting {
                    v.phase = Phase::Resolving;
                }
                waiting
            });
            e.tracker.clone()
        };
        Tracking {
            progress: self.clone(),
            key,
            tracker,
            finished: false,
        }
    }

    /// The counter of the layer with chain id `chain` (blob `blob` of `size` bytes), shared
    /// with every pull in flight that has the same layer.
    pub fn layer(&self, chain: &Digest, blob: &Digest, size: u64) -> Arc<LayerProgress> {
        self.layers
            .get(&chain.to_string(), || LayerProgress::new(blob, size))
    }

    /// Snapshots of the pulls of `reference`, subscribed from this call on (see the proto's
    /// `Watch`): the first at once, then on changes, the last one final. With no pull
    /// starting within the wait, the stream ends with NOT_FOUND.
    pub fn watch(
        self: &Arc<Self>,
        reference: &Reference,
    ) -> BoxStream<'static, Result<PullStatus, Error>> {
        let key = reference.to_string();
        let rx = self
            .lock()
            .entry(key.clone())
            .or_insert_with(Entry::waiting)
            .tracker
            .subscribe();
        let follow = Follow {
            rx,
            key,
            deadline: Instant::now() + self.wait_for_pull,
            wait: self.wait_for_pull,
            last: None,
            closed: false,
            ended: false,
        };
        futures_util::stream::unfold(follow, Follow::next).boxed()
    }
}

/// One pull's handle on its tracker. Dropped without [`finish`](Self::finish) (a cancelled
/// PullImage), the pull counts as failed with CANCELLED.
pub struct Tracking {
    progress: Arc<Progress>,
    key: String,
    tracker: Arc<watch::Sender<View>>,
    finished: bool,
}

impl Tracking {
    /// The pull knows its layers (bottom to top).
    pub fn set_layers(&self, layers: Vec<Arc<LayerProgress>>) {
        self.tracker.send_modify(|v| {
            v.layers = layers;
            v.phase = Phase::Pulling;
        });
    }

    /// The pull ended: with the image id, or failed. The last pull of the reference in
    /// flight to end makes the tracker's phase final: DONE if any of them succeeded.
    pub fn finish(mut self, outcome: Result<&str, &Error>) {
        let outcome = outcome.map_err(|e| (e.code(), e.to_string()));
        self.end(outcome);
    }

    fn end(&mut self, outcome: Result<&str, (tonic::Code, String)>) {
        self.finished = true;
        let mut map = self.progress.lock();
        let last = match map.get_mut(&self.key) {
            Some(e) if Arc::ptr_eq(&e.tracker, &self.tracker) => {
                e.pulls = e.pulls.saturating_sub(1);
                let last = e.pulls == 0;
                if last {
                    // The next pull of the reference starts afresh; watchers keep the final
                    // view.
                    map.remove(&self.key);
                }
                last
            }
            _ => true,
        };
        self.tracker.send_modify(|v| {
            match outcome {
                Ok(id) => v.image_id = id.to_string(),
                Err(e) => v.error = Some(e),
            }
            if last {
                v.phase = if v.image_id.is_empty() {
                    Phase::Failed
                } else {
                    Phase::Done
                };
            }
        });
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        if !self.finished {
            self.end(Err((tonic::Code::Cancelled, "pull cancelled".to_string())));
        }
    }
}

/// A watcher's state between snapshots.
struct Follow {
    rx: watch::Receiver<View>,
    key: String,
    deadline: Instant,
    wait: Duration,
    last: Option<PullStatus>,
    /// Every tracker handle is gone (cannot happen before a final phase; handled anyway).
    closed: bool,
    ended: bool,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<PullStatus, Error>, Follow)> {
        if self.ended {
            return None;
        }
        loop {
            let status = self.rx.borrow_and_update().status(&self.key);
            let fin = matches!(status.phase(), Phase::Done | Phase::Failed);
            if fin || self.last.as_ref() != Some(&status) {
                self.ended = fin || self.closed;
                self.last = Some(status.clone());
                return Some((Ok(status), self));
            }
            if self.closed {
                return None;
            }
            if status.phase() == Phase::Waiting && Instant::now() >= self.deadline {
                self.ended = true;
                let e = Error::NotFound(format!(
                    "no pull of {} started within {} s",
                    self.key,
                    self.wait.as_secs_f32()
                ));
                return Some((Err(e), self));
            }
            tokio::select! {
                changed = self.rx.changed() => self.closed = changed.is_err(),
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn reference(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    async fn next(s: &mut BoxStream<'static, Result<PullStatus, Error>>) -> PullStatus {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("a snapshot in time")
            .expect("the stream goes on")
            .expect("no error")
    }

    /// A watch opened before the pull sees it start, its layers' bytes and states, and the
    /// final phase with the image id; then the stream ends and the reference is forgotten.
    #[tokio::test]
    async fn watch_first_then_pull() {
        let p = Arc::new(Progress::default());
        let mut w = p.watch(&reference("busybox"));
        let first = next(&mut w).await;
        assert_eq!(first.phase(), Phase::Waiting);
        assert_eq!(first.reference, "docker.io/library/busybox:latest");

        let t = p.begin(&reference("docker.io/library/busybox"));
        assert_eq!(next(&mut w).await.phase(), Phase::Resolving);
        let (a, b) = (digest("a"), digest("b"));
        let la = p.layer(&digest("chain-a"), &a, 100);
        let lb = p.layer(&digest("chain-b"), &b, 50);
        la.exists();
        lb.downloading();
        lb.add(20);
        t.set_layers(vec![la, lb.clone()]);
        let s = next(&mut w).await;
        assert_eq!(s.phase(), Phase::Pulling);
        assert_eq!(
            s.layers
                .iter()
                .map(|l| (l.digest.as_str(), l.done, l.total, l.state()))
                .collect::<Vec<_>>(),
            vec![
                (a.to_string().as_str(), 100, 100, LayerState::Exists),
                (b.to_string().as_str(), 20, 50, LayerState::Downloading),
            ]
        );
        lb.add(30);
        let s = next(&mut w).await;
        assert_eq!(s.layers[1].done, 50);
        lb.set(LayerState::Done);
        t.finish(Ok("sha256:id"));
        let mut s = next(&mut w).await;
        // The byte tick and the final phase may come apart or together.
        if s.phase() != Phase::Done {
            s = next(&mut w).await;
        }
        assert_eq!(s.phase(), Phase::Done);
        assert_eq!(s.image_id, "sha256:id");
        assert_eq!(s.layers[1].state(), LayerState::Done);
        assert!(w.next().await.is_none());
        assert!(p.lock().is_empty());
    }

    /// Two pulls of one reference are one tracker: the first to end does not end the
    /// watch; the final phase is DONE when either succeeded. A second reference with the same
    /// layer shares its counter.
    #[tokio::test]
    async fn concurrent_pulls_share() {
        let p = Arc::new(Progress::default());
        let r = reference("127.0.0.1:5000/app:v1");
        let one = p.begin(&r);
        let two = p.begin(&r);
        let mut w = p.watch(&r);
        assert_eq!(next(&mut w).await.phase(), Phase::Resolving);
        let l1 = p.layer(&digest("c"), &digest("blob"), 10);
        let other = p.layer(&digest("c"), &digest("blob"), 10);
        assert!(Arc::ptr_eq(&l1, &other));

        one.finish(Err(&Error::Unauthenticated("no".into())));
        assert_eq!(p.lock().get(&r.to_string()).map(|e| e.pulls), Some(1));
        two.finish(Ok("sha256:x"));
        let s = next(&mut w).await;
        assert_eq!((s.phase(), s.image_id.as_str()), (Phase::Done, "sha256:x"));

        // All failed: FAILED with the last error; a dropped (cancelled) pull counts.
        let mut w = p.watch(&r);
        let one = p.begin(&r);
        drop(one);
        let mut s = next(&mut w).await;
        while s.phase() != Phase::Failed {
            s = next(&mut w).await;
        }
        assert_eq!(s.error_code, tonic::Code::Cancelled as i32);
        assert!(s.error_message.contains("cancelled"), "{s:?}");
    }

    /// A watcher that reads nothing holds nothing up: the pull runs to the end, and the
    /// watcher's next snapshot is the final one.
    #[tokio::test]
    async fn a_slow_watcher_never_blocks_the_pull() {
        let p = Arc::new(Progress::default());
        let r = reference("slow:v1");
        let mut w = p.watch(&r);
        let t = p.begin(&r);
        let l = p.layer(&digest("c"), &digest("b"), 1 << 30);
        t.set_layers(vec![l.clone()]);
        l.downloading();
        for _ in 0..(1 << 14) {
            l.add(1 << 16);
        }
        l.set(LayerState::Done);
        t.finish(Ok("sha256:slow"));
        let s = next(&mut w).await;
        assert_eq!(s.phase(), Phase::Done);
        assert_eq!(s.layers[0].done, 1 << 30);
        assert!(w.next().await.is_none());
    }

    /// No pull within the wait: NOT_FOUND, and the waiting tracker is dropped.
    #[tokio::test]
    async fn no_pull_is_not_found() {
        let p = Arc::new(Progress::new(Duration::from_millis(50)));
        let mut w = p.watch(&reference("never:v1"));
        assert_eq!(next(&mut w).await.phase(), Phase::Waiting);
        let e = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(m) if m.contains("never:v1")),
            "{e}"
        );
        assert!(w.next().await.is_none());
        drop(w);
        assert!(p.lock().is_empty());
    }
}
