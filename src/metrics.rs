//! Prometheus metrics. One registry, owned here; `/metrics` exposes exactly it.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::translate::DiagKind;

/// Status classes of `pingress_requests_total` (`error`: no response was written).
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];
/// Methods of `pingress_requests_total`; anything else is `OTHER`.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "OTHER",
];

fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ => 5,
    }
}

fn method_index(m: &http::Method) -> usize {
    METHODS[..9]
        .iter()
        .position(|name| *name == m.as_str())
        .unwrap_or(9)
}

/// One route's request metrics, resolved on its first request: the hot path then counts
/// without hashing label values (a route lives for one generation, so each label set is
/// looked up once per generation, not once per request).
#[derive(Default)]
pub struct RouteStats(std::sync::OnceLock<Box<RouteHandles>>);

struct RouteHandles {
    duration: prometheus::Histogram,
    upstream: prometheus::Histogram,
    /// By status class, then method; each resolved on first use.
    requests: [[std::sync::OnceLock<IntCounter>; METHODS.len()]; CLASSES.len()],
}

/// The labels a route's requests are counted under.
pub struct RouteLabels<'a> {
    pub ingress: &'a str,
    pub namespace: &'a str,
    pub service: &'a str,
}

impl std::fmt::Debug for RouteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteStats")
    }
}

impl RouteStats {
    /// Requests counted under this route so far (0 before the first).
    pub fn total(&self) -> u64 {
        self.0.get().map_or(0, |h| {
            h.requests
                .iter()
                .flatten()
                .filter_map(|c| c.get())
                .map(|c| c.get())
                .sum()
        })
    }

    /// Count one finished request: its status (0: none written), method, whole duration
    /// and, when a pod answered, the time to its response header.
    pub fn record(
        &self,
        metrics: &Metrics,
        labels: &RouteLabels,
        status: u16,
        method: &http::Method,
        elapsed: std::time::Duration,
        upstream: Option<std::time::Duration>,
    ) {
        let ns = [labels.ingress, labels.namespace, labels.service];
        let h = self.0.get_or_init(|| {
            Box::new(RouteHandles {
                duration: metrics.request_duration.with_label_values(&ns),
                upstream: metrics.upstream_response.with_label_values(&ns),
                requests: Default::default(),
            })
        });
        let (c, m) = (class_index(status), method_index(method));
        h.requests[c][m]
            .get_or_init(|| {
                let [i, n, s] = ns;
                metrics
                    .requests
                    .with_label_values(&[i, n, s, CLASSES[c], METHODS[m]])
            })
            .inc();
        h.duration.observe(elapsed.as_secs_f64());
        if let Some(t) = upstream {
            h.upstream.observe(t.as_secs_f64());
        }
    }
}

/// Every metric the gateway exports.
pub struct Metrics {
    pub registry: Registry,
    names: Vec<String>,
    /// Requests by ingress, namespace, service, status class and method.
    pub requests: IntCounterVec,
    /// Whole-request duration (first byte in to last byte out) by ingress.
    pub request_duration: HistogramVec,
    /// Time from sending the request upstream to its response header, by ingress.
    pub upstream_response: HistogramVec,
    /// Open downstream connections.
    pub downstream_connections: IntGauge,
    /// Route generations published.
    pub generations: IntCounter,
    /// Endpoint-only updates applied (no route change).
    pub endpoint_updates: IntCounter,
    /// Time to bring a change into service once the controller takes it: translation and
    /// publishing (`kind="routes"`) or the pool refresh (`kind="endpoints"`).
    pub apply_duration: HistogramVec,
    /// Current diagnostics by kind.
    pub diagnostics: IntGaugeVec,
    /// Ready endpoints per upstream pool.
    pub ready_endpoints: IntGaugeVec,
    /// Manifest files or directory reads rejected.
    pub manifest_errors: IntCounter,
    /// Manifest files currently broken (their last good objects are in force).
    pub manifest_files_invalid: IntGauge,
    /// Kubernetes watch errors (the watch retries with backoff).
    pub source_errors: IntCounter,
    /// 1 while this replica holds the leader lease (writes status and Events).
    pub leader: IntGauge,
    /// Writes to the Kubernetes API by kind (`status`, `event`), by result.
    pub api_writes: IntCounterVec,
    /// Expiry (Unix seconds) of every certificate in service, by origin (`namespace/name` of
    /// the Secret, a file path, or `self-signed`).
    pub tls_cert_expiry: IntGaugeVec,
    /// HTTPS requests redirected from plain HTTP.
    pub https_redirects: IntCounter,
    /// Connections closed on a PROXY protocol listener, by reason (`untrusted`, `timeout`,
    /// `malformed`, `io`).
    pub proxy_protocol_rejected: IntCounterVec,
    /// Requests refused by a route's policy, by Ingress and policy (`access`: allow/deny
    /// lists; `rate`, `connections`: limits; `closed`: an access control that could not be
    /// built).
    pub policy_refusals: IntCounterVec,
    /// Requests refused at the edge before routing, by status and reason (strict HTTP and
    /// head limits: `400`, `414`, `431`; body limits: `413`).
    pub edge_refusals: IntCounterVec,
    /// Client connections pingress closed, by reason (`head_timeout`, `body_timeout`,
    /// `send_timeout`,
    /// `max_connections`, `max_connections_per_client`).
    pub downstream_closed: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("pingress_requests_total", "Requests handled"),
            &["ingress", "namespace", "service", "status", "method"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "pingress_request_duration_seconds",
                "Time from request start to the end of the response",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["ingress", "namespace", "service"],
        )
        .expect("valid metric");
        let apply_duration = HistogramVec::new(
            HistogramOpts::new(
                "pingress_apply_duration_seconds",
                "Time to bring a source change into service (routes: translate and publish; endpoints: refresh the pools)",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
            &["kind"],
        )
        .expect("valid metric");
        let upstream_response = HistogramVec::new(
            HistogramOpts::new(
                "pingress_upstream_response_seconds",
                "Time from connecting to the pod to its response header",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["ingress", "namespace", "service"],
        )
        .expect("valid metric");
        let downstream_connections = IntGauge::new(
            "pingress_downstream_connections_active",
            "Open client connections (HTTP/1 and HTTP/2, plain and TLS)",
        )
        .expect("valid metric");
        let generations = IntCounter::new(
            "pingress_generations_applied_total",
            "Route generations published",
        )
        .expect("valid metric");
        let endpoint_updates = IntCounter::new(
            "pingress_endpoint_updates_total",
            "Endpoint-only updates applied without re-translating routes",
        )
        .expect("valid metric");
        let diagnostics = IntGaugeVec::new(
            Opts::new(
                "pingress_diagnostics",
                "Current translation diagnostics by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let ready_endpoints = IntGaugeVec::new(
            Opts::new(
                "pingress_upstream_ready_endpoints",
                "Ready endpoints per upstream pool",
            ),
            &["namespace", "service", "port"],
        )
        .expect("valid metric");
        let manifest_errors = IntCounter::new(
            "pingress_manifest_errors_total",
            "Manifest files or directory reads rejected",
        )
        .expect("valid metric");
        let manifest_files_invalid = IntGauge::new(
            "pingress_manifest_files_invalid",
            "Manifest files currently rejected (last good objects in force)",
        )
        .expect("valid metric");
        let source_errors = IntCounter::new(
            "pingress_source_errors_total",
            "Kubernetes watch errors (retried with backoff)",
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "pingress_leader",
            "1 while this replica holds the leader lease",
        )
        .expect("valid metric");
        let api_writes = IntCounterVec::new(
            Opts::new(
                "pingress_api_writes_total",
                "Writes to the Kubernetes API (Ingress status, Events)",
            ),
            &["kind", "result"],
        )
        .expect("valid metric");
        let tls_cert_expiry = IntGaugeVec::new(
            Opts::new(
                "pingress_tls_certificate_expiry_timestamp_seconds",
                "Expiry of each TLS certificate in service (Unix time)",
            ),
            &["secret"],
        )
        .expect("valid metric");
        let https_redirects = IntCounter::new(
            "pingress_https_redirects_total",
            "Plain-HTTP requests answered with a redirect to HTTPS",
        )
        .expect("valid metric");
        let proxy_protocol_rejected = IntCounterVec::new(
            Opts::new(
                "pingress_proxy_protocol_rejected_total",
                "Connections closed on a PROXY protocol listener, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let policy_refusals = IntCounterVec::new(
            Opts::new(
                "pingress_policy_refusals_total",
                "Requests refused by a route's policy, by Ingress and policy",
            ),
            &["ingress", "policy"],
        )
        .expect("valid metric");
        let edge_refusals = IntCounterVec::new(
            Opts::new(
                "pingress_requests_refused_total",
                "Requests refused at the edge before routing (strict HTTP, head and body limits), by status and reason",
            ),
            &["status", "reason"],
        )
        .expect("valid metric");
        let downstream_closed = IntCounterVec::new(
            Opts::new(
                "pingress_downstream_closed_total",
                "Client connections closed by a timeout or a connection limit, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for kind in DiagKind::ALL {
            diagnostics.with_label_values(&[kind.as_str()]).set(0);
        }
        let m = Metrics {
            registry,
            names: Vec::new(),
            requests,
            request_duration,
            upstream_response,
            downstream_connections,
            generations,
            endpoint_updates,
            apply_duration,
            diagnostics,
            ready_endpoints,
            manifest_errors,
            manifest_files_invalid,
            source_errors,
            leader,
            api_writes,
            tls_cert_expiry,
            https_redirects,
            proxy_protocol_rejected,
            policy_refusals,
            edge_refusals,
            downstream_closed,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.request_duration.clone()),
            Box::new(m.upstream_response.clone()),
            Box::new(m.downstream_connections.clone()),
            Box::new(m.generations.clone()),
            Box::new(m.endpoint_updates.clone()),
            Box::new(m.apply_duration.clone()),
            Box::new(m.diagnostics.clone()),
            Box::new(m.ready_endpoints.clone()),
            Box::new(m.manifest_errors.clone()),
            Box::new(m.manifest_files_invalid.clone()),
            Box::new(m.source_errors.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.api_writes.clone()),
            Box::new(m.tls_cert_expiry.clone()),
            Box::new(m.https_redirects.clone()),
            Box::new(m.proxy_protocol_rejected.clone()),
            Box::new(m.policy_refusals.clone()),
            Box::new(m.edge_refusals.clone()),
            Box::new(m.downstream_closed.clone()),
        ];
        let mut m = m;
        for c in collectors {
            m.names.extend(c.desc().iter().map(|d| d.fq_name.clone()));
            m.registry.register(c).expect("metric registered once");
        }
        m
    }

    /// The name of every metric family the binary exports (whether or not it has a series
    /// yet), for docs and dashboard checks.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_stats_count_under_the_route_labels() {
        let m = Metrics::new();
        let stats = RouteStats::default();
        let labels = RouteLabels {
            ingress: "ns/web",
            namespace: "ns",
            service: "web",
        };
        let ms = std::time::Duration::from_millis(1);
        for (status, method) in [(200, "GET"), (200, "GET"), (404, "POST"), (0, "BREW")] {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            stats.record(&m, &labels, status, &method, ms, Some(ms));
        }
        let count = |class: &str, method: &str| {
            m.requests
                .with_label_values(&["ns/web", "ns", "web", class, method])
                .get()
        };
        assert_eq!(count("2xx", "GET"), 2);
        assert_eq!(count("4xx", "POST"), 1);
        assert_eq!(count("error", "OTHER"), 1);
        let hist = m
            .request_duration
            .with_label_values(&["ns/web", "ns", "web"]);
        assert_eq!(hist.get_sample_count(), 4);
        assert_eq!(class_index(599), 4);
        assert_eq!(class_index(600), 5);
        assert_eq!(method_index(&http::Method::TRACE), 8);
    }
}
