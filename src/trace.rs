//! OpenTelemetry tracing of proxied requests (off by default: `tracing.endpoint` empty).
//!
//! * Each request gets one server span, a child of the client's W3C `traceparent` /
//!   `tracestate` when it sent them. The pod gets `traceparent` / `tracestate` naming that
//!   span, so its own spans join the trace.
//! * Sampling: parent-based (a sampled parent is followed), else `sampling_ratio` of trace
//!   ids.
//! * The span carries the route (Ingress, Service), the upstream address and the status,
//!   under OpenTelemetry's HTTP semantic-convention names where one exists.
//! * Spans are batched and sent over OTLP/HTTP (protobuf) from the SDK's own thread, never
//!   on the proxy's event loops; at shutdown the last batch is flushed.
//!
//! With tracing off the proxy pays one `Option` check per request, and the client's trace
//! headers pass through to the pod untouched, as every other header does.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};

use crate::config::TracingConf;

/// The tracer of the proxy, when tracing is on.
pub struct Tracing {
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

impl Tracing {
    /// Build the exporter and the tracer (None when tracing is off). Call outside any async
    /// runtime: the exporter's HTTP client is a blocking one.
    pub fn new(conf: &TracingConf) -> Result<Option<Tracing>, String> {
        if conf.endpoint.is_empty() {
            return Ok(None);
        }
        let endpoint = traces_url(&conf.endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("pingress.tracing.endpoint: {e}"))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(conf.export_interval_ms.max(10)))
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                conf.sampling_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(conf.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "pingress");
        let _ = PROVIDER.set(provider);
        Ok(Some(Tracing {
            tracer,
            propagator: TraceContextPropagator::new(),
        }))
    }

    /// Start the server span of a request, as a child of the client's trace context.
    /// Attributes are made only for a sampled (recording) span: an unsampled request pays
    /// for the context and its propagation, not for formatting.
    pub fn start(
        &self,
        req: &pingora::http::RequestHeader,
        host: &str,
        client: Option<&str>,
    ) -> Context {
        let parent = self.propagator.extract(&Headers(&req.headers));
        let mut span = self
            .tracer
            .span_builder(method_name(&req.method))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        if span.is_recording() {
            span.set_attribute(KeyValue::new(
                "http.request.method",
                req.method.as_str().to_string(),
            ));
            span.set_attribute(KeyValue::new("url.path", req.uri.path().to_string()));
            span.set_attribute(KeyValue::new("server.address", host.to_string()));
            if let Some(c) = client {
                span.set_attribute(KeyValue::new("client.address", c.to_string()));
            }
        }
        parent.with_span(span)
    }

    /// `traceparent` / `tracestate` for the upstream request, naming the request's span.
    pub fn inject(&self, cx: &Context) -> Vec<(&'static str, String)> {
        let mut out = Carrier(Vec::new());
        self.propagator.inject_context(cx, &mut out);
        out.0
    }
}

/// Finish a request's span: what answered it (Ingress, `namespace/service`, the pod's
/// address) and with which status.
pub fn finish(
    cx: &Context,
    ingress: &str,
    service: (&str, &str),
    upstream: Option<std::net::SocketAddr>,
    status: u16,
) {
    let span = cx.span();
    if !span.is_recording() {
        return;
    }
    span.set_attribute(KeyValue::new("pingress.ingress", ingress.to_string()));
    span.set_attribute(KeyValue::new(
        "pingress.service",
        format!("{}/{}", service.0, service.1),
    ));
    if let Some(u) = upstream {
        span.set_attribute(KeyValue::new("network.peer.address", u.to_string()));
    }
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 || status == 0 {
        span.set_status(Status::error(if status == 0 {
            "no response"
        } else {
            "server error"
        }));
    }
    span.end();
}

/// The span name: the method (OpenTelemetry's HTTP server span name without a route).
fn method_name(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "HTTP",
    }
}

/// Send what is buffered (at shutdown).
pub fn flush() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}

/// `http://host:port` or `http://host:port/v1/traces`: the OTLP/HTTP traces URL.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("pingress.tracing.endpoint: `{endpoint}` is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "pingress.tracing.endpoint: `{endpoint}` needs http:// or https:// and a host"
        ));
    }
    Ok(match uri.path() {
        "" | "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        _ => endpoint.to_string(),
    })
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct Carrier(Vec<(&'static str, String)>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_once() {
        assert_eq!(
            traces_url("http://c:4318").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/custom").unwrap(),
            "http://c:4318/custom"
        );
        assert!(traces_url("c:4318").is_err());
        assert!(traces_url("ftp://c").is_err());
    }
}
