//! How fast traffic follows the Kubernetes API: the real gateway binary watches the fake API
//! server (tests/support/fake_api.rs) holding 1,000 Ingresses, 1,000 Services and 5,000
//! endpoints (5,000 EndpointSlices); then, one at a time, an Ingress or an EndpointSlice is
//! changed and a client polls through the gateway until the change is served. Reports the
//! latency from the API change (the moment the watch event is sent) to traffic following it.
//!
//! Run: `cargo bench --bench kube_propagation` (add `-- --quick` for a smoke run).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::fake_api::FakeApi;
use support::*;

const INGRESSES: usize = 1000;
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let changes = if quick { 10 } else { 100 };
    let api = FakeApi::start().await;
    let mut ports = Vec::new();
    for k in 0..PODS_PER_SERVICE {
        ports.push(pod(&format!("pod-{k}")).await.port());
    }
    let marker = pod("marker").await.port();

    let mut yaml = String::from(CLASS);
    for i in 0..INGRESSES {
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
    }
    api.apply_yaml(&yaml);

    let t0 = Instant::now();
    let gw = Gateway::start_kube(&api, "bench", "  access_log: {enabled: false}\n").await;
    println!(
        "loaded {INGRESSES} Ingresses, {INGRESSES} Services, {} EndpointSlices; ready after {:.0} ms",
        INGRESSES * PODS_PER_SERVICE,
        t0.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(gw.get("h0.bench.local", "/").await.unwrap().0, 200);

    let deadline = Duration::from_secs(10);
    let mut route_ms = Vec::new();
    for c in 0..changes {
        let i = c * (INGRESSES / changes);
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
    let mut endpoint_ms = Vec::new();
    for c in 0..changes {
        let i = c * (INGRESSES / changes) + 1;
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
    println!("API change -> traffic follows (1 change at a time, debounce 50 ms):");
    report("Ingress host change", route_ms);
    report("EndpointSlice change", endpoint_ms);
    if quick {
        let log = gw.stderr();
        for l in log
            .lines()
            .filter(|l| l.contains("elapsed_us"))
            .rev()
            .take(6)
        {
            println!("{l}");
        }
    }
}
