//! `crisp.images.v1.PullProgress`: crisp's own service next to CRI on crispd's socket, for
//! `crispd images pull` (CRI's PullImage is unary and says nothing until the end).

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::Cri;
use crate::api::images_v1::pull_progress_server::PullProgress;
use crate::api::images_v1::{PullStatus, WatchRequest};

type Snapshots = Pin<Box<dyn Stream<Item = Result<PullStatus, Status>> + Send>>;

#[tonic::async_trait]
impl PullProgress for Cri {
    type WatchStream = Snapshots;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Snapshots>, Status> {
        // Subscribed here, before the answer's headers go out: a client that sends PullImage
        // once this call has answered cannot miss the pull's start.
        let snapshots = self.runtime.watch_pull(&req.into_inner().reference)?;
        Ok(Response::new(Box::pin(
            snapshots.map(|s| s.map_err(Status::from)),
        )))
    }
}
