//! Prometheus metrics. One registry, owned here; `/metrics` exposes exactly it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::{
    proto, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
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

/// One route's request metrics, resolved on its first request to the series of its labels:
/// the hot path then counts without hashing label values (a route lives for one generation,
/// so each label set is looked up once per generation, not once per request).
#[derive(Default)]
pub struct RouteStats(std::sync::OnceLock<Arc<Series>>);

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
    /// Requests counted so far under this route's labels (by every route with the same
    /// Ingress, namespace and Service, since start; 0 before this route's first request).
    pub fn total(&self) -> u64 {
        self.0
            .get()
            .map_or(0, |s| s.requests().map(|(_, _, n)| n).sum())
    }

    /// Count one finished request: its status (0: none written), method, whole duration
    /// and, when a pod answered, the time to its response header.
    pub fn record(
        &self,
        metrics: &Metrics,
        labels: &RouteLabels,
        status: u16,
        method: &http::Method,
        elapsed: Duration,
        upstream: Option<Duration>,
    ) {
        let s = self.0.get_or_init(|| metrics.route_series.series(labels));
        s.requests[class_index(status)][method_index(method)].fetch_add(1, Relaxed);
        s.duration.observe(elapsed);
        if let Some(t) = upstream {
            s.upstream.observe(t);
        }
    }
}

/// [`LATENCY_BUCKETS`] in nanoseconds, rounded (`0.001 * 1e9` need not be exactly 1,000,000
/// in floating point; truncated, a request of exactly a bound could miss that bucket).
const LATENCY_BOUNDS_NS: [u64; LATENCY_BUCKETS.len()] = {
    let mut out = [0; LATENCY_BUCKETS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = (LATENCY_BUCKETS[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    out
};

/// A latency histogram as plain counters: the sum first, on the cache line of the buckets
/// up to 50 ms, so one observation of a typical request writes one line.
#[derive(Default)]
#[repr(C)]
struct Hist {
    sum_ns: AtomicU64,
    /// Observations per bucket (not cumulative); the last one is above every bound.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

impl Hist {
    fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus `le` buckets: a value equal to a bound counts in that bound's bucket.
        let i = LATENCY_BOUNDS_NS.partition_point(|&b| b < ns);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    fn proto(&self) -> proto::Histogram {
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
        for (count, bound) in self.counts.iter().zip(LATENCY_BUCKETS) {
            cumulative += count.load(Relaxed);
            let mut b = proto::Bucket::default();
            b.set_cumulative_count(cumulative);
            b.set_upper_bound(*bound);
            buckets.push(b);
        }
        cumulative += self.counts[LATENCY_BUCKETS.len()].load(Relaxed);
        h.set_bucket(buckets);
        // The count is the buckets' sum, so `+Inf` always equals it; the sum is read on its
        // own (a scrape racing a request can see one without the other, as with any
        // counters scraped one by one).
        h.set_sample_count(cumulative);
        h.set_sample_sum(self.sum_ns.load(Relaxed) as f64 / 1e9);
        h
    }
}

/// The request metrics of one label set (Ingress, namespace, Service) in one cache-aligned
/// block, shared by every route with those labels. The hot path writes three of its lines
/// per request; prometheus' own `Histogram` and `IntCounter` objects spread the same counts
/// over about ten lines in separate allocations, which at thousands of routes cost more in
/// cache and TLB misses than the instructions of the whole lookup (docs/benchmarks.md).
#[derive(Default)]
#[repr(C, align(64))]
pub struct Series {
    duration: Hist,
    upstream: Hist,
    /// By status class, then method.
    requests: [[AtomicU64; METHODS.len()]; CLASSES.len()],
}

impl Series {
    /// (class, method, count) of every non-zero request counter.
    fn requests(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        self.requests.iter().zip(CLASSES).flat_map(|(row, class)| {
            row.iter()
                .zip(METHODS)
                .map(move |(n, method)| (class, method, n.load(Relaxed)))
                .filter(|&(_, _, n)| n > 0)
        })
    }
}

/// Series by (ingress, namespace, service).
type SeriesMap = BTreeMap<[Box<str>; 3], Arc<Series>>;

/// The route request series by label set, exported as three metric families
/// (`pingress_requests_total`, `pingress_request_duration_seconds`,
/// `pingress_upstream_response_seconds`). A series is created on the first request under
/// its labels and kept (counters never go back), as a prometheus `*Vec` keeps its children.
#[derive(Clone)]
pub struct RouteSeries {
    requests: Desc,
    duration: Desc,
    upstream: Desc,
    by_labels: Arc<Mutex<SeriesMap>>,
}

impl RouteSeries {
    fn new() -> RouteSeries {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            let labels = labels.iter().map(|l| l.to_string()).collect();
            Desc::new(name.into(), help.into(), labels, Default::default()).expect("valid metric")
        };
        const ROUTE: [&str; 3] = ["ingress", "namespace", "service"];
        RouteSeries {
            requests: desc(
                "pingress_requests_total",
                "Requests handled",
                &["ingress", "namespace", "service", "status", "method"],
            ),
            duration: desc(
                "pingress_request_duration_seconds",
                "Time from request start to the end of the response",
                &ROUTE,
            ),
            upstream: desc(
                "pingress_upstream_response_seconds",
                "Time from connecting to the pod to its response header",
                &ROUTE,
            ),
            by_labels: Default::default(),
        }
    }

    /// The series of a label set, created on first use.
    fn series(&self, l: &RouteLabels) -> Arc<Series> {
        let key = [l.ingress.into(), l.namespace.into(), l.service.into()];
        let mut map = self.by_labels.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| Arc::new(Series::default()))
            .clone()
    }
}

/// Label pairs sorted by name, as prometheus' own vectors write them.
fn label_pairs(pairs: &[(&str, &str)]) -> Vec<proto::LabelPair> {
    let mut pairs = pairs.to_vec();
    pairs.sort_unstable();
    pairs
        .into_iter()
        .map(|(name, value)| {
            let mut p = proto::LabelPair::default();
            p.set_name(name.into());
            p.set_value(value.into());
            p
        })
        .collect()
}

impl Collector for RouteSeries {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.requests, &self.duration, &self.upstream]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let family = |desc: &Desc, kind| {
            let mut f = proto::MetricFamily::default();
            f.set_name(desc.fq_name.clone());
            f.set_help(desc.help.clone());
            f.set_field_type(kind);
            f
        };
        let mut requests = family(&self.requests, proto::MetricType::COUNTER);
        let mut duration = family(&self.duration, proto::MetricType::HISTOGRAM);
        let mut upstream = family(&self.upstream, proto::MetricType::HISTOGRAM);
        // A snapshot, so a scrape of thousands of series does not hold the lock a route's
        // first request takes to find its series.
        let series: Vec<_> = {
            let map = self.by_labels.lock().unwrap_or_else(|e| e.into_inner());
            map.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
        };
        for ([ingress, namespace, service], s) in &series {
            let route = [
                ("ingress", &**ingress),
                ("namespace", &**namespace),
                ("service", &**service),
            ];
            for (class, method, n) in s.requests() {
                let [i, ns, svc] = route;
                let labels = [i, ns, svc, ("status", class), ("method", method)];
                let mut m = proto::Metric::from_label(label_pairs(&labels));
                let mut c = proto::Counter::default();
                c.set_value(n as f64);
                m.set_counter(c);
                requests.mut_metric().push(m);
            }
            for (f, h) in [(&mut duration, &s.duration), (&mut upstream, &s.upstream)] {
                let mut m = proto::Metric::from_label(label_pairs(&route));
                m.set_histogram(h.proto());
                f.mut_metric().push(m);
            }
        }
        vec![requests, duration, upstream]
    }
}

/// Every metric the gateway exports.
pub struct Metrics {
    pub registry: Registry,
    names: Vec<String>,
    /// Requests by ingress, namespace, service, status class and method; whole-request
    /// duration (first byte in to last byte out) and time from sending the request upstream
    /// to its response header, by ingress, namespace and service.
    route_series: RouteSeries,
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
            route_series: RouteSeries::new(),
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
            Box::new(m.route_series.clone()),
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

    fn render(m: &Metrics) -> String {
        String::from_utf8(m.render()).unwrap()
    }

    /// The value of the exposition line that starts with `series` (name and labels).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    const WEB: RouteLabels = RouteLabels {
        ingress: "ns/web",
        namespace: "ns",
        service: "web",
    };

    #[test]
    fn route_stats_count_under_the_route_labels() {
        let m = Metrics::new();
        let stats = RouteStats::default();
        let ms = Duration::from_millis(1);
        for (status, method) in [(200, "GET"), (200, "GET"), (404, "POST"), (0, "BREW")] {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            stats.record(&m, &WEB, status, &method, ms, Some(ms));
        }
        let text = render(&m);
        let count = |class: &str, method: &str| {
            let series = format!(
                "pingress_requests_total{{ingress=\"ns/web\",method=\"{method}\",\
                 namespace=\"ns\",service=\"web\",status=\"{class}\"}}"
            );
            value(&text, &series)
        };
        assert_eq!(count("2xx", "GET"), Some(2.0));
        assert_eq!(count("4xx", "POST"), Some(1.0));
        assert_eq!(count("error", "OTHER"), Some(1.0));
        assert_eq!(
            count("2xx", "POST"),
            None,
            "a counter never incremented is absent"
        );
        assert!(text.contains("# TYPE pingress_requests_total counter"));
        assert!(text.contains("# TYPE pingress_request_duration_seconds histogram"));
        let route = r#"{ingress="ns/web",namespace="ns",service="web"}"#;
        assert_eq!(
            value(
                &text,
                &format!("pingress_request_duration_seconds_count{route}")
            ),
            Some(4.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("pingress_upstream_response_seconds_count{route}")
            ),
            Some(4.0)
        );
        assert_eq!(stats.total(), 4);
        assert_eq!(class_index(599), 4);
        assert_eq!(class_index(600), 5);
        assert_eq!(method_index(&http::Method::TRACE), 8);
    }

    #[test]
    fn latency_buckets_are_cumulative_and_inclusive_of_their_bound() {
        let m = Metrics::new();
        let stats = RouteStats::default();
        let get = http::Method::GET;
        // On the first bound, just above it, above the last bound; no upstream time for one.
        let times = [500_000, 500_001, 20_000_000_000];
        for ns in times {
            stats.record(&m, &WEB, 200, &get, Duration::from_nanos(ns), None);
        }
        stats.record(
            &m,
            &WEB,
            200,
            &get,
            Duration::ZERO,
            Some(Duration::from_secs(3)),
        );
        let text = render(&m);
        let bucket = |family: &str, le: &str| {
            let series = format!(
                "pingress_{family}_bucket{{ingress=\"ns/web\",namespace=\"ns\",\
                 service=\"web\",le=\"{le}\"}}"
            );
            value(&text, &series)
        };
        let d = "request_duration_seconds";
        assert_eq!(bucket(d, "0.0005"), Some(2.0), "zero and the bound itself");
        assert_eq!(bucket(d, "0.001"), Some(3.0));
        assert_eq!(bucket(d, "10"), Some(3.0));
        assert_eq!(bucket(d, "+Inf"), Some(4.0));
        let route = r#"{ingress="ns/web",namespace="ns",service="web"}"#;
        let sum = value(&text, &format!("pingress_{d}_sum{route}")).unwrap();
        assert!((sum - 20.001000001).abs() < 1e-9, "{sum}");
        let u = "upstream_response_seconds";
        assert_eq!(bucket(u, "2.5"), Some(0.0));
        assert_eq!(bucket(u, "5"), Some(1.0));
        assert_eq!(
            value(&text, &format!("pingress_{u}_count{route}")),
            Some(1.0)
        );
    }

    #[test]
    fn a_duration_equal_to_any_bound_counts_in_that_bound() {
        // As prometheus' own histogram does with the same duration in seconds (`v <= bound`).
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let h = Hist::default();
            h.observe(Duration::from_secs_f64(*bound));
            let counts: Vec<u64> = h
                .proto()
                .get_bucket()
                .iter()
                .map(|b| b.cumulative_count())
                .collect();
            let below = counts[..i].iter().all(|&c| c == 0);
            assert!(
                below && counts[i..].iter().all(|&c| c == 1),
                "{bound}: {counts:?}"
            );
        }
    }

    #[test]
    fn routes_with_the_same_labels_share_one_series() {
        let m = Metrics::new();
        let (a, b, other) = (
            RouteStats::default(),
            RouteStats::default(),
            RouteStats::default(),
        );
        let get = http::Method::GET;
        let ms = Duration::from_millis(1);
        a.record(&m, &WEB, 200, &get, ms, None);
        b.record(&m, &WEB, 200, &get, ms, None);
        let api = RouteLabels {
            service: "api",
            ..WEB
        };
        other.record(&m, &api, 200, &get, ms, None);
        assert_eq!((a.total(), b.total(), other.total()), (2, 2, 1));
        let text = render(&m);
        let count = |svc: &str| {
            value(
                &text,
                &format!(
                    "pingress_request_duration_seconds_count{{ingress=\"ns/web\",\
                     namespace=\"ns\",service=\"{svc}\"}}"
                ),
            )
        };
        assert_eq!((count("web"), count("api")), (Some(2.0), Some(1.0)));
        assert!(m
            .names()
            .iter()
            .any(|n| n == "pingress_upstream_response_seconds"));
    }
}
