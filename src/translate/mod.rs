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

use std::collections::HashMap;

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
/// Annotations under those prefixes that are understood.
const KNOWN_ANNOTATIONS: &[&str] = &[];

/// What translation needs from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslateConf {
    pub ingress_class: String,
    pub controller_name: String,
    pub watch_ingress_without_class: bool,
    /// Global default backend: (`namespace/name`, port); None for the built-in 404.
    pub default_backend: Option<(ObjKey, PortRef)>,
}

impl From<&PingressConf> for TranslateConf {
    fn from(c: &PingressConf) -> Self {
        TranslateConf {
            ingress_class: c.ingress_class.clone(),
            controller_name: c.controller_name.clone(),
            watch_ingress_without_class: c.watch_ingress_without_class,
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

/// A translated route target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// The Ingress the rule came from; None for the global default backend.
    pub ingress: Option<ObjKey>,
    pub backend: BackendSpec,
}

/// The result of translating one snapshot.
#[derive(Debug, Clone)]
pub struct Translation {
    pub routes: RouteTable<RouteSpec>,
    /// For requests that match nothing in `routes`.
    pub default_route: RouteSpec,
    /// Ingresses of our class, oldest first.
    pub ingresses: Vec<ObjKey>,
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
    for (key, ing) in &ours {
        t.ingress(key, ing);
    }
    Translation {
        routes: t.routes,
        default_route,
        ingresses: ours.into_iter().map(|(k, _)| k.clone()).collect(),
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
        let backend = match self.conf.default_backend.clone() {
            None => BackendSpec::NotFound,
            Some((svc, port)) => match self.resolve(&svc.namespace, &svc.name, Some(&port)) {
                Ok(key) => BackendSpec::Service(key),
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
        }
    }

    /// Resolve a Service port to its upstream pool key.
    fn resolve(
        &self,
        namespace: &str,
        service: &str,
        port: Option<&PortRef>,
    ) -> Result<UpstreamKey, (DiagKind, String)> {
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
        Ok(UpstreamKey {
            namespace: namespace.to_string(),
            service: service.to_string(),
            port_name: found.name.clone().unwrap_or_default(),
            port: found.port,
        })
    }

    /// A route target for an Ingress backend; None (with a diagnostic) when it must be skipped.
    fn backend(&mut self, key: &ObjKey, b: &IngressBackend, what: &str) -> Option<RouteSpec> {
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
        let backend = match self.resolve(&key.namespace, &svc.name, port.as_ref()) {
            Ok(up) => BackendSpec::Service(up),
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
        })
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
        self.annotations(key, ing);
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
            .and_then(|b| self.backend(key, b, "defaultBackend"));
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
                let Some(target) = self.backend(key, &p.backend, &what) else {
                    continue;
                };
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
            let placed = self.routes.insert_fallback(default).is_ok();
            self.claim(key, Slot::Fallback, placed, "the catch-all defaultBackend");
        } else {
            for host in hosts {
                let placed = self
                    .routes
                    .insert_host_default(&host, default.clone())
                    .is_ok();
                let desc = format!("defaultBackend for host {host}");
                self.claim(key, Slot::HostDefault(host), placed, &desc);
            }
        }
    }

    fn annotations(&mut self, key: &ObjKey, ing: &Ingress) {
        let Some(annotations) = &ing.metadata.annotations else {
            return;
        };
        for name in annotations.keys() {
            let ours = ANNOTATION_PREFIXES.iter().any(|p| name.starts_with(p));
            if ours && !KNOWN_ANNOTATIONS.contains(&name.as_str()) {
                self.diag(
                    Some(key),
                    DiagKind::UnsupportedAnnotation,
                    format!("annotation {name} is not supported; ignored"),
                );
            }
        }
    }
}
