//! Gateway API RequestMirror: a copy of the request head (method, path and query, headers,
//! Host as the client sent it) goes to one ready endpoint of each mirror backend, fire and
//! forget. The mirror's answer is read and dropped; it never delays or changes the client's
//! answer. The request body is not mirrored.

use std::time::Duration;

use http::HeaderValue;
use pingora::http::RequestHeader;

use crate::generation::{Action, Route};

/// The mirror client, shared by all routes.
pub struct Mirrors {
    client: reqwest::Client,
}

impl Mirrors {
    pub fn new(connect_timeout: Duration) -> Mirrors {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Mirrors { client }
    }

    /// Send a copy of `req` to `to` (one of its ready endpoints), in the background.
    pub fn send(&self, to: &Route, req: &RequestHeader, host: &str) {
        let Action::Proxy(pool) = &to.action else {
            return;
        };
        let Some(addr) = pool.select(&[]) else { return };
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let Ok(method) = reqwest::Method::from_bytes(req.method.as_str().as_bytes()) else {
            return;
        };
        let mut rb = self
            .client
            .request(method, format!("http://{addr}{target}"));
        for (name, value) in req.headers.iter() {
            if name == http::header::HOST || super::HOP_BY_HOP.contains(&name.as_str()) {
                continue;
            }
            rb = rb.header(name.as_str(), value.as_bytes());
        }
        if let Ok(h) = HeaderValue::from_str(host) {
            rb = rb.header(http::header::HOST, h);
        }
        tokio::spawn(async move {
            if let Ok(resp) = rb.send().await {
                let _ = resp.bytes().await;
            }
        });
    }
}
