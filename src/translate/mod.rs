//! Pure translation of a [`Snapshot`] into routes: Ingress class selection, host and path
//! rules, backend resolution through Services, default backends, conflicts, and a
//! diagnostic for everything rejected or ignored. No I/O, no clock, no async.
//!
//! Ingresses are taken oldest first (creationTimestamp, then namespace/name), so when two of
//! them claim the same host+path the older one keeps it, whatever order they arrived in.

mod diagnostics;
#[cfg(test)]
mod tests;

pub use diagnostics::{DiagKind, Diagnostic};

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use crate::config::{PingressConf, PortRef};
use crate::routing::{HostMatch, PathKind, RouteTable};
use crate::source::{namespace_of, ObjKey, Snapshot};

/// Legacy class annotation.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks an IngressClass as the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// Annotation prefixes whose keys we own or emulate; unknown keys under them are reported.
const ANNOTATION_PREFIXES: &[&str] = &["nginx.ingress.kubernetes.io/", "pingress.dev/"];
/// Redirect plain HTTP to HTTPS for hosts with TLS (`"true"`/`"false"`).
pub const SSL_REDIRECT: &str = "nginx.ingress.kubernetes.io/ssl-redirect";
/// Redirect plain HTTP to HTTPS even without TLS configured here (`"true"`/`"false"`).
pub const FORCE_SSL_REDIRECT: &str = "nginx.ingress.kubernetes.io/force-ssl-redirect";
/// Protocol spoken to the pods: HTTP, HTTPS, GRPC, GRPCS, H2C.
pub const BACKEND_PROTOCOL: &str = "nginx.ingress.kubernetes.io/backend-protocol";
/// `appProtocol` of a Service port that means HTTP/2 over cleartext.
pub const APP_PROTOCOL_H2C: &str = "kubernetes.io/h2c";
/// Annotations under those prefixes that are understood.
const KNOWN_ANNOTATIONS: &[&str] = &[SSL_REDIRECT, FORCE_SSL_REDIRECT, BACKEND_PROTOCOL];

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
        }
    }
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
    fn from_annotation(v: &str) -> Result<Protocol, String> {
        match v.trim().to_ascii_uppercase().as_str() {
            "HTTP" => Ok(Protocol::Http1),
            "HTTPS" => Ok(Protocol::Https),
            "GRPC" | "H2C" => Ok(Protocol::H2c),
            "GRPCS" => Ok(Protocol::H2Tls),
            _ => Err(format!(
                "value `{v}` is not supported (use HTTP, HTTPS, GRPC, GRPCS or H2C); using HTTP"
            )),
        }
    }
}

/// A translated route target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// The Ingress the rule came from; None for the global default backend.
    pub ingress: Option<ObjKey>,
    pub backend: BackendSpec,
    pub protocol: Protocol,
    /// Answer plain-HTTP requests with a 308 to HTTPS.
    pub https_redirect: bool,
    /// The host has TLS configured (HSTS is sent on its HTTPS responses).
    pub tls_host: bool,
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

/// The per-Ingress options read from annotations.
#[derive(Debug, Clone, Copy, Default)]
struct IngressOpts {
    ssl_redirect: Option<bool>,
    force_ssl_redirect: bool,
    protocol: Option<Protocol>,
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
}

/// Translate a snapshot. Pure: same input, same output.
pub fn translate(snap: &Snapshot, conf: &TranslateConf) -> Translation {
    let mut t = Translator {
        snap,
        conf,
        routes: RouteTable::default(),
        owners: HashMap::new(),
        diagnostics: Vec::new(),
        tls: Vec::new(),
        tls_hosts: HashSet::new(),
    };
    let default_route = t.global_default();
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
    // TLS hosts first: a rule's host may get its TLS from another Ingress.
    for (key, ing) in &ours {
        t.tls_entries(key, ing);
    }
    t.tls_hosts = t.tls.iter().flat_map(|b| b.hosts.clone()).collect();
    for (key, ing) in &ours {
        t.ingress(key, ing);
    }
    Translation {
        routes: t.routes,
        default_route,
        ingresses: ours.into_iter().map(|(k, _)| k.clone()).collect(),
        tls: t.tls,
        diagnostics: t.diagnostics,
    }
}

/// Where a rule lives, for naming the winner of a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot {
    Path(HostMatch, PathKind, String),
    HostDefault(HostMatch),
    Fallback,
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
}

impl Translator<'_> {
    fn is_ours(&self, ing: &Ingress) -> bool {
        let spec_class = ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref());
        if let Some(name) = spec_class {
            return match self.snap.ingress_classes.get(name) {
                Some(class) => {
                    class.spec.as_ref().and_then(|s| s.controller.as_deref())
                        == Some(self.conf.controller_name.as_str())
                }
                // No IngressClass object of that name: match our configured class name.
                None => name == self.conf.ingress_class,
            };
        }
        let annotation = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CLASS_ANNOTATION));
        if let Some(name) = annotation {
            return *name == self.conf.ingress_class;
        }
        self.conf.watch_ingress_without_class || self.default_class_is_ours()
    }

    fn default_class_is_ours(&self) -> bool {
        self.snap.ingress_classes.values().any(|c| {
            let is_default = c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            let controller = c.spec.as_ref().and_then(|s| s.controller.as_deref());
            is_default && controller == Some(self.conf.controller_name.as_str())
        })
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
        };
        Ok((key, app))
    }

    /// A route target for an Ingress backend; None (with a diagnostic) when it must be skipped.
    /// Its host-dependent parts are set by [`Self::on_host`].
    fn backend(
        &mut self,
        key: &ObjKey,
        b: &IngressBackend,
        what: &str,
        opts: IngressOpts,
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
            Ok((up, a)) => {
                app = a;
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
        Some(RouteSpec {
            ingress: Some(key.clone()),
            backend,
            protocol: opts.protocol.or(app).unwrap_or_default(),
            https_redirect: false,
            tls_host: false,
        })
    }

    /// `target` as served for a rule host (None: the catch-all): whether the host has TLS,
    /// and whether plain HTTP is redirected.
    fn on_host(
        &self,
        mut target: RouteSpec,
        opts: IngressOpts,
        host: Option<&HostMatch>,
    ) -> RouteSpec {
        target.tls_host = host.is_some_and(|h| self.is_tls_host(h));
        target.https_redirect = opts.force_ssl_redirect
            || (target.tls_host && opts.ssl_redirect.unwrap_or(self.conf.ssl_redirect));
        target
    }

    /// Whether some Ingress of ours configures TLS for this rule host.
    fn is_tls_host(&self, host: &HostMatch) -> bool {
        match host {
            HostMatch::Any => false,
            HostMatch::Wildcard(_) => self.tls_hosts.contains(&host.to_string()),
            HostMatch::Exact(h) => {
                self.tls_hosts.contains(h)
                    || h.split_once('.')
                        .is_some_and(|(_, parent)| self.tls_hosts.contains(&format!("*.{parent}")))
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

    fn claim(&mut self, key: &ObjKey, slot: Slot, placed: bool, what: &str) {
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

    fn ingress(&mut self, key: &ObjKey, ing: &Ingress) {
        debug_assert_eq!(namespace_of(&ing.metadata), key.namespace);
        let opts = self.annotations(key, ing);
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
            .and_then(|b| self.backend(key, b, "defaultBackend", opts));
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
            let paths = rule
                .http
                .as_ref()
                .map(|h| h.paths.as_slice())
                .unwrap_or_default();
            for (pi, p) in paths.iter().enumerate() {
                let what = format!("rules[{ri}].http.paths[{pi}]");
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
                        continue;
                    }
                };
                if !raw_path.starts_with('/') {
                    self.diag(
                        Some(key),
                        DiagKind::InvalidPath,
                        format!("{what}: path `{raw_path}` must start with `/`; path ignored"),
                    );
                    continue;
                }
                let Some(target) = self.backend(key, &p.backend, &what, opts) else {
                    continue;
                };
                let target = self.on_host(target, opts, Some(&host));
                let placed = self
                    .routes
                    .insert_path(&host, kind, raw_path, target)
                    .is_ok();
                let norm = match kind {
                    PathKind::Exact => raw_path.to_string(),
                    PathKind::Prefix => crate::routing::normalize_prefix(raw_path).to_string(),
                };
                let desc = format!("host {host} path {raw_path} ({kind:?})");
                self.claim(key, Slot::Path(host.clone(), kind, norm), placed, &desc);
            }
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        let Some(default) = default else {
            return;
        };
        if hosts.is_empty() {
            let default = self.on_host(default, opts, None);
            let placed = self.routes.insert_fallback(default).is_ok();
            self.claim(key, Slot::Fallback, placed, "the catch-all defaultBackend");
        } else {
            for host in hosts {
                let target = self.on_host(default.clone(), opts, Some(&host));
                let placed = self.routes.insert_host_default(&host, target).is_ok();
                let desc = format!("defaultBackend for host {host}");
                self.claim(key, Slot::HostDefault(host), placed, &desc);
            }
        }
    }

    /// Read the annotations we act on; report unknown ones and bad values.
    fn annotations(&mut self, key: &ObjKey, ing: &Ingress) -> IngressOpts {
        let mut opts = IngressOpts::default();
        let Some(annotations) = &ing.metadata.annotations else {
            return opts;
        };
        for (name, value) in annotations {
            let ours = ANNOTATION_PREFIXES.iter().any(|p| name.starts_with(p));
            if ours && !KNOWN_ANNOTATIONS.contains(&name.as_str()) {
                self.diag(
                    Some(key),
                    DiagKind::UnsupportedAnnotation,
                    format!("annotation {name} is not supported; ignored"),
                );
                continue;
            }
            let bool_value = || match value.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!(
                    "value `{value}` is not \"true\" or \"false\"; ignored"
                )),
            };
            let parsed = match name.as_str() {
                SSL_REDIRECT => bool_value().map(|v| opts.ssl_redirect = Some(v)),
                FORCE_SSL_REDIRECT => bool_value().map(|v| opts.force_ssl_redirect = v),
                BACKEND_PROTOCOL => match Protocol::from_annotation(value) {
                    Ok(p) => {
                        opts.protocol = Some(p);
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                _ => Ok(()),
            };
            if let Err(e) = parsed {
                self.diag(
                    Some(key),
                    DiagKind::InvalidAnnotation,
                    format!("annotation {name}: {e}"),
                );
            }
        }
        opts
    }
}
