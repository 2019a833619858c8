//! CRI `ImageService`.

use super::{convert, in_batches, Cri, ListStream};
use crate::error::Error;
use crate::image::pull::auth::Credentials;
use crisp_cri_api::v1 as cri;
use crisp_cri_api::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};
use tracing::Instrument;

type R<T> = Result<Response<T>, Status>;

fn image_name(spec: Option<cri::ImageSpec>, rpc: &str) -> Result<String, Error> {
    spec.map(|s| s.image)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::InvalidArgument(format!("{rpc}: image is required")))
}

impl Cri {
    /// ListImages and StreamImages.
    fn images(&self, filter: Option<cri::ImageFilter>) -> Vec<cri::Image> {
        let wanted = filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = match wanted {
            Some(w) => self.runtime.image_status(&w).into_iter().collect(),
            None => self.runtime.list_images(),
        };
        images.iter().map(convert::image).collect()
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> R<cri::ListImagesResponse> {
        Ok(Response::new(cri::ListImagesResponse {
            images: self.images(req.into_inner().filter),
        }))
    }

    type StreamImagesStream = ListStream<cri::StreamImagesResponse>;

    async fn stream_images(
        &self,
        req: Request<cri::StreamImagesRequest>,
    ) -> R<Self::StreamImagesStream> {
        let images = self.images(req.into_inner().filter);
        Ok(Response::new(in_batches(images, |images| {
            cri::StreamImagesResponse { images }
        })))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> R<cri::ImageStatusResponse> {
        let req = req.into_inner();
        let name = image_name(req.image, "ImageStatus")?;
        let img = self.runtime.image_status(&name);
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            if let Some(i) = &img {
                info.insert(
                    "info".to_string(),
                    serde_json::to_string(&i.config).unwrap_or_default(),
                );
            }
        }
        // An absent image is an empty answer, not an error: kubelet asks before every pull.
        Ok(Response::new(cri::ImageStatusResponse {
            image: img.as_ref().map(convert::image),
            info,
        }))
    }

    async fn pull_image(&self, req: Request<cri::PullImageRequest>) -> R<cri::PullImageResponse> {
        let req = req.into_inner();
        let name = image_name(req.image, "PullImage")?;
        let creds = Credentials::from_cri(req.auth)?;
        let span = tracing::info_span!("PullImage", image = %name);
        let img = self
            .runtime
            .pull_image(&name, &creds)
            .instrument(span)
            .await?;
        Ok(Response::new(cri::PullImageResponse { image_ref: img.id }))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> R<cri::RemoveImageResponse> {
        let name = image_name(req.into_inner().image, "RemoveImage")?;
        let span = tracing::info_span!("RemoveImage", image = %name);
        self.runtime.remove_image(&name).instrument(span).await?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<cri::ImageFsInfoRequest>,
    ) -> R<cri::ImageFsInfoResponse> {
        let (dir, bytes, inodes) = self.runtime.image_fs_usage().await;
        let usage = cri::FilesystemUsage {
            timestamp: crate::service::now_ns(),
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: dir.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            inodes_used: Some(cri::UInt64Value { value: inodes }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage],
            container_filesystems: vec![],
        }))
    }
}
