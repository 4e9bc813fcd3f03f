//! Where Kubernetes objects come from, and the store they land in.
//!
//! Both sources (the manifests directory here, the Kubernetes API in `kube`) fill the same
//! [`Snapshot`] with the same k8s-openapi types; nothing after the store knows which source
//! produced an object.

pub mod files;
pub mod kube;
pub mod legacy;

use std::collections::BTreeSet;
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

/// The maps of a [`Snapshot`]: persistent B-trees (imbl), so that a source keeps one snapshot
/// and changes it in place, a clone to publish costs O(1), and two snapshots that share most
/// of their structure are compared in time proportional to what differs (`diff` skips
/// shared nodes). A source with 50,000 objects pays for the one that changed, not for all.
pub type Map<K, V> = imbl::OrdMap<K, V>;

/// Every object the gateway looks at, at one point in time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub ingresses: Map<ObjKey, Arc<Ingress>>,
    /// IngressClasses are cluster-scoped: keyed by name.
    pub ingress_classes: Map<String, Arc<IngressClass>>,
    pub services: Map<ObjKey, Arc<Service>>,
    pub endpoint_slices: Map<ObjKey, Arc<EndpointSlice>>,
    /// `kubernetes.io/tls` Secrets, and the Opaque Secrets that hold basic-auth users
    /// (in-cluster: only those an Ingress's auth-secret names).
    pub secrets: Map<ObjKey, Arc<Secret>>,
    /// Namespaces by name (their labels select routes for `allowedRoutes` selectors).
    pub namespaces: Map<String, Arc<Namespace>>,
    /// Gateway API: GatewayClasses by name.
    pub gateway_classes: Map<String, Arc<GatewayClass>>,
    pub gateways: Map<ObjKey, Arc<Gateway>>,
    pub http_routes: Map<ObjKey, Arc<HttpRoute>>,
    pub grpc_routes: Map<ObjKey, Arc<GrpcRoute>>,
    pub reference_grants: Map<ObjKey, Arc<ReferenceGrant>>,
    /// Objects that did not decode, by `Kind namespace/name`. A decoded version of the same
    /// object, when there was one, stays in its map (its last good state).
    pub undecodable: Map<String, Arc<Undecodable>>,
    /// The EndpointSlices of each (namespace, Service), by their `kubernetes.io/service-name`
    /// label: kept by [`Snapshot::insert`], [`Snapshot::upsert`] and [`Snapshot::remove`], so
    /// an endpoint change finds its Service's slices without a scan.
    slices_by_service: Map<(String, String), Map<ObjKey, Arc<EndpointSlice>>>,
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

/// The map an object goes in and its key there, for [`Snapshot::insert`] and friends.
macro_rules! with_slot {
    ($snap:expr, $obj:expr, |$map:ident, $key:ident, $val:ident| $body:expr) => {
        match $obj {
            Object::Ingress(o) => {
                let ($map, $key, $val) = (&mut $snap.ingresses, key_of(&o.metadata), o);
                $body
            }
            Object::Service(o) => {
                let ($map, $key, $val) = (&mut $snap.services, key_of(&o.metadata), o);
                $body
            }
            Object::EndpointSlice(o) => {
                let ($map, $key, $val) = (&mut $snap.endpoint_slices, key_of(&o.metadata), o);
                $body
            }
            Object::Secret(o) => {
                let ($map, $key, $val) = (&mut $snap.secrets, key_of(&o.metadata), o);
                $body
            }
            Object::IngressClass(o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                let ($map, $key, $val) = (&mut $snap.ingress_classes, name, o);
                $body
            }
            Object::Namespace(o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                let ($map, $key, $val) = (&mut $snap.namespaces, name, o);
                $body
            }
            Object::GatewayClass(o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                let ($map, $key, $val) = (&mut $snap.gateway_classes, name, o);
                $body
            }
            Object::Gateway(o) => {
                let ($map, $key, $val) = (&mut $snap.gateways, key_of(&o.metadata), o);
                $body
            }
            Object::HttpRoute(o) => {
                let ($map, $key, $val) = (&mut $snap.http_routes, key_of(&o.metadata), o);
                $body
            }
            Object::GrpcRoute(o) => {
                let ($map, $key, $val) = (&mut $snap.grpc_routes, key_of(&o.metadata), o);
                $body
            }
            Object::ReferenceGrant(o) => {
                let ($map, $key, $val) = (&mut $snap.reference_grants, key_of(&o.metadata), o);
                $body
            }
            Object::Undecodable(u) => {
                let k = format!("{} {}", u.kind, u.key);
                let ($map, $key, $val) = (&mut $snap.undecodable, k, u);
                $body
            }
        }
    };
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
fn slice_service(key: &ObjKey, s: &EndpointSlice) -> Option<(String, String)> {
    let labels = s.metadata.labels.as_ref()?;
    let svc = labels.get(crate::upstream::SERVICE_NAME_LABEL)?;
    Some((key.namespace.clone(), svc.clone()))
}

impl Snapshot {
    /// Add an object; returns false (and keeps the existing one) when the same kind,
    /// namespace and name is already present.
    pub fn insert(&mut self, obj: Object) -> bool {
        if let Object::EndpointSlice(s) = &obj {
            if self.endpoint_slices.contains_key(&key_of(&s.metadata)) {
                return false;
            }
            self.upsert(obj);
            return true;
        }
        with_slot!(self, obj, |map, key, val| match map.entry(key) {
            imbl::ordmap::Entry::Vacant(e) => {
                e.insert(val);
                true
            }
            imbl::ordmap::Entry::Occupied(_) => false,
        })
    }

    /// Add an object, replacing the one of the same kind, namespace and name.
    pub fn upsert(&mut self, obj: Object) {
        if let Object::EndpointSlice(s) = obj {
            let key = key_of(&s.metadata);
            let svc = slice_service(&key, &s);
            if let Some(old) = self.endpoint_slices.insert(key.clone(), s.clone()) {
                self.unindex_slice(&key, &old);
            }
            if let Some(svc) = svc {
                self.slices_by_service
                    .entry(svc)
                    .or_default()
                    .insert(key, s);
            }
            return;
        }
        with_slot!(self, obj, |map, key, val| {
            map.insert(key, val);
        })
    }

    /// Remove the object of this one's kind, namespace and name, if present.
    pub fn remove(&mut self, obj: &Object) {
        if let Object::EndpointSlice(s) = obj {
            let key = key_of(&s.metadata);
            if let Some(old) = self.endpoint_slices.remove(&key) {
                self.unindex_slice(&key, &old);
            }
            return;
        }
        with_slot!(self, obj.clone(), |map, key, _val| {
            map.remove(&key);
        })
    }

    fn unindex_slice(&mut self, key: &ObjKey, old: &EndpointSlice) {
        let Some(svc) = slice_service(key, old) else {
            return;
        };
        if let Some(set) = self.slices_by_service.get_mut(&svc) {
            set.remove(key);
            if set.is_empty() {
                self.slices_by_service.remove(&svc);
            }
        }
    }

    /// The EndpointSlices of a Service, in name order.
    pub fn slices_of(&self, namespace: &str, service: &str) -> Vec<&EndpointSlice> {
        let Some(keys) = self
            .slices_by_service
            .get(&(namespace.to_string(), service.to_string()))
        else {
            return Vec::new();
        };
        keys.values().map(|s| &**s).collect()
    }

    /// True when everything but the EndpointSlices is equal: only endpoint sets need
    /// updating, routes stay as they are.
    pub fn same_routing_inputs(&self, other: &Snapshot) -> bool {
        same_map(&self.ingresses, &other.ingresses)
            && same_map(&self.services, &other.services)
            && self.same_other_inputs(other)
    }

    /// Whether everything translation reads other than Ingresses and Services is the same.
    fn same_other_inputs(&self, other: &Snapshot) -> bool {
        same_map(&self.ingress_classes, &other.ingress_classes)
            && same_map(&self.secrets, &other.secrets)
            && same_map(&self.namespaces, &other.namespaces)
            && same_map(&self.gateway_classes, &other.gateway_classes)
            && same_map(&self.gateways, &other.gateways)
            && same_map(&self.http_routes, &other.http_routes)
            && same_map(&self.grpc_routes, &other.grpc_routes)
            && same_map(&self.reference_grants, &other.reference_grants)
            && same_map(&self.undecodable, &other.undecodable)
    }

    /// When `other` differs from `self` in Ingresses and Services (and EndpointSlices) only:
    /// the keys of the Ingresses and of the Services added, removed or changed. None when
    /// anything else that translation reads differs. Visits only what the two snapshots do
    /// not share.
    pub fn changed_ingresses_and_services(
        &self,
        other: &Snapshot,
    ) -> Option<(Vec<ObjKey>, Vec<ObjKey>)> {
        if !self.same_other_inputs(other) {
            return None;
        }
        Some((
            changed_keys(&self.ingresses, &other.ingresses),
            changed_keys(&self.services, &other.services),
        ))
    }

    /// Whether the snapshot holds any Gateway API object (or an object that did not decode,
    /// which the Gateway API report lists).
    pub fn has_gateway_api(&self) -> bool {
        !(self.gateway_classes.is_empty()
            && self.gateways.is_empty()
            && self.http_routes.is_empty()
            && self.grpc_routes.is_empty()
            && self.reference_grants.is_empty()
            && self.undecodable.is_empty())
    }

    /// (namespace, service) of every EndpointSlice added, removed or changed between `self`
    /// and `other`. Visits only what the two snapshots do not share.
    pub fn changed_slice_services(&self, other: &Snapshot) -> BTreeSet<(String, String)> {
        use imbl::ordmap::DiffItem;
        let mut out = BTreeSet::new();
        let mut note = |k: &ObjKey, s: &EndpointSlice| {
            out.insert(slice_service(k, s).unwrap_or_else(|| (k.namespace.clone(), String::new())));
        };
        for d in self.endpoint_slices.diff(&other.endpoint_slices) {
            match d {
                DiffItem::Add(k, s) | DiffItem::Remove(k, s) => note(k, s),
                DiffItem::Update { old, new } => {
                    note(old.0, old.1);
                    note(new.0, new.1);
                }
            }
        }
        out
    }

    /// (namespace, service) of every Service whose endpoints may differ between `self` and
    /// `other`: its EndpointSlices changed, or the Service itself (a `service-upstream`
    /// pool's one endpoint is its ClusterIP).
    pub fn changed_endpoint_services(&self, other: &Snapshot) -> BTreeSet<(String, String)> {
        let mut out = self.changed_slice_services(other);
        for d in self.services.diff(&other.services) {
            let k = match d {
                imbl::ordmap::DiffItem::Add(k, _) | imbl::ordmap::DiffItem::Remove(k, _) => k,
                imbl::ordmap::DiffItem::Update { new, .. } => new.0,
            };
            out.insert((k.namespace.clone(), k.name.clone()));
        }
        out
    }
}

/// Keys added, removed or changed between two maps, each once, in order.
fn changed_keys<V: PartialEq>(a: &Map<ObjKey, Arc<V>>, b: &Map<ObjKey, Arc<V>>) -> Vec<ObjKey> {
    let mut keys: Vec<ObjKey> = Vec::new();
    for d in a.diff(b) {
        let k = match d {
            imbl::ordmap::DiffItem::Add(k, _) | imbl::ordmap::DiffItem::Remove(k, _) => k,
            imbl::ordmap::DiffItem::Update { new, .. } => new.0,
        };
        if keys.last() != Some(k) {
            keys.push(k.clone());
        }
    }
    keys
}

/// Map equality that visits only the parts the two maps do not share (sources keep one
/// persistent snapshot and the `Arc` of an unchanged object).
fn same_map<K: Ord + Clone, V: PartialEq>(a: &Map<K, Arc<V>>, b: &Map<K, Arc<V>>) -> bool {
    a.ptr_eq(b) || (a.len() == b.len() && a.diff(b).next().is_none())
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

    fn slice_names(s: &Snapshot, svc: &str) -> Vec<String> {
        s.slices_of("ns", svc)
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn upsert_and_remove_keep_the_slices_of_each_service() {
        let mut s = Snapshot::default();
        s.upsert(slice("a-1", "a", "10.0.0.1"));
        s.upsert(slice("a-2", "a", "10.0.0.2"));
        s.upsert(slice("b-1", "b", "10.0.0.3"));
        assert_eq!(slice_names(&s, "a"), ["a-1", "a-2"]);
        // A slice moved to another Service (its label changed) leaves the first one.
        s.upsert(slice("a-2", "b", "10.0.0.2"));
        assert_eq!(slice_names(&s, "a"), ["a-1"]);
        assert_eq!(slice_names(&s, "b"), ["a-2", "b-1"]);
        s.remove(&slice("a-1", "a", "ignored"));
        assert!(slice_names(&s, "a").is_empty());
        assert_eq!(s.endpoint_slices.len(), 2);
        // insert keeps the first of two objects with one name, and its index entry.
        assert!(!s.insert(slice("b-1", "c", "10.0.0.9")));
        assert!(slice_names(&s, "c").is_empty());
        assert_eq!(slice_names(&s, "b"), ["a-2", "b-1"]);
    }

    #[test]
    fn a_changed_copy_differs_only_where_it_was_changed() {
        let mut a = Snapshot::default();
        for i in 0..2000 {
            a.upsert(slice(&format!("s{i}-1"), &format!("s{i}"), "10.0.0.1"));
        }
        let mut b = a.clone();
        b.upsert(slice("s7-1", "s7", "10.0.0.2"));
        b.upsert(slice("s1999-1", "s1999", "10.0.0.2"));
        let changed: Vec<_> = a
            .changed_slice_services(&b)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(changed, vec!["s1999", "s7"]);
        assert!(a.same_routing_inputs(&b));
        // The maps the change did not touch are the same maps, not equal copies.
        assert!(a.ingresses.ptr_eq(&b.ingresses));
        assert!(!a.endpoint_slices.ptr_eq(&b.endpoint_slices));
        assert_eq!(slice_names(&a, "s7"), ["s7-1"]);
    }
}
