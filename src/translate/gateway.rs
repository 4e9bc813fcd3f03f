//! Gateway API into the shared route table: the GatewayClasses of our controller, their
//! Gateways' listeners, and the HTTPRoutes attached to them, plus the status each object
//! gets. Pure, like the Ingress translation it runs after.
//!
//! * **Listeners** name edge ports: HTTP on 80 is every plain-HTTP listener of pingress,
//!   HTTPS on 443 every HTTPS listener; another port is served where a pingress listener of
//!   that kind binds that port number, else the listener is `PortUnavailable`.
//! * **Attachment**: a parentRef selects listeners by `sectionName` and `port`; a listener
//!   takes the route when its `allowedRoutes` (namespaces Same / All / Selector, kinds) allow
//!   it and the hostnames intersect. Cross-namespace attachment needs no ReferenceGrant.
//! * **Hostnames**: listener ∩ route; Gateway API wildcards cover any number of labels
//!   ([`HostMatch::Suffix`]), unlike Ingress wildcards.
//! * **Precedence**: the table orders Exact, then longest prefix, then regex; within a path
//!   place more specific conditions (method, then header count, then query count) first;
//!   ties go to the oldest route, then `namespace/name`, then rule order (insertion order).
//! * **Ingress wins** on the same host, path type and path: the HTTPRoute's rule is
//!   dropped there and its status says so (PartiallyInvalid in the report).
//! * **Directory mode** applies the CRD defaults (PathPrefix `/`, weight 1, statusCode 302,
//!   parentRef group and kind) and checks the CRD and CEL rules the API server would; a
//!   route that breaks them is not served (`Accepted=False`, `UnsupportedValue`).

use std::collections::{BTreeMap, HashSet};

use gateway_api::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From,
    GatewayListenersAllowedRoutesNamespacesSelector as Selector, GatewayListenersTlsMode,
};
use gateway_api::grpcroutes::{
    GrpcRoute, GrpcRouteRules, GrpcRouteRulesFiltersType as GrpcFilterType,
    GrpcRouteRulesMatchesHeadersType, GrpcRouteRulesMatchesMethodType,
};
use gateway_api::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersRequestRedirectScheme,
    HttpRouteRulesFiltersType as FilterType, HttpRouteRulesMatches,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPathType as PathType,
    HttpRouteRulesMatchesQueryParamsType,
};
use http::{HeaderName, HeaderValue};

use super::model::{
    HeaderOps, PathChange, Policy, Redirect, RedirectParts, RedirectTo, Rewrite, Split,
};
use super::{BackendSpec, Protocol, RouteSpec, TlsBinding, Translator, UpstreamKey};
use crate::routing::{Conditions, HostMatch, ListenerMatch, PathKind, ValueMatch};
use crate::source::ObjKey;

/// The Gateway API group.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// `tls.options` key of an HTTPS listener: `"true"` with no certificateRefs serves the
/// gateway's default certificate (as Ingress hosts without a `tls` entry get over HTTPS).
pub const DEFAULT_CERTIFICATE_OPTION: &str = "pingress.dev/default-certificate";

/// One status condition as pingress computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub kind: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Cond {
    fn new(
        kind: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Cond {
        Cond {
            kind,
            status,
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Cond {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.status { "True" } else { "False" };
        write!(f, "{}={s} ({})", self.kind, self.reason)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// The status of one Gateway listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerState {
    pub name: String,
    pub conditions: Vec<Cond>,
    pub supported_kinds: Vec<&'static str>,
    pub attached_routes: i32,
}

/// The status of one Gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayState {
    pub generation: Option<i64>,
    pub conditions: Vec<Cond>,
    pub listeners: Vec<ListenerState>,
}

/// The status of a route for one of its parentRefs to a Gateway of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentState {
    pub gateway: ObjKey,
    pub section_name: Option<String>,
    pub port: Option<i32>,
    pub conditions: Vec<Cond>,
}

/// The status of one route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteState {
    pub generation: Option<i64>,
    pub parents: Vec<ParentState>,
}

/// What Gateway API translation decided, per object (for status, `pingress check` and the
/// admin API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Our GatewayClasses: (generation, conditions).
    pub classes: BTreeMap<String, (Option<i64>, Vec<Cond>)>,
    pub gateways: BTreeMap<ObjKey, GatewayState>,
    pub http_routes: BTreeMap<ObjKey, RouteState>,
    pub grpc_routes: BTreeMap<ObjKey, RouteState>,
    /// Objects from the API that did not decode: `Kind ns/name: error`.
    pub undecodable: Vec<String>,
}

impl Report {
    /// Every condition as one line, `Kind ns/name[/listener]: Type=Status (Reason): message`.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .undecodable
            .iter()
            .map(|u| format!("{u} (not served; a decoded earlier version, if any, is)"))
            .collect();
        for (name, (_, conds)) in &self.classes {
            out.extend(conds.iter().map(|c| format!("GatewayClass {name}: {c}")));
        }
        for (key, g) in &self.gateways {
            out.extend(g.conditions.iter().map(|c| format!("Gateway {key}: {c}")));
            for l in &g.listeners {
                out.extend(
                    l.conditions
                        .iter()
                        .map(|c| format!("Gateway {key} listener {}: {c}", l.name)),
                );
                out.push(format!(
                    "Gateway {key} listener {}: attachedRoutes={} supportedKinds=[{}]",
                    l.name,
                    l.attached_routes,
                    l.supported_kinds.join(",")
                ));
            }
        }
        let routes = self
            .http_routes
            .iter()
            .map(|(k, r)| ("HTTPRoute", k, r))
            .chain(self.grpc_routes.iter().map(|(k, r)| ("GRPCRoute", k, r)));
        for (kind, key, r) in routes {
            for p in &r.parents {
                let section = p
                    .section_name
                    .as_deref()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default();
                out.extend(
                    p.conditions
                        .iter()
                        .map(|c| format!("{kind} {key} parent {}{section}: {c}", p.gateway)),
                );
            }
        }
        out
    }
}

/// Which namespaces a listener takes routes from.
#[derive(Debug, Clone)]
enum AllowNs {
    Same,
    All,
    Selector(Selector),
}

/// A listener of one of our Gateways, as attachment sees it.
#[derive(Debug, Clone)]
struct Lis {
    name: String,
    port: i32,
    /// Lowercase; None: any host.
    hostname: Option<String>,
    /// Where it is served; None when it is not programmed (routes cannot attach).
    at: Option<ListenerMatch>,
    ns: AllowNs,
    /// The route kinds it takes (`supportedKinds`).
    kinds: Vec<&'static str>,
}

/// A [`ParentIn`] from any generated parentRef type (HTTPRoute's and GRPCRoute's have the
/// same fields under different names).
macro_rules! parent_in {
    ($p:expr) => {
        ParentIn {
            group: $p.group.as_deref(),
            kind: $p.kind.as_deref(),
            namespace: $p.namespace.as_deref(),
            name: &$p.name,
            section_name: $p.section_name.as_deref(),
            port: $p.port,
        }
    };
}

/// A [`BackendIn`] from any generated backendRef type.
macro_rules! backend_in {
    ($b:expr) => {
        BackendIn {
            group: $b.group.as_deref(),
            kind: $b.kind.as_deref(),
            namespace: $b.namespace.as_deref(),
            name: &$b.name,
            port: $b.port,
            weight: $b.weight,
        }
    };
    // A mirror's backendRef: no weight.
    (mirror $b:expr) => {
        BackendIn {
            group: $b.group.as_deref(),
            kind: $b.kind.as_deref(),
            namespace: $b.namespace.as_deref(),
            name: &$b.name,
            port: $b.port,
            weight: None,
        }
    };
}

/// The [`HeaderOps`] of any generated header modifier type.
macro_rules! modifier_ops {
    ($m:expr) => {
        header_ops(
            $m.set
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone())),
            $m.add
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone())),
            $m.remove.as_deref().unwrap_or_default(),
        )
    };
}

/// One HTTPRoute or GRPCRoute: its parentRefs to Gateways of ours (None when it has none),
/// the CRD rules, its rules compiled with `$compile`, then attachment and status.
macro_rules! translate_route {
    ($t:ident, $key:expr, $route:expr, $kind:literal, $validate:path, $compile:ident, $gateways:expr, $states:expr, $all:expr, $last:expr, $accepted:expr) => {{
        // A route breaking the CRD rules keeps serving its last good version, if it had one.
        let (route, refused) = match ($validate($route), $last.get($key)) {
            (Ok(()), _) => {
                $accepted.insert($key.clone(), $all[$key].clone());
                ($route, None)
            }
            (Err(e), Some(prev)) => {
                $accepted.insert($key.clone(), prev.clone());
                (&**prev, Some(e))
            }
            (Err(e), None) => ($route, Some(e)),
        };
        let kept = refused.is_some() && !std::ptr::eq(route, $route);
        let refs = route
            .spec
            .parent_refs
            .iter()
            .flatten()
            .map(|p| parent_in!(p));
        let parents = our_parents($key, refs, $gateways);
        if parents.is_empty() {
            None
        } else {
            let rules = match (&refused, kept) {
                (Some(e), false) => Err(e.clone()),
                _ => {
                    let rules = route.spec.rules.iter().flatten().enumerate();
                    Ok(rules.map(|(i, r)| $t.$compile($key, i, r)).collect())
                }
            };
            let hosts = route.spec.hostnames.as_deref().unwrap_or_default();
            let mut state = $t.attach(
                $key,
                $kind,
                $route.metadata.generation,
                parents,
                hosts,
                rules,
                $states,
            );
            if let (Some(e), true) = (&refused, kept) {
                let why = format!(
                    "{e}; the last good version (generation {}) keeps serving",
                    route
                        .metadata
                        .generation
                        .map_or("-".to_string(), |g| g.to_string())
                );
                for p in &mut state.parents {
                    for c in p.conditions.iter_mut().filter(|c| c.kind == "Accepted") {
                        *c = Cond::new("Accepted", false, "UnsupportedValue", why.clone());
                    }
                }
            }
            Some(state)
        }
    }};
}

/// One action per header name in a filter's request and response header modifiers.
macro_rules! check_modifiers {
    ($f:expr, $at:expr, $k:expr) => {
        check_modifiers!(@one $f.request_header_modifier, "requestHeaderModifier", $at, $k);
        check_modifiers!(@one $f.response_header_modifier, "responseHeaderModifier", $at, $k);
    };
    (@one $m:expr, $field:literal, $at:expr, $k:expr) => {
        if let Some(m) = &$m {
            unique_names(
                m.set.iter().flatten().map(|h| &h.name),
                m.add.iter().flatten().map(|h| &h.name),
                m.remove.iter().flatten(),
            )
            .map_err(|e| format!("{}.filters[{}].{}: {e}", $at, $k, $field))?;
        }
    };
}

/// A parentRef of a route, as written.
struct ParentIn<'a> {
    group: Option<&'a str>,
    kind: Option<&'a str>,
    namespace: Option<&'a str>,
    name: &'a str,
    section_name: Option<&'a str>,
    port: Option<i32>,
}

/// A parentRef to a Gateway of ours: (Gateway, sectionName, port, its listeners).
type Parent<'g> = (ObjKey, Option<String>, Option<i32>, &'g Vec<Lis>);

/// The parentRefs of a route (in namespace `key.namespace`) that name Gateways of ours.
fn our_parents<'a, 'g>(
    key: &ObjKey,
    refs: impl Iterator<Item = ParentIn<'a>>,
    gateways: &'g BTreeMap<ObjKey, Vec<Lis>>,
) -> Vec<Parent<'g>> {
    let mut out = Vec::new();
    for p in refs {
        if p.group.unwrap_or(GROUP) != GROUP || p.kind.unwrap_or("Gateway") != "Gateway" {
            continue;
        }
        let gw = ObjKey::new(p.namespace.unwrap_or(&key.namespace), p.name);
        if let Some(listeners) = gateways.get(&gw) {
            out.push((gw, p.section_name.map(str::to_string), p.port, listeners));
        }
    }
    out
}

/// A backendRef of a rule, as written.
struct BackendIn<'a> {
    group: Option<&'a str>,
    kind: Option<&'a str>,
    namespace: Option<&'a str>,
    name: &'a str,
    port: Option<i32>,
    weight: Option<i32>,
}

/// The outcome of compiling one route rule.
struct Compiled {
    /// (path kind, path or pattern, conditions) per match.
    matches: Vec<(PathKind, String, Conditions)>,
    target: RouteSpec,
    /// A backend could not be resolved: ResolvedRefs=False with this reason and message.
    unresolved: Option<(&'static str, String)>,
}

impl Translator<'_> {
    /// Translate the Gateway API objects of our GatewayClasses into the table.
    pub(super) fn gateway_api(
        &mut self,
        last_good: &super::LastGood,
        accepted: &mut super::LastGood,
    ) -> Report {
        let mut report = Report {
            undecodable: self
                .snap
                .undecodable
                .iter()
                .map(|(what, u)| format!("{what}: does not decode: {}", u.error))
                .collect(),
            ..Report::default()
        };
        for (name, class) in &self.snap.gateway_classes {
            if class.spec.controller_name != self.conf.gateway_controller {
                continue;
            }
            let conds = vec![Cond::new("Accepted", true, "Accepted", "")];
            report
                .classes
                .insert(name.clone(), (class.metadata.generation, conds));
        }
        let mut gateways: BTreeMap<ObjKey, Vec<Lis>> = BTreeMap::new();
        for (key, gw) in &self.snap.gateways {
            if !report.classes.contains_key(&gw.spec.gateway_class_name) {
                continue;
            }
            let (state, listeners) = self.gateway(key, gw);
            report.gateways.insert(key.clone(), state);
            gateways.insert(key.clone(), listeners);
        }
        for (key, route) in oldest_first(&self.snap.http_routes) {
            let state = translate_route!(
                self,
                key,
                route,
                "HTTPRoute",
                validate_http_route,
                compile_rule,
                &gateways,
                &mut report.gateways,
                self.snap.http_routes,
                last_good.http_routes,
                accepted.http_routes
            );
            if let Some(state) = state {
                report.http_routes.insert(key.clone(), state);
            }
        }
        for (key, route) in oldest_first(&self.snap.grpc_routes) {
            let state = translate_route!(
                self,
                key,
                route,
                "GRPCRoute",
                validate_grpc_route,
                compile_grpc_rule,
                &gateways,
                &mut report.gateways,
                self.snap.grpc_routes,
                last_good.grpc_routes,
                accepted.grpc_routes
            );
            if let Some(state) = state {
                report.grpc_routes.insert(key.clone(), state);
            }
        }
        report
    }

    fn gateway(&mut self, key: &ObjKey, gw: &Gateway) -> (GatewayState, Vec<Lis>) {
        let mut state = GatewayState {
            generation: gw.metadata.generation,
            ..Default::default()
        };
        let mut out = Vec::new();
        // (port, hostname) and port -> protocol, for conflicts.
        let mut seen_host: BTreeMap<(i32, Option<String>), usize> = BTreeMap::new();
        let mut seen_proto: BTreeMap<i32, &str> = BTreeMap::new();
        let mut conflicted: HashSet<usize> = HashSet::new();
        for (i, l) in gw.spec.listeners.iter().enumerate() {
            let h = l.hostname.as_ref().map(|h| h.to_ascii_lowercase());
            if let Some(j) = seen_host.insert((l.port, h), i) {
                conflicted.insert(i);
                conflicted.insert(j);
            }
            match seen_proto.get(&l.port) {
                Some(p) if *p != l.protocol => {
                    conflicted.insert(i);
                }
                _ => {
                    seen_proto.insert(l.port, &l.protocol);
                }
            }
        }
        let mut any_valid = false;
        let mut any_invalid = false;
        let mut any_programmed = false;
        let tls_before = self.tls.len();
        for (i, l) in gw.spec.listeners.iter().enumerate() {
            let (ls, lis) = self.listener(key, l, conflicted.contains(&i));
            let valid = ls
                .conditions
                .iter()
                .any(|c| c.kind == "Accepted" && c.status);
            any_valid |= valid;
            any_invalid |= !valid;
            any_programmed |= lis.at.is_some();
            state.listeners.push(ls);
            out.push(lis);
        }
        state.conditions.push(match (any_valid, any_invalid) {
            (true, false) => Cond::new("Accepted", true, "Accepted", ""),
            (true, true) => Cond::new(
                "Accepted",
                true,
                "ListenersNotValid",
                "some listeners are not valid",
            ),
            (false, _) => Cond::new(
                "Accepted",
                false,
                "ListenersNotValid",
                "no listener is valid",
            ),
        });
        state.conditions.push(if any_programmed {
            Cond::new("Programmed", true, "Programmed", "")
        } else {
            Cond::new("Programmed", false, "Invalid", "no listener is programmed")
        });
        // pingress takes no per-Gateway parameters: a Gateway that names some is not
        // accepted (GatewayInvalidParametersRef), and none of its listeners is served.
        if let Some(p) = gw
            .spec
            .infrastructure
            .as_ref()
            .and_then(|i| i.parameters_ref.as_ref())
        {
            state.conditions = vec![
                Cond::new(
                    "Accepted",
                    false,
                    "InvalidParameters",
                    format!(
                        "spec.infrastructure.parametersRef {}/{} {}: pingress takes no Gateway parameters",
                        p.group, p.kind, p.name
                    ),
                ),
                Cond::new("Programmed", false, "Invalid", "the Gateway is not accepted"),
            ];
            for l in &mut out {
                l.at = None;
            }
            for ls in &mut state.listeners {
                for c in ls.conditions.iter_mut().filter(|c| c.kind == "Programmed") {
                    *c = Cond::new(
                        "Programmed",
                        false,
                        "Invalid",
                        "the Gateway is not accepted",
                    );
                }
            }
            self.tls.truncate(tls_before);
        }
        (state, out)
    }

    fn listener(
        &mut self,
        gw: &ObjKey,
        l: &GatewayListeners,
        conflicted: bool,
    ) -> (ListenerState, Lis) {
        let mut accepted: Result<(), (&'static str, String)> = Ok(());
        let mut resolved: Result<(), (&'static str, String)> = Ok(());
        let tls = match l.protocol.as_str() {
            "HTTP" => false,
            "HTTPS" => true,
            p => {
                accepted = Err((
                    "UnsupportedProtocol",
                    format!("protocol {p} is not supported (HTTP and HTTPS are)"),
                ));
                false
            }
        };
        let hostname = l.hostname.as_ref().map(|h| h.to_ascii_lowercase());
        if let Some(h) = &hostname {
            if let Err(e) = check_hostname(h) {
                accepted = accepted.and(Err(("UnsupportedValue", format!("hostname: {e}"))));
            }
        }
        let at = self.listener_match(tls, l.port);
        if at.is_none() && accepted.is_ok() {
            accepted = Err((
                "PortUnavailable",
                format!(
                    "no pingress {} listener binds port {}",
                    if tls { "HTTPS" } else { "plain-HTTP" },
                    l.port
                ),
            ));
        }
        // Kinds.
        let mut supported = Vec::new();
        match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
            None => supported.extend(["GRPCRoute", "HTTPRoute"]),
            Some(kinds) => {
                for k in kinds {
                    let group = k.group.as_deref().unwrap_or(GROUP);
                    let known = ["GRPCRoute", "HTTPRoute"]
                        .into_iter()
                        .find(|n| *n == k.kind);
                    if let (GROUP, Some(name)) = (group, known) {
                        if !supported.contains(&name) {
                            supported.push(name);
                        }
                    } else {
                        resolved = resolved.and(Err((
                            "InvalidRouteKinds",
                            format!("route kind {group}/{} is not supported", k.kind),
                        )));
                    }
                }
            }
        }
        let ns = match l
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref())
        {
            None => AllowNs::Same,
            Some(n) => match (&n.from, &n.selector) {
                (None | Some(From::Same), _) => AllowNs::Same,
                (Some(From::All), _) => AllowNs::All,
                (Some(From::Selector), Some(s)) => AllowNs::Selector(s.clone()),
                (Some(From::Selector), None) => {
                    accepted = accepted.and(Err((
                        "UnsupportedValue",
                        "allowedRoutes.namespaces.from is Selector but no selector is given".into(),
                    )));
                    AllowNs::Same
                }
            },
        };
        if tls && accepted.is_ok() {
            if let Err(e) = self.listener_tls(gw, l, hostname.as_deref()) {
                match e.0 {
                    "UnsupportedValue" => accepted = Err(e),
                    _ => resolved = resolved.and(Err(e)),
                }
            }
        }
        let mut conditions = Vec::new();
        conditions.push(match &accepted {
            Ok(()) => Cond::new("Accepted", true, "Accepted", ""),
            Err((r, m)) => Cond::new("Accepted", false, r, m.clone()),
        });
        conditions.push(match &resolved {
            Ok(()) => Cond::new("ResolvedRefs", true, "ResolvedRefs", ""),
            Err((r, m)) => Cond::new("ResolvedRefs", false, r, m.clone()),
        });
        conditions.push(if conflicted {
            Cond::new(
                "Conflicted",
                true,
                "HostnameConflict",
                "another listener has the same port and hostname, or another protocol on this port",
            )
        } else {
            Cond::new("Conflicted", false, "NoConflicts", "")
        });
        // A listener with unresolved certificate refs is not served: no TLS binding.
        let cert_ok = !tls
            || resolved
                .as_ref()
                .err()
                .is_none_or(|(r, _)| *r == "InvalidRouteKinds");
        let programmed = accepted.is_ok() && !conflicted && cert_ok;
        conditions.push(if programmed {
            Cond::new("Programmed", true, "Programmed", "")
        } else {
            Cond::new("Programmed", false, "Invalid", "the listener is not served")
        });
        let state = ListenerState {
            name: l.name.clone(),
            conditions,
            supported_kinds: supported.clone(),
            attached_routes: 0,
        };
        let lis = Lis {
            name: l.name.clone(),
            port: l.port,
            hostname,
            at: at.filter(|_| programmed),
            ns,
            kinds: supported.clone(),
        };
        (state, lis)
    }

    /// Where a Gateway listener port is served on this pingress.
    fn listener_match(&self, tls: bool, port: i32) -> Option<ListenerMatch> {
        let ours = if tls {
            &self.conf.https_ports
        } else {
            &self.conf.http_ports
        };
        let canonical = if tls { 443 } else { 80 };
        if port == canonical && !ours.is_empty() {
            return Some(ListenerMatch { tls, port: 0 });
        }
        let port = u16::try_from(port).ok()?;
        ours.contains(&port).then_some(ListenerMatch { tls, port })
    }

    /// Check an HTTPS listener's certificate refs and bind its hostname to the certificate.
    fn listener_tls(
        &mut self,
        gw: &ObjKey,
        l: &GatewayListeners,
        hostname: Option<&str>,
    ) -> Result<(), (&'static str, String)> {
        let Some(tls) = &l.tls else {
            return Err((
                "InvalidCertificateRef",
                "an HTTPS listener needs tls.certificateRefs".into(),
            ));
        };
        if matches!(tls.mode, Some(GatewayListenersTlsMode::Passthrough)) {
            return Err((
                "UnsupportedValue",
                "TLS mode Passthrough is not supported".into(),
            ));
        }
        let refs = tls.certificate_refs.as_deref().unwrap_or_default();
        let default_cert = tls
            .options
            .as_ref()
            .and_then(|o| o.get(DEFAULT_CERTIFICATE_OPTION))
            .is_some_and(|v| v == "true");
        if refs.is_empty() && default_cert {
            // Handshakes for names without a certificate of their own get the default one.
            return Ok(());
        }
        let Some(first) = refs.first() else {
            return Err((
                "InvalidCertificateRef",
                "tls.certificateRefs is empty".into(),
            ));
        };
        for r in refs {
            let group = r.group.as_deref().unwrap_or("");
            let kind = r.kind.as_deref().unwrap_or("Secret");
            if !group.is_empty() || kind != "Secret" {
                return Err((
                    "InvalidCertificateRef",
                    format!(
                        "certificateRef {group}/{kind} {}: only Secrets are supported",
                        r.name
                    ),
                ));
            }
            let ns = r.namespace.as_deref().unwrap_or(&gw.namespace);
            let key = ObjKey::new(ns, &r.name);
            if ns != gw.namespace
                && !self.granted(
                    ns,
                    (GROUP, "Gateway", &gw.namespace),
                    ("", "Secret", &r.name),
                )
            {
                return Err((
                    "RefNotPermitted",
                    format!("Secret {key} is in another namespace and no ReferenceGrant there allows it"),
                ));
            }
            let Some(secret) = self.snap.secrets.get(&key) else {
                return Err(("InvalidCertificateRef", format!("Secret {key} not found")));
            };
            let data = secret.data.as_ref();
            let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
            if secret.type_.as_deref() != Some("kubernetes.io/tls")
                || !has("tls.crt")
                || !has("tls.key")
            {
                return Err((
                    "InvalidCertificateRef",
                    format!(
                        "Secret {key} is not a kubernetes.io/tls Secret with tls.crt and tls.key"
                    ),
                ));
            }
        }
        let ns = first.namespace.as_deref().unwrap_or(&gw.namespace);
        if let Some(h) = hostname {
            self.tls.push(TlsBinding {
                ingress: gw.clone(),
                field: format!("Gateway {gw} listener {}", l.name),
                secret: Some(ObjKey::new(ns, &first.name)),
                hosts: vec![h.to_string()],
            });
        }
        Ok(())
    }

    /// Whether a ReferenceGrant in `to_ns` lets `from` (group, kind, namespace) refer to
    /// `to` (group, kind, name).
    fn granted(&self, to_ns: &str, from: (&str, &str, &str), to: (&str, &str, &str)) -> bool {
        self.snap
            .reference_grants
            .iter()
            .filter(|(k, _)| k.namespace == to_ns)
            .any(|(_, g)| {
                g.spec
                    .from
                    .iter()
                    .any(|f| f.group == from.0 && f.kind == from.1 && f.namespace == from.2)
                    && g.spec.to.iter().any(|t| {
                        t.group == to.0
                            && t.kind == to.1
                            && t.name.as_deref().is_none_or(|n| n == to.2)
                    })
            })
    }

    fn namespace_selected(&self, ns: &str, sel: &Selector) -> bool {
        let empty = BTreeMap::new();
        let labels = self
            .snap
            .namespaces
            .get(ns)
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&empty);
        let labels_ok = sel
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        });
        labels_ok && exprs_ok
    }

    /// Attach a route's compiled rules to the listeners its parentRefs select, and compute
    /// its status per parent. `rules` is Err when the route breaks the CRD rules.
    #[allow(clippy::too_many_arguments)]
    fn attach(
        &mut self,
        key: &ObjKey,
        kind: &'static str,
        generation: Option<i64>,
        parents: Vec<Parent<'_>>,
        hostnames: &[String],
        rules: Result<Vec<Compiled>, String>,
        states: &mut BTreeMap<ObjKey, GatewayState>,
    ) -> RouteState {
        let mut state = RouteState {
            generation,
            parents: Vec::new(),
        };
        let parent_state =
            |gw: &ObjKey, section: &Option<String>, port: Option<i32>, conds| ParentState {
                gateway: gw.clone(),
                section_name: section.clone(),
                port,
                conditions: conds,
            };
        let rules = match rules {
            Ok(r) => r,
            Err(e) => {
                for (gw, section, port, _) in &parents {
                    state.parents.push(parent_state(
                        gw,
                        section,
                        *port,
                        vec![
                            Cond::new("Accepted", false, "UnsupportedValue", e.clone()),
                            Cond::new("ResolvedRefs", true, "ResolvedRefs", ""),
                        ],
                    ));
                }
                return state;
            }
        };
        let route_hosts: Vec<String> = hostnames.iter().map(|h| h.to_ascii_lowercase()).collect();
        let unresolved = rules.iter().find_map(|r| r.unresolved.clone());
        let mut dropped: Vec<String> = Vec::new();
        for (gw, section, port, listeners) in parents {
            let candidates: Vec<(usize, &Lis)> = listeners
                .iter()
                .enumerate()
                .filter(|(_, l)| section.as_ref().is_none_or(|s| *s == l.name))
                .filter(|(_, l)| port.is_none_or(|p| p == l.port))
                .collect();
            let accepted = if candidates.is_empty() {
                Err((
                    "NoMatchingParent",
                    "no listener matches the parentRef's sectionName and port".to_string(),
                ))
            } else {
                let allowed: Vec<(usize, &Lis)> = candidates
                    .into_iter()
                    .filter(|(_, l)| {
                        l.kinds.contains(&kind) && self.ns_allowed(l, &gw, &key.namespace)
                    })
                    .collect();
                if allowed.is_empty() {
                    Err((
                        "NotAllowedByListeners",
                        "no listener allows this route's namespace and kind".to_string(),
                    ))
                } else {
                    let with_hosts: Vec<(usize, &Lis, Vec<HostMatch>)> = allowed
                        .into_iter()
                        .filter_map(|(i, l)| {
                            let hosts = intersect(l.hostname.as_deref(), &route_hosts);
                            (!hosts.is_empty()).then_some((i, l, hosts))
                        })
                        .collect();
                    if with_hosts.is_empty() {
                        Err((
                            "NoMatchingListenerHostname",
                            "no listener hostname intersects the route's hostnames".to_string(),
                        ))
                    } else {
                        Ok(with_hosts)
                    }
                }
            };
            let mut conds = Vec::new();
            match accepted {
                Err((reason, msg)) => conds.push(Cond::new("Accepted", false, reason, msg)),
                Ok(listeners) => {
                    conds.push(Cond::new("Accepted", true, "Accepted", ""));
                    for (i, l, hosts) in listeners {
                        if let Some(s) = states.get_mut(&gw).and_then(|s| s.listeners.get_mut(i)) {
                            s.attached_routes += 1;
                        }
                        let Some(at) = l.at else { continue };
                        for host in &hosts {
                            for rule in &rules {
                                for (kind, path, cond) in &rule.matches {
                                    if let Some(why) = self.place_gateway_rule(
                                        host,
                                        *kind,
                                        path,
                                        cond,
                                        at,
                                        l,
                                        &rule.target,
                                    ) {
                                        dropped.push(why);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            conds.push(match &unresolved {
                None => Cond::new("ResolvedRefs", true, "ResolvedRefs", ""),
                Some((reason, msg)) => Cond::new("ResolvedRefs", false, reason, msg.clone()),
            });
            state.parents.push(parent_state(&gw, &section, port, conds));
        }
        if !dropped.is_empty() {
            dropped.sort();
            dropped.dedup();
            let msg = dropped.join("; ");
            for p in &mut state.parents {
                p.conditions.push(Cond::new(
                    "PartiallyInvalid",
                    true,
                    "UnsupportedValue",
                    msg.clone(),
                ));
            }
        }
        state
    }

    /// A GRPCRoute rule: a method match is a path (`/service/method` Exact, `/service`
    /// Prefix, a regex for method-only and RegularExpression matches).
    fn compile_grpc_rule(&mut self, key: &ObjKey, index: usize, rule: &GrpcRouteRules) -> Compiled {
        let mut matches = Vec::new();
        let default = gateway_api::grpcroutes::GrpcRouteRulesMatches::default();
        let list: Vec<&gateway_api::grpcroutes::GrpcRouteRulesMatches> =
            match rule.matches.as_deref() {
                None | Some([]) => vec![&default],
                Some(m) => m.iter().collect(),
            };
        for m in list {
            let (kind, path) = match &m.method {
                None => (PathKind::Prefix, "/".to_string()),
                Some(mm) => {
                    let (svc, meth) = (mm.service.as_deref(), mm.method.as_deref());
                    match (mm.r#type.as_ref(), svc, meth) {
                        (Some(GrpcRouteRulesMatchesMethodType::RegularExpression), _, _) => (
                            PathKind::Regex,
                            format!(
                                "^/(?:{})/(?:{})$",
                                svc.unwrap_or("[^/]+"),
                                meth.unwrap_or("[^/]+")
                            ),
                        ),
                        (_, Some(s), Some(m)) => (PathKind::Exact, format!("/{s}/{m}")),
                        (_, Some(s), None) => (PathKind::Prefix, format!("/{s}")),
                        (_, None, Some(m)) => {
                            (PathKind::Regex, format!("^/[^/]+/{}$", regex::escape(m)))
                        }
                        (_, None, None) => (PathKind::Prefix, "/".to_string()),
                    }
                }
            };
            let mut cond = Conditions::default();
            let mut seen = HashSet::new();
            for h in m.headers.iter().flatten() {
                let name = h.name.to_ascii_lowercase();
                if !seen.insert(name.clone()) {
                    continue;
                }
                let v = match h.r#type {
                    Some(GrpcRouteRulesMatchesHeadersType::RegularExpression) => {
                        full_regex(&h.value)
                    }
                    _ => ValueMatch::Exact(h.value.clone()),
                };
                cond.headers.push((name, v));
            }
            matches.push((kind, path, cond));
        }
        let mut policy: Policy<RouteSpec> = Policy::default();
        let mut error: Option<String> = None;
        let mut mirror_error: Option<String> = None;
        for f in rule.filters.iter().flatten() {
            let r = match f.r#type {
                GrpcFilterType::RequestHeaderModifier => f
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(|| "RequestHeaderModifier without its settings".to_string())
                    .and_then(|m| modifier_ops!(m))
                    .map(|ops| merge_ops(&mut policy.request_headers, ops)),
                GrpcFilterType::ResponseHeaderModifier => f
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(|| "ResponseHeaderModifier without its settings".to_string())
                    .and_then(|m| modifier_ops!(m))
                    .map(|ops| merge_ops(&mut policy.response_headers, ops)),
                GrpcFilterType::RequestMirror => {
                    if let Some(m) = &f.request_mirror {
                        let share = mirror_share(
                            m.percent,
                            m.fraction.as_ref().map(|f| (f.numerator, f.denominator)),
                        );
                        self.mirror(
                            key,
                            "GRPCRoute",
                            backend_in!(mirror m.backend_ref),
                            share,
                            &mut policy,
                            &mut mirror_error,
                        );
                    }
                    Ok(())
                }
                GrpcFilterType::ExtensionRef => {
                    Err("ExtensionRef: pingress has no extension filters".into())
                }
            };
            if let Err(e) = r {
                error.get_or_insert(e);
            }
        }
        let backends = rule.backend_refs.iter().flatten().map(|b| backend_in!(b));
        let what = format!("GRPCRoute {key} rule {index}");
        let mut c = self.finish_rule(key, "GRPCRoute", &what, matches, policy, error, backends);
        if let Some(e) = mirror_error {
            c.unresolved
                .get_or_insert(("BackendNotFound", format!("{what}: {e}")));
        }
        c
    }

    fn ns_allowed(&self, l: &Lis, gw: &ObjKey, route_ns: &str) -> bool {
        match &l.ns {
            AllowNs::Same => gw.namespace == route_ns,
            AllowNs::All => true,
            AllowNs::Selector(s) => self.namespace_selected(route_ns, s),
        }
    }

    /// Insert one match of a rule; Some(why) when it was dropped for an Ingress rule.
    #[allow(clippy::too_many_arguments)]
    fn place_gateway_rule(
        &mut self,
        host: &HostMatch,
        kind: PathKind,
        path: &str,
        cond: &Conditions,
        at: ListenerMatch,
        l: &Lis,
        target: &RouteSpec,
    ) -> Option<String> {
        let shown = if kind == PathKind::Prefix {
            crate::routing::normalize_prefix(path)
        } else {
            path
        };
        if self.routes.plain_mut(host, kind, shown).is_some() {
            return Some(format!(
                "host {host} path {path} is served by an Ingress, which wins; this rule is not used there"
            ));
        }
        let mut cond = cond.clone();
        cond.listeners = vec![at];
        let mut target = target.clone();
        let port = u16::try_from(l.port).ok();
        set_listener_port(&mut target, port);
        // Occupied: an older route (or earlier rule) with the same match keeps precedence.
        let _ = self
            .routes
            .insert_rule(host, kind, path, Some(cond), target);
        None
    }

    fn compile_rule(&mut self, key: &ObjKey, index: usize, rule: &HttpRouteRules) -> Compiled {
        let default_match = HttpRouteRulesMatches::default();
        let matches_in: Vec<&HttpRouteRulesMatches> = match rule.matches.as_deref() {
            None | Some([]) => vec![&default_match],
            Some(m) => m.iter().collect(),
        };
        let mut matches = Vec::new();
        for m in &matches_in {
            let (kind, path) = match &m.path {
                None => (PathKind::Prefix, "/".to_string()),
                Some(p) => {
                    let v = p.value.clone().unwrap_or_else(|| "/".into());
                    match p.r#type.as_ref().unwrap_or(&PathType::PathPrefix) {
                        PathType::Exact => (PathKind::Exact, v),
                        PathType::PathPrefix => (PathKind::Prefix, v),
                        PathType::RegularExpression => (PathKind::Regex, format!("^(?:{v})$")),
                    }
                }
            };
            let mut cond = Conditions::default();
            if let Some(method) = &m.method {
                cond.method = Some(method_name(method).to_string());
            }
            let mut seen = HashSet::new();
            for h in m.headers.iter().flatten() {
                let name = h.name.to_ascii_lowercase();
                if !seen.insert(name.clone()) {
                    continue; // only the first match of a name counts
                }
                let v = match h.r#type {
                    Some(HttpRouteRulesMatchesHeadersType::RegularExpression) => {
                        full_regex(&h.value)
                    }
                    _ => ValueMatch::Exact(h.value.clone()),
                };
                cond.headers.push((name, v));
            }
            let mut seen = HashSet::new();
            for q in m.query_params.iter().flatten() {
                if !seen.insert(q.name.clone()) {
                    continue;
                }
                let v = match q.r#type {
                    Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression) => {
                        full_regex(&q.value)
                    }
                    _ => ValueMatch::Exact(q.value.clone()),
                };
                cond.query.push((q.name.clone(), v));
            }
            matches.push((kind, path, cond));
        }
        let prefix = matches_in
            .iter()
            .find_map(|m| {
                m.path
                    .as_ref()
                    .filter(|p| matches!(p.r#type, None | Some(PathType::PathPrefix)))
            })
            .map(|p| p.value.clone().unwrap_or_else(|| "/".into()))
            .unwrap_or_else(|| "/".into());
        let mut policy: Policy<RouteSpec> = Policy::default();
        let mut error: Option<String> = None;
        let mut mirror_error: Option<String> = None;
        for f in rule.filters.iter().flatten() {
            if let Err(e) = apply_filter(f, &prefix, &mut policy) {
                error.get_or_insert(e);
            }
            if let Some(m) = &f.request_mirror {
                let share = mirror_share(
                    m.percent,
                    m.fraction.as_ref().map(|f| (f.numerator, f.denominator)),
                );
                self.mirror(
                    key,
                    "HTTPRoute",
                    backend_in!(mirror m.backend_ref),
                    share,
                    &mut policy,
                    &mut mirror_error,
                );
            }
        }
        if let Some(t) = &rule.timeouts {
            // Validated before: both parse. The wait for the pod (connect, and each read of
            // its answer) is bounded by the shorter of the two; 0s means no limit.
            let limit = [t.request.as_deref(), t.backend_request.as_deref()]
                .into_iter()
                .flatten()
                .filter_map(|d| parse_duration(d).ok())
                .map(|d| if d.is_zero() { NO_LIMIT } else { d })
                .min();
            if let Some(d) = limit {
                policy.timeouts.read = Some(d);
                policy.timeouts.send = Some(d);
                policy.timeouts.connect = Some(d.min(policy.timeouts.connect.unwrap_or(d)));
            }
        }
        let backends = rule.backend_refs.iter().flatten().map(|b| backend_in!(b));
        let what = format!("HTTPRoute {key} rule {index}");
        let mut c = self.finish_rule(key, "HTTPRoute", &what, matches, policy, error, backends);
        if let Some(e) = mirror_error {
            c.unresolved
                .get_or_insert(("BackendNotFound", format!("{what}: {e}")));
        }
        c
    }

    /// The target of a rule from its policy and backendRefs; `kind` is the route's kind
    /// (GRPCRoute backends speak HTTP/2).
    #[allow(clippy::too_many_arguments)]
    fn finish_rule<'a>(
        &mut self,
        key: &ObjKey,
        kind: &'static str,
        what: &str,
        matches: Vec<(PathKind, String, Conditions)>,
        policy: Policy<RouteSpec>,
        error: Option<String>,
        backends_in: impl Iterator<Item = BackendIn<'a>>,
    ) -> Compiled {
        let mut unresolved = None;
        // Backends: resolved targets with their weights.
        let mut backends: Vec<(u32, RouteSpec)> = Vec::new();
        for b in backends_in {
            let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
            let spec =
                match self.gateway_backend(key, kind, b.group, b.kind, b.namespace, b.name, b.port)
                {
                    Ok((up, protocol)) => RouteSpec {
                        ingress: Some(key.clone()),
                        backend: BackendSpec::Service(up),
                        protocol,
                        https_redirect: false,
                        tls_host: false,
                        policy: None,
                    },
                    Err((reason, msg)) => {
                        unresolved.get_or_insert((reason, format!("{what}: {msg}")));
                        RouteSpec {
                            ingress: Some(key.clone()),
                            backend: BackendSpec::Invalid {
                                namespace: b.namespace.unwrap_or(&key.namespace).to_string(),
                                service: b.name.to_string(),
                            },
                            protocol: Protocol::Http1,
                            https_redirect: false,
                            tls_host: false,
                            policy: None,
                        }
                    }
                };
            if weight > 0 {
                backends.push((weight, spec));
            }
        }
        let own_status = BackendSpec::Invalid {
            namespace: key.namespace.clone(),
            service: "-".into(),
        };
        let with_policy = |mut spec: RouteSpec, policy: &Policy<RouteSpec>| {
            if !policy.is_default() {
                spec.policy = Some(Box::new(policy.clone()));
            }
            spec
        };
        let bare = |backend| RouteSpec {
            ingress: Some(key.clone()),
            backend,
            protocol: Protocol::Http1,
            https_redirect: false,
            tls_host: false,
            policy: None,
        };
        let target = if let Some(e) = error {
            // A filter that cannot be applied is never skipped: the rule answers 500.
            unresolved.get_or_insert(("UnsupportedValue", format!("{what}: {e}")));
            bare(own_status)
        } else if policy.redirect.is_some() {
            with_policy(bare(BackendSpec::NotFound), &policy)
        } else if backends.len() == 1 {
            with_policy(backends.pop().expect("one").1, &policy)
        } else if backends.is_empty() {
            // No backendRefs, or all of weight 0: 500.
            bare(own_status)
        } else {
            let mut total = 0u32;
            let split = backends
                .into_iter()
                .map(|(w, spec)| {
                    total = total.saturating_add(w);
                    (total, with_policy(spec, &policy))
                })
                .collect();
            let mut main = with_policy(bare(BackendSpec::NotFound), &policy);
            main.policy_mut().split = Some(Split { backends: split });
            main
        };
        Compiled {
            matches,
            target,
            unresolved,
        }
    }

    /// Add a RequestMirror to `policy`; a mirror whose backend cannot be resolved is left
    /// out (it has nowhere to go) and named in `error` for the status.
    fn mirror(
        &self,
        key: &ObjKey,
        kind: &'static str,
        b: BackendIn<'_>,
        share: u32,
        policy: &mut Policy<RouteSpec>,
        error: &mut Option<String>,
    ) {
        match self.gateway_backend(key, kind, b.group, b.kind, b.namespace, b.name, b.port) {
            Ok((up, protocol)) => policy.mirrors.push(super::model::Mirror {
                backend: RouteSpec {
                    ingress: Some(key.clone()),
                    backend: BackendSpec::Service(up),
                    protocol,
                    https_redirect: false,
                    tls_host: false,
                    policy: None,
                },
                share,
            }),
            Err((_, msg)) => {
                error.get_or_insert(format!("RequestMirror: {msg}; not mirrored"));
            }
        }
    }

    /// Resolve a backendRef to a Service port.
    #[allow(clippy::too_many_arguments)]
    fn gateway_backend(
        &self,
        route: &ObjKey,
        route_kind: &'static str,
        group: Option<&str>,
        kind: Option<&str>,
        namespace: Option<&str>,
        name: &str,
        port: Option<i32>,
    ) -> Result<(UpstreamKey, Protocol), (&'static str, String)> {
        let group = group.unwrap_or("");
        let kind = kind.unwrap_or("Service");
        if !group.is_empty() || kind != "Service" {
            return Err((
                "InvalidKind",
                format!("backendRef {group}/{kind} {name}: only Services are supported"),
            ));
        }
        let ns = namespace.unwrap_or(&route.namespace);
        let svc_key = ObjKey::new(ns, name);
        if ns != route.namespace
            && !self.granted(
                ns,
                (GROUP, route_kind, &route.namespace),
                ("", "Service", name),
            )
        {
            return Err((
                "RefNotPermitted",
                format!("Service {svc_key} is in another namespace and no ReferenceGrant there allows it"),
            ));
        }
        let Some(port) = port else {
            return Err((
                "BackendNotFound",
                format!("backendRef to Service {svc_key} names no port"),
            ));
        };
        let Some(svc) = self.snap.services.get(&svc_key) else {
            return Err(("BackendNotFound", format!("Service {svc_key} not found")));
        };
        let found = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|ps| ps.iter().find(|p| p.port == port));
        let Some(found) = found else {
            return Err((
                "BackendNotFound",
                format!("Service {svc_key} has no port {port}"),
            ));
        };
        let protocol = match found.app_protocol.as_deref() {
            None | Some("http" | "kubernetes.io/ws") => Protocol::Http1,
            Some(super::APP_PROTOCOL_H2C) => Protocol::H2c,
            Some("https" | "kubernetes.io/wss") => Protocol::Https,
            Some(other) => {
                return Err((
                    "UnsupportedProtocol",
                    format!("Service {svc_key} port {port}: appProtocol {other} is not supported"),
                ))
            }
        };
        // gRPC is HTTP/2: cleartext unless the port says TLS.
        let protocol = match (route_kind, protocol) {
            ("GRPCRoute", Protocol::Https) => Protocol::H2Tls,
            ("GRPCRoute", Protocol::Http1) => Protocol::H2c,
            (_, p) => p,
        };
        Ok((
            UpstreamKey {
                namespace: ns.to_string(),
                service: name.to_string(),
                port_name: found.name.clone().unwrap_or_default(),
                port: found.port,
                cluster_ip: false,
            },
            protocol,
        ))
    }
}

/// Routes in precedence order for ties: oldest `creationTimestamp`, then `namespace/name`.
fn oldest_first<T: kube::Resource>(
    map: &crate::source::Map<ObjKey, std::sync::Arc<T>>,
) -> Vec<(&ObjKey, &T)> {
    let mut v: Vec<(&ObjKey, &T)> = map.iter().map(|(k, r)| (k, &**r)).collect();
    v.sort_by(|(ka, a), (kb, b)| {
        let ta = a.meta().creation_timestamp.as_ref().map(|t| &t.0);
        let tb = b.meta().creation_timestamp.as_ref().map(|t| &t.0);
        ta.cmp(&tb).then_with(|| ka.cmp(kb))
    });
    v
}

/// A mirror's share of requests in millionths: `percent`, or `numerator/denominator`
/// (denominator 100 by default), or all.
fn mirror_share(percent: Option<i32>, fraction: Option<(i32, Option<i32>)>) -> u32 {
    let share = match (percent, fraction) {
        (Some(p), _) => f64::from(p) / 100.0,
        (None, Some((n, d))) => f64::from(n) / f64::from(d.unwrap_or(100).max(1)),
        (None, None) => 1.0,
    };
    (share.clamp(0.0, 1.0) * 1_000_000.0).round() as u32
}

/// A "no limit" timeout (Gateway API `0s`).
const NO_LIMIT: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// A Gateway API duration (GEP-2257): one to four `<number><unit>` parts, units `h`, `m`,
/// `s`, `ms`, numbers of at most 5 digits (`1h30m`, `500ms`, `0s`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("`{text}` is not a duration like 10s, 500ms or 1h30m");
    let mut rest = text;
    let mut total = std::time::Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (std::time::Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (std::time::Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (std::time::Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (std::time::Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * u32::try_from(n).map_err(|_| bad())?;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

/// Set the redirect's listener port in a target and its split alternatives.
fn set_listener_port(target: &mut RouteSpec, port: Option<u16>) {
    if let Some(p) = target.policy.as_mut() {
        if let Some(Redirect {
            to: RedirectTo::Parts(parts),
            ..
        }) = &mut p.redirect
        {
            parts.listener_port = port;
        }
        if let Some(s) = &mut p.split {
            for (_, t) in &mut s.backends {
                set_listener_port(t, port);
            }
        }
    }
}

fn method_name(m: &gateway_api::httproutes::HttpRouteRulesMatchesMethod) -> &'static str {
    use gateway_api::httproutes::HttpRouteRulesMatchesMethod as M;
    match m {
        M::Get => "GET",
        M::Head => "HEAD",
        M::Post => "POST",
        M::Put => "PUT",
        M::Delete => "DELETE",
        M::Connect => "CONNECT",
        M::Options => "OPTIONS",
        M::Trace => "TRACE",
        M::Patch => "PATCH",
    }
}

/// A value regex that must match the whole value (validated before).
fn full_regex(pattern: &str) -> ValueMatch {
    match regex::Regex::new(&format!("^(?:{pattern})$")) {
        Ok(r) => ValueMatch::Regex(r),
        // Validation refuses routes with bad patterns; never match if one gets here.
        Err(_) => ValueMatch::Regex(regex::Regex::new("[^\\s\\S]").expect("valid")),
    }
}

/// Effective hostnames of a route on a listener (empty: they do not intersect).
fn intersect(listener: Option<&str>, route: &[String]) -> Vec<HostMatch> {
    let to_match = |h: &str| match h.strip_prefix("*.") {
        Some(rest) => HostMatch::Suffix(rest.to_string()),
        None => HostMatch::Exact(h.to_string()),
    };
    let Some(l) = listener else {
        if route.is_empty() {
            return vec![HostMatch::Any];
        }
        return route.iter().map(|h| to_match(h)).collect();
    };
    if route.is_empty() {
        return vec![to_match(l)];
    }
    let mut out = Vec::new();
    for r in route {
        let picked = if r == l || covers(l, r) {
            Some(r.as_str())
        } else if covers(r, l) {
            Some(l)
        } else {
            None
        };
        if let Some(h) = picked {
            let m = to_match(h);
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    out
}

/// Whether wildcard `w` (`*.suffix`) covers host `h` (exact or a narrower wildcard).
fn covers(w: &str, h: &str) -> bool {
    let Some(suffix) = w.strip_prefix("*.") else {
        return false;
    };
    let h = h.strip_prefix("*.").unwrap_or(h);
    h.len() > suffix.len()
        && h.ends_with(suffix)
        && h.as_bytes()[h.len() - suffix.len() - 1] == b'.'
}

/// A Gateway API hostname: a DNS name, optionally with `*.` in front; no IP, no port.
fn check_hostname(h: &str) -> Result<(), String> {
    let rest = h.strip_prefix("*.").unwrap_or(h);
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("`{h}` is an IP address"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if h.len() > 253 || !rest.split('.').all(label_ok) {
        return Err(format!("`{h}` is not a valid hostname"));
    }
    Ok(())
}

fn header_ops(
    set: impl Iterator<Item = (String, String)>,
    add: impl Iterator<Item = (String, String)>,
    remove: &[String],
) -> Result<HeaderOps, String> {
    let name = |n: &str| {
        HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| format!("`{n}` is not a valid header name"))
    };
    let value = |v: &str| {
        HeaderValue::from_str(v).map_err(|_| format!("`{v}` is not a valid header value"))
    };
    let mut ops = HeaderOps::default();
    for (n, v) in set {
        ops.set.push((name(&n)?, value(&v)?));
    }
    for (n, v) in add {
        ops.add.push((name(&n)?, value(&v)?));
    }
    for n in remove {
        ops.remove.push(name(n)?);
    }
    Ok(ops)
}

/// Turn one rule filter into policy. `prefix` is the rule's PathPrefix (for
/// ReplacePrefixMatch).
fn apply_filter(
    f: &HttpRouteRulesFilters,
    prefix: &str,
    p: &mut Policy<RouteSpec>,
) -> Result<(), String> {
    match f.r#type {
        FilterType::RequestHeaderModifier => {
            let m = f
                .request_header_modifier
                .as_ref()
                .ok_or("RequestHeaderModifier without its settings")?;
            let ops = modifier_ops!(m)?;
            merge_ops(&mut p.request_headers, ops);
        }
        FilterType::ResponseHeaderModifier => {
            let m = f
                .response_header_modifier
                .as_ref()
                .ok_or("ResponseHeaderModifier without its settings")?;
            let ops = modifier_ops!(m)?;
            merge_ops(&mut p.response_headers, ops);
        }
        FilterType::RequestRedirect => {
            let r = f
                .request_redirect
                .as_ref()
                .ok_or("RequestRedirect without its settings")?;
            let path = match &r.path {
                None => None,
                Some(path) => Some(path_change(
                    matches!(path.r#type, gateway_api::httproutes::HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch),
                    path.replace_full_path.as_deref(),
                    path.replace_prefix_match.as_deref(),
                    prefix,
                )?),
            };
            let code = u16::try_from(r.status_code.unwrap_or(302))
                .map_err(|_| "statusCode out of range")?;
            p.redirect = Some(Redirect {
                code,
                to: RedirectTo::Parts(RedirectParts {
                    scheme: r.scheme.as_ref().map(|s| match s {
                        HttpRouteRulesFiltersRequestRedirectScheme::Http => "http".to_string(),
                        HttpRouteRulesFiltersRequestRedirectScheme::Https => "https".to_string(),
                    }),
                    host: r.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
                    port: r.port.and_then(|n| u16::try_from(n).ok()),
                    listener_port: None,
                    path,
                }),
            });
        }
        FilterType::UrlRewrite => {
            let r = f
                .url_rewrite
                .as_ref()
                .ok_or("URLRewrite without its settings")?;
            if let Some(h) = &r.hostname {
                let v = HeaderValue::from_str(h)
                    .map_err(|_| format!("`{h}` is not a valid hostname"))?;
                p.request_headers.set.push((http::header::HOST, v));
            }
            if let Some(path) = &r.path {
                p.rewrite = Some(Rewrite::Path(path_change(
                    matches!(path.r#type, gateway_api::httproutes::HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch),
                    path.replace_full_path.as_deref(),
                    path.replace_prefix_match.as_deref(),
                    prefix,
                )?));
            }
        }
        // Resolved with the rule's backends (it needs the Services): see `mirror`.
        FilterType::RequestMirror => {}
        FilterType::Cors => return Err("the CORS filter is not supported yet".into()),
        FilterType::ExtensionRef => {
            let e = f.extension_ref.as_ref();
            return Err(format!(
                "ExtensionRef {}: pingress has no extension filters",
                e.map(|e| format!("{}/{} {}", e.group, e.kind, e.name))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn merge_ops(into: &mut HeaderOps, ops: HeaderOps) {
    into.set.extend(ops.set);
    into.add.extend(ops.add);
    into.remove.extend(ops.remove);
}

fn path_change(
    prefix_match: bool,
    full: Option<&str>,
    with: Option<&str>,
    matched: &str,
) -> Result<PathChange, String> {
    if prefix_match {
        let with = with.ok_or("ReplacePrefixMatch without replacePrefixMatch")?;
        Ok(PathChange::Prefix {
            matched: matched.to_string(),
            with: with.to_string(),
        })
    } else {
        let full = full.ok_or("ReplaceFullPath without replaceFullPath")?;
        Ok(PathChange::Full(full.to_string()))
    }
}

/// The CRD schema and CEL rules the API server applies to an HTTPRoute, checked here for
/// routes read from a directory (from the API they always hold). Err names the field.
pub fn validate_http_route(route: &HttpRoute) -> Result<(), String> {
    let spec = &route.spec;
    let hostnames = spec.hostnames.as_deref().unwrap_or_default();
    if hostnames.len() > 16 {
        return Err("spec.hostnames: at most 16".into());
    }
    for (i, h) in hostnames.iter().enumerate() {
        check_hostname(h).map_err(|e| format!("spec.hostnames[{i}]: {e}"))?;
    }
    let parents = spec.parent_refs.as_deref().unwrap_or_default();
    if parents.len() > 32 {
        return Err("spec.parentRefs: at most 32".into());
    }
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.len() > 16 {
        return Err("spec.rules: at most 16".into());
    }
    let mut total = 0;
    for (i, r) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let matches = r.matches.as_deref().unwrap_or_default();
        if matches.len() > 64 {
            return Err(format!("{at}.matches: at most 64"));
        }
        total += matches.len();
        for (j, m) in matches.iter().enumerate() {
            let at = format!("{at}.matches[{j}]");
            if let Some(p) = &m.path {
                let v = p.value.as_deref().unwrap_or("/");
                match p.r#type.as_ref().unwrap_or(&PathType::PathPrefix) {
                    PathType::Exact | PathType::PathPrefix => {
                        if !v.starts_with('/') {
                            return Err(format!("{at}.path.value: `{v}` must start with `/`"));
                        }
                        if ["//", "/./", "/../", "%2f", "%2F", "#"]
                            .iter()
                            .any(|b| v.contains(b))
                            || v.ends_with("/..")
                            || v.ends_with("/.")
                        {
                            return Err(format!("{at}.path.value: `{v}` must not contain `//`, `/./`, `/../`, `%2f` or `#`"));
                        }
                    }
                    PathType::RegularExpression => {
                        regex::Regex::new(v).map_err(|e| format!("{at}.path.value: `{v}`: {e}"))?;
                    }
                }
            }
            if m.headers.as_ref().is_some_and(|h| h.len() > 16)
                || m.query_params.as_ref().is_some_and(|q| q.len() > 16)
            {
                return Err(format!("{at}: at most 16 header and 16 query matches"));
            }
            for (k, h) in m.headers.iter().flatten().enumerate() {
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                    format!("{at}.headers[{k}].name: `{}` is not a header name", h.name)
                })?;
                if matches!(
                    h.r#type,
                    Some(HttpRouteRulesMatchesHeadersType::RegularExpression)
                ) {
                    regex::Regex::new(&h.value)
                        .map_err(|e| format!("{at}.headers[{k}].value: {e}"))?;
                }
            }
            for (k, q) in m.query_params.iter().flatten().enumerate() {
                if matches!(
                    q.r#type,
                    Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression)
                ) {
                    regex::Regex::new(&q.value)
                        .map_err(|e| format!("{at}.queryParams[{k}].value: {e}"))?;
                }
            }
        }
        let filters = r.filters.as_deref().unwrap_or_default();
        if filters.len() > 16 {
            return Err(format!("{at}.filters: at most 16"));
        }
        let mut seen: Vec<&FilterType> = Vec::new();
        for (k, f) in filters.iter().enumerate() {
            let repeatable = matches!(
                f.r#type,
                FilterType::RequestMirror | FilterType::ExtensionRef
            );
            if !repeatable && seen.contains(&&f.r#type) {
                return Err(format!(
                    "{at}.filters[{k}]: {:?} may appear only once",
                    f.r#type
                ));
            }
            seen.push(&f.r#type);
            let present = match f.r#type {
                FilterType::RequestHeaderModifier => f.request_header_modifier.is_some(),
                FilterType::ResponseHeaderModifier => f.response_header_modifier.is_some(),
                FilterType::RequestRedirect => f.request_redirect.is_some(),
                FilterType::UrlRewrite => f.url_rewrite.is_some(),
                FilterType::RequestMirror => f.request_mirror.is_some(),
                FilterType::ExtensionRef => f.extension_ref.is_some(),
                FilterType::Cors => f.cors.is_some(),
            };
            if !present {
                return Err(format!(
                    "{at}.filters[{k}]: type {:?} needs its matching field",
                    f.r#type
                ));
            }
            check_modifiers!(f, at, k);
            if let Some(rr) = &f.request_redirect {
                if let Some(c) = rr.status_code {
                    if ![301, 302, 303, 307, 308].contains(&c) {
                        return Err(format!("{at}.filters[{k}].requestRedirect.statusCode: {c} is not 301, 302, 303, 307 or 308"));
                    }
                }
                if let Some(p) = rr.port {
                    if !(1..=65535).contains(&p) {
                        return Err(format!(
                            "{at}.filters[{k}].requestRedirect.port: {p} is out of range"
                        ));
                    }
                }
                if let Some(h) = &rr.hostname {
                    check_hostname(&h.to_ascii_lowercase())
                        .map_err(|e| format!("{at}.filters[{k}].requestRedirect.hostname: {e}"))?;
                }
            }
            let prefix_match = |t: bool,
                                full: &Option<String>,
                                prefix: &Option<String>|
             -> Result<(), String> {
                if t && prefix.is_none()
                    || !t && full.is_none()
                    || full.is_some() && prefix.is_some()
                {
                    return Err(format!(
                        "{at}.filters[{k}]: path needs exactly the field its type names"
                    ));
                }
                if t {
                    let prefixes = matches
                        .iter()
                        .filter(|m| {
                            m.path.as_ref().is_none_or(|p| {
                                matches!(p.r#type, None | Some(PathType::PathPrefix))
                            })
                        })
                        .count();
                    if matches.len() != 1 || prefixes != 1 {
                        return Err(format!("{at}.filters[{k}]: ReplacePrefixMatch needs exactly one PathPrefix match"));
                    }
                }
                Ok(())
            };
            if let Some(p) = f.request_redirect.as_ref().and_then(|r| r.path.as_ref()) {
                let t = matches!(p.r#type, gateway_api::httproutes::HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch);
                prefix_match(t, &p.replace_full_path, &p.replace_prefix_match)?;
            }
            if let Some(p) = f.url_rewrite.as_ref().and_then(|r| r.path.as_ref()) {
                let t = matches!(p.r#type, gateway_api::httproutes::HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch);
                prefix_match(t, &p.replace_full_path, &p.replace_prefix_match)?;
            }
            if let Some(m) = &f.request_mirror {
                if m.percent.is_some() && m.fraction.is_some() {
                    return Err(format!(
                        "{at}.filters[{k}].requestMirror: percent and fraction are exclusive"
                    ));
                }
                if m.percent.is_some_and(|p| !(0..=100).contains(&p)) {
                    return Err(format!("{at}.filters[{k}].requestMirror.percent: 0 to 100"));
                }
                if let Some(fr) = &m.fraction {
                    let d = fr.denominator.unwrap_or(100);
                    if d < 1 || fr.numerator < 0 || fr.numerator > d {
                        return Err(format!("{at}.filters[{k}].requestMirror.fraction: 0 <= numerator <= denominator, denominator >= 1"));
                    }
                }
            }
        }
        let has = |t: FilterType| seen.contains(&&t);
        if has(FilterType::RequestRedirect) && has(FilterType::UrlRewrite) {
            return Err(format!(
                "{at}.filters: RequestRedirect and URLRewrite cannot be combined"
            ));
        }
        let backends = r.backend_refs.as_deref().unwrap_or_default();
        if let Some(t) = &r.timeouts {
            let request = t
                .request
                .as_deref()
                .map(|d| parse_duration(d).map_err(|e| format!("{at}.timeouts.request: {e}")))
                .transpose()?;
            let backend = t
                .backend_request
                .as_deref()
                .map(|d| {
                    parse_duration(d).map_err(|e| format!("{at}.timeouts.backendRequest: {e}"))
                })
                .transpose()?;
            if let (Some(req), Some(b)) = (request, backend) {
                if !req.is_zero() && (b.is_zero() || b > req) {
                    return Err(format!(
                        "{at}.timeouts: backendRequest must not be longer than request"
                    ));
                }
            }
        }
        if has(FilterType::RequestRedirect) && !backends.is_empty() {
            return Err(format!(
                "{at}: RequestRedirect cannot be combined with backendRefs"
            ));
        }
        for (k, b) in backends.iter().enumerate() {
            if let Some(w) = b.weight {
                if !(0..=1_000_000).contains(&w) {
                    return Err(format!(
                        "{at}.backendRefs[{k}].weight: {w} is not within 0..1000000"
                    ));
                }
            }
            let core = b.group.as_deref().unwrap_or("").is_empty()
                && b.kind.as_deref().unwrap_or("Service") == "Service";
            if core && b.port.is_none() {
                return Err(format!(
                    "{at}.backendRefs[{k}].port: required for a Service"
                ));
            }
        }
    }
    if total > 128 {
        return Err("spec.rules: at most 128 matches in all".into());
    }
    Ok(())
}

/// The CRD and CEL rules of a GRPCRoute (directory mode; see [`validate_http_route`]).
pub fn validate_grpc_route(route: &GrpcRoute) -> Result<(), String> {
    let spec = &route.spec;
    let hostnames = spec.hostnames.as_deref().unwrap_or_default();
    if hostnames.len() > 16 {
        return Err("spec.hostnames: at most 16".into());
    }
    for (i, h) in hostnames.iter().enumerate() {
        check_hostname(h).map_err(|e| format!("spec.hostnames[{i}]: {e}"))?;
    }
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.len() > 16 {
        return Err("spec.rules: at most 16".into());
    }
    let service_ok = |s: &str| {
        let s = s.strip_prefix('.').unwrap_or(s);
        !s.is_empty()
            && s.split('.').all(|p| {
                p.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
    };
    let method_ok = |m: &str| {
        m.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    for (i, r) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let matches = r.matches.as_deref().unwrap_or_default();
        if matches.len() > 64 {
            return Err(format!("{at}.matches: at most 64"));
        }
        for (j, m) in matches.iter().enumerate() {
            let at = format!("{at}.matches[{j}]");
            if let Some(mm) = &m.method {
                if mm.service.is_none() && mm.method.is_none() {
                    return Err(format!(
                        "{at}.method: one or both of service and method are required"
                    ));
                }
                let regex = matches!(
                    mm.r#type,
                    Some(GrpcRouteRulesMatchesMethodType::RegularExpression)
                );
                for (field, v, ok) in [
                    ("service", &mm.service, service_ok as fn(&str) -> bool),
                    ("method", &mm.method, method_ok),
                ] {
                    let Some(v) = v else { continue };
                    if regex {
                        regex::Regex::new(v).map_err(|e| format!("{at}.method.{field}: {e}"))?;
                    } else if !ok(v) {
                        return Err(format!(
                            "{at}.method.{field}: `{v}` is not a valid gRPC {field} name"
                        ));
                    }
                }
            }
            for (k, h) in m.headers.iter().flatten().enumerate() {
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                    format!("{at}.headers[{k}].name: `{}` is not a header name", h.name)
                })?;
                if matches!(
                    h.r#type,
                    Some(GrpcRouteRulesMatchesHeadersType::RegularExpression)
                ) {
                    regex::Regex::new(&h.value)
                        .map_err(|e| format!("{at}.headers[{k}].value: {e}"))?;
                }
            }
        }
        let mut seen: Vec<&GrpcFilterType> = Vec::new();
        for (k, f) in r.filters.iter().flatten().enumerate() {
            let repeatable = matches!(
                f.r#type,
                GrpcFilterType::RequestMirror | GrpcFilterType::ExtensionRef
            );
            if !repeatable && seen.contains(&&f.r#type) {
                return Err(format!(
                    "{at}.filters[{k}]: {:?} may appear only once",
                    f.r#type
                ));
            }
            seen.push(&f.r#type);
            check_modifiers!(f, at, k);
        }
        for (k, b) in r.backend_refs.iter().flatten().enumerate() {
            if b.weight.is_some_and(|w| !(0..=1_000_000).contains(&w)) {
                return Err(format!(
                    "{at}.backendRefs[{k}].weight: not within 0..1000000"
                ));
            }
            let core = b.group.as_deref().unwrap_or("").is_empty()
                && b.kind.as_deref().unwrap_or("Service") == "Service";
            if core && b.port.is_none() {
                return Err(format!(
                    "{at}.backendRefs[{k}].port: required for a Service"
                ));
            }
        }
    }
    Ok(())
}

/// One action per header name (case-insensitive) in a header modifier.
fn unique_names<'a>(
    set: impl Iterator<Item = &'a String>,
    add: impl Iterator<Item = &'a String>,
    remove: impl Iterator<Item = &'a String>,
) -> Result<(), String> {
    let mut seen = HashSet::new();
    for n in set.chain(add).chain(remove) {
        if !seen.insert(n.to_ascii_lowercase()) {
            return Err(format!("header `{n}` is named more than once"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_intersect_as_the_spec_says() {
        let r = |hs: &[&str]| hs.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let ex = |h: &str| HostMatch::Exact(h.into());
        let sx = |h: &str| HostMatch::Suffix(h.into());
        assert_eq!(intersect(None, &[]), vec![HostMatch::Any]);
        assert_eq!(
            intersect(Some("very.specific.com"), &r(&["*.specific.com"])),
            vec![ex("very.specific.com")]
        );
        assert_eq!(
            intersect(
                Some("*.wildcard.io"),
                &r(&["foo.bar.wildcard.io", "wildcard.io", "other.io"])
            ),
            vec![ex("foo.bar.wildcard.io")]
        );
        assert_eq!(
            intersect(Some("*.example.com"), &r(&["*.a.example.com"])),
            vec![sx("a.example.com")]
        );
        assert_eq!(
            intersect(Some("*.a.example.com"), &r(&["*.example.com"])),
            vec![sx("a.example.com")]
        );
        assert_eq!(
            intersect(Some("foo.com"), &r(&["bar.com"])),
            Vec::<HostMatch>::new()
        );
        assert_eq!(
            intersect(None, &r(&["*.x.io", "y.io"])),
            vec![sx("x.io"), ex("y.io")]
        );
        assert_eq!(intersect(Some("*.x.io"), &[]), vec![sx("x.io")]);
    }

    fn route(yaml: &str) -> HttpRoute {
        serde_yaml::from_str(yaml).unwrap()
    }

    const HEAD: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\nspec:\n  parentRefs: [{name: gw}]\n";

    #[test]
    fn the_cel_rules_are_checked_for_directory_routes() {
        let bad = [
            ("  rules:\n  - filters:\n    - {type: RequestRedirect, requestRedirect: {hostname: a.com}}\n    - {type: URLRewrite, urlRewrite: {hostname: b.com}}\n", "cannot be combined"),
            ("  rules:\n  - filters:\n    - {type: RequestRedirect, requestRedirect: {hostname: a.com}}\n    backendRefs: [{name: s, port: 80}]\n", "backendRefs"),
            ("  rules:\n  - matches: [{path: {type: Exact, value: /a}}]\n    filters:\n    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}\n", "exactly one PathPrefix"),
            ("  rules:\n  - filters:\n    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}]}}\n    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: c, value: d}]}}\n", "only once"),
            ("  rules:\n  - filters:\n    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: b}], remove: [x-a]}}\n", "more than once"),
            ("  rules:\n  - matches: [{path: {type: PathPrefix, value: nope}}]\n", "must start with"),
            ("  rules:\n  - matches: [{path: {type: PathPrefix, value: /a//b}}]\n", "must not contain"),
            ("  rules:\n  - backendRefs: [{name: s}]\n", "required for a Service"),
            ("  rules:\n  - backendRefs: [{name: s, port: 80, weight: 2000000}]\n", "weight"),
            ("  rules:\n  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 305}}]\n", "statusCode"),
            ("  rules:\n  - matches: [{path: {type: RegularExpression, value: \"(\"}}]\n", "path.value"),
            ("  hostnames: [\"1.2.3.4\"]\n", "IP address"),
            ("  rules:\n  - filters: [{type: RequestHeaderModifier}]\n", "matching field"),
        ];
        for (body, want) in bad {
            let e = validate_http_route(&route(&format!("{HEAD}{body}"))).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
            assert!(e.starts_with("spec."), "{e}");
        }
        let good = "  hostnames: [\"*.example.com\"]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /a}}]\n    filters:\n    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}\n    backendRefs: [{name: s, port: 80}]\n";
        validate_http_route(&route(&format!("{HEAD}{good}"))).unwrap();
    }

    #[test]
    fn grpc_routes_are_checked_too() {
        let g = |body: &str| -> GrpcRoute {
            serde_yaml::from_str(&format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: g, namespace: ns}}\nspec:\n  parentRefs: [{{name: gw}}]\n{body}")).unwrap()
        };
        let bad = [
            (
                "  rules:\n  - matches: [{method: {type: Exact}}]\n",
                "one or both",
            ),
            (
                "  rules:\n  - matches: [{method: {service: \"bad/name\", method: M}}]\n",
                "not a valid gRPC service",
            ),
            (
                "  rules:\n  - matches: [{method: {type: RegularExpression, method: \"(\"}}]\n",
                "method.method",
            ),
            (
                "  rules:\n  - backendRefs: [{name: s}]\n",
                "required for a Service",
            ),
        ];
        for (body, want) in bad {
            let e = validate_grpc_route(&g(body)).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
        validate_grpc_route(&g("  rules:\n  - matches: [{method: {service: pkg.v1.Svc, method: Get}}]\n    backendRefs: [{name: s, port: 9000}]\n")).unwrap();
    }

    #[test]
    fn durations_follow_gep_2257() {
        use std::time::Duration as D;
        assert_eq!(parse_duration("10s"), Ok(D::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(D::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(D::from_secs(5400)));
        assert_eq!(parse_duration("1h1m1s1ms"), Ok(D::from_millis(3_661_001)));
        assert_eq!(parse_duration("0s"), Ok(D::ZERO));
        for bad in ["", "10", "1.5s", "s", "123456s", "1h1m1s1ms1s", "-1s", "1d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let r = route(&format!(
            "{HEAD}  rules:\n  - timeouts: {{request: 1s, backendRequest: 2s}}\n"
        ));
        assert!(validate_http_route(&r)
            .unwrap_err()
            .contains("backendRequest must not be longer"));
        let r = route(&format!(
            "{HEAD}  rules:\n  - timeouts: {{request: soon}}\n"
        ));
        assert!(validate_http_route(&r)
            .unwrap_err()
            .contains("timeouts.request"));
    }

    #[test]
    fn mirror_shares_in_millionths() {
        assert_eq!(mirror_share(None, None), 1_000_000);
        assert_eq!(mirror_share(Some(25), None), 250_000);
        assert_eq!(mirror_share(None, Some((1, Some(3)))), 333_333);
        assert_eq!(mirror_share(None, Some((5, None))), 50_000);
        assert_eq!(mirror_share(Some(0), None), 0);
    }
}
