use std::path::Path;

use crisp_cri_api::v1::image_service_client::ImageServiceClient;
use crisp_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::Error;

/// Both CRI services over one HTTP/2 channel; cloning is cheap and shares the
/// connection.
#[derive(Clone, Debug)]
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
}

/// kubelet's gRPC message size limit towards the runtime (16 MiB).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Connects to a CRI server listening on the unix socket `socket`.
pub async fn connect(socket: &Path) -> Result<CriClient, Error> {
    let channel = channel(socket).await?;
    Ok(CriClient {
        // kubelet's limit for CRI responses (ExecSync output, long lists).
        runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
        image: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
    })
}

/// An HTTP/2 channel to the gRPC server on the unix socket `socket`, for any client on it
/// (crispd serves services of its own next to CRI's).
pub async fn channel(socket: &Path) -> Result<Channel, Error> {
    let connect_error = |source| Error::Connect {
        socket: socket.display().to_string(),
        source,
    };
    // tonic needs a URI even though the connector ignores it; the authority is
    // a placeholder.
    let endpoint = Endpoint::try_from("http://[::]:50051").map_err(connect_error)?;
    let path = socket.to_path_buf();
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(connect_error)
}
