//! The admin listener: `/healthz` (process alive), `/readyz` (source read in full, first
//! generation published, every proxy address listened on, not shutting down), `/metrics`
//! (Prometheus text format) and `/gateway-api/status`: the Gateway API conditions of the
//! published generation, one per line as `pingress check` prints them (in manifests mode
//! nothing else shows them; in-cluster the leader also writes them to the objects).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::generation::Shared;
use crate::listen::Listening;

/// The admin HTTP app.
pub struct Admin {
    pub shared: Arc<Shared>,
    pub listening: Listening,
}

fn text(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("valid response")
}

impl Admin {
    /// Why `/readyz` is not 200, or None when ready.
    fn not_ready(&self) -> Option<String> {
        if self.shared.is_draining() {
            return Some("shutting down".into());
        }
        if !self.shared.is_ready() {
            return Some("source not loaded yet".into());
        }
        let missing = self.listening.missing();
        if !missing.is_empty() {
            return Some(format!("not listening on {missing:?} yet"));
        }
        None
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let plain = "text/plain; charset=utf-8";
        match session.req_header().uri.path() {
            "/healthz" => text(200, plain, b"ok\n".to_vec()),
            "/readyz" => match self.not_ready() {
                None => text(200, plain, b"ready\n".to_vec()),
                Some(why) => text(503, plain, format!("not ready: {why}\n").into_bytes()),
            },
            "/metrics" => text(
                200,
                "text/plain; version=0.0.4",
                self.shared.metrics.render(),
            ),
            "/gateway-api/status" => {
                let mut body = String::new();
                if let Some(d) = self.shared.debug.load().as_ref() {
                    for l in d.gateway.lines() {
                        body.push_str(&l);
                        body.push('\n');
                    }
                }
                text(200, plain, body.into_bytes())
            }
            _ => text(404, plain, b"not found\n".to_vec()),
        }
    }
}
