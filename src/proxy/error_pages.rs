//! custom-http-errors: an upstream answer with one of the route's listed statuses is
//! replaced by what the error backend answers to `GET /` with ingress-nginx's headers
//! (X-Code, X-Format, X-Original-URI, X-Namespace, X-Ingress-Name, X-Service-Name,
//! X-Service-Port, X-Request-ID). The sub-request is one HTTP/1.1 exchange with hyper's
//! client on a fresh connection to an endpoint of the error backend's pool; its answer is
//! bounded in size and time.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Empty, Limited};

/// The largest error page kept.
const MAX_PAGE: usize = 1 << 20;

/// What the request that failed was, for the error backend's headers.
pub struct Failed<'a> {
    pub code: u16,
    pub accept: Option<&'a HeaderValue>,
    pub original_uri: &'a str,
    pub host: &'a str,
    pub namespace: &'a str,
    /// `namespace/name` of the Ingress.
    pub ingress: &'a str,
    pub service: &'a str,
    pub service_port: String,
    pub request_id: Option<&'a HeaderValue>,
}

/// The error backend's answer.
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Fetch the error page from `addr` within `limit`.
pub async fn fetch(addr: SocketAddr, f: &Failed<'_>, limit: Duration) -> Result<Page, String> {
    tokio::time::timeout(limit, fetch_inner(addr, f))
        .await
        .map_err(|_| format!("error backend {addr} did not answer within {limit:?}"))?
}

async fn fetch_inner(addr: SocketAddr, f: &Failed<'_>) -> Result<Page, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to error backend {addr}: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| format!("error backend {addr}: {e}"))?;
    tokio::spawn(conn);
    let name = f.ingress.rsplit('/').next().unwrap_or(f.ingress);
    let mut req = http::Request::get("/")
        .header(http::header::HOST, f.host)
        .header("x-code", f.code)
        .header("x-original-uri", f.original_uri)
        .header("x-namespace", f.namespace)
        .header("x-ingress-name", name)
        .header("x-service-name", f.service)
        .header("x-service-port", f.service_port.as_str());
    if let Some(a) = f.accept {
        req = req.header("x-format", a.clone());
    }
    if let Some(id) = f.request_id {
        req = req.header("x-request-id", id.clone());
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("error page request: {e}"))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("error backend {addr}: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_PAGE)
        .collect()
        .await
        .map_err(|e| format!("error backend {addr}: body: {e}"))?
        .to_bytes();
    Ok(Page {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}
