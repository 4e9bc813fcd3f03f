//! The admin listener: `/healthz` (process alive), `/readyz` (source read in full and first
//! generation published) and `/metrics` (Prometheus text format).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::generation::Shared;

/// The admin HTTP app.
pub struct Admin {
    pub shared: Arc<Shared>,
}

fn text(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("valid response")
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let plain = "text/plain; charset=utf-8";
        match session.req_header().uri.path() {
            "/healthz" => text(200, plain, b"ok\n".to_vec()),
            "/readyz" if self.shared.is_ready() => text(200, plain, b"ready\n".to_vec()),
            "/readyz" => text(503, plain, b"not ready: source not loaded yet\n".to_vec()),
            "/metrics" => text(
                200,
                "text/plain; version=0.0.4",
                self.shared.metrics.render(),
            ),
            _ => text(404, plain, b"not found\n".to_vec()),
        }
    }
}
