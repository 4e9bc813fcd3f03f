//! gRPC through the gateway with a real gRPC client (tonic, raw-bytes codec) against a gRPC
//! backend written in the tests: unary, server-streaming, client-streaming and bidirectional
//! calls, error status and custom trailers, over TLS (HTTP/2 by ALPN) and h2c, to h2c pods (by
//! `appProtocol: kubernetes.io/h2c` and by `backend-protocol: GRPC`) and to TLS pods
//! (`backend-protocol: GRPCS`).

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;

use bytes::{Buf, Bytes};
use http::uri::PathAndQuery;
use support::tls::*;
use support::*;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

const NS: &str = "rpc";

/// Messages are raw bytes: no protobuf, no code generation.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

fn grpc_service(name: &str, app_protocol: Option<&str>) -> String {
    let app = app_protocol
        .map(|a| format!("\n    appProtocol: {a}"))
        .unwrap_or_default();
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  ports:\n  - name: grpc\n    port: 50051{app}\n"
    )
}

async fn channel(endpoint: String, origin: &str, tls: Option<&Ca>) -> Channel {
    let mut ep = Endpoint::from_shared(endpoint)
        .unwrap()
        .origin(origin.parse().unwrap());
    if let Some(ca) = tls {
        let host = origin.trim_start_matches("https://");
        ep = ep
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca.pem()))
                    .domain_name(host),
            )
            .unwrap();
    }
    ep.connect().await.unwrap()
}

/// Every kind of call against one route; panics with `what` on any difference.
async fn exercise(ch: Channel, what: &str) {
    let mut grpc = tonic::client::Grpc::new(ch);

    // Unary: message and custom trailer.
    grpc.ready().await.unwrap();
    let resp = grpc
        .unary(
            Request::new(Bytes::from_static(b"hello")),
            PathAndQuery::from_static("/test.Echo/Unary"),
            Raw,
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: unary: {e:?}"));
    assert_eq!(
        resp.metadata().get("x-trailer").unwrap(),
        "unary-done",
        "{what}"
    );
    assert_eq!(
        resp.into_inner(),
        Bytes::from_static(b"echo:hello"),
        "{what}"
    );

    // Error status in a trailers-only answer.
    grpc.ready().await.unwrap();
    let err = grpc
        .unary(
            Request::new(Bytes::from_static(b"x")),
            PathAndQuery::from_static("/test.Echo/Fail"),
            Raw,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{what}: {err:?}");
    assert_eq!(err.message(), "no such thing", "{what}");

    // Server streaming.
    grpc.ready().await.unwrap();
    let mut stream = grpc
        .server_streaming(
            Request::new(Bytes::from_static(b"3")),
            PathAndQuery::from_static("/test.Echo/ServerStream"),
            Raw,
        )
        .await
        .unwrap()
        .into_inner();
    let mut items = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        items.push(String::from_utf8(m.to_vec()).unwrap());
    }
    assert_eq!(items, ["item-0", "item-1", "item-2"], "{what}");
    let trailers = stream.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("x-count").unwrap(), "1", "{what}");

    // Client streaming.
    grpc.ready().await.unwrap();
    let parts = ["a", "b", "c"].map(|m| Bytes::from_static(m.as_bytes()));
    let resp = grpc
        .client_streaming(
            Request::new(futures_util::stream::iter(parts)),
            PathAndQuery::from_static("/test.Echo/ClientStream"),
            Raw,
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: client streaming: {e:?}"));
    assert_eq!(resp.metadata().get("x-count").unwrap(), "3", "{what}");
    assert_eq!(
        resp.into_inner(),
        Bytes::from_static(b"got:a+b+c"),
        "{what}"
    );

    // Bidirectional, interleaved: each message is answered before the next is sent, so the
    // request stream is still open while responses flow back.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    grpc.ready().await.unwrap();
    tx.send(Bytes::from_static(b"m0")).await.unwrap();
    let mut replies = grpc
        .streaming(
            Request::new(requests),
            PathAndQuery::from_static("/test.Echo/Bidi"),
            Raw,
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: bidi: {e:?}"))
        .into_inner();
    for i in 0..5 {
        let reply = replies.message().await.unwrap().unwrap();
        assert_eq!(reply, format!("echo:m{i}").as_bytes(), "{what}");
        if i < 4 {
            tx.send(Bytes::from(format!("m{}", i + 1))).await.unwrap();
        }
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none(), "{what}");
    let trailers = replies.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("x-count").unwrap(), "5", "{what}");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("0"),
        "{what}"
    );
}

struct Setup {
    gw: Gateway,
    ca: Ca,
    /// What the h2c pod has seen.
    h2c_pod: std::sync::Arc<PodStats>,
}

async fn setup() -> Setup {
    let ca = Ca::new();
    let names = ["grpc.example.test", "grpcs.example.test"];
    let gateway_cert = ca.issue(&names, "gateway");
    let pod_cert = ca.issue(&["pod.internal"], "pod");
    let (h2c_addr, h2c_pod): (SocketAddr, _) = grpc_pod(None).await;
    let (tls_pod, _) = grpc_pod(Some(&pod_cert)).await;
    let manifests = format!(
        "{CLASS}{}{}{}{}{}{}{}{}{}{}",
        grpc_service("grpc-h2c", Some("kubernetes.io/h2c")),
        slices(NS, "grpc-h2c", "grpc", &[h2c_addr]),
        grpc_service("grpc-tls", None),
        slices(NS, "grpc-tls", "grpc", &[tls_pod]),
        grpc_service("grpc-plain", None),
        slices(NS, "grpc-plain", "grpc", &[h2c_addr]),
        tls_secret(NS, "gateway-cert", &gateway_cert),
        tls_ingress(
            NS,
            "h2c",
            &[],
            &[("gateway-cert", &["grpc.example.test"])],
            &["grpc.example.test"],
            "grpc-h2c",
            "50051"
        ),
        tls_ingress(
            NS,
            "tls",
            &[("nginx.ingress.kubernetes.io/backend-protocol", "GRPCS")],
            &[("gateway-cert", &["grpcs.example.test"])],
            &["grpcs.example.test"],
            "grpc-tls",
            "50051"
        ),
        tls_ingress(
            NS,
            "annotated",
            &[("nginx.ingress.kubernetes.io/backend-protocol", "GRPC")],
            &[],
            &["grpc-plain.example.test"],
            "grpc-plain",
            "50051"
        ),
    );
    let gw = Gateway::start_with(&[("grpc.yaml", manifests)], "  h2c: true\n").await;
    Setup { gw, ca, h2c_pod }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_to_h2c_and_tls_pods_keeps_streams_status_and_trailers() {
    let Setup { gw, ca, .. } = setup().await;
    let endpoint = format!("https://127.0.0.1:{}", gw.https.port());
    exercise(
        channel(endpoint.clone(), "https://grpc.example.test", Some(&ca)).await,
        "TLS client -> h2c pod (appProtocol)",
    )
    .await;
    exercise(
        channel(endpoint, "https://grpcs.example.test", Some(&ca)).await,
        "TLS client -> TLS pod (GRPCS)",
    )
    .await;
    assert_eq!(
        gw.metric("pingress_diagnostics{kind=\"tls_secret\"}").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2c_to_an_annotated_backend() {
    let Setup { gw, h2c_pod, .. } = setup().await;
    exercise(
        channel(
            format!("http://{}", gw.http),
            "http://grpc-plain.example.test",
            None,
        )
        .await,
        "h2c client -> h2c pod (backend-protocol GRPC)",
    )
    .await;
    // Many calls multiplexed on one client connection, all open at the pod at the same time
    // (`Gather` holds each answer until every call has arrived).
    const CALLS: usize = 50;
    let ch = channel(
        format!("http://{}", gw.http),
        "http://grpc-plain.example.test",
        None,
    )
    .await;
    let calls = (0..CALLS).map(|i| {
        let mut grpc = tonic::client::Grpc::new(ch.clone());
        async move {
            let msg = format!("{CALLS}/n{i}");
            grpc.ready().await.unwrap();
            let r = grpc
                .unary(
                    Request::new(Bytes::from(msg.clone())),
                    PathAndQuery::from_static("/test.Echo/Gather"),
                    Raw,
                )
                .await
                .unwrap_or_else(|e| panic!("call {i}: {e:?}"));
            assert_eq!(r.into_inner(), format!("echo:{msg}").as_bytes());
        }
    });
    let before = h2c_pod.connections.load(SeqCst);
    h2c_pod.peak_calls_per_connection.store(0, SeqCst);
    futures_util::future::join_all(calls).await;
    // The gateway multiplexes its HTTP/2 connections to the pod: with 50 calls open at once,
    // at least one connection carries several of them. How many connections it opens is not
    // a fixed number: Pingora's connector takes a connection out of its pool while it adds a
    // stream, and a call arriving in that moment opens another one (a documented trade-off
    // in pingora-core's connectors/http/v2.rs), more often on a busy machine.
    let opened = h2c_pod.connections.load(SeqCst) - before;
    let peak = h2c_pod.peak_calls_per_connection.load(SeqCst);
    assert!(
        peak >= 2 && opened < CALLS,
        "{CALLS} calls open at once went over {opened} new upstream connection(s), \
         at most {peak} on one: the gateway does not multiplex calls to the pod"
    );
}
