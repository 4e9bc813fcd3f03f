//! A small echo backend (`pingress echo`): answers every request with what it received
//! (method, path, query, headers, body length) and its own name, and echoes WebSocket
//! messages. Used by the quickstart, the tests and the benchmarks as a stand-in pod.
//!
//! Query parameters: `size=N` answers N bytes of `x` instead of the JSON echo,
//! `status=N` sets the status code, `delay_ms=N` waits before answering.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::routing::conditions::query_param;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// The JSON an echo backend answers with.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Echo {
    pub pod: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: BTreeMap<String, String>,
    pub body_len: usize,
}

/// Serve on `listener` forever, answering as `name`.
pub async fn serve(listener: TcpListener, name: String) {
    let name: &'static str = Box::leak(name.into_boxed_str());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, name));
    }
}

/// Serve one connection (plain TCP, or a TLS stream for an HTTPS pod) as `name`.
pub async fn serve_connection<I>(io: I, name: &'static str)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| handle(req, name));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await;
}

/// Bind `addr` and serve in a background task; returns the bound address.
pub async fn spawn(addr: SocketAddr, name: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, name.to_string()));
    Ok(local)
}

async fn handle(
    req: Request<Incoming>,
    name: &'static str,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_ws = req
        .headers()
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if is_ws {
        return Ok(websocket(req, name));
    }
    let query = req.uri().query().unwrap_or("").to_string();
    if let Some(ms) = query_param(Some(&query), "delay_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = query_param(Some(&query), "status")
        .and_then(|v| v.parse::<u16>().ok())
        .unwrap_or(200);
    let size = query_param(Some(&query), "size").and_then(|v| v.parse::<usize>().ok());
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_string())
            .and_modify(|e: &mut String| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let body_len = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => 0,
    };
    let builder = Response::builder().status(status).header("x-pod", name);
    let resp = match size {
        Some(n) => builder
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from(vec![b'x'; n]))),
        None => {
            let echo = Echo {
                pod: name.to_string(),
                method,
                path,
                query,
                headers,
                body_len,
            };
            builder
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(
                    serde_json::to_vec(&echo).unwrap_or_default(),
                )))
        }
    };
    Ok(resp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

fn websocket(mut req: Request<Incoming>, name: &'static str) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return Response::builder()
            .status(400)
            .body(Full::new(Bytes::from_static(b"missing sec-websocket-key")))
            .unwrap_or_default();
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if msg.is_text() || msg.is_binary() {
                let reply = match msg {
                    tokio_tungstenite::tungstenite::Message::Text(t) => {
                        tokio_tungstenite::tungstenite::Message::Text(format!("{name}: {t}"))
                    }
                    other => other,
                };
                if ws.send(reply).await.is_err() {
                    break;
                }
            }
        }
    });
    Response::builder()
        .status(101)
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept)
        .header("x-pod", name)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}
