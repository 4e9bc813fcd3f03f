//! OpenTelemetry tracing end to end: a collector stand-in receives real OTLP/HTTP
//! (protobuf) from the gateway; the client's W3C trace context is honoured (the span is its
//! child) and propagated (the pod gets a traceparent naming the span); sampling follows a
//! sampled parent and otherwise the configured ratio.

use crate::support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use support::*;

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    kind: i32,
    attrs: BTreeMap<String, String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OTLP/HTTP collector stand-in: decodes every export request it receives.
async fn collector() -> (SocketAddr, Arc<Mutex<Vec<Got>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let export =
                                ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                            for rs in export.resource_spans {
                                let service = rs
                                    .resource
                                    .iter()
                                    .flat_map(|r| r.attributes.iter())
                                    .find(|a| a.key == "service.name")
                                    .and_then(|a| a.value.as_ref())
                                    .and_then(|v| match &v.value {
                                        Some(AnyValue::StringValue(s)) => Some(s.clone()),
                                        _ => None,
                                    })
                                    .unwrap_or_default();
                                for ss in rs.scope_spans {
                                    for s in ss.spans {
                                        let attrs = s
                                            .attributes
                                            .iter()
                                            .map(|a| {
                                                let v = match a
                                                    .value
                                                    .as_ref()
                                                    .and_then(|v| v.value.clone())
                                                {
                                                    Some(AnyValue::StringValue(s)) => s,
                                                    Some(AnyValue::IntValue(i)) => i.to_string(),
                                                    other => format!("{other:?}"),
                                                };
                                                (a.key.clone(), v)
                                            })
                                            .collect();
                                        store.lock().unwrap().push(Got {
                                            service: service.clone(),
                                            trace_id: hex(&s.trace_id),
                                            span_id: hex(&s.span_id),
                                            parent_span_id: hex(&s.parent_span_id),
                                            kind: s.kind,
                                            attrs,
                                        });
                                    }
                                }
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

async fn get(gw: &Gateway, headers: &[(&str, &str)]) -> pingress::echo::Echo {
    let mut r = gw
        .client
        .get(format!("http://{}/", gw.http))
        .header("host", "traced.example.com");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

/// (trace id, parent id, flags) of a traceparent.
fn parse(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    assert_eq!(p[0], "00");
    (p[1].to_string(), p[2].to_string(), p[3].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_and_the_trace_context_propagates() {
    let (coll, got) = collector().await;
    let pod_addr = pod("web").await;
    let site = site("web", "traced.example.com", &[pod_addr]);
    let gw = Gateway::start_with(
        &[("site.yaml", site.clone())],
        &format!("  tracing: {{endpoint: \"http://{coll}\", sampling_ratio: 1.0, export_interval_ms: 50}}\n"),
    )
    .await;
    gw.wait_for("traced.example.com", "/", "web").await;

    // A client's trace: the gateway's span is its child, and the pod's parent.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let e = get(
        &gw,
        &[
            (
                "traceparent",
                &format!("00-{client_trace}-{client_span}-01"),
            ),
            ("tracestate", "vendor=opaque"),
        ],
    )
    .await;
    let (trace, ours, flags) = parse(&e.headers["traceparent"]);
    assert_eq!(trace, client_trace, "the pod stays in the client's trace");
    assert_ne!(ours, client_span, "the pod's parent is the gateway's span");
    assert_eq!(flags, "01");
    assert_eq!(e.headers["tracestate"], "vendor=opaque");
    let span = eventually("the span reaches the collector", || async {
        got.lock()
            .unwrap()
            .iter()
            .find(|s| s.trace_id == client_trace)
            .cloned()
    })
    .await;
    assert_eq!(span.span_id, ours);
    assert_eq!(span.parent_span_id, client_span);
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(span.service, "pingress");
    assert_eq!(span.attrs["pingress.ingress"], "shop/web");
    assert_eq!(span.attrs["pingress.service"], "shop/web");
    assert_eq!(span.attrs["http.request.method"], "GET");
    assert_eq!(span.attrs["http.response.status_code"], "200");
    assert_eq!(span.attrs["network.peer.address"], pod_addr.to_string());
    assert_eq!(span.attrs["server.address"], "traced.example.com");

    // No trace from the client: a new one, sampled at ratio 1.
    let e = get(&gw, &[]).await;
    let (trace, ours, _) = parse(&e.headers["traceparent"]);
    let span = eventually("the new trace's span", || async {
        got.lock()
            .unwrap()
            .iter()
            .find(|s| s.trace_id == trace)
            .cloned()
    })
    .await;
    assert_eq!(span.span_id, ours);
    assert_eq!(span.parent_span_id, "", "a root span");
    drop(gw);

    // Ratio 0: nothing of its own is sampled, but a sampled parent is followed; the
    // context propagates either way.
    let gw = Gateway::start_with(
        &[("site.yaml", site)],
        &format!("  tracing: {{endpoint: \"http://{coll}/v1/traces\", sampling_ratio: 0.0, service_name: ratio-zero, export_interval_ms: 50}}\n"),
    )
    .await;
    gw.wait_for("traced.example.com", "/", "web").await;
    let e = get(&gw, &[]).await;
    let (unsampled, _, flags) = parse(&e.headers["traceparent"]);
    assert_eq!(flags, "00", "not sampled, and says so downstream");
    let followed = "0af7651916cd43dd8448eb211c80319c";
    get(
        &gw,
        &[("traceparent", &format!("00-{followed}-b7ad6b7169203331-01"))],
    )
    .await;
    eventually("the followed parent's span", || async {
        got.lock()
            .unwrap()
            .iter()
            .any(|s| s.trace_id == followed)
            .then_some(())
    })
    .await;
    let zero: Vec<Got> = got
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.service == "ratio-zero")
        .cloned()
        .collect();
    assert_eq!(zero.len(), 1, "only the followed trace: {zero:?}");
    assert_ne!(zero[0].trace_id, unsampled);
    drop(gw);

    // Tracing off: the client's headers reach the pod as they were sent.
    let plain = support::site("web", "traced.example.com", &[pod_addr]);
    let gw = Gateway::start(&[("site.yaml", plain)]).await;
    gw.wait_for("traced.example.com", "/", "web").await;
    let tp = format!("00-{client_trace}-{client_span}-01");
    let e = get(
        &gw,
        &[("traceparent", &tp), ("tracestate", "vendor=opaque")],
    )
    .await;
    assert_eq!(e.headers["traceparent"], tp);
    assert_eq!(e.headers["tracestate"], "vendor=opaque");
}
