//! `pingress convert --to gateway-api`: Ingresses, with the ingress-nginx annotations the
//! route model supports, as Gateway API objects (what ingress2gateway does for
//! ingress-nginx), plus a report of everything that has no Gateway API equivalent.
//!
//! The conversion starts from what pingress would serve, not from the raw Ingresses: the
//! manifests are translated exactly as the gateway translates them (class selection,
//! oldest-wins conflicts, regex-mode hosts, canaries merged into their main rule, default
//! backends, server aliases), and the route table that comes out is written back as
//! Gateway API objects. So serving the output answers as serving the Ingresses did,
//! wherever Gateway API can say the same thing.
//!
//! What is written:
//! * every input document that is not an Ingress of ours, unchanged (Services, Secrets,
//!   Ingresses of other classes), so the output can be served or applied as it is;
//! * a GatewayClass `pingress` for the configured `gateway_controller_name`;
//! * per namespace, a Gateway `pingress`: a listener `http` on port 80, a listener `https`
//!   on port 443 without hostname that serves the default certificate (option
//!   `pingress.dev/default-certificate`, as Ingress hosts without `tls` are served over
//!   HTTPS too) and, per TLS host of that namespace's Ingresses, a listener
//!   `https-<host>` on port 443 (Terminate, the Ingress's Secret);
//! * per namespace and host, an HTTPRoute named after the host (`catch-all` for rules
//!   without a host). A host with TLS gets two: one on port 443 (with the HSTS header the
//!   Ingress sent), and `<host>-http` on port 80 whose rules redirect to HTTPS (308) where
//!   the Ingress did (`ssl-redirect`). More than 16 rules are split over `<name>-02`, ...
//!   in the same order. `backend-protocol: GRPC` paths that name a whole gRPC service (or
//!   `/`) become a GRPCRoute instead.
//!
//! Path rules keep their kind (Exact, PathPrefix); regex-mode paths (`use-regex`,
//! `rewrite-target`) become RegularExpression matches equivalent to ingress-nginx's
//! case-insensitive, start-anchored search. Requests no rule of a host matches went to the
//! Ingress `defaultBackend`: each host gets that as a last `PathPrefix /` rule.
//!
//! Fail closed: a rule guarded by an annotation with no Gateway API equivalent (allow and
//! deny lists, rate limits, basic and external auth, client certificates) is written
//! without backends, so it answers 500 instead of opening the path; the report says so.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::PingressConf;
use crate::routing::{HostMatch, PathKind};
use crate::source::{files, namespace_of, ObjKey, Snapshot};
use crate::translate::annotations::Status;
use crate::translate::gateway::DEFAULT_CERTIFICATE_OPTION;
use crate::translate::model::{HeaderRule, Policy, RedirectTo, Rewrite};
use crate::translate::{translate, BackendSpec, Protocol, RouteSpec, TranslateConf};

/// The name of the GatewayClass and of each Gateway written.
pub const GATEWAY_NAME: &str = "pingress";
/// The Gateway API limit on rules per HTTPRoute or GRPCRoute.
const MAX_RULES: usize = 16;

/// How far the output is from what the Ingress did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NoteKind {
    /// pingress does not serve it from the Ingress either (a conflict, a missing Service, an
    /// annotation pingress ignores or applies its own way): the output keeps that; nothing
    /// is lost in the conversion.
    NotServed,
    /// Converted, with a difference the note names.
    Differs,
    /// Not converted: Gateway API (as pingress serves it) has nothing for it.
    NoEquivalent,
    /// An access guard that could not be converted: the rule answers 500 (fail closed).
    Closed,
}

impl NoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteKind::NotServed => "as served by pingress",
            NoteKind::Differs => "differs",
            NoteKind::NoEquivalent => "no equivalent",
            NoteKind::Closed => "closed",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    /// `Ingress namespace/name`, or the input for problems of the input itself.
    pub object: String,
    pub kind: NoteKind,
    pub text: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.kind.as_str(), self.text)
    }
}

/// The output of a conversion.
#[derive(Debug, Clone)]
pub struct Converted {
    /// Multi-document YAML.
    pub yaml: String,
    /// Sorted, without duplicates.
    pub notes: Vec<Note>,
    /// Ingresses of ours that were converted.
    pub ingresses: Vec<ObjKey>,
}

/// Convert manifest texts (`(origin, text)`, origin for messages).
pub fn to_gateway_api(
    inputs: &[(String, String)],
    conf: &PingressConf,
) -> Result<Converted, String> {
    let mut snap = Snapshot::default();
    let notes = BTreeSet::new();
    for (origin, text) in inputs {
        // The parser logs its own warnings (deprecated apiVersions, skipped documents).
        let parsed = files::parse_manifests(text, origin)?;
        for obj in parsed.objects {
            let what = obj.describe();
            if !snap.insert(obj) {
                return Err(format!("{origin}: {what} is defined twice"));
            }
        }
    }
    assume_services(&mut snap);
    let tconf = TranslateConf::from(conf);
    let t = translate(&snap, &tconf);
    let ours: BTreeSet<ObjKey> = t.ingresses.iter().cloned().collect();
    let mut c = Conv {
        snap: &snap,
        notes,
        hsts: conf.tls.hsts.header_value().map(|v| v.to_string()),
    };
    for d in &t.diagnostics {
        if let Some(k) = d.ingress.as_ref().filter(|k| ours.contains(k)) {
            c.note(k, NoteKind::NotServed, d.message.clone());
        }
    }
    for (k, verdicts) in &t.annotations {
        for v in verdicts.iter().filter(|v| v.status != Status::Applied) {
            let how = match v.status {
                Status::Differs => "applied differently from ingress-nginx by pingress",
                Status::Ignored => "ignored by pingress",
                _ => "invalid",
            };
            c.note(
                k,
                NoteKind::NotServed,
                format!("annotation {}: {how}: {}", v.key, v.note),
            );
        }
    }

    // Rules per (namespace, host), in the table's lookup order.
    let mut groups: BTreeMap<(String, HostMatch), Vec<Rule>> = BTreeMap::new();
    let owned = |spec: &RouteSpec| spec.ingress.as_ref().filter(|k| ours.contains(k)).cloned();
    let hosts = t.routes.hosts();
    for (host, routes) in &hosts {
        let mut has_root_prefix = false;
        if let Some(spec) = routes.root() {
            if let Some(k) = owned(spec) {
                groups
                    .entry((k.namespace.clone(), host.clone()))
                    .or_default()
                    .push(Rule::new(PathKind::Exact, "/", spec, k));
            }
        }
        for (kind, path, cond, spec) in routes.rules() {
            has_root_prefix |= kind == PathKind::Prefix && path == "/";
            let Some(k) = owned(spec) else { continue };
            if cond.is_some() {
                // Only Gateway API rules carry conditions; they are not ours to convert.
                continue;
            }
            groups
                .entry((k.namespace.clone(), host.clone()))
                .or_default()
                .push(Rule::new(kind, path, spec, k));
        }
        if has_root_prefix {
            continue;
        }
        // Requests that match no rule of the host: its default, else the table's fallback.
        if let Some(spec) = routes.host_default().or(t.routes.fallback()) {
            if let Some(k) = owned(spec) {
                groups
                    .entry((k.namespace.clone(), host.clone()))
                    .or_default()
                    .push(Rule::new(PathKind::Prefix, "/", spec, k));
            }
        }
    }
    if !hosts.iter().any(|(h, _)| *h == HostMatch::Any) {
        if let Some(spec) = t.routes.fallback() {
            if let Some(k) = owned(spec) {
                groups
                    .entry((k.namespace.clone(), HostMatch::Any))
                    .or_default()
                    .push(Rule::new(PathKind::Prefix, "/", spec, k));
            }
        }
    }

    // HTTPS listeners: per namespace, each TLS host of its Ingresses once (oldest first).
    let mut listeners: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut tls_hosts: BTreeMap<String, String> = BTreeMap::new();
    for b in &t.tls {
        // Without a Secret: the hostname-less `https` listener serves the default certificate.
        let Some(secret) = &b.secret else {
            continue;
        };
        if secret.namespace != b.ingress.namespace {
            continue;
        }
        for h in &b.hosts {
            if tls_hosts.contains_key(h) {
                continue;
            }
            tls_hosts.insert(h.clone(), b.ingress.namespace.clone());
            listeners
                .entry(b.ingress.namespace.clone())
                .or_default()
                .push((h.clone(), secret.name.clone()));
        }
    }
    let mut cross_ns: BTreeSet<(String, String)> = BTreeSet::new();

    let mut out_routes: Vec<Value> = Vec::new();
    let mut namespaces: BTreeSet<String> = listeners.keys().cloned().collect();
    for ((ns, host), rules) in &groups {
        namespaces.insert(ns.clone());
        let name = route_name(host);
        let hostnames: Vec<String> = match host {
            HostMatch::Any => Vec::new(),
            h => vec![h.to_string()],
        };
        if let HostMatch::Wildcard(_) = host {
            for k in rules.iter().map(|r| &r.ingress).collect::<BTreeSet<_>>() {
                c.note(
                    k,
                    NoteKind::Differs,
                    format!(
                        "host {host}: a Gateway API wildcard matches any number of labels in \
                         front of the suffix, an Ingress wildcard exactly one"
                    ),
                );
            }
        }
        // The Gateway whose HTTPS listener serves this host, when there is one.
        let tls_ns = host_tls_namespace(host, &tls_hosts);
        let wants_tls = rules
            .iter()
            .any(|r| r.spec.tls_host || r.spec.https_redirect);
        let sides: Vec<(Side, String, Value)> = match (&tls_ns, host) {
            (Some((tls_ns, listener_host)), _) => {
                if tls_ns != ns {
                    cross_ns.insert((tls_ns.clone(), listener_host.clone()));
                }
                let mut https_ref = json!({"name": GATEWAY_NAME, "port": 443});
                if tls_ns != ns {
                    https_ref["namespace"] = json!(tls_ns);
                }
                vec![
                    (Side::Https, name.clone(), https_ref),
                    (
                        Side::Http,
                        format!("{name}-http"),
                        json!({"name": GATEWAY_NAME, "port": 80}),
                    ),
                ]
            }
            // TLS with the default certificate: the hostname-less `https` listener.
            _ if wants_tls => vec![
                (
                    Side::Https,
                    name.clone(),
                    json!({"name": GATEWAY_NAME, "port": 443}),
                ),
                (
                    Side::Http,
                    format!("{name}-http"),
                    json!({"name": GATEWAY_NAME, "port": 80}),
                ),
            ],
            _ => vec![(Side::Plain, name.clone(), json!({"name": GATEWAY_NAME}))],
        };
        for (side, route_name, parent) in sides {
            let mut http_rules = Vec::new();
            let mut grpc_rules = Vec::new();
            for r in rules {
                let grpc = if side == Side::Http && r.spec.https_redirect {
                    None
                } else {
                    c.grpc_rule(r)
                };
                match grpc {
                    Some(g) => grpc_rules.push(g),
                    None => http_rules.extend(c.http_rules(r, side)),
                }
            }
            for (kind, rules) in [("HTTPRoute", http_rules), ("GRPCRoute", grpc_rules)] {
                for (i, chunk) in rules.chunks(MAX_RULES).enumerate() {
                    let n = if i == 0 {
                        route_name.clone()
                    } else {
                        format!("{route_name}-{:02}", i + 1)
                    };
                    let mut spec = json!({"parentRefs": [parent.clone()]});
                    if !hostnames.is_empty() {
                        spec["hostnames"] = json!(hostnames);
                    }
                    spec["rules"] = Value::Array(chunk.to_vec());
                    out_routes.push(json!({
                        "apiVersion": "gateway.networking.k8s.io/v1",
                        "kind": kind,
                        "metadata": {"name": n, "namespace": ns},
                        "spec": spec,
                    }));
                }
            }
        }
    }

    // Output: the documents that stay, then the Gateway API objects.
    let mut docs: Vec<String> = Vec::new();
    for (origin, text) in inputs {
        for (line, doc) in files::split_documents(text) {
            let value: serde_yaml::Value =
                serde_yaml::from_str(doc).map_err(|e| format!("{origin}:{line}: {e}"))?;
            if value.is_null() {
                continue;
            }
            match kept(value, &ours) {
                Kept::Whole => docs.push(doc.trim_end_matches('\n').to_string() + "\n"),
                Kept::Changed(v) => docs.push(yaml(&v)?),
                Kept::Dropped => {}
            }
        }
    }
    if snap.gateway_classes.contains_key(GATEWAY_NAME) {
        c.notes.insert(Note {
            object: format!("GatewayClass {GATEWAY_NAME}"),
            kind: NoteKind::Differs,
            text: "is in the input already; it is kept and not written again".into(),
        });
    } else {
        docs.push(yaml(&json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_NAME},
            "spec": {"controllerName": conf.gateway_controller_name},
        }))?);
    }
    for ns in &namespaces {
        if snap
            .gateways
            .contains_key(&ObjKey::new(ns.as_str(), GATEWAY_NAME))
        {
            return Err(format!(
                "Gateway {ns}/{GATEWAY_NAME} is in the input already; the converted routes \
                 would attach to it: remove or rename it first"
            ));
        }
        // Ingress serves every host over HTTPS, with the default certificate when it has no
        // Secret of its own: so does a hostname-less HTTPS listener with that option.
        let mut ls = vec![
            json!({"name": "http", "protocol": "HTTP", "port": 80}),
            json!({
                "name": "https",
                "protocol": "HTTPS",
                "port": 443,
                "tls": {"mode": "Terminate", "options": {DEFAULT_CERTIFICATE_OPTION: "true"}},
            }),
        ];
        for (host, secret) in listeners.get(ns).into_iter().flatten() {
            let mut l = json!({
                "name": format!("https-{}", host.replace('*', "wildcard")),
                "protocol": "HTTPS",
                "port": 443,
                "hostname": host,
                "tls": {"mode": "Terminate", "certificateRefs": [{"name": secret}]},
            });
            if cross_ns.contains(&(ns.clone(), host.clone())) {
                l["allowedRoutes"] = json!({"namespaces": {"from": "All"}});
            }
            ls.push(l);
        }
        docs.push(yaml(&json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": ns},
            "spec": {"gatewayClassName": GATEWAY_NAME, "listeners": ls},
        }))?);
    }
    for r in &out_routes {
        docs.push(yaml(r)?);
    }
    Ok(Converted {
        yaml: docs.join("---\n"),
        notes: c.notes.into_iter().collect(),
        ingresses: t.ingresses.clone(),
    })
}

/// Services usually live in the cluster, not in the files converted: a Service an Ingress
/// names by port number and the input lacks is assumed to exist with that port, so that
/// translation resolves its rules (and canaries) as it would in the cluster. Only the
/// references reach the output.
fn assume_services(snap: &mut Snapshot) {
    let mut wanted: BTreeMap<ObjKey, BTreeSet<i32>> = BTreeMap::new();
    for (key, ing) in &snap.ingresses {
        let Some(spec) = &ing.spec else { continue };
        for svc in service_backends(spec) {
            let k = ObjKey::new(key.namespace.as_str(), svc.name.as_str());
            if let (false, Some(n)) = (
                snap.services.contains_key(&k),
                svc.port.as_ref().and_then(|p| p.number),
            ) {
                wanted.entry(k).or_default().insert(n);
            }
        }
    }
    for (k, ports) in wanted {
        let ports: Vec<Value> = ports.iter().map(|p| json!({"port": p})).collect();
        let svc = json!({
            "metadata": {"name": k.name, "namespace": k.namespace},
            "spec": {"ports": ports},
        });
        if let Ok(svc) = serde_json::from_value(svc) {
            snap.services.insert(k, std::sync::Arc::new(svc));
        }
    }
}

/// The Service backends an Ingress names: its `defaultBackend`, then every path's.
fn service_backends(
    spec: &k8s_openapi::api::networking::v1::IngressSpec,
) -> impl Iterator<Item = &k8s_openapi::api::networking::v1::IngressServiceBackend> {
    let paths = spec
        .rules
        .iter()
        .flatten()
        .filter_map(|r| r.http.as_ref())
        .flat_map(|h| h.paths.iter().map(|p| &p.backend));
    spec.default_backend
        .iter()
        .chain(paths)
        .filter_map(|b| b.service.as_ref())
}

fn yaml(v: &impl serde::Serialize) -> Result<String, String> {
    serde_yaml::to_string(v).map_err(|e| e.to_string())
}

/// What happens to one input document.
enum Kept {
    Whole,
    Changed(serde_yaml::Value),
    Dropped,
}

fn ingress_key(v: &serde_yaml::Value) -> Option<ObjKey> {
    if v.get("kind").and_then(|k| k.as_str()) != Some("Ingress") {
        return None;
    }
    let meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        serde_yaml::from_value(v.get("metadata")?.clone()).ok()?;
    Some(ObjKey::new(namespace_of(&meta), meta.name.clone()?))
}

/// Ingresses of ours are replaced by the Gateway API objects; a List loses those items.
fn kept(mut value: serde_yaml::Value, ours: &BTreeSet<ObjKey>) -> Kept {
    if ingress_key(&value).is_some_and(|k| ours.contains(&k)) {
        return Kept::Dropped;
    }
    if value.get("kind").and_then(|k| k.as_str()) == Some("List") {
        if let Some(items) = value.get_mut("items").and_then(|i| i.as_sequence_mut()) {
            let before = items.len();
            items.retain(|i| !ingress_key(i).is_some_and(|k| ours.contains(&k)));
            if items.len() != before {
                return if items.is_empty() {
                    Kept::Dropped
                } else {
                    Kept::Changed(value)
                };
            }
        }
    }
    Kept::Whole
}

/// The HTTPRoute name for a host.
fn route_name(host: &HostMatch) -> String {
    match host {
        HostMatch::Any => "catch-all".into(),
        HostMatch::Exact(h) => h.replace('_', "-"),
        HostMatch::Wildcard(h) | HostMatch::Suffix(h) => {
            format!("wildcard.{}", h.replace('_', "-"))
        }
    }
}

/// The namespace and listener hostname of the TLS host that covers `host`.
fn host_tls_namespace(
    host: &HostMatch,
    tls: &BTreeMap<String, String>,
) -> Option<(String, String)> {
    let name = host.to_string();
    if let Some(ns) = tls.get(&name) {
        return Some((ns.clone(), name));
    }
    if let HostMatch::Exact(h) = host {
        let (_, rest) = h.split_once('.')?;
        let wild = format!("*.{rest}");
        return tls.get(&wild).map(|ns| (ns.clone(), wild));
    }
    None
}

/// Which listener a route is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Port 443 of a host with TLS.
    Https,
    /// Port 80 of a host with TLS: `ssl-redirect` rules redirect.
    Http,
    /// Port 80 of a host without TLS.
    Plain,
}

/// One path rule of the table.
struct Rule<'a> {
    kind: PathKind,
    path: String,
    spec: &'a RouteSpec,
    ingress: ObjKey,
}

impl<'a> Rule<'a> {
    fn new(kind: PathKind, path: &str, spec: &'a RouteSpec, ingress: ObjKey) -> Self {
        Rule {
            kind,
            path: path.to_string(),
            spec,
            ingress,
        }
    }

    /// The Gateway API path match.
    fn path_match(&self) -> Value {
        match self.kind {
            PathKind::Exact => json!({"type": "Exact", "value": self.path}),
            PathKind::Prefix => json!({"type": "PathPrefix", "value": self.path}),
            PathKind::Regex => {
                json!({"type": "RegularExpression", "value": full_match(&self.path)})
            }
        }
    }
}

/// A Gateway API RegularExpression (which must match the whole path) that matches exactly
/// the paths in which the search pattern `search` (the table's form, `(?i)^<path>`) finds a
/// match.
pub fn full_match(search: &str) -> String {
    if search.contains('|') {
        format!("(?s:.*)(?:{search})(?s:.*)")
    } else {
        match search.strip_prefix("(?i)^") {
            Some(rest) => format!("(?i){rest}.*"),
            None => format!("(?s:.*)(?:{search})(?s:.*)"),
        }
    }
}

/// A GEP-2257 duration.
pub fn duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        let n = ms / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            ms -= n * size;
        }
    }
    out
}

struct Conv<'s> {
    snap: &'s Snapshot,
    notes: BTreeSet<Note>,
    hsts: Option<String>,
}

impl Conv<'_> {
    fn note(&mut self, k: &ObjKey, kind: NoteKind, text: impl Into<String>) {
        self.notes.insert(Note {
            object: format!("Ingress {k}"),
            kind,
            text: text.into(),
        });
    }

    /// A GRPCRoute rule for a `backend-protocol: GRPC` path that names `/` or one gRPC
    /// service; None for everything else.
    fn grpc_rule(&mut self, r: &Rule) -> Option<Value> {
        if r.spec.protocol != Protocol::H2c || r.kind != PathKind::Prefix {
            return None;
        }
        let ing = self.snap.ingresses.get(&r.ingress)?;
        let grpc = ing
            .metadata
            .annotations
            .iter()
            .flatten()
            .any(|(k, v)| k.ends_with("/backend-protocol") && v.eq_ignore_ascii_case("grpc"));
        if !grpc || r.spec.policy.is_some() {
            return None;
        }
        let BackendSpec::Service(b) = &r.spec.backend else {
            return None;
        };
        let service = r.path.trim_matches('/');
        if service.contains('/') {
            return None;
        }
        let mut rule = json!({"backendRefs": [{"name": b.service, "port": b.port}]});
        if !service.is_empty() {
            rule["matches"] = json!([{"method": {"type": "Exact", "service": service}}]);
        }
        Some(rule)
    }

    /// The HTTPRoute rules for one table rule on one side (a canary header adds rules).
    fn http_rules(&mut self, r: &Rule, side: Side) -> Vec<Value> {
        let path = r.path_match();
        let base = json!({"matches": [{"path": path}]});
        if side == Side::Http && r.spec.https_redirect {
            let mut rule = base;
            rule["filters"] = json!([{
                "type": "RequestRedirect",
                "requestRedirect": {"scheme": "https", "statusCode": crate::translate::HTTP_REDIRECT_CODE},
            }]);
            return vec![rule];
        }
        let empty = Policy::default();
        let policy = r.spec.policy.as_deref().unwrap_or(&empty);
        // Guards first: fail closed.
        let guards = [
            (
                policy.denied,
                "an access annotation pingress refused (the route answered 503)",
            ),
            (
                policy.access.is_some(),
                "whitelist-source-range / denylist-source-range",
            ),
            (
                policy.limits.is_some(),
                "limit-rps / limit-rpm / limit-connections",
            ),
            (policy.basic_auth.is_some(), "auth-type basic"),
            (policy.external_auth.is_some(), "auth-url"),
            (
                policy.client_tls.is_some(),
                "auth-tls-* client certificates",
            ),
        ];
        let closed: Vec<&str> = guards
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| *w)
            .collect();
        if !closed.is_empty() {
            self.note(
                &r.ingress,
                NoteKind::Closed,
                format!(
                    "{} {}: {} has no Gateway API equivalent; the rule is written without \
                     backends and answers 500 until it is protected another way",
                    kind_name(r.kind),
                    r.path,
                    closed.join(", ")
                ),
            );
            return vec![base];
        }
        let mut filters: Vec<Value> = Vec::new();
        if let Some(redirect) = &policy.redirect {
            if let Some(f) = self.redirect(r, redirect) {
                let mut rule = base;
                rule["filters"] = json!([f]);
                return vec![rule];
            }
        }
        let mut rewrite = serde_json::Map::new();
        match &policy.rewrite {
            None => {}
            Some(Rewrite::Captures { target, .. }) if !target.contains('$') => {
                rewrite.insert(
                    "path".into(),
                    json!({"type": "ReplaceFullPath", "replaceFullPath": target}),
                );
            }
            Some(Rewrite::Captures { target, .. }) => self.note(
                &r.ingress,
                NoteKind::NoEquivalent,
                format!(
                    "{} {}: rewrite-target `{target}` uses regex captures, which Gateway API \
                     rewrites cannot; the path is sent unchanged",
                    kind_name(r.kind),
                    r.path
                ),
            ),
            // Only Gateway API routes carry these.
            Some(Rewrite::Path(_)) => {}
        }
        let mut set = Vec::new();
        for (n, v) in &policy.request_headers.set {
            if n == http::header::HOST {
                rewrite.insert("hostname".into(), json!(v.to_str().unwrap_or_default()));
            } else {
                set.push(json!({"name": n.as_str(), "value": v.to_str().unwrap_or_default()}));
            }
        }
        if !rewrite.is_empty() {
            filters.push(json!({"type": "URLRewrite", "urlRewrite": rewrite}));
        }
        let headers = |set: Vec<Value>, ops: &crate::translate::model::HeaderOps| {
            let mut m = serde_json::Map::new();
            if !set.is_empty() {
                m.insert("set".into(), Value::Array(set));
            }
            let add: Vec<Value> = ops
                .add
                .iter()
                .map(|(n, v)| json!({"name": n.as_str(), "value": v.to_str().unwrap_or_default()}))
                .collect();
            if !add.is_empty() {
                m.insert("add".into(), Value::Array(add));
            }
            let remove: Vec<&str> = ops.remove.iter().map(|n| n.as_str()).collect();
            if !remove.is_empty() {
                m.insert("remove".into(), json!(remove));
            }
            m
        };
        let req = headers(set, &policy.request_headers);
        if !req.is_empty() {
            filters.push(json!({"type": "RequestHeaderModifier", "requestHeaderModifier": req}));
        }
        let mut resp_set: Vec<Value> = policy
            .response_headers
            .set
            .iter()
            .map(|(n, v)| json!({"name": n.as_str(), "value": v.to_str().unwrap_or_default()}))
            .collect();
        if side == Side::Https && r.spec.tls_host {
            if let Some(v) = &self.hsts {
                resp_set.push(json!({"name": "strict-transport-security", "value": v}));
            }
        }
        let resp = headers(resp_set, &policy.response_headers);
        if !resp.is_empty() {
            filters.push(json!({"type": "ResponseHeaderModifier", "responseHeaderModifier": resp}));
        }
        let t = &policy.timeouts;
        let mut timeouts = None;
        if let Some(read) = t.read {
            timeouts = Some(json!({"backendRequest": duration(read)}));
            self.note(
                &r.ingress,
                NoteKind::Differs,
                format!(
                    "{} {}: proxy-read-timeout bounds each wait between two reads; \
                     timeouts.backendRequest ({}) bounds the whole backend request",
                    kind_name(r.kind),
                    r.path,
                    duration(read)
                ),
            );
        }
        if t.connect.is_some() || t.send.is_some() {
            self.note(
                &r.ingress,
                NoteKind::NoEquivalent,
                format!(
                    "{} {}: proxy-connect-timeout / proxy-send-timeout have no Gateway API field",
                    kind_name(r.kind),
                    r.path
                ),
            );
        }
        self.unconverted(r, policy);
        let backends = self.backends(r, policy);
        let Some((main, canary)) = backends else {
            return vec![base];
        };
        let mut rule = base.clone();
        if !filters.is_empty() {
            rule["filters"] = Value::Array(filters.clone());
        }
        if let Some(t) = &timeouts {
            rule["timeouts"] = t.clone();
        }
        let mut out = Vec::new();
        match (&policy.canary, canary) {
            (Some((c, _)), Some(canary_ref)) => {
                let with_header = |header: Value, backend: &Value| {
                    let mut hr = rule.clone();
                    hr["matches"][0]["headers"] = json!([header]);
                    let mut b = backend.clone();
                    b.as_object_mut().map(|o| o.remove("weight"));
                    hr["backendRefs"] = json!([b]);
                    hr
                };
                if let Some((name, how)) = &c.header {
                    match how {
                        HeaderRule::AlwaysNever => {
                            out.push(with_header(
                                json!({"name": name.as_str(), "value": "always"}),
                                &canary_ref,
                            ));
                            out.push(with_header(
                                json!({"name": name.as_str(), "value": "never"}),
                                &main,
                            ));
                        }
                        HeaderRule::Value(v) => out.push(with_header(
                            json!({"name": name.as_str(), "value": v}),
                            &canary_ref,
                        )),
                        HeaderRule::Pattern(p) => out.push(with_header(
                            json!({"name": name.as_str(), "type": "RegularExpression",
                                   "value": format!("(?s:.*)(?:{})(?s:.*)", p.0.as_str())}),
                            &canary_ref,
                        )),
                    }
                }
                if c.cookie.is_some() {
                    self.note(
                        &r.ingress,
                        NoteKind::NoEquivalent,
                        format!(
                            "{} {}: canary-by-cookie has no Gateway API match; only the \
                             header and weight decide",
                            kind_name(r.kind),
                            r.path
                        ),
                    );
                }
                let mut weighted = Vec::new();
                let main_w = c.total.saturating_sub(c.weight);
                if main_w > 0 || c.weight == 0 {
                    let mut m = main.clone();
                    m["weight"] = json!(main_w.max(1));
                    weighted.push(m);
                }
                if c.weight > 0 {
                    let mut cr = canary_ref.clone();
                    cr["weight"] = json!(c.weight);
                    weighted.push(cr);
                }
                if weighted.len() == 1 {
                    weighted[0].as_object_mut().map(|o| o.remove("weight"));
                }
                rule["backendRefs"] = Value::Array(weighted);
            }
            _ => rule["backendRefs"] = json!([main]),
        }
        out.push(rule);
        out
    }

    /// (main backendRef, canary backendRef); None when the rule has no usable backend.
    fn backends(&mut self, r: &Rule, policy: &Policy<RouteSpec>) -> Option<(Value, Option<Value>)> {
        let main = self.backend_ref(r, r.spec)?;
        let canary = match &policy.canary {
            Some((_, c)) => self.backend_ref(r, c),
            None => None,
        };
        Some((main, canary))
    }

    fn backend_ref(&mut self, r: &Rule, spec: &RouteSpec) -> Option<Value> {
        match spec.protocol {
            Protocol::Http1 => {}
            Protocol::H2c => self.note(
                &r.ingress,
                NoteKind::Differs,
                format!(
                    "{} {}: backend-protocol GRPC/H2C: Gateway API takes the protocol from \
                     the Service port; set `appProtocol: kubernetes.io/h2c` on it",
                    kind_name(r.kind),
                    r.path
                ),
            ),
            Protocol::Https | Protocol::H2Tls => self.note(
                &r.ingress,
                NoteKind::NoEquivalent,
                format!(
                    "{} {}: backend-protocol HTTPS/GRPCS needs a BackendTLSPolicy, which \
                     pingress does not serve yet; the pods are reached without TLS",
                    kind_name(r.kind),
                    r.path
                ),
            ),
        }
        match &spec.backend {
            BackendSpec::Service(k) => {
                if k.cluster_ip {
                    self.note(
                        &r.ingress,
                        NoteKind::NoEquivalent,
                        "service-upstream: Gateway API always balances over the endpoints",
                    );
                }
                Some(json!({"name": k.service, "port": k.port}))
            }
            BackendSpec::Unavailable { service, .. } | BackendSpec::Invalid { service, .. } => {
                // The Service is not in the input (it usually lives in the cluster): the
                // backendRef names it with the Ingress's port number.
                let port = self.ingress_port(&r.ingress, service);
                if !self.snap.services.is_empty() || port.is_none() {
                    self.note(
                        &r.ingress,
                        NoteKind::Differs,
                        format!(
                            "{} {}: Service `{service}` {}; Gateway API answers 500 for a \
                             backendRef that cannot be resolved (Ingress: 503)",
                            kind_name(r.kind),
                            r.path,
                            if port.is_none() {
                                "is not in the input and its port is named, so the rule is \
                                 written without backends"
                            } else {
                                "is not in the input"
                            }
                        ),
                    );
                }
                Some(json!({"name": service, "port": port?}))
            }
            BackendSpec::NotFound => {
                self.note(
                    &r.ingress,
                    NoteKind::Differs,
                    format!(
                        "{} {}: the built-in default backend (404) has no Gateway API form; \
                         the rule is written without backends (500)",
                        kind_name(r.kind),
                        r.path
                    ),
                );
                None
            }
        }
    }

    /// The port number an Ingress gives for a Service (in a rule or its defaultBackend).
    fn ingress_port(&self, key: &ObjKey, service: &str) -> Option<i32> {
        let spec = self.snap.ingresses.get(key)?.spec.as_ref()?;
        service_backends(spec)
            .find(|s| s.name == service)
            .and_then(|s| s.port.as_ref()?.number)
    }

    /// A RequestRedirect filter for an annotation redirect; None (with a note) when it
    /// cannot be expressed.
    fn redirect(
        &mut self,
        r: &Rule,
        redirect: &crate::translate::model::Redirect,
    ) -> Option<Value> {
        let at = format!("{} {}", kind_name(r.kind), r.path);
        let code = match redirect.code {
            c @ (301 | 302 | 303 | 307 | 308) => c,
            other => {
                let c = if other < 302 { 301 } else { 302 };
                self.note(
                    &r.ingress,
                    NoteKind::Differs,
                    format!(
                        "{at}: redirect code {other} is not one Gateway API allows; {c} is used"
                    ),
                );
                c
            }
        };
        let mut rr = serde_json::Map::new();
        rr.insert("statusCode".into(), json!(code));
        match &redirect.to {
            RedirectTo::Url(u) => {
                let Ok(url) = url::Url::parse(u) else {
                    self.note(
                        &r.ingress,
                        NoteKind::NoEquivalent,
                        format!(
                            "{at}: redirect URL `{u}` cannot be split into scheme, host and path"
                        ),
                    );
                    return None;
                };
                rr.insert("scheme".into(), json!(url.scheme()));
                if let Some(h) = url.host_str() {
                    rr.insert("hostname".into(), json!(h));
                }
                if let Some(p) = url.port() {
                    rr.insert("port".into(), json!(p));
                }
                rr.insert(
                    "path".into(),
                    json!({"type": "ReplaceFullPath", "replaceFullPath": url.path()}),
                );
                self.note(
                    &r.ingress,
                    NoteKind::Differs,
                    format!(
                        "{at}: permanent-/temporal-redirect to `{u}`: RequestRedirect keeps the \
                         request's query{}",
                        if url.query().is_some() {
                            " and cannot add the URL's own"
                        } else {
                            ""
                        }
                    ),
                );
            }
            RedirectTo::Path(p) => {
                rr.insert(
                    "path".into(),
                    json!({"type": "ReplaceFullPath", "replaceFullPath": p}),
                );
                self.note(
                    &r.ingress,
                    NoteKind::Differs,
                    format!("app-root `{p}`: RequestRedirect keeps the request's query"),
                );
            }
            RedirectTo::Host(h) => {
                rr.insert("hostname".into(), json!(h));
                self.note(
                    &r.ingress,
                    NoteKind::Differs,
                    format!(
                        "from-to-www-redirect to {h}: RequestRedirect keeps a trailing slash \
                         ingress-nginx drops"
                    ),
                );
            }
            RedirectTo::Parts(_) => return None,
        }
        Some(json!({"type": "RequestRedirect", "requestRedirect": rr}))
    }

    /// Notes for the policy fields that have no Gateway API form at all.
    fn unconverted(&mut self, r: &Rule, policy: &Policy<RouteSpec>) {
        use crate::translate::model::Balance;
        let at = format!("{} {}", kind_name(r.kind), r.path);
        let items = [
            (policy.retry.is_some(), "proxy-next-upstream*: retries"),
            (policy.body_limit.is_some(), "proxy-body-size"),
            (
                policy.balance != Balance::RoundRobin,
                "load-balance / upstream-hash-by / affinity",
            ),
            (policy.errors.is_some(), "custom-http-errors"),
            (policy.fallback.is_some(), "default-backend"),
            (
                policy.cors.is_some(),
                "enable-cors (pingress does not serve the CORS filter yet)",
            ),
            (
                policy.snippet.is_some(),
                "configuration-snippet / server-snippet headers",
            ),
        ];
        for (_, what) in items.iter().filter(|(on, _)| *on) {
            self.note(
                &r.ingress,
                NoteKind::NoEquivalent,
                format!("{at}: {what} is not converted"),
            );
        }
    }
}

fn kind_name(k: PathKind) -> &'static str {
    match k {
        PathKind::Exact => "Exact",
        PathKind::Prefix => "Prefix",
        PathKind::Regex => "regex",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(
        name: &str,
        annotations: &[(&str, &str)],
        host: &str,
        paths: &[(&str, &str)],
    ) -> String {
        let mut s = format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: ns\n  annotations:\n"
        );
        for (k, v) in annotations {
            s.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: \"{v}\"\n"));
        }
        s.push_str(&format!(
            "spec:\n  ingressClassName: pingress\n  rules:\n  - host: {host}\n    http:\n      paths:\n"
        ));
        for (path, svc) in paths {
            s.push_str(&format!(
                "      - path: {path}\n        pathType: Prefix\n        backend:\n          service: {{name: {svc}, port: {{number: 80}}}}\n"
            ));
        }
        s
    }

    /// Convert, and return the output's documents of `kind`, and the notes.
    fn convert(text: &str, kind: &str) -> (Vec<serde_yaml::Value>, Vec<Note>) {
        let out =
            to_gateway_api(&[("in.yaml".into(), text.into())], &PingressConf::default()).unwrap();
        let docs = files::split_documents(&out.yaml)
            .into_iter()
            .map(|(_, d)| serde_yaml::from_str::<serde_yaml::Value>(d).unwrap())
            .filter(|d| d["kind"].as_str() == Some(kind))
            .collect();
        (docs, out.notes)
    }

    #[test]
    fn a_canary_weight_becomes_backend_weights() {
        let text = format!(
            "{}{}",
            ingress("main", &[], "a.example", &[("/", "stable")]),
            ingress(
                "c",
                &[("canary", "true"), ("canary-weight", "20")],
                "a.example",
                &[("/", "next")]
            )
        );
        let (routes, notes) = convert(&text, "HTTPRoute");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(routes.len(), 1);
        let refs = &routes[0]["spec"]["rules"][0]["backendRefs"];
        assert_eq!(refs[0]["name"].as_str(), Some("stable"));
        assert_eq!(refs[0]["weight"].as_u64(), Some(80));
        assert_eq!(refs[1]["name"].as_str(), Some("next"));
        assert_eq!(refs[1]["weight"].as_u64(), Some(20));
    }

    #[test]
    fn grpc_services_become_grpc_routes() {
        let text = ingress(
            "g",
            &[("backend-protocol", "GRPC")],
            "g.example",
            &[("/helloworld.Greeter", "greeter"), ("/a/b", "other")],
        );
        let (grpc, notes) = convert(&text, "GRPCRoute");
        assert_eq!(grpc.len(), 1);
        let m = &grpc[0]["spec"]["rules"][0]["matches"][0]["method"];
        assert_eq!(m["service"].as_str(), Some("helloworld.Greeter"));
        // `/a/b` names no gRPC service: an HTTPRoute rule, with the protocol to set by hand.
        let (http, _) = convert(&text, "HTTPRoute");
        assert_eq!(http.len(), 1);
        assert!(
            notes
                .iter()
                .any(|n| n.kind == NoteKind::Differs && n.text.contains("appProtocol")),
            "{notes:?}"
        );
    }

    #[test]
    fn more_than_sixteen_rules_are_split_in_order() {
        let paths: Vec<(String, &str)> = (0..20).map(|i| (format!("/p{i:02}"), "web")).collect();
        let paths: Vec<(&str, &str)> = paths.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let (routes, _) = convert(&ingress("many", &[], "m.example", &paths), "HTTPRoute");
        let names: Vec<&str> = routes
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["m.example", "m.example-02"]);
        assert_eq!(routes[0]["spec"]["rules"].as_sequence().unwrap().len(), 16);
        assert_eq!(routes[1]["spec"]["rules"].as_sequence().unwrap().len(), 4);
    }

    #[test]
    fn a_guarded_path_is_written_without_backends() {
        let text = ingress(
            "guarded",
            &[("auth-url", "http://auth.example/check")],
            "s.example",
            &[("/", "web")],
        );
        let (routes, notes) = convert(&text, "HTTPRoute");
        let rule = &routes[0]["spec"]["rules"][0];
        assert!(rule.get("backendRefs").is_none(), "{rule:?}");
        assert!(
            notes
                .iter()
                .any(|n| n.kind == NoteKind::Closed && n.text.contains("auth-url")),
            "{notes:?}"
        );
    }

    #[test]
    fn durations_are_gep_2257() {
        assert_eq!(duration(Duration::from_secs(60)), "1m");
        assert_eq!(duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(duration(Duration::from_secs(3_600 * 30 + 5)), "30h5s");
        assert_eq!(duration(Duration::ZERO), "0s");
    }

    #[test]
    fn regex_paths_match_what_the_search_found() {
        for (search, yes, no) in [
            ("(?i)^/api/v[0-9]+", "/API/v2/users", "/x/api/v2"),
            ("(?i)^/a|/b", "/x/b/y", "/c"),
            ("(?i)^/exact$", "/exact", "/exact/more"),
        ] {
            let full = regex::Regex::new(&format!("^(?:{})$", full_match(search))).unwrap();
            let s = regex::Regex::new(search).unwrap();
            assert!(s.is_match(yes) && full.is_match(yes), "{search} {yes}");
            assert!(!s.is_match(no) && !full.is_match(no), "{search} {no}");
        }
    }
}
