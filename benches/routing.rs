//! Control-plane and lookup micro-benchmarks (criterion): route lookup with 10 to 100,000
//! rules (exact hosts, wildcard hosts, prefix paths, mixed), translation of 100 to 10,000
//! Ingresses, and an endpoint-set update of a 1,000-pod Service.
//!
//! Run: `cargo bench --bench routing` (add `-- --quick` for a fast, rough run).

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pingress::config::PingressConf;
use pingress::routing::{HostMatch, PathKind, RouteTable};
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

criterion_group!(benches, lookup, translation, endpoint_update);
criterion_main!(benches);
