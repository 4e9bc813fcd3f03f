//! How fast traffic follows the Kubernetes API, and what the route count costs: the real
//! gateway binary watches the fake API server (tests/support/fake_api.rs) holding N
//! Ingresses, N Services and 5 endpoints each (5N EndpointSlices); then, one at a time, an
//! Ingress or an EndpointSlice is changed and a client polls through the gateway until the
//! change is served. Reports, per size: time to ready, the translation of the first full
//! snapshot and of each edit (the gateway's own `elapsed_us`), RSS, and the latency from the
//! API change (the moment the watch event is sent) to traffic following it.
//!
//! Run: `cargo bench --bench kube_propagation` (1,000 Ingresses; add `-- --quick` for a smoke
//! run, `-- --sizes 1000,10000,50000` for the scale figures).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::fake_api::FakeApi;
use support::*;

const PODS_PER_SERVICE: usize = 5;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name:<28} n={:<4} p50={:>6.1} ms  p99={:>6.1} ms  max={:>6.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms[ms.len() - 1]
    );
}

fn slice(i: usize, k: usize, port: u16) -> String {
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s{i}-{k}\n  namespace: bench\n  labels:\n    kubernetes.io/service-name: s{i}\naddressType: IPv4\nports:\n- name: http\n  port: {port}\nendpoints:\n- addresses: [\"127.0.0.1\"]\n  conditions: {{ready: true}}\n"
    )
}

/// The `elapsed_us` of the gateway's log lines with `what` ("routes published" or
/// "endpoints updated"), in ms, in log order.
fn elapsed_ms(log: &str, what: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            l.split("elapsed_us=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map(|us| us / 1000.0)
        .collect()
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.split(',')
                .map(|n| n.parse().expect("--sizes: numbers"))
                .collect()
        })
        .unwrap_or_else(|| vec![1000]);
    let changes = if quick { 10 } else { 100 };
    let mut ports = Vec::new();
    for k in 0..PODS_PER_SERVICE {
        ports.push(pod(&format!("pod-{k}")).await.port());
    }
    let marker = pod("marker").await.port();
    for n in sizes {
        run(n, changes, &ports, marker, quick).await;
    }
}

async fn run(ingresses: usize, changes: usize, ports: &[u16], marker: u16, quick: bool) {
    let api = FakeApi::start().await;
    let mut yaml = String::from(CLASS);
    for i in 0..ingresses {
        yaml.push_str(&service("bench", &format!("s{i}"), &[("http", 80)]));
        for (k, port) in ports.iter().enumerate() {
            yaml.push_str(&slice(i, k, *port));
        }
        yaml.push_str(&ingress(
            "bench",
            &format!("ing{i}"),
            &[(
                &format!("h{i}.bench.local"),
                "Prefix",
                "/",
                &format!("s{i}"),
                "80",
            )],
            None,
        ));
        if yaml.len() > 1 << 20 {
            api.apply_yaml(&yaml);
            yaml.clear();
        }
    }
    api.apply_yaml(&yaml);

    let t0 = Instant::now();
    // Ready takes longer than the tests' deadline at 50,000 Ingresses: wait here, with
    // patience in proportion to the object count.
    let gw = Gateway::start_kube_unready(&api, "bench", "  access_log: {enabled: false}\n").await;
    let patience = Duration::from_secs(60) + Duration::from_millis(ingresses as u64 * 4);
    while gw.readyz().await != 200 {
        assert!(
            t0.elapsed() < patience,
            "not ready after {patience:?}: {}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(gw.get("h0.bench.local", "/").await.unwrap().0, 200);
    let rss_loaded = rss_mib(gw.pid());
    let first = elapsed_ms(&gw.stderr(), "routes published");
    println!(
        "{ingresses} Ingresses, {ingresses} Services, {} EndpointSlices: ready after {ready_ms:.0} ms; \
         first translation {:.1} ms; RSS {rss_loaded:.1} MiB",
        ingresses * PODS_PER_SERVICE,
        first.last().copied().unwrap_or(0.0),
    );

    let deadline = Duration::from_secs(30);
    let mut route_ms = Vec::new();
    for c in 0..changes {
        let i = c * (ingresses / changes);
        let host = format!("moved{i}.bench.local");
        let start = Instant::now();
        api.apply_yaml(&ingress(
            "bench",
            &format!("ing{i}"),
            &[(&host, "Prefix", "/", &format!("s{i}"), "80")],
            None,
        ));
        while gw.get(&host, "/").await.map(|r| r.0).unwrap_or(0) != 200 {
            assert!(start.elapsed() < deadline, "route change not served");
        }
        route_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let log = gw.stderr();
    let edits: Vec<f64> = elapsed_ms(&log, "routes published")
        .into_iter()
        .skip(first.len())
        .collect();
    let mut endpoint_ms = Vec::new();
    for c in 0..changes {
        let i = c * (ingresses / changes) + 1;
        let host = format!("h{i}.bench.local");
        let start = Instant::now();
        api.apply_yaml(&slice(i, 0, marker));
        loop {
            if let Ok((200, body)) = gw.get(&host, "/").await {
                if body.contains("\"marker\"") {
                    break;
                }
            }
            assert!(start.elapsed() < deadline, "endpoint change not served");
        }
        endpoint_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let endpoint_updates = elapsed_ms(&gw.stderr(), "endpoints updated");
    println!("API change -> traffic follows (1 change at a time, debounce 50 ms):");
    report("Ingress host change", route_ms);
    report("EndpointSlice change", endpoint_ms);
    if !edits.is_empty() {
        report("  translation per edit", edits);
    }
    if !endpoint_updates.is_empty() {
        report("  endpoint update", endpoint_updates);
    }
    println!("RSS after the changes: {:.1} MiB", rss_mib(gw.pid()));
    if quick {
        for l in log
            .lines()
            .filter(|l| l.contains("elapsed_us"))
            .rev()
            .take(3)
        {
            println!("{l}");
        }
    }
}
