//! Where Kubernetes objects come from, and the store they land in.
//!
//! Both sources (the manifests directory here, the Kubernetes API in `kube`) fill the same
//! [`Snapshot`] with the same k8s-openapi types; nothing after the store knows which source
//! produced an object.

pub mod files;
pub mod kube;
pub mod legacy;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// `namespace/name` of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One object of a kind the gateway uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Ingress(Arc<Ingress>),
    IngressClass(Arc<IngressClass>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Secret(Arc<Secret>),
    Namespace(Arc<Namespace>),
    GatewayClass(Arc<GatewayClass>),
    Gateway(Arc<Gateway>),
    HttpRoute(Arc<HttpRoute>),
    GrpcRoute(Arc<GrpcRoute>),
    ReferenceGrant(Arc<ReferenceGrant>),
    /// A Gateway API object from the API that does not decode into the standard-channel
    /// types (an experimental field, a newer enum value): reported on that object alone.
    Undecodable(Arc<Undecodable>),
}

/// An object that could not be decoded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    pub kind: &'static str,
    pub key: ObjKey,
    pub error: String,
}

impl Object {
    /// `Kind namespace/name` for messages.
    pub fn describe(&self) -> String {
        let (kind, meta) = match self {
            Object::Ingress(o) => ("Ingress", &o.metadata),
            Object::IngressClass(o) => ("IngressClass", &o.metadata),
            Object::Service(o) => ("Service", &o.metadata),
            Object::EndpointSlice(o) => ("EndpointSlice", &o.metadata),
            Object::Secret(o) => ("Secret", &o.metadata),
            Object::Namespace(o) => ("Namespace", &o.metadata),
            Object::GatewayClass(o) => ("GatewayClass", &o.metadata),
            Object::Gateway(o) => ("Gateway", &o.metadata),
            Object::HttpRoute(o) => ("HTTPRoute", &o.metadata),
            Object::GrpcRoute(o) => ("GRPCRoute", &o.metadata),
            Object::ReferenceGrant(o) => ("ReferenceGrant", &o.metadata),
            Object::Undecodable(u) => return format!("{} {}", u.kind, u.key),
        };
        let name = meta.name.as_deref().unwrap_or("");
        let cluster_scoped = matches!(kind, "IngressClass" | "GatewayClass" | "Namespace");
        match meta.namespace.as_deref() {
            Some(ns) if !cluster_scoped => format!("{kind} {ns}/{name}"),
            None if matches!(
                kind,
                "Gateway" | "HTTPRoute" | "GRPCRoute" | "ReferenceGrant"
            ) =>
            {
                format!("{kind} default/{name}")
            }
            _ => format!("{kind} {name}"),
        }
    }
}

/// Every object the gateway looks at, at one point in time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub ingresses: BTreeMap<ObjKey, Arc<Ingress>>,
    /// IngressClasses are cluster-scoped: keyed by name.
    pub ingress_classes: BTreeMap<String, Arc<IngressClass>>,
    pub services: BTreeMap<ObjKey, Arc<Service>>,
    pub endpoint_slices: BTreeMap<ObjKey, Arc<EndpointSlice>>,
    /// `kubernetes.io/tls` Secrets, and the Opaque Secrets that hold basic-auth users
    /// (in-cluster: only those an Ingress's auth-secret names).
    pub secrets: BTreeMap<ObjKey, Arc<Secret>>,
    /// Namespaces by name (their labels select routes for `allowedRoutes` selectors).
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    /// Gateway API: GatewayClasses by name.
    pub gateway_classes: BTreeMap<String, Arc<GatewayClass>>,
    pub gateways: BTreeMap<ObjKey, Arc<Gateway>>,
    pub http_routes: BTreeMap<ObjKey, Arc<HttpRoute>>,
    pub grpc_routes: BTreeMap<ObjKey, Arc<GrpcRoute>>,
    pub reference_grants: BTreeMap<ObjKey, Arc<ReferenceGrant>>,
    /// Objects that did not decode, by `Kind namespace/name`. A decoded version of the same
    /// object, when there was one, stays in its map (its last good state).
    pub undecodable: BTreeMap<String, Arc<Undecodable>>,
}

/// Secret types a source keeps: TLS, and Opaque (auth users; no type means Opaque).
pub fn kept_secret_type(t: Option<&str>) -> bool {
    matches!(t, None | Some("Opaque") | Some("kubernetes.io/tls"))
}

impl From<Arc<EndpointSlice>> for Object {
    fn from(s: Arc<EndpointSlice>) -> Self {
        Object::EndpointSlice(s)
    }
}

/// Namespace of an object; objects without one are in `default`, as kubectl would apply them.
pub fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjKey {
    ObjKey::new(namespace_of(meta), meta.name.clone().unwrap_or_default())
}

impl Snapshot {
    /// Add an object; returns false (and keeps the existing one) when the same kind,
    /// namespace and name is already present.
    pub fn insert(&mut self, obj: Object) -> bool {
        // One search per object (the kube source rebuilds whole snapshots from its maps).
        fn put<K: Ord, V>(map: &mut BTreeMap<K, V>, k: K, v: V) -> bool {
            match map.entry(k) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                    true
                }
                std::collections::btree_map::Entry::Occupied(_) => false,
            }
        }
        match obj {
            Object::Ingress(o) => put(&mut self.ingresses, key_of(&o.metadata), o),
            Object::Service(o) => put(&mut self.services, key_of(&o.metadata), o),
            Object::EndpointSlice(o) => put(&mut self.endpoint_slices, key_of(&o.metadata), o),
            Object::Secret(o) => put(&mut self.secrets, key_of(&o.metadata), o),
            Object::IngressClass(o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                put(&mut self.ingress_classes, name, o)
            }
            Object::Namespace(o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                put(&mut self.namespaces, name, o)
            }
            Object::GatewayClass(o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                put(&mut self.gateway_classes, name, o)
            }
            Object::Gateway(o) => put(&mut self.gateways, key_of(&o.metadata), o),
            Object::HttpRoute(o) => put(&mut self.http_routes, key_of(&o.metadata), o),
            Object::GrpcRoute(o) => put(&mut self.grpc_routes, key_of(&o.metadata), o),
            Object::ReferenceGrant(o) => put(&mut self.reference_grants, key_of(&o.metadata), o),
            Object::Undecodable(u) => {
                let k = format!("{} {}", u.kind, u.key);
                put(&mut self.undecodable, k, u)
            }
        }
    }

    /// True when everything but the EndpointSlices is equal: only endpoint sets need
    /// updating, routes stay as they are.
    pub fn same_routing_inputs(&self, other: &Snapshot) -> bool {
        same_map(&self.ingresses, &other.ingresses)
            && same_map(&self.ingress_classes, &other.ingress_classes)
            && same_map(&self.services, &other.services)
            && same_map(&self.secrets, &other.secrets)
            && same_map(&self.namespaces, &other.namespaces)
            && same_map(&self.gateway_classes, &other.gateway_classes)
            && same_map(&self.gateways, &other.gateways)
            && same_map(&self.http_routes, &other.http_routes)
            && same_map(&self.grpc_routes, &other.grpc_routes)
            && same_map(&self.reference_grants, &other.reference_grants)
            && same_map(&self.undecodable, &other.undecodable)
    }

    /// (namespace, service) of every EndpointSlice added, removed or changed between `self`
    /// and `other`.
    pub fn changed_slice_services(&self, other: &Snapshot) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        let mut note = |k: &ObjKey, s: &EndpointSlice| {
            let svc = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::upstream::SERVICE_NAME_LABEL))
                .cloned()
                .unwrap_or_default();
            out.insert((k.namespace.clone(), svc));
        };
        for (k, a) in &self.endpoint_slices {
            match other.endpoint_slices.get(k) {
                Some(b) if Arc::ptr_eq(a, b) || a == b => {}
                Some(b) => {
                    note(k, a);
                    note(k, b);
                }
                None => note(k, a),
            }
        }
        for (k, b) in &other.endpoint_slices {
            if !self.endpoint_slices.contains_key(k) {
                note(k, b);
            }
        }
        out
    }
}

/// Map equality that skips the deep comparison of objects shared by both maps (sources keep
/// the `Arc` of an unchanged object).
fn same_map<K: Ord, V: PartialEq>(a: &BTreeMap<K, Arc<V>>, b: &BTreeMap<K, Arc<V>>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && (Arc::ptr_eq(va, vb) || va == vb))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(name: &str, svc: &str, ip: &str) -> Object {
        let yaml = format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: ns\n  labels: {{kubernetes.io/service-name: {svc}}}\naddressType: IPv4\nendpoints:\n- addresses: [\"{ip}\"]\n");
        files::parse_manifests(&yaml, "t")
            .unwrap()
            .objects
            .remove(0)
    }

    #[test]
    fn changed_slice_services_names_added_removed_and_edited_services() {
        let mut a = Snapshot::default();
        a.insert(slice("a-1", "a", "10.0.0.1"));
        a.insert(slice("b-1", "b", "10.0.0.2"));
        a.insert(slice("c-1", "c", "10.0.0.3"));
        let mut b = Snapshot::default();
        b.insert(a.endpoint_slices[&ObjKey::new("ns", "a-1")].clone().into());
        b.insert(slice("b-1", "b", "10.0.0.9"));
        b.insert(slice("d-1", "d", "10.0.0.4"));
        let changed: Vec<_> = a
            .changed_slice_services(&b)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(changed, vec!["b", "c", "d"]);
        assert!(a.same_routing_inputs(&b));
        assert!(a.changed_slice_services(&a.clone()).is_empty());
    }
}
