//! The debug listener (`debug_listen`, `127.0.0.1:10255` by default): what the gateway is
//! doing, for a person with `kubectl port-forward`. Separate from the admin listener because
//! with `hostNetwork` that one is on the node's address; this one holds every route, host
//! and certificate name and so is bound to loopback unless configured otherwise.
//!
//! * `/debug/routes`: the published generation as JSON: host -> rules (kind, path,
//!   conditions) -> the Ingress they come from, the backend, its policies and its
//!   endpoints (ready or not, from the snapshot the generation was built from).
//! * `/debug/diagnostics`: the diagnostics of that translation.
//! * `/debug/certs`: host -> certificate subject, SANs, notAfter and source.
//! * `/debug/explain?host=H&path=P[&method=M][&header=Name:value...]`: which rule answers a
//!   request and why, or why none does ([`explain`]; `pingress explain` prints the same).
//! * `/`: a read-only page over the above (one HTML file in the binary, no external
//!   fetches), with request counts from the route statistics.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::generation::{Action, DebugState, Generation, Route, Shared};
use crate::routing::{HostMatch, PathKind, Request};
use crate::tls::CertStore;

/// The debug HTTP app.
pub struct DebugApp {
    pub shared: Arc<Shared>,
    pub certs: Arc<CertStore>,
}

const PAGE: &str = include_str!("debug.html");

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .header("content-security-policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'")
        .body(body)
        .expect("valid response")
}

fn json_response(v: &Value) -> Response<Vec<u8>> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    respond(200, "application/json", body)
}

#[async_trait]
impl ServeHttp for DebugApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let uri = session.req_header().uri.clone();
        let generation = self.shared.generation.load_full();
        let state = self.shared.debug.load_full();
        match uri.path() {
            "/" => respond(200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec()),
            "/debug/routes" => json_response(&routes(&generation, state.as_deref())),
            "/debug/diagnostics" => json_response(&diagnostics(state.as_deref())),
            "/debug/certs" => json_response(&certs(&self.certs)),
            "/debug/explain" => {
                let q = ExplainQuery::from_query(uri.query().unwrap_or(""));
                json_response(&explain(&generation, state.as_deref(), &q))
            }
            _ => respond(404, "text/plain; charset=utf-8", b"not found\n".to_vec()),
        }
    }
}

/// One target as JSON: where it comes from, what it does, its endpoints.
fn target(route: &Route, state: Option<&DebugState>) -> Value {
    let (action, pool) = match &route.action {
        Action::Proxy(pool) => ("proxy".to_string(), Some(pool)),
        Action::Respond(code) => (format!("respond {code}"), None),
    };
    let endpoints: Vec<Value> = match (pool, state) {
        (Some(pool), Some(st)) if !pool.key.cluster_ip => {
            // The snapshot's by-Service index: one lookup per target, not a scan of every
            // slice (the page lists every target).
            let slices = st
                .snapshot
                .slices_of(&pool.key.namespace, &pool.key.service);
            crate::upstream::all_endpoints_for(&slices, &pool.key)
                .into_iter()
                .map(|(a, ready)| json!({"address": a.to_string(), "ready": ready}))
                .collect()
        }
        (Some(pool), _) => pool
            .endpoints()
            .into_iter()
            .map(|a| json!({"address": a.to_string(), "ready": true}))
            .collect(),
        _ => Vec::new(),
    };
    let backend = pool.map(|p| {
        json!({
            "service": format!("{}/{}", p.key.namespace, p.key.service),
            "port": p.key.port,
            "port_name": p.key.port_name,
            "service_upstream": p.key.cluster_ip,
            "ready_endpoints": p.len(),
        })
    });
    json!({
        "ingress": &*route.ingress,
        "action": action,
        "backend": backend,
        "protocol": format!("{:?}", route.protocol),
        "https_redirect": route.https_redirect,
        "tls": route.tls_host,
        "policies": policies(route),
        "endpoints": endpoints,
        "requests": route.stats.total(),
    })
}

/// The policies a route carries, by annotation family.
fn policies(route: &Route) -> Vec<String> {
    let Some(p) = &route.policy else {
        return Vec::new();
    };
    let mut out = Vec::new();
    fn add(out: &mut Vec<String>, on: bool, what: String) {
        if on {
            out.push(what);
        }
    }
    add(
        &mut out,
        p.denied,
        "closed (503: an access control could not be built)".into(),
    );
    if let Some(r) = &p.redirect {
        out.push(format!("redirect {} {:?}", r.code, r.to));
    }
    add(&mut out, p.rewrite.is_some(), "rewrite-target".into());
    add(
        &mut out,
        !p.request_headers.is_empty(),
        "request header changes".into(),
    );
    add(
        &mut out,
        !p.response_headers.is_empty(),
        "response header changes".into(),
    );
    add(
        &mut out,
        !p.timeouts.is_empty(),
        format!("timeouts {:?}", p.timeouts),
    );
    add(&mut out, p.retry.is_some(), "next-upstream".into());
    if let Some(b) = p.body_limit {
        out.push(format!("proxy-body-size {b}"));
    }
    add(
        &mut out,
        p.balance != crate::translate::model::Balance::RoundRobin,
        format!("balance {:?}", p.balance),
    );
    if let Some((rule, c)) = &p.canary {
        out.push(format!("canary {rule:?} -> {}", c.ingress));
    }
    add(&mut out, p.errors.is_some(), "custom-http-errors".into());
    if let Some(f) = &p.fallback {
        out.push(format!("default-backend {}/{}", f.namespace, f.service));
    }
    add(
        &mut out,
        p.access.is_some(),
        "allow/deny source ranges".into(),
    );
    add(&mut out, p.limits.is_some(), "limits".into());
    add(&mut out, p.basic_auth.is_some(), "basic auth".into());
    add(&mut out, p.external_auth.is_some(), "external auth".into());
    add(&mut out, p.cors.is_some(), "cors".into());
    add(
        &mut out,
        p.snippet.is_some(),
        "snippet header operations".into(),
    );
    if let Some(ct) = &p.client_tls {
        out.push(format!(
            "client certificates {:?} ({})",
            ct.verify, ct.secret
        ));
    }
    out
}

fn kind_name(k: PathKind) -> &'static str {
    match k {
        PathKind::Exact => "Exact",
        PathKind::Prefix => "Prefix",
        PathKind::Regex => "Regex",
    }
}

/// `/debug/routes`.
pub fn routes(g: &Generation, state: Option<&DebugState>) -> Value {
    let hosts: Vec<Value> = g
        .routes
        .hosts()
        .into_iter()
        .map(|(host, r)| {
            let rules: Vec<Value> = r
                .rules()
                .into_iter()
                .map(|(kind, path, cond, t)| {
                    json!({
                        "kind": kind_name(kind),
                        "path": path,
                        "conditions": cond.map(|c| format!("{c:?}")),
                        "target": target(t, state),
                    })
                })
                .collect();
            json!({"host": host.to_string(), "rules": rules})
        })
        .collect();
    json!({
        "generation": g.id,
        "hosts": hosts,
        "default": target(&g.default_route, state),
    })
}

fn diagnostic_json(d: &crate::translate::Diagnostic) -> Value {
    json!({
        "ingress": d.ingress.as_ref().map(|k| k.to_string()),
        "kind": d.kind.as_str(),
        "message": d.message,
    })
}

/// `/debug/diagnostics`.
pub fn diagnostics(state: Option<&DebugState>) -> Value {
    let list: Vec<Value> = state
        .map(|s| s.diagnostics.as_slice())
        .unwrap_or_default()
        .iter()
        .map(diagnostic_json)
        .collect();
    json!({ "diagnostics": list })
}

/// `/debug/certs`.
pub fn certs(store: &CertStore) -> Value {
    let list: Vec<Value> = store
        .entries()
        .into_iter()
        .map(|(host, c)| {
            let (subject, sans) = c
                .key
                .cert
                .first()
                .and_then(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
                .map(|(_, x)| {
                    let sans: Vec<String> = x
                        .subject_alternative_name()
                        .ok()
                        .flatten()
                        .map(|s| {
                            s.value
                                .general_names
                                .iter()
                                .map(|n| match n {
                                    x509_parser::extensions::GeneralName::DNSName(d) => {
                                        d.to_string()
                                    }
                                    other => format!("{other:?}"),
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    (crate::tls::rfc2253(x.subject()), sans)
                })
                .unwrap_or_default();
            let days = (c.not_after - now_unix()) as f64 / 86400.0;
            json!({
                "host": host,
                "subject": subject,
                "sans": sans,
                "not_after": c.not_after,
                "days_left": (days * 10.0).round() / 10.0,
                "source": c.origin,
            })
        })
        .collect();
    json!({ "certificates": list })
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A request to explain.
#[derive(Debug, Clone, Default)]
pub struct ExplainQuery {
    pub host: String,
    pub path: String,
    pub method: String,
    /// (name, value); names lowercase.
    pub headers: Vec<(String, String)>,
}

impl ExplainQuery {
    /// From `host=..&path=..&method=..&header=Name:value` (URL-encoded).
    pub fn from_query(q: &str) -> ExplainQuery {
        let mut e = ExplainQuery {
            path: "/".into(),
            method: "GET".into(),
            ..Default::default()
        };
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            match &*k {
                "host" => e.host = v.into_owned(),
                "path" => e.path = v.into_owned(),
                "method" => e.method = v.to_ascii_uppercase(),
                "header" => {
                    if let Some((n, val)) = v.split_once(':') {
                        e.headers
                            .push((n.trim().to_ascii_lowercase(), val.trim().to_string()));
                    }
                }
                _ => {}
            }
        }
        e
    }

    /// As a query string for `/debug/explain`.
    pub fn to_query(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.append_pair("host", &self.host);
        s.append_pair("path", &self.path);
        s.append_pair("method", &self.method);
        for (n, v) in &self.headers {
            s.append_pair("header", &format!("{n}:{v}"));
        }
        s.finish()
    }
}

/// Which rule answers a request, and why; or why none does.
pub fn explain(g: &Generation, state: Option<&DebugState>, q: &ExplainQuery) -> Value {
    let mut headers = http::HeaderMap::new();
    for (n, v) in &q.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(n.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            headers.append(n, v);
        }
    }
    let (path, query) = match q.path.split_once('?') {
        Some((p, qs)) => (p, Some(qs)),
        None => (q.path.as_str(), None),
    };
    let req = Request {
        host: &q.host,
        path,
        query,
        method: &q.method,
        headers: Some(&headers),
        listener: crate::routing::Listener::default(),
    };
    let trace = g.routes.trace(&req);
    let mut why = Vec::new();
    let (matched, rule): (&Arc<Route>, Value) = match (&trace.host, trace.path_target) {
        (Some(h), Some(t)) => {
            why.push(host_reason(h, &q.host));
            let rule = trace
                .rules
                .and_then(|r| {
                    r.rules()
                        .into_iter()
                        .find(|(_, _, _, x)| Arc::ptr_eq(x, t))
                })
                .map(|(kind, p, cond, _)| {
                    why.push(format!(
                        "path {path} matches the {} rule {p}{}",
                        kind_name(kind),
                        if cond.is_some() {
                            " and its conditions (method, headers, query or cookies)"
                        } else {
                            ""
                        }
                    ));
                    json!({"kind": kind_name(kind), "path": p, "conditions": cond.map(|c| format!("{c:?}"))})
                })
                .unwrap_or_else(|| {
                    why.push("path / is answered by the host's app-root redirect".into());
                    json!({"kind": "app-root", "path": "/"})
                });
            (t, rule)
        }
        (Some(h), None) => {
            why.push(host_reason(h, &q.host));
            let paths: Vec<String> = trace
                .rules
                .map(|r| {
                    r.rules()
                        .into_iter()
                        .map(|(k, p, c, _)| {
                            format!(
                                "{p} ({}{})",
                                kind_name(k),
                                if c.is_some() { ", with conditions" } else { "" }
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            why.push(format!(
                "no path rule of this host matches {path}{}",
                if paths.is_empty() {
                    String::new()
                } else {
                    format!(" (rules: {})", paths.join(", "))
                }
            ));
            match (trace.host_default, trace.fallback) {
                (Some(t), _) => {
                    why.push("so the host's default backend answers".into());
                    (t, json!({"kind": "host default backend"}))
                }
                (None, _) => past_the_hosts(g, trace.fallback, &mut why),
            }
        }
        (None, _) => {
            match &trace.normalized {
                Some(h) => why.push(format!("no Ingress rule has host {h} (nor a wildcard covering it, nor a rule without host)")),
                None => why.push(format!("`{}` is not a valid host", q.host)),
            }
            past_the_hosts(g, trace.fallback, &mut why)
        }
    };
    let t = target(matched, state);
    if let Action::Proxy(pool) = &matched.action {
        if pool.is_empty() {
            why.push(format!(
                "the Service {}/{} port {} has no ready endpoint: the answer is 503{}",
                pool.key.namespace,
                pool.key.service,
                pool.key.port,
                if matched
                    .policy
                    .as_ref()
                    .is_some_and(|p| p.fallback.is_some())
                {
                    " unless its default-backend annotation serves"
                } else {
                    ""
                }
            ));
        }
    }
    if let (Action::Respond(code), false) = (&matched.action, &*matched.ingress == "-") {
        why.push(format!(
            "the rule answers {code} itself: its backend cannot be used (see the diagnostics of Ingress {})",
            matched.ingress
        ));
    }
    if matched.policy.as_ref().is_some_and(|p| p.denied) {
        why.push(
            "the route's access control could not be built: it answers 503 (see the diagnostics)"
                .into(),
        );
    }
    // Diagnostics of the Ingresses involved: the one that answers, and any that name the
    // host (a refused or conflicting Ingress is why a rule is missing).
    let host_l = q.host.split(':').next().unwrap_or("").to_ascii_lowercase();
    let related: Vec<Value> = state
        .map(|s| s.diagnostics.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|d| {
            d.ingress
                .as_ref()
                .is_some_and(|k| k.to_string() == *matched.ingress)
                || (!host_l.is_empty() && d.message.contains(&host_l))
        })
        .map(diagnostic_json)
        .collect();
    json!({
        "request": {"host": q.host, "path": q.path, "method": q.method, "headers": q.headers},
        "host_entry": trace.host.as_ref().map(HostMatch::to_string),
        "rule": rule,
        "target": t,
        "why": why,
        "diagnostics": related,
    })
}

/// What answers a request no host entry answered: the table's fallback (an Ingress
/// `defaultBackend` without rules), else the global default.
fn past_the_hosts<'a>(
    g: &'a Generation,
    fallback: Option<&'a Arc<Route>>,
    why: &mut Vec<String>,
) -> (&'a Arc<Route>, Value) {
    match fallback {
        Some(t) => {
            why.push("so the defaultBackend of an Ingress without rules answers".into());
            (t, json!({"kind": "defaultBackend"}))
        }
        None => {
            why.push("so the global default answers".into());
            (&g.default_route, json!({"kind": "default"}))
        }
    }
}

fn host_reason(h: &HostMatch, asked: &str) -> String {
    match h {
        HostMatch::Exact(e) => format!("host {e} has rules"),
        HostMatch::Wildcard(w) => format!("host {asked} is covered by the wildcard rules of *.{w}"),
        HostMatch::Suffix(w) => {
            format!("host {asked} is covered by the Gateway API wildcard rules of *.{w}")
        }
        HostMatch::Any => format!("no rule names host {asked}; the rules without host apply"),
    }
}

/// Render an explanation as text (`pingress explain`).
pub fn explain_text(v: &Value) -> String {
    let mut s = String::new();
    let r = &v["request"];
    s.push_str(&format!(
        "{} {}{}\n",
        r["method"].as_str().unwrap_or(""),
        r["host"].as_str().unwrap_or(""),
        r["path"].as_str().unwrap_or("")
    ));
    for w in v["why"].as_array().into_iter().flatten() {
        s.push_str(&format!("  - {}\n", w.as_str().unwrap_or("")));
    }
    let t = &v["target"];
    s.push_str(&format!(
        "answer: {} (Ingress {})\n",
        t["action"].as_str().unwrap_or(""),
        t["ingress"].as_str().unwrap_or("")
    ));
    if let Some(b) = t["backend"].as_object() {
        s.push_str(&format!(
            "backend: Service {} port {} ({} ready endpoints)\n",
            b["service"].as_str().unwrap_or(""),
            b["port"],
            b["ready_endpoints"]
        ));
    }
    for e in t["endpoints"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "  endpoint {} {}\n",
            e["address"].as_str().unwrap_or(""),
            if e["ready"] == true {
                "ready"
            } else {
                "not ready"
            }
        ));
    }
    for p in t["policies"].as_array().into_iter().flatten() {
        s.push_str(&format!("policy: {}\n", p.as_str().unwrap_or("")));
    }
    for d in v["diagnostics"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "diagnostic ({}): {}{}\n",
            d["kind"].as_str().unwrap_or(""),
            d["ingress"]
                .as_str()
                .map(|i| format!("ingress {i}: "))
                .unwrap_or_default(),
            d["message"].as_str().unwrap_or("")
        ));
    }
    s
}
