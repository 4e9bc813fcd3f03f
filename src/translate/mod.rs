//! Pure translation of a [`Snapshot`] into routes: Ingress class selection, host and path
//! rules, backend resolution through Services, default backends, conflicts, and a
//! diagnostic for everything rejected or ignored. No I/O, no clock, no async.
//!
//! Ingresses are taken oldest first (creationTimestamp, then namespace/name), so when two of
//! them claim the same host+path the older one keeps it, whatever order they arrived in.
//!
//! ingress-nginx annotations are parsed by [`annotations`] into the typed [`model::Policy`]
//! of each route. The order of work:
//! 1. read every Ingress's annotations; an Ingress whose annotations ingress-nginx would
//!    drop is refused, or keeps its last good version when it had one (`last_good`);
//! 2. TLS entries, then which hosts are in regex mode (any Ingress of the host with
//!    `use-regex` or `rewrite-target`);
//! 3. main Ingresses' paths, regex-mode hosts ordered by path length (longest first);
//! 4. host-level features: app-root, server-alias, from-to-www-redirect;
//! 5. canary Ingresses attach to the main rule of the same host, path and pathType.

pub mod annotations;
mod diagnostics;
pub mod gateway;
pub mod islands;
pub mod model;
pub mod template;
#[cfg(test)]
mod tests;

pub use diagnostics::{DiagKind, Diagnostic};

use std::collections::BTreeMap;

/// The translator's own maps (per host, per pool, per rule slot; a few per Ingress and
/// rebuilt on every translation): foldhash instead of SipHash, about a tenth of the
/// translation's time at 10,000 Ingresses (docs/benchmarks.md, "Scale").
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use crate::config::{PingressConf, PortRef};
use crate::routing::{HostMatch, PathKind, RouteTable};
use crate::source::{namespace_of, ObjKey, Snapshot};
use annotations::{IngressAnnotations, Status, Verdict};
use model::{
    Balance, BasicAuth, ClientTls, ErrorPages, IpAccess, LimitSpec, Policy, Redirect, RedirectTo,
    Rewrite, VerifyClient,
};

/// Legacy class annotation.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks an IngressClass as the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// Status of HTTP-to-HTTPS and from-to-www redirects (ingress-nginx's `http-redirect-code`
/// default): 308 keeps the method and body.
pub const HTTP_REDIRECT_CODE: u16 = 308;
/// `appProtocol` of a Service port that means HTTP/2 over cleartext.
pub const APP_PROTOCOL_H2C: &str = "kubernetes.io/h2c";

/// What translation needs from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslateConf {
    pub ingress_class: String,
    pub controller_name: String,
    pub watch_ingress_without_class: bool,
    /// Redirect plain HTTP to HTTPS for hosts with TLS unless an Ingress turns it off.
    pub ssl_redirect: bool,
    /// Global default backend: (`namespace/name`, port); None for the built-in 404.
    pub default_backend: Option<(ObjKey, PortRef)>,
    /// GatewayClasses with this `spec.controllerName` are ours.
    pub gateway_controller: String,
    /// Port numbers of the plain-HTTP and of the HTTPS listeners (Gateway listener ports
    /// other than 80 and 443 are served where these match).
    pub http_ports: Vec<u16>,
    pub https_ports: Vec<u16>,
}

impl From<&PingressConf> for TranslateConf {
    fn from(c: &PingressConf) -> Self {
        TranslateConf {
            ingress_class: c.ingress_class.clone(),
            controller_name: c.controller_name.clone(),
            watch_ingress_without_class: c.watch_ingress_without_class,
            ssl_redirect: c.tls.ssl_redirect,
            default_backend: c.default_backend.as_ref().map(|d| {
                let (ns, name) = d.service.split_once('/').unwrap_or(("default", &d.service));
                (ObjKey::new(ns, name), d.port.clone())
            }),
            gateway_controller: c.gateway_controller_name.clone(),
            http_ports: ports_of(&c.http_listen),
            https_ports: ports_of(&c.https_listen),
        }
    }
}

fn ports_of(addrs: &[String]) -> Vec<u16> {
    addrs
        .iter()
        .filter_map(|a| crate::config::parse_listen(a).ok())
        .map(|a| a.port())
        .collect()
}

/// One upstream pool: the pods behind one port of one Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamKey {
    pub namespace: String,
    pub service: String,
    /// The Service port's name ("" when unnamed); EndpointSlice ports carry the same name.
    pub port_name: String,
    /// The Service port number (for labels and messages).
    pub port: i32,
    /// `service-upstream`: the one endpoint is the Service's ClusterIP and port.
    pub cluster_ip: bool,
}

impl std::fmt::Display for UpstreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// Where a matched request goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendSpec {
    /// Proxy to the ready endpoints of this pool (503 while it has none).
    Service(UpstreamKey),
    /// The backend cannot be resolved (missing Service or port): answer 503.
    Unavailable { namespace: String, service: String },
    /// The built-in default backend: answer 404.
    NotFound,
    /// A Gateway API backendRef that cannot be used (unknown kind, missing Service, not
    /// permitted): its share of requests gets 500.
    Invalid { namespace: String, service: String },
}

/// How the gateway talks to the pods of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// HTTP/1.1 over cleartext (the default).
    #[default]
    Http1,
    /// HTTP/1.1 over TLS (`backend-protocol: HTTPS`); the pod's certificate is not verified.
    Https,
    /// HTTP/2 over cleartext with prior knowledge (`GRPC`, `H2C`, `appProtocol: kubernetes.io/h2c`).
    H2c,
    /// HTTP/2 over TLS (`GRPCS`).
    H2Tls,
}

impl Protocol {
    /// TLS to the pod.
    pub fn tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::H2Tls)
    }

    /// HTTP/2 to the pod.
    pub fn http2(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::H2Tls)
    }

    /// The `backend-protocol` annotation value; Err for values we do not support.
    pub fn from_annotation(v: &str) -> Result<Protocol, String> {
        match v.trim().to_ascii_uppercase().as_str() {
            "HTTP" => Ok(Protocol::Http1),
            "HTTPS" => Ok(Protocol::Https),
            "GRPC" | "H2C" => Ok(Protocol::H2c),
            "GRPCS" => Ok(Protocol::H2Tls),
            _ => Err(format!(
                "`{v}` is not supported (use HTTP, HTTPS, GRPC, GRPCS or H2C)"
            )),
        }
    }
}

/// A translated route target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The Ingress the rule came from; None for the global default backend.
    pub ingress: Option<ObjKey>,
    pub backend: BackendSpec,
    pub protocol: Protocol,
    /// Answer plain-HTTP requests with a redirect to HTTPS.
    pub https_redirect: bool,
    /// The host has TLS configured (HSTS is sent on its HTTPS responses).
    pub tls_host: bool,
    /// Everything else the annotations ask for; None for a plain route.
    pub policy: Option<Box<Policy<RouteSpec>>>,
}

impl RouteSpec {
    fn policy_mut(&mut self) -> &mut Policy<RouteSpec> {
        self.policy.get_or_insert_with(Default::default)
    }
}

/// One `spec.tls[]` entry of an Ingress of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsBinding {
    pub ingress: ObjKey,
    /// `spec.tls[i]`, for messages.
    pub field: String,
    /// The Secret; None means the hosts are served with the default certificate.
    pub secret: Option<ObjKey>,
    /// Lowercase hosts (`*.example.com` for a wildcard).
    pub hosts: Vec<String>,
}

/// The last accepted version of each object that can be refused on its own (Ingress
/// annotations, Gateway API routes breaking the CRD rules): pass
/// [`Translation::accepted`] of one translation to the next, so that a bad update keeps
/// serving the version before it.
#[derive(Debug, Clone, Default)]
pub struct LastGood {
    pub ingresses: BTreeMap<ObjKey, Arc<Ingress>>,
    pub http_routes: BTreeMap<ObjKey, Arc<gateway_api::httproutes::HttpRoute>>,
    pub grpc_routes: BTreeMap<ObjKey, Arc<gateway_api::grpcroutes::GrpcRoute>>,
}

/// The result of translating one snapshot.
#[derive(Debug, Clone)]
pub struct Translation {
    pub routes: RouteTable<RouteSpec>,
    /// For requests that match nothing in `routes`.
    pub default_route: RouteSpec,
    /// Ingresses of our class, oldest first.
    pub ingresses: Vec<ObjKey>,
    /// TLS entries of those Ingresses, oldest Ingress first.
    pub tls: Vec<TlsBinding>,
    pub diagnostics: Vec<Diagnostic>,
    /// The verdict on every annotation of each Ingress of ours that has any (for
    /// `pingress check`).
    pub annotations: BTreeMap<ObjKey, Vec<Verdict>>,
    /// The Ingresses whose annotations were accepted and the routes that passed the CRD
    /// rules, as translated: pass them back as `last_good` so that a later bad update keeps
    /// serving this version.
    pub accepted: LastGood,
    /// Ingresses refused (or kept at their last good version) because of their annotations.
    pub refused: BTreeMap<ObjKey, String>,
    /// Hosts (as rules write them; `*` for the catch-all) whose TLS handshakes ask for a
    /// client certificate.
    pub client_auth_hosts: Vec<String>,
    /// Gateway API: the status of each GatewayClass, Gateway and route of ours.
    pub gateway: gateway::Report,
    /// What each translated Ingress of ours shares with others ([`touches`]), for
    /// [`islands`]: the version that was translated (the last good one when an update was
    /// refused).
    pub touches: Vec<(ObjKey, Vec<Touch>)>,
}

/// Translate a snapshot. Pure: same input, same output.
pub fn translate(snap: &Snapshot, conf: &TranslateConf) -> Translation {
    translate_with(snap, conf, &LastGood::default())
}

/// Translate a snapshot, keeping the `last_good` version (from the previous
/// [`Translation::accepted`]) of an Ingress whose update is refused.
pub fn translate_with(snap: &Snapshot, conf: &TranslateConf, last_good: &LastGood) -> Translation {
    run(snap, conf, last_good, None)
}

/// Translate only the Ingresses of `snap` (a snapshot cut down to some islands, see
/// [`islands`]): no global default backend (its route is the built-in 404 and it reports
/// nothing) and no Gateway API. `wildcard_tls` are the `example.com` of every `*.example.com`
/// TLS host of all Ingresses, the ones outside `snap` included: a rule host under one has TLS.
pub fn translate_part(
    snap: &Snapshot,
    conf: &TranslateConf,
    last_good: &LastGood,
    wildcard_tls: &HashSet<String>,
) -> Translation {
    run(snap, conf, last_good, Some(wildcard_tls))
}

/// A whole translation (`part` None) or one of islands (`part`: the wildcard TLS parents of
/// the Ingresses outside the snapshot).
fn run(
    snap: &Snapshot,
    conf: &TranslateConf,
    last_good: &LastGood,
    part: Option<&HashSet<String>>,
) -> Translation {
    let mut t = Translator {
        snap,
        conf,
        routes: RouteTable::default(),
        owners: HashMap::default(),
        diagnostics: Vec::new(),
        tls: Vec::new(),
        tls_hosts: HashSet::default(),
        tls_wildcard_parents: HashSet::default(),
        regex_hosts: HashSet::default(),
        balances: HashMap::default(),
        host_owner: HashMap::default(),
        auth_cache: HashMap::default(),
        client_tls: HashMap::default(),
        rewrite_patterns: HashMap::default(),
    };
    let default_route = match part {
        None => t.global_default(),
        Some(_) => RouteSpec {
            ingress: None,
            backend: BackendSpec::NotFound,
            protocol: Protocol::Http1,
            https_redirect: false,
            tls_host: false,
            policy: None,
        },
    };
    let mut ours: Vec<(&ObjKey, &Ingress)> = snap
        .ingresses
        .iter()
        .filter(|(_, ing)| t.is_ours(ing))
        .map(|(k, i)| (k, &**i))
        .collect();
    ours.sort_by(|(ka, a), (kb, b)| {
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| &t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| &t.0);
        ta.cmp(&tb).then_with(|| ka.cmp(kb))
    });
    // 1. Annotations; refused Ingresses fall back to their last good version.
    let mut annotations = BTreeMap::new();
    let mut accepted = BTreeMap::new();
    let mut refused = BTreeMap::new();
    let mut live: Vec<(&ObjKey, Arc<Ingress>, IngressAnnotations)> = Vec::new();
    let mut touched = Vec::with_capacity(ours.len());
    for (key, ing) in &ours {
        let (ann, verdicts, refusal) = annotations::read(ing.metadata.annotations.as_ref());
        t.verdict_diagnostics(key, &verdicts);
        if !verdicts.is_empty() {
            annotations.insert((*key).clone(), verdicts);
        }
        let Some(why) = refusal else {
            let arc = snap.ingresses[*key].clone();
            accepted.insert((*key).clone(), arc.clone());
            touched.push(((*key).clone(), touches(key, &arc, &ann)));
            live.push((key, arc, ann));
            continue;
        };
        match last_good.ingresses.get(*key) {
            Some(prev) => {
                t.diag(
                    Some(key),
                    DiagKind::InvalidAnnotation,
                    format!("update refused: {why}; the last good version keeps serving"),
                );
                let (ann, _, _) = annotations::read(prev.metadata.annotations.as_ref());
                accepted.insert((*key).clone(), prev.clone());
                touched.push(((*key).clone(), touches(key, prev, &ann)));
                live.push((key, prev.clone(), ann));
            }
            None => t.diag(
                Some(key),
                DiagKind::InvalidAnnotation,
                format!("ingress refused: {why}"),
            ),
        }
        refused.insert((*key).clone(), why);
    }
    // 2. TLS hosts first: a rule's host may get its TLS from another Ingress. Then regex mode.
    for (key, ing, _) in &live {
        t.tls_entries(key, ing);
    }
    t.tls_hosts = t.tls.iter().flat_map(|b| b.hosts.clone()).collect();
    t.tls_wildcard_parents = (t.tls_hosts.iter())
        .filter_map(|h| h.strip_prefix("*.").map(str::to_string))
        .collect();
    if let Some(outside) = part {
        t.tls_wildcard_parents.extend(outside.iter().cloned());
    }
    for (_, ing, ann) in &live {
        if ann.canary.is_none() && t.wants_regex(ing, ann) {
            for rule in ing.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
                if let Ok(h) = HostMatch::parse(rule.host.as_deref()) {
                    t.regex_hosts.insert(h);
                }
            }
        }
    }
    // 2b. Client certificates are host settings: the oldest Ingress of a host sets them.
    for (key, ing, ann) in &live {
        if let (None, Some(spec)) = (&ann.canary, &ann.client_cert) {
            t.client_cert(key, ing, spec);
        }
    }
    // 3. Main Ingresses' paths (regex hosts: collected, then inserted longest first).
    let mut regex_paths = Vec::new();
    for (key, ing, ann) in &live {
        if ann.canary.is_none() {
            t.ingress(key, ing, ann, &mut regex_paths);
        }
    }
    regex_paths.sort_by_key(|p: &PendingPath| std::cmp::Reverse(p.path.len()));
    for p in regex_paths {
        t.place(p);
    }
    // 4. Host-level features, oldest Ingress first.
    for (key, ing, ann) in &live {
        if ann.canary.is_none() {
            t.host_features(key, ing, ann);
        }
    }
    // 5. Canaries.
    for (key, ing, ann) in &live {
        if let Some(c) = &ann.canary {
            t.canary(key, ing, ann, c);
        }
    }
    // 6. Gateway API routes, after every Ingress (Ingress wins on the same host and path).
    let mut accepted = LastGood {
        ingresses: accepted,
        ..LastGood::default()
    };
    let gateway = match part {
        None => t.gateway_api(last_good, &mut accepted),
        Some(_) => gateway::Report::default(),
    };
    if let Err(e) = t.routes.finish() {
        t.diag(None, DiagKind::InvalidPath, e);
    }
    let mut client_auth_hosts: Vec<String> = t
        .client_tls
        .iter()
        .filter(|(_, (_, ct))| ct.as_ref().is_ok_and(|c| c.verify != VerifyClient::Off))
        .map(|(h, _)| h.to_string())
        .collect();
    client_auth_hosts.sort();
    Translation {
        client_auth_hosts,
        routes: t.routes,
        default_route,
        ingresses: ours.into_iter().map(|(k, _)| k.clone()).collect(),
        tls: t.tls,
        diagnostics: t.diagnostics,
        annotations,
        accepted,
        refused,
        gateway,
        touches: touched,
    }
}

/// What the translation of one Ingress reads or claims that another Ingress's translation
/// can read or claim too. Two Ingresses with a touch in common can change each other's
/// routes (the older one wins a host and path, TLS on a host redirects every rule of it,
/// the oldest Ingress sending to a Service sets its balancing, a Secret's problems are
/// reported once); two without one cannot, so they can be translated apart ([`islands`]).
/// The one exception, wildcard TLS (`*.example.com` gives `a.example.com` TLS), is passed
/// to [`translate_part`] whole instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Touch {
    /// A host the Ingress has rules, TLS, an alias or a www redirect for; [`HostMatch::Any`]
    /// for rules without a host and the catch-all defaultBackend.
    Host(HostMatch),
    /// A Service it sends to (its balancing is set by the oldest Ingress that does).
    Service(ObjKey),
    /// A basic-auth Secret (parsed once per translation).
    Secret(ObjKey),
}

/// The [`Touch`]es of one Ingress as translated with these annotations, without duplicates.
pub fn touches(key: &ObjKey, ing: &Ingress, ann: &IngressAnnotations) -> Vec<Touch> {
    let mut out = Vec::new();
    let mut add = |t: Touch| {
        if !out.contains(&t) {
            out.push(t);
        }
    };
    let hosts = rule_hosts(ing);
    let Some(spec) = &ing.spec else {
        return out;
    };
    if spec.default_backend.is_some() && hosts.is_empty() {
        add(Touch::Host(HostMatch::Any));
    }
    for h in &hosts {
        add(Touch::Host(h.clone()));
        if let (true, HostMatch::Exact(name)) = (ann.redirect.from_to_www, h) {
            let other = match name.strip_prefix("www.") {
                Some(bare) => bare.to_string(),
                None => format!("www.{name}"),
            };
            add(Touch::Host(HostMatch::Exact(other)));
        }
    }
    for alias in &ann.redirect.aliases {
        add(Touch::Host(alias.clone()));
    }
    for entry in spec.tls.iter().flatten() {
        for h in entry.hosts.iter().flatten() {
            if let Ok(m) = HostMatch::parse(Some(h)) {
                add(Touch::Host(m));
            }
        }
    }
    let backends = spec
        .default_backend
        .iter()
        .chain(paths_of(ing).map(|(_, p)| &p.backend));
    for b in backends {
        if let Some(svc) = &b.service {
            add(Touch::Service(ObjKey::new(
                key.namespace.clone(),
                svc.name.clone(),
            )));
        }
    }
    if let Some(name) = &ann.errors.default_backend {
        add(Touch::Service(ObjKey::new(
            key.namespace.clone(),
            name.clone(),
        )));
    }
    if let Some(b) = &ann.auth.basic {
        if let Ok(secret) = own_secret(key, b.namespace.as_deref(), &b.name) {
            add(Touch::Secret(secret));
        }
    }
    out
}

/// Where a rule lives, for naming the winner of a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot {
    Path(HostMatch, PathKind, String),
    HostDefault(HostMatch),
    Fallback,
    /// A host-level setting (app-root, server-alias) of one host.
    HostSetting(HostMatch, &'static str),
}

/// A path waiting to be placed (regex-mode hosts are placed in path-length order).
struct PendingPath {
    key: ObjKey,
    host: HostMatch,
    kind: PathKind,
    /// As written in the Ingress.
    path: String,
    target: RouteSpec,
    what: PathField,
}

/// `rules[i].http.paths[j]` of an Ingress, for messages: formatted only when one is written
/// (a translation places every path of every Ingress, and nearly all place cleanly).
#[derive(Debug, Clone, Copy)]
struct PathField(usize, usize);

impl std::fmt::Display for PathField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rules[{}].http.paths[{}]", self.0, self.1)
    }
}

/// Whether an Ingress is ours: its class (spec.ingressClassName, then the legacy
/// annotation, then the default IngressClass) names our controller or class.
pub fn is_ours(snap: &Snapshot, conf: &TranslateConf, ing: &Ingress) -> bool {
    let spec_class = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    if let Some(name) = spec_class {
        return match snap.ingress_classes.get(name) {
            Some(class) => {
                class.spec.as_ref().and_then(|s| s.controller.as_deref())
                    == Some(conf.controller_name.as_str())
            }
            // No IngressClass object of that name: match our configured class name.
            None => name == conf.ingress_class,
        };
    }
    let annotation = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLASS_ANNOTATION));
    if let Some(name) = annotation {
        return *name == conf.ingress_class;
    }
    conf.watch_ingress_without_class || default_class_is_ours(snap, conf)
}

fn default_class_is_ours(snap: &Snapshot, conf: &TranslateConf) -> bool {
    snap.ingress_classes.values().any(|c| {
        let is_default = c
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
            .is_some_and(|v| v == "true");
        let controller = c.spec.as_ref().and_then(|s| s.controller.as_deref());
        is_default && controller == Some(conf.controller_name.as_str())
    })
}

struct Translator<'a> {
    snap: &'a Snapshot,
    conf: &'a TranslateConf,
    routes: RouteTable<RouteSpec>,
    owners: HashMap<Slot, ObjKey>,
    diagnostics: Vec<Diagnostic>,
    tls: Vec<TlsBinding>,
    /// Every host of `tls`.
    tls_hosts: HashSet<String>,
    /// `example.com` for each `*.example.com` of `tls_hosts` (looked up without building
    /// the wildcard's name for every rule host).
    tls_wildcard_parents: HashSet<String>,
    /// Hosts where every path is a case-insensitive, start-anchored regex.
    regex_hosts: HashSet<HostMatch>,
    /// The balancing of each pool, set by the oldest Ingress that sends to it.
    balances: HashMap<UpstreamKey, (Balance, ObjKey)>,
    /// Hosts (of rules) -> the oldest Ingress with a rule for it.
    host_owner: HashMap<HostMatch, ObjKey>,
    /// Basic-auth users by Secret and settings, parsed once per translation.
    auth_cache: AuthCache,
    /// auth-tls-* per host: the Ingress that set it (the oldest) and the setting, or
    /// `Err` when it failed closed (the host's paths answer 503).
    client_tls: HashMap<HostMatch, (ObjKey, ClientTlsResult)>,
    /// rewrite-target capture patterns compiled so far: Ingresses with the same regex path
    /// share one (and its cache).
    rewrite_patterns: HashMap<String, model::Pattern>,
}

type ClientTlsResult = Result<Arc<ClientTls>, ()>;

type AuthCache = HashMap<(ObjKey, annotations::auth::Basic), Result<Arc<BasicAuth>, String>>;

impl Translator<'_> {
    /// The rewrite-target capture pattern of a regex path (case-insensitive, as
    /// ingress-nginx's `rewrite "(?i)..."`), compiled once per translation.
    fn rewrite_pattern(&mut self, raw_path: &str) -> Result<model::Pattern, regex::Error> {
        if let Some(p) = self.rewrite_patterns.get(raw_path) {
            return Ok(p.clone());
        }
        let p = model::Pattern(regex::Regex::new(&format!("(?i){raw_path}"))?.into());
        self.rewrite_patterns
            .insert(raw_path.to_string(), p.clone());
        Ok(p)
    }

    fn is_ours(&self, ing: &Ingress) -> bool {
        is_ours(self.snap, self.conf, ing)
    }

    fn diag(&mut self, ingress: Option<&ObjKey>, kind: DiagKind, message: String) {
        self.diagnostics.push(Diagnostic {
            ingress: ingress.cloned(),
            kind,
            message,
        });
    }

    fn global_default(&mut self) -> RouteSpec {
        let mut protocol = Protocol::Http1;
        let backend = match self.conf.default_backend.clone() {
            None => BackendSpec::NotFound,
            Some((svc, port)) => match self.resolve(&svc.namespace, &svc.name, Some(&port)) {
                Ok((key, app)) => {
                    protocol = app.unwrap_or_default();
                    BackendSpec::Service(key)
                }
                Err((kind, msg)) => {
                    self.diag(None, kind, format!("default backend: {msg}"));
                    BackendSpec::Unavailable {
                        namespace: svc.namespace,
                        service: svc.name,
                    }
                }
            },
        };
        RouteSpec {
            ingress: None,
            backend,
            protocol,
            https_redirect: false,
            tls_host: false,
            policy: None,
        }
    }

    /// Resolve a Service port to its upstream pool key, and the protocol its `appProtocol`
    /// asks for (if one we act on).
    fn resolve(
        &self,
        namespace: &str,
        service: &str,
        port: Option<&PortRef>,
    ) -> Result<(UpstreamKey, Option<Protocol>), (DiagKind, String)> {
        let key = ObjKey::new(namespace, service);
        let Some(svc) = self.snap.services.get(&key) else {
            return Err((
                DiagKind::ServiceNotFound,
                format!("service {key} not found"),
            ));
        };
        let Some(port) = port else {
            return Err((
                DiagKind::PortNotFound,
                format!("backend for service {key} names no port"),
            ));
        };
        let spec = svc.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Err((
                DiagKind::UnsupportedBackend,
                format!("service {key} is of type ExternalName, which is not supported"),
            ));
        }
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let found = ports.iter().find(|p| match port {
            PortRef::Number(n) => p.port == *n,
            PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
        });
        let Some(found) = found else {
            return Err((
                DiagKind::PortNotFound,
                format!("service {key} has no port {port}"),
            ));
        };
        let app = match found.app_protocol.as_deref() {
            Some(APP_PROTOCOL_H2C) => Some(Protocol::H2c),
            Some("https" | "kubernetes.io/wss") => Some(Protocol::Https),
            _ => None,
        };
        let key = UpstreamKey {
            namespace: namespace.to_string(),
            service: service.to_string(),
            port_name: found.name.clone().unwrap_or_default(),
            port: found.port,
            cluster_ip: false,
        };
        Ok((key, app))
    }

    /// A route target for an Ingress backend; None (with a diagnostic) when it must be skipped.
    /// Its host-dependent parts are set by [`Self::on_host`].
    fn backend(
        &mut self,
        key: &ObjKey,
        b: &IngressBackend,
        what: &dyn std::fmt::Display,
        ann: &IngressAnnotations,
    ) -> Option<RouteSpec> {
        if b.resource.is_some() {
            self.diag(
                Some(key),
                DiagKind::ResourceBackend,
                format!("{what}: resource backends are not supported"),
            );
            return None;
        }
        let Some(svc) = &b.service else {
            self.diag(
                Some(key),
                DiagKind::InvalidBackend,
                format!("{what}: backend names no service"),
            );
            return None;
        };
        let port = svc.port.as_ref().and_then(|p| match (&p.name, p.number) {
            (Some(n), _) if !n.is_empty() => Some(PortRef::Name(n.clone())),
            (_, Some(n)) => Some(PortRef::Number(n)),
            _ => None,
        });
        let mut app = None;
        let backend = match self.resolve(&key.namespace, &svc.name, port.as_ref()) {
            Ok((mut up, a)) => {
                app = a;
                up.cluster_ip = ann.backend.service_upstream;
                BackendSpec::Service(up)
            }
            Err((kind, msg)) => {
                self.diag(Some(key), kind, format!("{what}: {msg}"));
                BackendSpec::Unavailable {
                    namespace: key.namespace.clone(),
                    service: svc.name.clone(),
                }
            }
        };
        let mut spec = RouteSpec {
            ingress: Some(key.clone()),
            backend,
            protocol: ann.backend.protocol.or(app).unwrap_or_default(),
            https_redirect: false,
            tls_host: false,
            policy: None,
        };
        self.apply_policy(key, &mut spec, ann, what);
        Some(spec)
    }

    /// The per-route settings of an Ingress's annotations (path-independent ones).
    fn apply_policy(
        &mut self,
        key: &ObjKey,
        spec: &mut RouteSpec,
        ann: &IngressAnnotations,
        what: &dyn std::fmt::Display,
    ) {
        let mut p: Policy<RouteSpec> = Policy {
            redirect: ann.redirect.fixed.clone(),
            timeouts: ann.proxy.timeouts,
            retry: ann.proxy.retry,
            body_limit: ann.proxy.body_limit,
            ..Default::default()
        };
        if let Some(vhost) = &ann.rewrite.upstream_vhost {
            p.request_headers
                .set
                .push((http::header::HOST, vhost.clone()));
        }
        // Balancing belongs to the pool: the oldest Ingress sending to it decides.
        let want = match &ann.affinity {
            Some(a) => Balance::Cookie(Box::new(a.clone())),
            None => ann.backend.balance.clone().unwrap_or_default(),
        };
        if let BackendSpec::Service(up) = &spec.backend {
            let (balance, owner) = self
                .balances
                .entry(up.clone())
                .or_insert_with(|| (want.clone(), key.clone()))
                .clone();
            if balance != want && owner != *key {
                self.diag(
                    Some(key),
                    DiagKind::Conflict,
                    format!(
                        "{what}: the balancing of service {up} is set by ingress {owner}, which is older; its setting applies"
                    ),
                );
            }
            p.balance = balance;
        }
        if let Some(name) = &ann.errors.default_backend {
            match self.resolve_first_port(&key.namespace, name) {
                Ok(up) => {
                    let fb = RouteSpec {
                        ingress: Some(key.clone()),
                        backend: BackendSpec::Service(up),
                        protocol: Protocol::Http1,
                        https_redirect: false,
                        tls_host: false,
                        policy: None,
                    };
                    if !ann.errors.codes.is_empty() {
                        p.errors = Some(ErrorPages {
                            codes: ann.errors.codes.clone(),
                            backend: fb.clone(),
                        });
                    }
                    p.fallback = Some(fb);
                }
                Err((kind, msg)) => self.diag(
                    Some(key),
                    kind,
                    format!("annotation default-backend: {msg}"),
                ),
            }
        } else if !ann.errors.codes.is_empty() {
            match &self.conf.default_backend {
                Some(_) => {
                    if let Some(dflt) = self.default_spec() {
                        p.errors = Some(ErrorPages {
                            codes: ann.errors.codes.clone(),
                            backend: dflt,
                        });
                    }
                }
                None => self.diag(
                    Some(key),
                    DiagKind::InvalidAnnotation,
                    "annotation custom-http-errors: no default-backend annotation and no global default backend; upstream errors are passed through".into(),
                ),
            }
        }
        p.denied = ann.denied;
        p.cors = ann.cors.clone();
        p.external_auth = ann.auth.external.clone();
        if !ann.snippet.is_empty() {
            p.snippet = Some(Arc::new(ann.snippet.clone()));
        }
        let a = &ann.access;
        if !a.allow.is_empty() || !a.deny.is_empty() {
            p.access = Some(IpAccess {
                allow: a.allow.clone(),
                deny: a.deny.clone(),
            });
        }
        if a.has_limits() {
            p.limits = Some(LimitSpec {
                zone: key.to_string(),
                rps: a.rps,
                rpm: a.rpm,
                connections: a.connections,
                burst_multiplier: a.burst_multiplier,
                allow: a.limit_allow.clone(),
            });
        }
        if let Some(b) = &ann.auth.basic {
            match self.basic_auth(key, b) {
                Ok(auth) => p.basic_auth = Some(auth),
                Err(msg) => {
                    // Fail closed: the paths answer 503.
                    p.denied = true;
                    self.diag(
                        Some(key),
                        DiagKind::AuthSecret,
                        format!("{what}: annotation auth-secret: {msg}; its paths answer 503"),
                    );
                }
            }
        }
        if !p.is_default() {
            spec.policy = Some(Box::new(p));
        }
    }

    /// The users of a basic-auth Ingress, from its Secret (parsed once per generation per
    /// Ingress and shared by its paths).
    fn basic_auth(
        &mut self,
        key: &ObjKey,
        b: &annotations::auth::Basic,
    ) -> Result<std::sync::Arc<BasicAuth>, String> {
        let skey = own_secret(key, b.namespace.as_deref(), &b.name)?;
        if let Some(done) = self.auth_cache.get(&(skey.clone(), b.clone())) {
            return done.clone();
        }
        let result = self.load_basic_auth(key, &skey, b);
        self.auth_cache.insert((skey, b.clone()), result.clone());
        result
    }

    fn load_basic_auth(
        &mut self,
        key: &ObjKey,
        skey: &ObjKey,
        b: &annotations::auth::Basic,
    ) -> Result<std::sync::Arc<BasicAuth>, String> {
        use crate::policy::htpasswd::Users;
        let secret = self
            .snap
            .secrets
            .get(skey)
            .ok_or_else(|| format!("Secret {skey} not found"))?;
        let data = secret.data.as_ref();
        let (users, problems) = match b.kind {
            annotations::auth::SecretType::File => {
                let raw = data
                    .and_then(|d| d.get("auth"))
                    .ok_or_else(|| format!("Secret {skey} has no key `auth` (an htpasswd file)"))?;
                let text = std::str::from_utf8(&raw.0)
                    .map_err(|_| format!("Secret {skey}: key `auth` is not UTF-8 text"))?;
                Users::from_file(text)
            }
            annotations::auth::SecretType::Map => {
                let mut pairs = Vec::new();
                for (user, v) in data.into_iter().flatten() {
                    let v = std::str::from_utf8(&v.0)
                        .map_err(|_| format!("Secret {skey}: key `{user}` is not UTF-8 text"))?;
                    pairs.push((user.as_str(), v));
                }
                Users::from_map(pairs)
            }
        };
        for p in problems {
            self.diag(
                Some(key),
                DiagKind::AuthSecret,
                format!("auth-secret {skey}: {p}; that entry cannot log in"),
            );
        }
        let challenge = http::HeaderValue::from_str(&format!("Basic realm=\"{}\"", b.realm))
            .map_err(|_| "the realm is not a valid header value".to_string())?;
        Ok(std::sync::Arc::new(BasicAuth { users, challenge }))
    }

    /// auth-tls-* of one Ingress for its rule hosts that no older Ingress has set them for.
    fn client_cert(
        &mut self,
        key: &ObjKey,
        ing: &Ingress,
        spec: &Result<annotations::client_cert::ClientCertSpec, ()>,
    ) {
        let mut built: Option<ClientTlsResult> = None;
        for host in rule_hosts(ing) {
            if let Some((owner, _)) = self.client_tls.get(&host) {
                if owner != key {
                    let owner = owner.clone();
                    self.diag(
                        Some(key),
                        DiagKind::Conflict,
                        format!("annotation auth-tls-*: host {host} takes its client-certificate settings from the older Ingress {owner}; this Ingress's are ignored there"),
                    );
                }
                continue;
            }
            let result = match &built {
                Some(r) => r.clone(),
                None => {
                    let r = match spec {
                        Ok(s) => self.load_client_tls(key, s).map_err(|msg| {
                            self.diag(
                                Some(key),
                                DiagKind::AuthSecret,
                                format!("annotation auth-tls-secret: {msg}; the paths of its hosts answer 503"),
                            );
                        }),
                        Err(()) => Err(()),
                    };
                    built = Some(r.clone());
                    r
                }
            };
            self.client_tls.insert(host, (key.clone(), result));
        }
    }

    /// The CA of an auth-tls-secret (key `ca.crt`, PEM) and the verifier built on it.
    fn load_client_tls(
        &mut self,
        key: &ObjKey,
        s: &annotations::client_cert::ClientCertSpec,
    ) -> Result<Arc<ClientTls>, String> {
        let skey = own_secret(key, s.namespace.as_deref(), &s.name)?;
        let secret = self
            .snap
            .secrets
            .get(&skey)
            .ok_or_else(|| format!("Secret {skey} not found"))?;
        let pem = secret
            .data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .ok_or_else(|| format!("Secret {skey} has no key `ca.crt`"))?;
        let mut roots = rustls::RootCertStore::empty();
        let mut ders = Vec::new();
        for item in rustls_pemfile::certs(&mut &pem.0[..]) {
            let der = item.map_err(|e| format!("Secret {skey}: `ca.crt` is not PEM: {e}"))?;
            roots.add(der.clone()).map_err(|e| {
                format!("Secret {skey}: `ca.crt` holds a certificate that cannot be a CA: {e}")
            })?;
            ders.push(der);
        }
        if ders.is_empty() {
            return Err(format!("Secret {skey}: `ca.crt` holds no PEM certificate"));
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("Secret {skey}: {e}"))?;
        let match_cn = match &s.match_cn {
            Some(re) => Some(regex::Regex::new(re).map_err(|e| e.to_string())?),
            None => None,
        };
        let error_page = match &s.error_page {
            Some(u) => Some(http::HeaderValue::from_str(u).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Arc::new(ClientTls {
            secret: skey.to_string(),
            roots: ders,
            verifier,
            verify: s.verify,
            depth: s.depth,
            pass_certificate: s.pass_certificate,
            match_cn,
            error_page,
        }))
    }

    /// The global default backend as an error-page target, when it is a Service.
    fn default_spec(&self) -> Option<RouteSpec> {
        let (svc, port) = self.conf.default_backend.clone()?;
        let (key, _) = self.resolve(&svc.namespace, &svc.name, Some(&port)).ok()?;
        Some(RouteSpec {
            ingress: None,
            backend: BackendSpec::Service(key),
            protocol: Protocol::Http1,
            https_redirect: false,
            tls_host: false,
            policy: None,
        })
    }

    /// A Service's first port (ingress-nginx `default-backend`).
    fn resolve_first_port(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<UpstreamKey, (DiagKind, String)> {
        let key = ObjKey::new(namespace, name);
        let first = self
            .snap
            .services
            .get(&key)
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.ports.as_ref())
            .and_then(|p| p.first())
            .map(|p| PortRef::Number(p.port));
        self.resolve(namespace, name, first.as_ref())
            .map(|(k, _)| k)
    }

    /// `target` as served for a rule host (None: the catch-all): whether the host has TLS,
    /// and whether plain HTTP is redirected.
    fn on_host(
        &self,
        mut target: RouteSpec,
        ann: &IngressAnnotations,
        host: Option<&HostMatch>,
    ) -> RouteSpec {
        target.tls_host = host.is_some_and(|h| self.is_tls_host(h));
        match host.and_then(|h| self.client_tls.get(h)) {
            Some((_, Ok(ct))) => target.policy_mut().client_tls = Some(ct.clone()),
            Some((_, Err(()))) => target.policy_mut().denied = true,
            None => {}
        }
        target.https_redirect = ann.redirect.force_ssl_redirect
            || (target.tls_host && ann.redirect.ssl_redirect.unwrap_or(self.conf.ssl_redirect));
        target
    }

    /// Whether some Ingress of ours configures TLS for this rule host.
    fn is_tls_host(&self, host: &HostMatch) -> bool {
        match host {
            HostMatch::Any | HostMatch::Suffix(_) => false,
            HostMatch::Wildcard(_) => self.tls_hosts.contains(&host.to_string()),
            HostMatch::Exact(h) => {
                self.tls_hosts.contains(h)
                    || h.split_once('.')
                        .is_some_and(|(_, parent)| self.tls_wildcard_parents.contains(parent))
            }
        }
    }

    /// Collect `spec.tls[]` of one Ingress.
    fn tls_entries(&mut self, key: &ObjKey, ing: &Ingress) {
        let Some(spec) = &ing.spec else { return };
        for (i, entry) in spec.tls.iter().flatten().enumerate() {
            let field = format!("spec.tls[{i}]");
            let mut hosts = Vec::new();
            for h in entry.hosts.iter().flatten() {
                match HostMatch::parse(Some(h)) {
                    Ok(HostMatch::Any) | Err(_) => self.diag(
                        Some(key),
                        DiagKind::InvalidHost,
                        format!("{field}.hosts: `{h}` is not a valid host; ignored"),
                    ),
                    Ok(m) => hosts.push(m.to_string()),
                }
            }
            if entry.hosts.as_ref().is_none_or(|h| h.is_empty()) {
                // No hosts: the entry covers the hosts of this Ingress's rules.
                for rule in spec.rules.iter().flatten() {
                    if let Ok(m @ (HostMatch::Exact(_) | HostMatch::Wildcard(_))) =
                        HostMatch::parse(rule.host.as_deref())
                    {
                        hosts.push(m.to_string());
                    }
                }
            }
            let secret = entry
                .secret_name
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| ObjKey::new(key.namespace.clone(), s));
            self.tls.push(TlsBinding {
                ingress: key.clone(),
                field,
                secret,
                hosts,
            });
        }
    }

    fn claim(&mut self, key: &ObjKey, slot: Slot, placed: bool, what: &dyn std::fmt::Display) {
        if placed {
            self.owners.insert(slot, key.clone());
        } else {
            let winner = self
                .owners
                .get(&slot)
                .map(|k| k.to_string())
                .unwrap_or_default();
            self.diag(
                Some(key),
                DiagKind::Conflict,
                format!("{what} is already served by ingress {winner}, which is older; ignored"),
            );
        }
    }

    /// Diagnostics for the annotations that are not (fully) in effect.
    fn verdict_diagnostics(&mut self, key: &ObjKey, verdicts: &[Verdict]) {
        for v in verdicts {
            let kind = match v.status {
                Status::Invalid => DiagKind::InvalidAnnotation,
                Status::Ignored => DiagKind::UnsupportedAnnotation,
                Status::Differs if v.partial => DiagKind::UnsupportedAnnotation,
                _ => continue,
            };
            self.diag(Some(key), kind, annotations::verdict_message(v));
        }
    }

    /// Whether an Ingress puts its hosts in regex mode: `use-regex`, or a `rewrite-target`
    /// that differs from one of its paths.
    fn wants_regex(&self, ing: &Ingress, ann: &IngressAnnotations) -> bool {
        if ann.rewrite.use_regex {
            return true;
        }
        let Some(target) = &ann.rewrite.target else {
            return false;
        };
        paths_of(ing).any(|(_, p)| p.path.as_deref().unwrap_or("/") != target)
    }

    /// The path rules of a main Ingress, and its host defaults.
    fn ingress(
        &mut self,
        key: &ObjKey,
        ing: &Ingress,
        ann: &IngressAnnotations,
        regex_paths: &mut Vec<PendingPath>,
    ) {
        debug_assert_eq!(namespace_of(&ing.metadata), key.namespace);
        let Some(spec) = &ing.spec else {
            self.diag(
                Some(key),
                DiagKind::InvalidBackend,
                "ingress has no spec".into(),
            );
            return;
        };
        let rules = spec.rules.as_deref().unwrap_or_default();
        let default = spec
            .default_backend
            .as_ref()
            .and_then(|b| self.backend(key, b, &"defaultBackend", ann));
        let mut hosts = Vec::new();
        for (ri, rule) in rules.iter().enumerate() {
            let host = match HostMatch::parse(rule.host.as_deref()) {
                Ok(h) => h,
                Err(e) => {
                    self.diag(
                        Some(key),
                        DiagKind::InvalidHost,
                        format!("rules[{ri}]: {e}; rule ignored"),
                    );
                    continue;
                }
            };
            self.routes.ensure_host(&host);
            self.host_owner
                .entry(host.clone())
                .or_insert_with(|| key.clone());
            let paths = rule
                .http
                .as_ref()
                .map(|h| h.paths.as_slice())
                .unwrap_or_default();
            for (pi, p) in paths.iter().enumerate() {
                let what = PathField(ri, pi);
                let Some((kind, raw_path)) = self.path_of(key, p, &what) else {
                    continue;
                };
                let Some(target) = self.backend(key, &p.backend, &what, ann) else {
                    continue;
                };
                let mut target = self.on_host(target, ann, Some(&host));
                let mut regex_cookie = false;
                if let Some(Balance::Cookie(a)) = target.policy.as_mut().map(|p| &mut p.balance) {
                    // ingress-nginx: the cookie path defaults to the rule's path; a regex is
                    // no cookie path, so regex hosts need session-cookie-path (else `/`).
                    if a.path.is_none() {
                        regex_cookie = self.regex_hosts.contains(&host);
                        a.path = Some(if regex_cookie {
                            "/".into()
                        } else {
                            raw_path.clone()
                        });
                    }
                }
                if regex_cookie {
                    self.diag(
                        Some(key),
                        DiagKind::InvalidAnnotation,
                        format!("{what}: annotation affinity: host {host} uses regex paths, so session-cookie-path must be set (as ingress-nginx requires); the cookie path is `/`"),
                    );
                }
                if let Some(rt) = &ann.rewrite.target {
                    if *rt != raw_path {
                        match self.rewrite_pattern(&raw_path) {
                            Ok(pattern) => {
                                let pol = target.policy_mut();
                                pol.rewrite = Some(Rewrite::Captures {
                                    pattern,
                                    target: rt.clone(),
                                });
                                if let Some(pre) = &ann.rewrite.x_forwarded_prefix {
                                    if let Ok(v) = http::HeaderValue::from_str(pre) {
                                        pol.request_headers.set.push((
                                            http::HeaderName::from_static("x-forwarded-prefix"),
                                            v,
                                        ));
                                    }
                                }
                            }
                            Err(e) => {
                                self.diag(
                                    Some(key),
                                    DiagKind::InvalidPath,
                                    format!("{what}: path `{raw_path}` is not a valid regex for rewrite-target: {}; path ignored", last_line(&e.to_string())),
                                );
                                continue;
                            }
                        }
                    }
                }
                let pending = PendingPath {
                    key: key.clone(),
                    host: host.clone(),
                    kind,
                    path: raw_path,
                    target,
                    what,
                };
                if self.regex_hosts.contains(&host) {
                    regex_paths.push(pending);
                } else {
                    self.place(pending);
                }
            }
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        let Some(default) = default else {
            return;
        };
        if hosts.is_empty() {
            let default = self.on_host(default, ann, None);
            let placed = self.routes.insert_fallback(default).is_ok();
            self.claim(key, Slot::Fallback, placed, &"the catch-all defaultBackend");
        } else {
            for host in hosts {
                let target = self.on_host(default.clone(), ann, Some(&host));
                let placed = self.routes.insert_host_default(&host, target).is_ok();
                let desc = format!("defaultBackend for host {host}");
                self.claim(key, Slot::HostDefault(host), placed, &desc);
            }
        }
    }

    /// The kind and path of an Ingress path, or None (with a diagnostic) when it is invalid.
    fn path_of(
        &mut self,
        key: &ObjKey,
        p: &k8s_openapi::api::networking::v1::HTTPIngressPath,
        what: &dyn std::fmt::Display,
    ) -> Option<(PathKind, String)> {
        let raw_path = p.path.as_deref().filter(|s| !s.is_empty()).unwrap_or("/");
        let kind = match p.path_type.as_str() {
            "Exact" => PathKind::Exact,
            "Prefix" | "ImplementationSpecific" | "" => PathKind::Prefix,
            other => {
                self.diag(
                    Some(key),
                    DiagKind::InvalidPath,
                    format!("{what}: unknown pathType `{other}`; path ignored"),
                );
                return None;
            }
        };
        if !raw_path.starts_with('/') {
            self.diag(
                Some(key),
                DiagKind::InvalidPath,
                format!("{what}: path `{raw_path}` must start with `/`; path ignored"),
            );
            return None;
        }
        Some((kind, raw_path.to_string()))
    }

    /// The table key of a path on a host: regex-mode hosts use `(?i)^<path>` for every kind.
    fn table_key(&self, host: &HostMatch, kind: PathKind, path: &str) -> (PathKind, String) {
        if self.regex_hosts.contains(host) {
            (PathKind::Regex, format!("(?i)^{path}"))
        } else {
            match kind {
                PathKind::Prefix => (kind, crate::routing::normalize_prefix(path).to_string()),
                _ => (kind, path.to_string()),
            }
        }
    }

    /// Insert a path rule, claiming its place or reporting the conflict.
    fn place(&mut self, p: PendingPath) {
        let (kind, table_path) = self.table_key(&p.host, p.kind, &p.path);
        if kind == PathKind::Regex {
            if let Err(e) = regex::Regex::new(&table_path) {
                self.diag(
                    Some(&p.key),
                    DiagKind::InvalidPath,
                    format!(
                        "{}: path `{}` is not a valid regex (the host is in regex mode): {}; path ignored",
                        p.what,
                        p.path,
                        last_line(&e.to_string())
                    ),
                );
                return;
            }
        }
        let placed = self
            .routes
            .insert_path(&p.host, kind, &table_path, p.target)
            .is_ok();
        if placed {
            self.owners
                .insert(Slot::Path(p.host, kind, table_path), p.key);
        } else {
            let slot = Slot::Path(p.host.clone(), kind, table_path);
            let desc = format!("host {} path {} ({:?})", p.host, p.path, p.kind);
            self.claim(&p.key, slot, false, &desc);
        }
    }

    /// app-root, server-alias and from-to-www-redirect for the hosts of one Ingress.
    fn host_features(&mut self, key: &ObjKey, ing: &Ingress, ann: &IngressAnnotations) {
        let hosts: Vec<HostMatch> = rule_hosts(ing);
        if let Some(root) = &ann.rewrite.app_root {
            for host in &hosts {
                let mut spec = RouteSpec {
                    ingress: Some(key.clone()),
                    backend: BackendSpec::NotFound,
                    protocol: Protocol::Http1,
                    https_redirect: false,
                    tls_host: false,
                    policy: None,
                };
                spec = self.on_host(spec, ann, Some(host));
                spec.policy_mut().redirect = Some(Redirect {
                    code: 302,
                    to: RedirectTo::Path(root.clone()),
                });
                let placed = self.routes.insert_root(host, spec).is_ok();
                let desc = format!("app-root of host {host}");
                self.claim(
                    key,
                    Slot::HostSetting(host.clone(), "app-root"),
                    placed,
                    &desc,
                );
            }
        }
        for alias in &ann.redirect.aliases {
            for host in &hosts {
                if self.host_owner.contains_key(alias) {
                    self.diag(
                        Some(key),
                        DiagKind::Conflict,
                        format!(
                            "annotation server-alias: {alias} is a host of its own; alias ignored"
                        ),
                    );
                    continue;
                }
                let slot = Slot::HostSetting(alias.clone(), "server-alias");
                match self.owners.get(&slot) {
                    Some(owner) if owner == key => continue, // one alias, several hosts
                    Some(_) => {
                        self.claim(key, slot, false, &format!("server-alias {alias}"));
                        continue;
                    }
                    None => {}
                }
                if self.routes.copy_host(host, alias) {
                    self.owners.insert(slot, key.clone());
                }
            }
        }
        if ann.redirect.from_to_www {
            for host in &hosts {
                let HostMatch::Exact(name) = host else {
                    continue;
                };
                let (from, to) = match name.strip_prefix("www.") {
                    Some(bare) => (bare.to_string(), name.clone()),
                    None => (format!("www.{name}"), name.clone()),
                };
                let from = HostMatch::Exact(from);
                if self.host_owner.contains_key(&from) {
                    continue; // ingress-nginx skips it when an Ingress defines that host
                }
                let spec = RouteSpec {
                    ingress: Some(key.clone()),
                    backend: BackendSpec::NotFound,
                    protocol: Protocol::Http1,
                    https_redirect: false,
                    tls_host: self.is_tls_host(&from),
                    policy: Some(Box::new(Policy {
                        redirect: Some(Redirect {
                            code: HTTP_REDIRECT_CODE,
                            to: RedirectTo::Host(to),
                        }),
                        ..Default::default()
                    })),
                };
                self.routes.ensure_host(&from);
                let placed = self.routes.insert_host_default(&from, spec).is_ok();
                let desc = format!("from-to-www-redirect host {from}");
                self.claim(key, Slot::HostDefault(from), placed, &desc);
            }
        }
    }

    /// Attach a canary Ingress's backends to the main rules of the same host, path and
    /// pathType.
    fn canary(
        &mut self,
        key: &ObjKey,
        ing: &Ingress,
        ann: &IngressAnnotations,
        c: &annotations::canary::Canary,
    ) {
        for rule in ing.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
            let Ok(host) = HostMatch::parse(rule.host.as_deref()) else {
                continue;
            };
            for (pi, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let what = format!("canary path {pi} of host {host}");
                let Some((kind, raw_path)) = self.path_of(key, p, &what) else {
                    continue;
                };
                let (tkind, tpath) = self.table_key(&host, kind, &raw_path);
                // Only the main rule of exactly this host, path and kind.
                let owner = self
                    .owners
                    .get(&Slot::Path(host.clone(), tkind, tpath.clone()))
                    .cloned();
                let Some(canary_target) = self.backend(key, &p.backend, &what, ann) else {
                    continue;
                };
                let Some(main) = owner.and_then(|_| self.routes.plain_mut(&host, tkind, &tpath))
                else {
                    self.diag(
                        Some(key),
                        DiagKind::Canary,
                        format!("canary for host {host} path {raw_path} ({kind:?}): no main Ingress serves that host, path and pathType; ignored"),
                    );
                    continue;
                };
                if main.policy.as_ref().is_some_and(|p| p.canary.is_some()) {
                    let who = main
                        .policy
                        .as_ref()
                        .and_then(|p| p.canary.as_ref())
                        .and_then(|(_, r)| r.ingress.clone())
                        .map(|k| k.to_string())
                        .unwrap_or_default();
                    self.diag(
                        Some(key),
                        DiagKind::Conflict,
                        format!("canary for host {host} path {raw_path}: ingress {who} is already its canary; ignored"),
                    );
                    continue;
                }
                // The canary is the main rule with another backend (and its own balancing
                // if it sets one; otherwise the main rule's, so sticky clients stay).
                let mut canary_spec = main.clone();
                if let Some(pol) = &mut canary_spec.policy {
                    pol.canary = None;
                }
                canary_spec.ingress = canary_target.ingress;
                canary_spec.backend = canary_target.backend;
                canary_spec.protocol = canary_target.protocol;
                let own_balance = ann.affinity.is_some() || ann.backend.balance.is_some();
                if own_balance {
                    let b = canary_target.policy.map(|p| p.balance).unwrap_or_default();
                    canary_spec.policy_mut().balance = b;
                }
                main.policy_mut().canary = Some((c.rule.clone(), canary_spec));
            }
        }
    }
}

/// Every path of an Ingress with its rule host.
fn paths_of(
    ing: &Ingress,
) -> impl Iterator<
    Item = (
        Option<&str>,
        &k8s_openapi::api::networking::v1::HTTPIngressPath,
    ),
> {
    ing.spec
        .iter()
        .flat_map(|s| s.rules.iter().flatten())
        .flat_map(|r| {
            r.http
                .iter()
                .flat_map(|h| h.paths.iter())
                .map(move |p| (r.host.as_deref(), p))
        })
}

/// The valid rule hosts of an Ingress, without duplicates.
/// An annotation's Secret reference (`name` or `namespace/name`) of Ingress `key`: only in
/// the Ingress's own namespace (as ingress-nginx's allow-cross-namespace-resources: false).
fn own_secret(key: &ObjKey, namespace: Option<&str>, name: &str) -> Result<ObjKey, String> {
    let ns = namespace.unwrap_or(&key.namespace);
    if ns != key.namespace {
        return Err(format!(
            "Secret {ns}/{name} is in another namespace, which is not allowed (as ingress-nginx's allow-cross-namespace-resources: false)"
        ));
    }
    Ok(ObjKey::new(ns, name))
}

fn rule_hosts(ing: &Ingress) -> Vec<HostMatch> {
    let mut out = Vec::new();
    for rule in ing.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
        if let Ok(h) = HostMatch::parse(rule.host.as_deref()) {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out
}

/// The last non-empty line of a (regex) error message: the one that says what is wrong.
fn last_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}
