//! `GET /metrics` over plain HTTP/1.1 (hyper, already in the tree for the streaming server).

use super::Metrics;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// Refreshes the gauges read from the runtime just before each scrape.
pub type Refresh = Arc<dyn Fn(&Metrics) + Send + Sync>;

/// Binds `addr` and serves until the process exits; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    refresh: Refresh,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, refresh) = (metrics.clone(), refresh.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let (metrics, refresh) = (metrics.clone(), refresh.clone());
                    async move { Ok::<_, Infallible>(respond(&req, &metrics, &refresh)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn respond<B>(
    req: &hyper::Request<B>,
    metrics: &Metrics,
    refresh: &Refresh,
) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => {
            refresh(metrics);
            (
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.encode(),
            )
        }
        _ => (
            404,
            "text/plain",
            "not found: try GET /metrics\n".to_string(),
        ),
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}
