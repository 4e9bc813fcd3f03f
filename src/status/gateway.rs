//! The Gateway API status the leader writes: from the conditions translation computed
//! ([`crate::translate::gateway::Report`]) to the `status` of each GatewayClass, Gateway,
//! HTTPRoute and GRPCRoute of ours, compared with what the object already says.
//!
//! * Every condition carries `observedGeneration`; its `lastTransitionTime` is kept while
//!   its status stays the same, and set to now when it changes.
//! * Route `status.parents`: entries of other controllers are kept as they are; ours are
//!   replaced (one per parentRef to a Gateway of ours), and stale ones of ours removed.
//! * Only objects whose status would change are returned: a steady state writes nothing.

use serde_json::{json, Value};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::source::{ObjKey, Snapshot};
use crate::translate::gateway::{Cond, Report, RouteState, GROUP};

/// The Gateway API features pingress implements, as GatewayClass `supportedFeatures` names
/// (sorted).
pub const SUPPORTED_FEATURES: &[&str] = &[
    "GRPCRoute",
    "Gateway",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendTimeout",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

/// One status to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: &'static str,
    /// The API version to write through.
    pub version: &'static str,
    /// `namespace/name`; the namespace is empty for GatewayClasses.
    pub key: ObjKey,
    pub resource_version: Option<String>,
    /// The whole new `status`.
    pub status: Value,
}

/// Conditions as JSON, keeping the current `lastTransitionTime` of a condition whose status
/// did not change.
fn conditions(conds: &[Cond], generation: Option<i64>, current: &Value, now: &Time) -> Value {
    let list: Vec<Value> = conds
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let prev = current
                .as_array()
                .and_then(|a| a.iter().find(|p| p["type"] == c.kind))
                .filter(|p| p["status"] == status)
                .and_then(|p| p.get("lastTransitionTime").cloned());
            let mut v = json!({
                "type": c.kind,
                "status": status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": prev.unwrap_or_else(|| json!(now)),
            });
            if let Some(g) = generation {
                v["observedGeneration"] = json!(g);
            }
            v
        })
        .collect();
    Value::Array(list)
}

/// The status to compare: everything but transition times.
fn comparable(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| *k != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), comparable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(comparable).collect()),
        other => other.clone(),
    }
}

fn address_list(addresses: &[String]) -> Value {
    Value::Array(
        addresses
            .iter()
            .map(|a| {
                let t = if a.parse::<std::net::IpAddr>().is_ok() {
                    "IPAddress"
                } else {
                    "Hostname"
                };
                json!({"type": t, "value": a})
            })
            .collect(),
    )
}

fn status_of<T: serde::Serialize>(o: &T) -> Value {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.get("status").cloned())
        .unwrap_or(Value::Null)
}

/// Route status: other controllers' parents kept, ours from `state`.
fn route_status(current: &Value, state: &RouteState, controller: &str, now: &Time) -> Value {
    let existing = current["parents"].as_array().cloned().unwrap_or_default();
    let mut parents: Vec<Value> = existing
        .iter()
        .filter(|p| p["controllerName"] != controller)
        .cloned()
        .collect();
    for p in &state.parents {
        let mut parent_ref = json!({
            "group": GROUP,
            "kind": "Gateway",
            "namespace": p.gateway.namespace,
            "name": p.gateway.name,
        });
        if let Some(s) = &p.section_name {
            parent_ref["sectionName"] = json!(s);
        }
        if let Some(port) = p.port {
            parent_ref["port"] = json!(port);
        }
        let prev = existing
            .iter()
            .find(|e| e["controllerName"] == controller && e["parentRef"] == parent_ref)
            .map(|e| e["conditions"].clone())
            .unwrap_or(Value::Null);
        parents.push(json!({
            "parentRef": parent_ref,
            "controllerName": controller,
            "conditions": conditions(&p.conditions, state.generation, &prev, now),
        }));
    }
    json!({ "parents": parents })
}

/// Every status that differs from what the objects say now.
pub fn changes(
    snap: &Snapshot,
    report: &Report,
    controller: &str,
    addresses: &[String],
    now: &Time,
) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push =
        |kind, version, key: ObjKey, rv: Option<String>, current: Value, status: Value| {
            if comparable(&current) != comparable(&status) {
                out.push(Change {
                    kind,
                    version,
                    key,
                    resource_version: rv,
                    status,
                });
            }
        };
    for (name, (generation, conds)) in &report.classes {
        let Some(class) = snap.gateway_classes.get(name) else {
            continue;
        };
        let current = status_of(&**class);
        let status = json!({
            "conditions": conditions(conds, *generation, &current["conditions"], now),
            "supportedFeatures": SUPPORTED_FEATURES.iter().map(|f| json!({"name": f})).collect::<Vec<_>>(),
        });
        let rv = class.metadata.resource_version.clone();
        push(
            "GatewayClass",
            "v1",
            ObjKey::new("", name),
            rv,
            current,
            status,
        );
    }
    for (key, g) in &report.gateways {
        let Some(gw) = snap.gateways.get(key) else {
            continue;
        };
        let current = status_of(&**gw);
        let listeners: Vec<Value> = g
            .listeners
            .iter()
            .map(|l| {
                let prev = current["listeners"]
                    .as_array()
                    .and_then(|a| a.iter().find(|p| p["name"] == l.name.as_str()))
                    .map(|p| p["conditions"].clone())
                    .unwrap_or(Value::Null);
                json!({
                    "name": l.name,
                    "supportedKinds": l.supported_kinds.iter().map(|k| json!({"group": GROUP, "kind": k})).collect::<Vec<_>>(),
                    "attachedRoutes": l.attached_routes,
                    "conditions": conditions(&l.conditions, g.generation, &prev, now),
                })
            })
            .collect();
        let mut status = json!({
            "conditions": conditions(&g.conditions, g.generation, &current["conditions"], now),
            "listeners": listeners,
        });
        if !addresses.is_empty() {
            status["addresses"] = address_list(addresses);
        }
        let rv = gw.metadata.resource_version.clone();
        push("Gateway", "v1", key.clone(), rv, current, status);
    }
    let http = report.http_routes.iter().filter_map(|(k, st)| {
        let r = snap.http_routes.get(k)?;
        Some((
            "HTTPRoute",
            k,
            st,
            status_of(&**r),
            r.metadata.resource_version.clone(),
        ))
    });
    let grpc = report.grpc_routes.iter().filter_map(|(k, st)| {
        let r = snap.grpc_routes.get(k)?;
        Some((
            "GRPCRoute",
            k,
            st,
            status_of(&**r),
            r.metadata.resource_version.clone(),
        ))
    });
    for (kind, key, state, current, rv) in http.chain(grpc) {
        let status = route_status(&current, state, controller, now);
        push(kind, "v1", key.clone(), rv, current, status);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{translate, TranslateConf};

    fn snap(yaml: &str) -> Snapshot {
        let mut s = Snapshot::default();
        for o in crate::source::files::parse_manifests(yaml, "t")
            .unwrap()
            .objects
        {
            s.insert(o);
        }
        s
    }

    const OBJECTS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: pingress, generation: 1}\nspec: {controllerName: pingress.dev/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: ns, generation: 3}\nspec:\n  gatewayClassName: pingress\n  listeners: [{name: http, protocol: HTTP, port: 80}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns, generation: 2}\nspec:\n  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: missing, port: 80}]}]\n";

    fn conf() -> TranslateConf {
        TranslateConf::from(&crate::config::PingressConf::default())
    }

    #[test]
    fn supported_features_are_sorted_and_unique() {
        let mut sorted = SUPPORTED_FEATURES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, SUPPORTED_FEATURES);
    }

    #[test]
    fn status_carries_generations_keeps_other_controllers_and_is_written_once() {
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
        // Another controller's parent entry is already on the route.
        let other = "  status:\n    parents:\n    - parentRef: {name: other-gw}\n      controllerName: example.com/other\n      conditions: []\n";
        let yaml = OBJECTS.replace(
            "  rules: [{backendRefs: [{name: missing, port: 80}]}]\n",
            &format!(
                "  rules: [{{backendRefs: [{{name: missing, port: 80}}]}}]\nstatus:\n{}",
                other.trim_start_matches("  status:\n")
            ),
        );
        let s = snap(&yaml);
        let t = translate(&s, &conf());
        let changes = changes(
            &s,
            &t.gateway,
            "pingress.dev/gateway-controller",
            &["203.0.113.7".into()],
            &now,
        );
        let by = |k: &str| {
            changes
                .iter()
                .find(|c| c.kind == k)
                .unwrap_or_else(|| panic!("{k}: {changes:?}"))
        };
        let class = &by("GatewayClass").status;
        assert_eq!(class["conditions"][0]["observedGeneration"], 1);
        assert_eq!(class["supportedFeatures"][0]["name"], "GRPCRoute");
        let gw = &by("Gateway").status;
        assert_eq!(gw["conditions"][0]["type"], "Accepted");
        assert_eq!(gw["conditions"][0]["observedGeneration"], 3);
        assert_eq!(
            gw["addresses"][0],
            json!({"type": "IPAddress", "value": "203.0.113.7"})
        );
        assert_eq!(gw["listeners"][0]["attachedRoutes"], 1);
        let route = &by("HTTPRoute").status;
        let parents = route["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2, "{route}");
        assert_eq!(parents[0]["controllerName"], "example.com/other");
        assert_eq!(
            parents[1]["controllerName"],
            "pingress.dev/gateway-controller"
        );
        assert_eq!(parents[1]["parentRef"]["namespace"], "ns");
        let resolved = parents[1]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ResolvedRefs")
            .unwrap();
        assert_eq!(resolved["status"], "False");
        assert_eq!(resolved["reason"], "BackendNotFound");
        assert_eq!(resolved["observedGeneration"], 2);

        // Once the objects carry that status, nothing is written again, even at a later time.
        let mut written = Snapshot::default();
        for o in crate::source::files::parse_manifests(&yaml, "t")
            .unwrap()
            .objects
        {
            written.insert(o);
        }
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_100).unwrap());
        let with_status = |kind: &str| {
            changes
                .iter()
                .find(|c| c.kind == kind)
                .unwrap()
                .status
                .clone()
        };
        let mut gc = (*written.gateway_classes["pingress"]).clone();
        gc.status = serde_json::from_value(with_status("GatewayClass")).unwrap();
        written
            .gateway_classes
            .insert("pingress".into(), std::sync::Arc::new(gc));
        let k = ObjKey::new("ns", "gw");
        let mut g = (*written.gateways[&k]).clone();
        g.status = serde_json::from_value(with_status("Gateway")).unwrap();
        written.gateways.insert(k, std::sync::Arc::new(g));
        let k = ObjKey::new("ns", "r");
        let mut r = (*written.http_routes[&k]).clone();
        r.status = serde_json::from_value(with_status("HTTPRoute")).unwrap();
        written.http_routes.insert(k, std::sync::Arc::new(r));
        let again = super::changes(
            &written,
            &t.gateway,
            "pingress.dev/gateway-controller",
            &["203.0.113.7".into()],
            &later,
        );
        assert!(again.is_empty(), "{again:?}");
    }
}
