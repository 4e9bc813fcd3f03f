//! The monitoring that ships: docs/metrics.md lists exactly the metrics the binary exports;
//! every query of the Grafana dashboard and every alert of the PrometheusRule parses as
//! PromQL and names only exported metrics; the monitoring overlay renders with the
//! PodMonitor aimed at the gateway pods' admin port and the dashboard as a ConfigMap.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use promql_parser::parser::Expr;
use promql_parser::util::{walk_expr, ExprVisitor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn exported() -> BTreeSet<String> {
    pingress::metrics::Metrics::new()
        .names()
        .iter()
        .cloned()
        .collect()
}

/// A series name as a family name (histograms export `_bucket`, `_sum` and `_count`).
fn family(name: &str, exported: &BTreeSet<String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if exported.contains(base) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = ();
    fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
        let vs = match e {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            _ => None,
        };
        if let Some(name) = vs.and_then(|v| v.name.clone()) {
            self.0.insert(name);
        }
        Ok(true)
    }
}

/// Parse a query (Grafana's interval variables made concrete) and return the metrics it
/// selects.
fn metrics_of(query: &str) -> BTreeSet<String> {
    let q = query
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    let expr = promql_parser::parser::parse(&q).unwrap_or_else(|e| panic!("{query}: {e}"));
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &expr).unwrap();
    assert!(!names.0.is_empty(), "{query}: selects no metric");
    names.0
}

#[test]
fn docs_list_exactly_the_exported_metrics() {
    let exported = exported();
    assert!(exported.len() >= 18, "{exported:?}");
    let doc = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    for name in &exported {
        assert!(
            doc.contains(&format!("| `{name}` |")),
            "docs/metrics.md has no row for {name}"
        );
    }
    let re = regex::Regex::new(r"pingress_[a-z_]+").unwrap();
    for m in re.find_iter(&doc) {
        let f = family(m.as_str(), &exported);
        assert!(
            exported.contains(&f),
            "docs/metrics.md names {} which is not exported",
            m.as_str()
        );
    }
}

#[test]
fn every_dashboard_query_parses_and_names_exported_metrics() {
    let exported = exported();
    let text = std::fs::read_to_string(root().join("deploy/monitoring/grafana-dashboard.json"))
        .expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dash["uid"], "pingress-overview");
    let mut used = BTreeSet::new();
    let mut queries = 0;
    for panel in dash["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap_or_else(|| {
            panic!("panel {} has no queries", panel["title"]);
        });
        assert!(!targets.is_empty(), "panel {}", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            for name in metrics_of(expr) {
                let f = family(&name, &exported);
                assert!(
                    exported.contains(&f),
                    "panel {}: {name} is not exported",
                    panel["title"]
                );
                used.insert(f);
            }
            queries += 1;
        }
    }
    // The variable's query too.
    let var = dash["templating"]["list"][1]["definition"]
        .as_str()
        .unwrap();
    assert!(var.contains("pingress_requests_total"), "{var}");
    // What the dashboard is asked to show.
    for needed in [
        "pingress_requests_total",
        "pingress_request_duration_seconds",
        "pingress_upstream_response_seconds",
        "pingress_downstream_connections_active",
        "pingress_generations_applied_total",
        "pingress_apply_duration_seconds",
        "pingress_diagnostics",
        "pingress_tls_certificate_expiry_timestamp_seconds",
        "pingress_upstream_ready_endpoints",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
    assert!(queries >= 15, "{queries}");
}

fn kustomize(dir: &Path) -> Vec<serde_yaml::Value> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl (v1.32 or later, with kustomize)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn of_kind<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn the_monitoring_overlay_renders_alerts_scraping_and_the_dashboard() {
    let exported = exported();
    let docs = kustomize(&root().join("deploy/overlays/monitoring"));
    let base = kustomize(&root().join("deploy/base"));
    // Everything of the base, plus the three monitoring objects.
    assert_eq!(docs.len(), base.len() + 3);
    // Alerts: each parses and names exported metrics; the ones asked for are there.
    let rules = of_kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    let mut alerts = BTreeSet::new();
    for group in rules[0]["spec"]["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_string();
            let expr = rule["expr"].as_str().unwrap();
            for m in metrics_of(expr) {
                let f = family(&m, &exported);
                assert!(exported.contains(&f), "{name}: {m} is not exported");
            }
            assert!(rule["for"].as_str().is_some(), "{name} fires on one scrape");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{name}");
            alerts.insert((name, expr.to_string()));
        }
    }
    let has = |alert: &str, part: &str| alerts.iter().any(|(n, e)| n == alert && e.contains(part));
    assert!(has("PingressCertificateExpiringSoon", "14 * 86400"));
    assert!(has("PingressHighErrorRatio", "status=\"5xx\""));
    assert!(has(
        "PingressUpstreamWithoutReadyEndpoints",
        "pingress_upstream_ready_endpoints"
    ));
    assert!(has(
        "PingressConfigurationErrors",
        "pingress_manifest_files_invalid"
    ));
    assert!(has("PingressNoLeader", "pingress_leader"));
    // Scraping: the PodMonitor selects the gateway pods and names a port they have.
    let pm = of_kind(&docs, "PodMonitor");
    assert_eq!(pm.len(), 1);
    let deploy = of_kind(&docs, "Deployment")[0];
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    let selector = pm[0]["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap();
    for (k, v) in selector {
        assert_eq!(&pod_labels[k], v, "PodMonitor selector {k:?}");
    }
    let endpoint = &pm[0]["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let ports = deploy["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_sequence()
        .unwrap();
    assert!(
        ports.iter().any(|p| p["name"] == endpoint["port"]),
        "the container has no port named {:?}",
        endpoint["port"]
    );
    // The dashboard, for Grafana's sidecar, is the file.
    let cm = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "pingress-grafana-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let file =
        std::fs::read_to_string(root().join("deploy/monitoring/grafana-dashboard.json")).unwrap();
    assert_eq!(cm["data"]["pingress.json"].as_str().unwrap(), file);
}
