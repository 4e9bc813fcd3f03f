//! Control-plane and lookup micro-benchmarks (criterion): route lookup with 10 to 100,000
//! rules (exact hosts, wildcard hosts, prefix paths, mixed), translation of 100 to 10,000
//! Ingresses, an endpoint-set update of a 1,000-pod Service, and the latency distribution
//! (p50/p99/p99.9, each lookup timed on its own) of lookups in the table translated from
//! 10,000 Ingresses, and of lookups among 1,000 regex rules on one host; and the same 1,000
//! hosts as Ingresses and as Gateway API HTTPRoutes, looked up side by side.
//!
//! Run: `cargo bench --bench routing` (add `-- --quick` for a fast, rough run).

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pingress::config::PingressConf;
use pingress::routing::{HostMatch, Listener, PathKind, Request, RouteTable};
use pingress::source::files::parse_manifests;
use pingress::source::Snapshot;
use pingress::translate::{translate, TranslateConf, UpstreamKey};
use pingress::upstream::Pool;

/// A table of `n` rules of one shape; returns it with a request that matches a rule deep in it.
fn table(shape: &str, n: usize) -> (RouteTable<usize>, String, String) {
    let mut t = RouteTable::default();
    for i in 0..n {
        let (host, kind, path) = match shape {
            "exact-hosts" => (
                HostMatch::Exact(format!("h{i}.example.com")),
                PathKind::Prefix,
                "/".to_string(),
            ),
            "wildcard-hosts" => (
                HostMatch::Wildcard(format!("d{i}.example.com")),
                PathKind::Prefix,
                "/".to_string(),
            ),
            "prefix-paths" => (
                HostMatch::Exact("app.example.com".into()),
                PathKind::Prefix,
                format!("/svc{i}/api"),
            ),
            _ => match i % 3 {
                0 => (
                    HostMatch::Exact(format!("h{}.example.com", i / 10)),
                    PathKind::Prefix,
                    format!("/p{i}"),
                ),
                1 => (
                    HostMatch::Wildcard(format!("d{}.example.com", i / 10)),
                    PathKind::Exact,
                    format!("/e{i}"),
                ),
                _ => (
                    HostMatch::Exact(format!("h{}.example.com", i / 10)),
                    PathKind::Exact,
                    format!("/x{i}"),
                ),
            },
        };
        let _ = t.insert_path(&host, kind, &path, i);
    }
    let k = n * 2 / 3;
    let (host, path) = match shape {
        "exact-hosts" => (format!("H{k}.example.com:443"), "/some/page".to_string()),
        "wildcard-hosts" => (format!("www.d{k}.example.com"), "/some/page".to_string()),
        "prefix-paths" => (
            "app.example.com".to_string(),
            format!("/svc{k}/api/v1/items"),
        ),
        _ => {
            let k = k - k % 3;
            (
                format!("h{}.example.com", k / 10),
                format!("/p{k}/deeper/path"),
            )
        }
    };
    assert!(
        t.lookup(&host, &path).is_some(),
        "{shape} {n}: {host}{path}"
    );
    (t, host, path)
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for shape in ["exact-hosts", "wildcard-hosts", "prefix-paths", "mixed"] {
        for n in [10, 1_000, 10_000, 100_000] {
            let (t, host, path) = table(shape, n);
            g.bench_with_input(BenchmarkId::new(shape, n), &n, |b, _| {
                b.iter(|| black_box(t.lookup(black_box(&host), black_box(&path))))
            });
        }
    }
    g.finish();
}

fn snapshot(ingresses: usize) -> Snapshot {
    let mut yaml = String::new();
    for i in 0..ingresses {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: bench}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i{i}, namespace: bench}}\nspec:\n  ingressClassName: pingress\n  rules:\n  - host: h{i}.example.com\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: s{i}, port: {{number: 80}}}}}}}}\n      - {{path: /api, pathType: Prefix, backend: {{service: {{name: s{i}, port: {{name: http}}}}}}}}\n"
        ));
    }
    let mut s = Snapshot::default();
    for o in parse_manifests(&yaml, "bench").unwrap().objects {
        s.insert(o);
    }
    s
}

fn translation(c: &mut Criterion) {
    let conf = TranslateConf::from(&PingressConf::default());
    let mut g = c.benchmark_group("translate");
    g.sample_size(10);
    for n in [100, 1_000, 10_000] {
        let snap = snapshot(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(translate(black_box(&snap), &conf)))
        });
    }
    g.finish();
}

fn endpoint_update(c: &mut Criterion) {
    let key = UpstreamKey {
        namespace: "bench".into(),
        service: "big".into(),
        port_name: "http".into(),
        port: 80,
        cluster_ip: false,
    };
    let pool = Arc::new(Pool::new(key, None));
    let sets: Vec<BTreeSet<SocketAddr>> = (0..2)
        .map(|v| {
            (0..1000u32)
                .map(|i| SocketAddr::from(([10, (i / 250) as u8, (i % 250) as u8, v], 8080)))
                .collect()
        })
        .collect();
    let mut flip = 0;
    c.bench_function("endpoint_update/1000-pods", |b| {
        b.iter(|| {
            flip ^= 1;
            black_box(pool.set_endpoints(sets[flip].clone()))
        })
    });
    c.bench_function("endpoint_select/1000-pods", |b| {
        b.iter(|| black_box(pool.select(&[])))
    });
}

/// Lookups in the routes of 10,000 translated Ingresses (20,000 rules), random host and path
/// per lookup. Each lookup is timed on its own (the timer's own ~20-40 ns is included, so the
/// figures are an upper bound); prints p50/p99/p99.9, then a criterion run of the same mix.
fn lookup_10k_ingresses(c: &mut Criterion) {
    let conf = TranslateConf::from(&PingressConf::default());
    let t = translate(&snapshot(10_000), &conf);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let requests: Vec<(String, &str)> = (0..4096)
        .map(|_| {
            let host = format!("H{}.Example.com:80", next() % 10_000);
            let path = ["/", "/api/v1/items", "/other/page"][(next() % 3) as usize];
            (host, path)
        })
        .collect();
    let mut ns: Vec<u64> = Vec::with_capacity(400_000);
    for i in 0..400_000 {
        let (h, p) = &requests[i % requests.len()];
        let start = std::time::Instant::now();
        let r = t.routes.lookup(black_box(h), black_box(p));
        ns.push(start.elapsed().as_nanos() as u64);
        assert!(r.is_some());
    }
    ns.sort_unstable();
    let q = |f: f64| ns[((ns.len() as f64 * f) as usize).min(ns.len() - 1)];
    eprintln!(
        "route_lookup/10k-ingresses (20,000 rules, 400,000 timed lookups): p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        q(0.5),
        q(0.99),
        q(0.999),
        ns[ns.len() - 1]
    );
    let mut i = 0;
    c.bench_function("route_lookup/10k-ingresses-random", |b| {
        b.iter(|| {
            let (h, p) = &requests[i % requests.len()];
            i += 1;
            black_box(t.routes.lookup(black_box(h), black_box(p)))
        })
    });
}

/// 1,000 regex rules on one host, as ingress-nginx's regex mode makes them
/// (`(?i)^/svcN/vM/...`, longest first): p50/p99/p99.9 of single timed lookups of paths that
/// match rules spread through the list (and some that match none), then a criterion run.
fn lookup_1k_regex_rules(c: &mut Criterion) {
    let mut patterns: Vec<String> = (0..1000)
        .map(|i| format!("(?i)^/svc{i}/v[0-9]+/(items|orders)(/|$)(.*)"))
        .collect();
    patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut t = RouteTable::default();
    let host = HostMatch::Exact("regex.example.com".into());
    for (i, p) in patterns.iter().enumerate() {
        t.insert_path(&host, PathKind::Regex, p, i).unwrap();
    }
    t.finish().unwrap();
    let paths: Vec<String> = (0..1000)
        .map(|i| match i % 10 {
            9 => format!("/nomatch/{i}"),
            _ => format!("/SVC{}/v{}/orders/{i}", (i * 7919) % 1000, i % 4),
        })
        .collect();
    let mut ns: Vec<u64> = Vec::with_capacity(200_000);
    for i in 0..200_000 {
        let p = &paths[i % paths.len()];
        let start = std::time::Instant::now();
        let r = t.lookup(black_box("regex.example.com"), black_box(p));
        ns.push(start.elapsed().as_nanos() as u64);
        assert_eq!(r.is_some(), !p.starts_with("/nomatch"), "{p}");
    }
    ns.sort_unstable();
    let q = |f: f64| ns[((ns.len() as f64 * f) as usize).min(ns.len() - 1)];
    eprintln!(
        "route_lookup/1k-regex-rules (one host, 200,000 timed lookups): p50 {} ns, p99 {} ns, p99.9 {} ns",
        q(0.5),
        q(0.99),
        q(0.999)
    );
    let mut i = 0;
    c.bench_function("route_lookup/1k-regex-rules", |b| {
        b.iter(|| {
            let p = &paths[i % paths.len()];
            i += 1;
            black_box(t.lookup(black_box("regex.example.com"), black_box(p)))
        })
    });
}

/// 1,000 hosts with two paths each, once as Ingresses and once as HTTPRoutes on one Gateway
/// (HTTP listener, port 80): the same random host+path lookups in both tables. Gateway API
/// rules are bound to their listener, so each is a conditional rule checked per request.
fn lookup_1000_hosts_ingress_vs_gateway(c: &mut Criterion) {
    let conf = TranslateConf::from(&PingressConf::default());
    let ing = translate(&snapshot(1_000), &conf);
    let mut yaml = String::from("---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: pingress}\nspec: {controllerName: pingress.dev/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: bench}\nspec:\n  gatewayClassName: pingress\n  listeners: [{name: http, protocol: HTTP, port: 80}]\n");
    for i in 0..1_000 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: bench}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{i}, namespace: bench}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [h{i}.example.com]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n    backendRefs: [{{name: s{i}, port: 80}}]\n  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]\n    backendRefs: [{{name: s{i}, port: 80}}]\n"
        ));
    }
    let mut snap = Snapshot::default();
    for o in parse_manifests(&yaml, "bench").unwrap().objects {
        snap.insert(o);
    }
    let gw = translate(&snap, &conf);
    assert_eq!(gw.routes.len(), ing.routes.len());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let requests: Vec<(String, &str)> = (0..4096)
        .map(|_| {
            let host = format!("h{}.example.com", next() % 1_000);
            let path = ["/", "/api/v1/items", "/other/page"][(next() % 3) as usize];
            (host, path)
        })
        .collect();
    let mut g = c.benchmark_group("route_lookup/1000-hosts");
    for (name, table) in [("ingress", &ing.routes), ("gateway-api", &gw.routes)] {
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let (h, p) = &requests[i % requests.len()];
                i += 1;
                let mut r = Request::new(h, p);
                r.listener = Listener {
                    tls: false,
                    port: 8080,
                };
                let found = table.lookup_request(black_box(&r));
                debug_assert!(found.is_some());
                black_box(found)
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    lookup,
    lookup_1000_hosts_ingress_vs_gateway,
    lookup_1k_regex_rules,
    lookup_10k_ingresses,
    translation,
    endpoint_update
);
criterion_main!(benches);
