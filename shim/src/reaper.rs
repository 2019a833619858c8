//! The shim is a child subreaper: the container's init (forked by libcontainer in a helper)
//! is re-parented to it, and so is anything else that gets orphaned below it. One thread owns
//! every `waitpid` so that no exit is stolen by another waiter; others ask it for a pid's status.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long an exit nobody asked for is kept (orphans of the container, mostly).
const UNCLAIMED_TTL: Duration = Duration::from_secs(300);

#[derive(Default)]
struct State {
    exited: HashMap<i32, (i32, Instant)>,
    /// Bumped whenever a child is spawned, to wake the loop parked on ECHILD.
    generation: u64,
}

#[derive(Clone)]
pub struct Reaper {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl Reaper {
    /// Marks this process as a subreaper and starts the reaping thread.
    pub fn start() -> std::io::Result<Reaper> {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let reaper = Reaper {
            inner: Arc::new((Mutex::new(State::default()), Condvar::new())),
        };
        let r = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || r.reap_loop())?;
        Ok(reaper)
    }

    /// Tells the reaper a child exists now (it may be parked because there was none).
    pub fn child_spawned(&self) {
        let (lock, cv) = &*self.inner;
        lock.lock().unwrap_or_else(|e| e.into_inner()).generation += 1;
        cv.notify_all();
    }

    /// Blocks until `pid` has exited and returns its Docker-style exit code.
    pub fn wait(&self, pid: i32) -> i32 {
        let (lock, cv) = &*self.inner;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some((code, _)) = st.exited.remove(&pid) {
                return code;
            }
            st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn reap_loop(&self) {
        let (lock, cv) = &*self.inner;
        loop {
            match waitpid(None, None) {
                Ok(status) => {
                    let Some((pid, code)) = exit_of(status) else {
                        continue;
                    };
                    let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                    let now = Instant::now();
                    st.exited
                        .retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_TTL);
                    st.exited.insert(pid, (code, now));
                    cv.notify_all();
                }
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // ECHILD: no children. Park until one is spawned; the timeout covers
                    // orphans re-parented to us without a spawn of ours.
                    let st = lock.lock().unwrap_or_else(|e| e.into_inner());
                    let generation = st.generation;
                    let _ = cv
                        .wait_timeout_while(st, Duration::from_millis(200), |s| {
                            s.generation == generation
                        })
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }
}

/// Docker's convention: the exit status, or 128 + the signal that killed the process.
fn exit_of(status: WaitStatus) -> Option<(i32, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, sig, _) => Some((
            pid.as_raw(),
            crisp_api::exit_record::exit_code_from_signal(sig as i32),
        )),
        _ => None,
    }
}
