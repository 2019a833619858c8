//! Startup after a restart or a crash: every record is brought back to a true state. Objects
//! caught half-made (`Creating`) are torn down; containers are re-attached to their shims, and
//! exits that happened while crispd was away are read from the shim or its exit record.

use super::{now_ns, ContainerEntry, Runtime};
use crate::container::shim_client::{Exit, Shim};
use crate::container::ContainerState;
use crate::error::{Error, Result};
use crate::pod::SandboxState;
use containerd_shim_protos::api::Status;
use std::sync::Arc;
use tokio::sync::watch;

impl Runtime {
    pub(super) async fn recover(self: &Arc<Self>) -> Result<()> {
        for (_, pod) in self.pod_store.load_all()? {
            if pod.state == SandboxState::Creating {
                tracing::info!(pod = %pod.id, "cleaning up a pod sandbox left half made");
                self.destroy_pod(&pod);
            } else {
                self.objects().pods.insert(pod.id.clone(), pod);
            }
        }
        for (_, rec) in self.container_store.load_all()? {
            let pod_known = self.objects().pods.contains_key(&rec.pod_id);
            let (exited, _) = watch::channel(rec.state == ContainerState::Exited);
            if rec.state == ContainerState::Creating || !pod_known {
                tracing::info!(container = %rec.id, "cleaning up a container left half made or orphaned");
                self.objects().containers.insert(
                    rec.id.clone(),
                    ContainerEntry {
                        rec: rec.clone(),
                        shim: None,
                        exited,
                        op: Default::default(),
                    },
                );
                self.destroy_container(&rec, None).await;
                self.objects().containers.remove(&rec.id);
                continue;
            }
            let id = rec.id.clone();
            // An Exited container's shim is normally gone (released at the exit); one still
            // there (an older crispd's, or a crash before the release) is released below.
            let shim = Shim::connect(&self.shim_dir(&id), &id).await.ok();
            let was = rec.state;
            self.objects().containers.insert(
                id.clone(),
                ContainerEntry {
                    rec,
                    shim: shim.clone(),
                    exited,
                    op: Default::default(),
                },
            );
            if was == ContainerState::Exited {
                if shim.is_some() {
                    self.release_when_exited(id.clone());
                }
                continue;
            }
            let Some(shim) = shim else {
                self.stop_orphan(&id).await;
                let exit = self.exit_from_record(&id);
                let msg = if exit.is_some() {
                    String::new()
                } else {
                    "shim exited while crispd was down".into()
                };
                self.record_exit(
                    &id,
                    exit.unwrap_or(Exit {
                        code: 255,
                        at_ns: now_ns(),
                        oom_killed: false,
                    }),
                    msg,
                );
                self.release_when_exited(id.clone());
                continue;
            };
            match shim.state().await {
                Ok((Status::STOPPED, _, exit)) => {
                    self.record_exit(
                        &id,
                        exit.unwrap_or(Exit {
                            code: 255,
                            at_ns: now_ns(),
                            oom_killed: false,
                        }),
                        String::new(),
                    );
                    self.release_when_exited(id.clone());
                }
                Ok((Status::RUNNING, pid, _)) => {
                    if was == ContainerState::Created {
                        // crispd died between the shim's start and saving it.
                        let _ = self.update_container(&id, |r| {
                            r.state = r.state.transition(ContainerState::Running)?;
                            r.started_at_ns = now_ns();
                            r.pid = pid;
                            Ok(())
                        });
                    }
                    self.watch_exit(id.clone(), shim);
                }
                Ok(_) => {}
                // Created and not started: the runtime's create waits for the start.
                Err(Error::NotFound(_)) if was == ContainerState::Created => {}
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "shim state unknown");
                    self.watch_exit(id.clone(), shim);
                }
            }
        }
        Ok(())
    }
}
