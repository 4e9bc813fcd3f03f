//! Where Kubernetes objects come from, and the store they land in.
//!
//! Both sources (the manifests directory here, the Kubernetes API in `kube`) fill the same
//! [`Snapshot`] with the same k8s-openapi types; nothing after the store knows which source
//! produced an object.

pub mod files;
pub mod kube;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
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
        };
        let name = meta.name.as_deref().unwrap_or("");
        match meta.namespace.as_deref() {
            Some(ns) if kind != "IngressClass" => format!("{kind} {ns}/{name}"),
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
    /// Only `kubernetes.io/tls` Secrets.
    pub secrets: BTreeMap<ObjKey, Arc<Secret>>,
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
        fn put<V>(map: &mut BTreeMap<ObjKey, V>, k: ObjKey, v: V) -> bool {
            if map.contains_key(&k) {
                return false;
            }
            map.insert(k, v);
            true
        }
        match obj {
            Object::Ingress(o) => put(&mut self.ingresses, key_of(&o.metadata), o),
            Object::Service(o) => put(&mut self.services, key_of(&o.metadata), o),
            Object::EndpointSlice(o) => put(&mut self.endpoint_slices, key_of(&o.metadata), o),
            Object::Secret(o) => put(&mut self.secrets, key_of(&o.metadata), o),
            Object::IngressClass(o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                if self.ingress_classes.contains_key(&name) {
                    return false;
                }
                self.ingress_classes.insert(name, o);
                true
            }
        }
    }

    /// True when everything but the EndpointSlices is equal: only endpoint sets need
    /// updating, routes stay as they are.
    pub fn same_routing_inputs(&self, other: &Snapshot) -> bool {
        self.ingresses == other.ingresses
            && self.ingress_classes == other.ingress_classes
            && self.services == other.services
            && self.secrets == other.secrets
    }
}
