//! The in-cluster source: kube-rs watchers (with backoff) for Ingress, IngressClass, Service,
//! EndpointSlice and `kubernetes.io/tls` Secrets, in all namespaces or a configured list;
//! Namespaces; and the Gateway API kinds (GatewayClass, Gateway, HTTPRoute, GRPCRoute,
//! ReferenceGrant).
//!
//! Gateway API objects are watched untyped and decoded one by one, so an object that does
//! not decode into the standard-channel types (an experimental filter, a newer enum value)
//! is reported on its own ([`Object::Undecodable`]) and keeps its last good version, instead
//! of failing the whole list. When the Gateway API CRDs are not installed, their lists
//! answer 404: those watchers count as synced with no objects (and keep retrying), so
//! Ingress keeps working on clusters without Gateway API.
//! Other Secrets are not listed: each Secret an Ingress names in `auth-secret` gets its own
//! watch (a field selector on its name), started when the first Ingress names it and
//! stopped when the last one stops, so only those Secrets are ever held in memory.
//!
//! Each watcher keeps its own object map. A relist (start-up, reconnect after a 410 Gone /
//! expired resourceVersion) is buffered from `Init` to `InitDone` and then replaces that map
//! in one step, so a partial or empty list is never published, and objects deleted while the
//! watch was away disappear. Nothing is published until every watcher has completed its first
//! list. If the API server goes away, the last maps stay in force and the watchers retry
//! with backoff.
//!
//! Every change to a watcher's map is also queued as a [`Change`]; the publishing loop keeps
//! one persistent [`Snapshot`] and applies the queued changes to it, so one edit costs one
//! map update and an O(1) clone to publish, whatever the object count (docs/benchmarks.md,
//! "Scale"). A relist queues only what differs from the map it replaces, and keeps the
//! existing `Arc` of an unchanged object, so downstream comparisons skip it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use super::{ObjKey, Object, Snapshot, Undecodable};
use crate::metrics::Metrics;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Decode one untyped Gateway API object into its type; one that does not decode becomes
/// [`Object::Undecodable`] naming the object and the error.
fn decode<T: DeserializeOwned>(
    o: DynamicObject,
    kind: &'static str,
    wrap: fn(Arc<T>) -> Object,
) -> Option<Object> {
    let key = ObjKey::new(
        o.metadata.namespace.clone().unwrap_or_default(),
        o.metadata.name.clone().unwrap_or_default(),
    );
    let decoded = serde_json::to_value(&o).and_then(serde_json::from_value::<T>);
    Some(match decoded {
        Ok(t) => wrap(Arc::new(t)),
        Err(e) => {
            warn!(kind, object = %key, error = %e, "Gateway API object does not decode; its last good version (if any) stays in force");
            Object::Undecodable(Arc::new(Undecodable {
                kind,
                key,
                error: e.to_string(),
            }))
        }
    })
}

/// How to reach the API server and what to watch.
#[derive(Debug, Clone, Default)]
pub struct KubeSourceConf {
    /// Kubeconfig file; None: in-cluster service account, then `KUBECONFIG`/`~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; None: the current context.
    pub context: Option<String>,
    /// Namespaces to watch; empty: all namespaces.
    pub namespaces: Vec<String>,
    /// Which Ingresses are ours, so that only their auth Secrets are watched; None: the
    /// auth Secrets of every Ingress.
    pub claim: Option<crate::translate::TranslateConf>,
}

impl From<&crate::config::SourceConf> for KubeSourceConf {
    fn from(s: &crate::config::SourceConf) -> Self {
        KubeSourceConf {
            kubeconfig: s.kubeconfig.clone(),
            context: s.context.clone(),
            namespaces: s.namespaces.clone(),
            claim: None,
        }
    }
}

/// Build a client from the configuration.
pub async fn client(conf: &KubeSourceConf) -> Result<Client, String> {
    let config = if conf.kubeconfig.is_none() && conf.context.is_none() {
        kube::Config::infer().await.map_err(|e| {
            format!("no Kubernetes configuration found (in-cluster or kubeconfig): {e}")
        })?
    } else {
        let kc = match &conf.kubeconfig {
            Some(p) => {
                Kubeconfig::read_from(p).map_err(|e| format!("kubeconfig {}: {e}", p.display()))?
            }
            None => Kubeconfig::read().map_err(|e| format!("kubeconfig: {e}"))?,
        };
        let opts = KubeConfigOptions {
            context: conf.context.clone(),
            ..Default::default()
        };
        kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(|e| format!("kubeconfig: {e}"))?
    };
    Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))
}

/// A change to a watcher's map, for the publishing loop's snapshot.
enum Change {
    /// Add or replace (by kind, namespace and name).
    Put(Object),
    /// Remove the object of this kind, namespace and name.
    Drop(Object),
}

/// The object map of one watcher.
#[derive(Default)]
struct WatcherState {
    name: String,
    objects: BTreeMap<(String, String), Object>,
    /// Changes to `objects` and `broken` not yet applied to the published snapshot.
    pending: Vec<Change>,
    /// Objects that did not decode (their last good version, if any, stays in `objects`).
    broken: BTreeMap<(String, String), Object>,
    /// Objects of a relist in progress, and the undecodable ones among them.
    relist: Option<BTreeMap<(String, String), Object>>,
    relist_broken: BTreeMap<(String, String), Object>,
    /// Told once that the kind is not served (404: CRD not installed) or not permitted.
    absent: bool,
    /// A watch the gateway can run without (Gateway API kinds, Namespaces): a 404 or 403 on
    /// its first list counts as synced with no objects.
    optional: bool,
    synced: bool,
    /// An auth Secret watch started at this time: it holds snapshots back for at most
    /// [`AUTH_WATCH_WAIT`] (a Secret that cannot be listed must not stop every update;
    /// its routes answer 503 meanwhile).
    optional_since: Option<Instant>,
}

/// How long a new auth Secret watch may hold snapshots back.
const AUTH_WATCH_WAIT: Duration = Duration::from_secs(5);

impl WatcherState {
    fn ready(&self) -> bool {
        self.synced
            || self
                .optional_since
                .is_some_and(|t| t.elapsed() >= AUTH_WATCH_WAIT)
    }
}

type Shared = Arc<(Mutex<Vec<WatcherState>>, Notify)>;

fn key_of<K: Resource>(o: &K) -> (String, String) {
    let m = o.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// Replace a watcher's map with a relisted one: queue a change for each object added,
/// removed or changed, and keep the existing `Arc` of each unchanged object.
fn replace_map(
    old: &mut BTreeMap<(String, String), Object>,
    mut new: BTreeMap<(String, String), Object>,
    pending: &mut Vec<Change>,
) -> BTreeMap<(String, String), Object> {
    let mut old = std::mem::take(old);
    for (k, obj) in new.iter_mut() {
        match old.remove(k) {
            Some(prev) if prev == *obj => *obj = prev,
            // Put replaces by kind, namespace and name: a changed object needs no Drop.
            _ => pending.push(Change::Put(obj.clone())),
        }
    }
    pending.extend(old.into_values().map(Change::Drop));
    new
}

async fn run_watcher<K>(
    api: Api<K>,
    config: watcher::Config,
    slot: usize,
    shared: Shared,
    metrics: Arc<Metrics>,
    wrap: fn(K) -> Option<Object>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut last_error: Option<(String, Instant)> = None;
    while let Some(event) = stream.next().await {
        let (lock, notify) = &*shared;
        let mut states = lock.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut states[slot];
        let changed = match event {
            Ok(Event::Init) => {
                state.relist = Some(BTreeMap::new());
                state.relist_broken.clear();
                false
            }
            Ok(Event::InitApply(o)) => {
                let k = key_of(&o);
                match wrap(o) {
                    Some(obj @ Object::Undecodable(_)) => {
                        // Keep the last good version through the relist.
                        if let (Some(prev), Some(buf)) =
                            (state.objects.get(&k), state.relist.as_mut())
                        {
                            buf.insert(k.clone(), prev.clone());
                        }
                        state.relist_broken.insert(k, obj);
                    }
                    Some(obj) => {
                        if let Some(buf) = state.relist.as_mut() {
                            buf.insert(k, obj);
                        }
                    }
                    None => {}
                }
                false
            }
            Ok(Event::InitDone) => {
                if let Some(buf) = state.relist.take() {
                    let broken = std::mem::take(&mut state.relist_broken);
                    state.objects = replace_map(&mut state.objects, buf, &mut state.pending);
                    state.broken = replace_map(&mut state.broken, broken, &mut state.pending);
                }
                state.absent = false;
                if !state.synced {
                    info!(watch = %state.name, objects = state.objects.len(), "initial list complete");
                }
                state.synced = true;
                if last_error.take().is_some() {
                    info!(watch = %state.name, "watch recovered");
                }
                true
            }
            Ok(Event::Apply(o)) => {
                let k = key_of(&o);
                let pending = &mut state.pending;
                match wrap(o) {
                    Some(obj @ Object::Undecodable(_)) => {
                        pending.push(Change::Put(obj.clone()));
                        state.broken.insert(k, obj);
                    }
                    Some(obj) => {
                        pending.extend(state.broken.remove(&k).map(Change::Drop));
                        pending.push(Change::Put(obj.clone()));
                        state.objects.insert(k, obj);
                    }
                    None => {
                        pending.extend(state.broken.remove(&k).map(Change::Drop));
                        pending.extend(state.objects.remove(&k).map(Change::Drop));
                    }
                };
                true
            }
            Ok(Event::Delete(o)) => {
                let k = key_of(&o);
                let before = state.pending.len();
                let pending = &mut state.pending;
                pending.extend(state.broken.remove(&k).map(Change::Drop));
                pending.extend(state.objects.remove(&k).map(Change::Drop));
                state.pending.len() > before
            }
            Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))
                if state.optional && matches!(s.code, 403 | 404) && !state.synced =>
            {
                // The kind is not served (its CRD is not installed) or the RBAC rules do not
                // cover it: nothing to watch yet, and the rest of the gateway goes on.
                if !state.absent {
                    warn!(watch = %state.name, code = s.code, "cannot list (CRD not installed or not permitted by RBAC); treated as empty, retrying");
                }
                state.absent = true;
                state.synced = true;
                true
            }
            Err(e) => {
                metrics.source_errors.inc();
                let msg = e.to_string();
                // Say it when it changes, and every 30 s while it lasts.
                let repeat = last_error
                    .as_ref()
                    .is_some_and(|(m, t)| *m == msg && t.elapsed() < Duration::from_secs(30));
                if !repeat {
                    warn!(watch = %state.name, error = %msg, "watch failed; serving the last good state and retrying");
                    last_error = Some((msg, Instant::now()));
                }
                false
            }
        };
        drop(states);
        if changed {
            notify.notify_one();
        }
    }
}

/// The auth Secrets our Ingresses name (`auth-secret` and `auth-tls-secret`, under either prefix), in their own
/// namespace and within the watched namespaces (a cross-namespace reference is refused by
/// translation, so it is not watched).
fn auth_secret_refs(
    snap: &Snapshot,
    namespaces: &[String],
    claim: Option<&crate::translate::TranslateConf>,
) -> std::collections::BTreeSet<(String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for (key, ing) in &snap.ingresses {
        if claim.is_some_and(|c| !crate::translate::is_ours(snap, c, ing)) {
            continue;
        }
        let Some(ann) = ing.metadata.annotations.as_ref() else {
            continue;
        };
        for short in ["auth-secret", "auth-tls-secret"] {
            let value = crate::translate::annotations::PREFIXES
                .iter()
                .rev()
                .find_map(|p| ann.get(&format!("{p}{short}")));
            let Some(Ok((ns, name))) =
                value.map(|v| crate::translate::annotations::auth::secret_ref(v.trim()))
            else {
                continue;
            };
            let ns = ns.unwrap_or_else(|| key.namespace.clone());
            if ns != key.namespace || (!namespaces.is_empty() && !namespaces.contains(&ns)) {
                continue;
            }
            out.insert((ns, name));
        }
    }
    out
}

/// Register a watcher's object map and start the watcher that fills it.
fn spawn_watcher<K>(
    shared: &Shared,
    metrics: &Arc<Metrics>,
    name: String,
    api: Api<K>,
    config: watcher::Config,
    wrap: fn(K) -> Option<Object>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    spawn_watcher_opt(shared, metrics, name, api, config, wrap, false)
}

/// [`spawn_watcher`] for a watch the gateway can run without (see `WatcherState::optional`).
fn spawn_optional<K>(
    shared: &Shared,
    metrics: &Arc<Metrics>,
    name: String,
    api: Api<K>,
    config: watcher::Config,
    wrap: fn(K) -> Option<Object>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    spawn_watcher_opt(shared, metrics, name, api, config, wrap, true)
}

fn spawn_watcher_opt<K>(
    shared: &Shared,
    metrics: &Arc<Metrics>,
    name: String,
    api: Api<K>,
    config: watcher::Config,
    wrap: fn(K) -> Option<Object>,
    optional: bool,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let slot = {
        let mut states = shared.0.lock().unwrap_or_else(|e| e.into_inner());
        states.push(WatcherState {
            name,
            optional,
            ..Default::default()
        });
        states.len() - 1
    };
    tokio::spawn(run_watcher(
        api,
        config,
        slot,
        shared.clone(),
        metrics.clone(),
        wrap,
    ))
}

/// Run the watchers and send a snapshot whenever the objects change, once every watcher has
/// completed its first list.
pub async fn run(
    client: Client,
    conf: KubeSourceConf,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    metrics: Arc<Metrics>,
) {
    let shared: Shared = Arc::new((Mutex::new(Vec::new()), Notify::new()));
    let mut tasks = Vec::new();
    let scopes: Vec<Option<String>> = if conf.namespaces.is_empty() {
        vec![None]
    } else {
        // One watch per namespace, however often it is listed: two watchers never hold
        // the same object (their changes are applied to one snapshot by name).
        let unique: std::collections::BTreeSet<&String> = conf.namespaces.iter().collect();
        unique.into_iter().cloned().map(Some).collect()
    };
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let cfg = watcher::Config::default;
    for ns in &scopes {
        let scope = ns.as_deref().unwrap_or("all namespaces");
        tasks.push(spawn_watcher::<Ingress>(
            &shared,
            &metrics,
            format!("ingresses in {scope}"),
            api(&client, ns),
            cfg(),
            |o| Some(Object::Ingress(Arc::new(o))),
        ));
        tasks.push(spawn_watcher::<Service>(
            &shared,
            &metrics,
            format!("services in {scope}"),
            api(&client, ns),
            cfg(),
            |o| Some(Object::Service(Arc::new(o))),
        ));
        tasks.push(spawn_watcher::<EndpointSlice>(
            &shared,
            &metrics,
            format!("endpointslices in {scope}"),
            api(&client, ns),
            cfg(),
            |o| Some(Object::EndpointSlice(Arc::new(o))),
        ));
        tasks.push(spawn_watcher::<Secret>(
            &shared,
            &metrics,
            format!("tls secrets in {scope}"),
            api(&client, ns),
            cfg().fields("type=kubernetes.io/tls"),
            |o| {
                (o.type_.as_deref() == Some("kubernetes.io/tls"))
                    .then(|| Object::Secret(Arc::new(o)))
            },
        ));
    }
    for ns in &scopes {
        let scope = ns.as_deref().unwrap_or("all namespaces");
        let gw = |kind: &str, version: &str| {
            let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(GATEWAY_GROUP, version, kind));
            match ns {
                Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
                None => Api::<DynamicObject>::all_with(client.clone(), &ar),
            }
        };
        tasks.push(spawn_optional(
            &shared,
            &metrics,
            format!("gateways in {scope}"),
            gw("Gateway", "v1"),
            cfg(),
            |o| decode(o, "Gateway", Object::Gateway),
        ));
        tasks.push(spawn_optional(
            &shared,
            &metrics,
            format!("httproutes in {scope}"),
            gw("HTTPRoute", "v1"),
            cfg(),
            |o| decode(o, "HTTPRoute", Object::HttpRoute),
        ));
        tasks.push(spawn_optional(
            &shared,
            &metrics,
            format!("grpcroutes in {scope}"),
            gw("GRPCRoute", "v1"),
            cfg(),
            |o| decode(o, "GRPCRoute", Object::GrpcRoute),
        ));
        // v1beta1: every Gateway API release since 0.6 serves it (v1 only since 1.5).
        tasks.push(spawn_optional(
            &shared,
            &metrics,
            format!("referencegrants in {scope}"),
            gw("ReferenceGrant", "v1beta1"),
            cfg(),
            |o| decode(o, "ReferenceGrant", Object::ReferenceGrant),
        ));
    }
    let classes =
        ApiResource::from_gvk(&GroupVersionKind::gvk(GATEWAY_GROUP, "v1", "GatewayClass"));
    tasks.push(spawn_optional(
        &shared,
        &metrics,
        "gatewayclasses".into(),
        Api::<DynamicObject>::all_with(client.clone(), &classes),
        cfg(),
        |o| decode(o, "GatewayClass", Object::GatewayClass),
    ));
    tasks.push(spawn_optional::<k8s_openapi::api::core::v1::Namespace>(
        &shared,
        &metrics,
        "namespaces".into(),
        Api::all(client.clone()),
        cfg(),
        |o| Some(Object::Namespace(Arc::new(o))),
    ));
    tasks.push(spawn_watcher::<IngressClass>(
        &shared,
        &metrics,
        "ingressclasses".into(),
        Api::all(client.clone()),
        cfg(),
        |o| Some(Object::IngressClass(Arc::new(o))),
    ));

    struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            for t in &self.0 {
                t.abort();
            }
        }
    }
    let _tasks = AbortOnDrop(tasks);
    /// Auth Secret watches: (namespace, name) -> (state slot, task).
    struct AuthWatches(BTreeMap<(String, String), (usize, tokio::task::JoinHandle<()>)>);
    impl Drop for AuthWatches {
        fn drop(&mut self) {
            for (_, t) in self.0.values() {
                t.abort();
            }
        }
    }
    let mut auth = AuthWatches(BTreeMap::new());

    let mut announced = false;
    // The published state, changed in place by the watchers' queued changes.
    let mut snap = Snapshot::default();
    // The auth Secrets wanted, and the Ingresses and classes they were read from.
    let mut wanted = std::collections::BTreeSet::new();
    let mut wanted_from = None;
    loop {
        shared.1.notified().await;
        let started = Instant::now();
        {
            let mut states = shared.0.lock().unwrap_or_else(|e| e.into_inner());
            if !states.iter().all(WatcherState::ready) {
                continue;
            }
            for s in states.iter_mut() {
                apply_changes(&mut snap, s.pending.drain(..));
            }
        }
        // Watch exactly the auth Secrets the Ingresses name. A new watch holds this
        // snapshot back until its first list is in (its InitDone wakes this loop), so a
        // route is not published without its users.
        let from = (snap.ingresses.clone(), snap.ingress_classes.clone());
        let unchanged =
            wanted_from
                .as_ref()
                .is_some_and(|(i, c): &(super::Map<_, _>, super::Map<_, _>)| {
                    i.ptr_eq(&from.0) && c.ptr_eq(&from.1)
                });
        if !unchanged {
            wanted = auth_secret_refs(&snap, &conf.namespaces, conf.claim.as_ref());
            wanted_from = Some(from);
        }
        let mut started_new = false;
        for (ns, name) in &wanted {
            if auth.0.contains_key(&(ns.clone(), name.clone())) {
                continue;
            }
            let task = spawn_watcher::<Secret>(
                &shared,
                &metrics,
                format!("auth secret {ns}/{name}"),
                Api::namespaced(client.clone(), ns),
                cfg().fields(&format!("metadata.name={name}")),
                |o| {
                    (o.type_.as_deref() != Some("kubernetes.io/tls")
                        && super::kept_secret_type(o.type_.as_deref()))
                    .then(|| Object::Secret(Arc::new(o)))
                },
            );
            let slot = {
                let mut states = shared.0.lock().unwrap_or_else(|e| e.into_inner());
                let slot = states.len() - 1;
                states[slot].optional_since = Some(Instant::now());
                slot
            };
            auth.0.insert((ns.clone(), name.clone()), (slot, task));
            started_new = true;
        }
        if started_new {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(AUTH_WATCH_WAIT).await;
                shared.1.notify_one();
            });
        }
        auth.0.retain(|k, (slot, task)| {
            if wanted.contains(k) {
                return true;
            }
            task.abort();
            let mut states = shared.0.lock().unwrap_or_else(|e| e.into_inner());
            let retired = std::mem::replace(
                &mut states[*slot],
                WatcherState {
                    name: format!("retired watch of {}/{}", k.0, k.1),
                    synced: true,
                    ..Default::default()
                },
            );
            // Its Secrets leave the snapshot now (what it queued last goes in first).
            apply_changes(&mut snap, retired.pending);
            let held = retired
                .objects
                .into_values()
                .chain(retired.broken.into_values());
            apply_changes(&mut snap, held.map(Change::Drop));
            false
        });
        if started_new {
            continue;
        }
        if !announced {
            info!("every watch has completed its initial list");
            announced = true;
        }
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "snapshot built"
        );
        // Watchers only notify on real changes: no deep comparison needed here. The clone
        // shares every map with `snap` (persistent maps): O(1).
        tx.send_replace(Some(Arc::new(snap.clone())));
    }
}

/// Apply queued watcher changes to the published snapshot.
fn apply_changes(snap: &mut Snapshot, changes: impl IntoIterator<Item = Change>) {
    for c in changes {
        match c {
            Change::Put(obj) => snap.upsert(obj),
            Change::Drop(obj) => snap.remove(&obj),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, port: i32) -> Object {
        let yaml = format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: ns\nspec:\n  ports:\n  - port: {port}\n");
        super::super::files::parse_manifests(&yaml, "t")
            .unwrap()
            .objects
            .remove(0)
    }

    fn key(name: &str) -> (String, String) {
        ("ns".into(), name.into())
    }

    fn describe(c: &Change) -> String {
        match c {
            Change::Put(o) => format!("put {}", o.describe()),
            Change::Drop(o) => format!("drop {}", o.describe()),
        }
    }

    #[test]
    fn a_relist_queues_only_what_differs_and_keeps_unchanged_objects() {
        let mut old = BTreeMap::from([
            (key("same"), svc("same", 80)),
            (key("edited"), svc("edited", 80)),
            (key("gone"), svc("gone", 80)),
        ]);
        let kept = old[&key("same")].clone();
        let new = BTreeMap::from([
            (key("same"), svc("same", 80)),
            (key("edited"), svc("edited", 81)),
            (key("added"), svc("added", 80)),
        ]);
        let mut pending = Vec::new();
        let map = replace_map(&mut old, new, &mut pending);
        let mut changes: Vec<String> = pending.iter().map(describe).collect();
        changes.sort();
        assert_eq!(
            changes,
            [
                "drop Service ns/gone",
                "put Service ns/added",
                "put Service ns/edited"
            ]
        );
        let (Object::Service(a), Object::Service(b)) = (&map[&key("same")], &kept) else {
            panic!("not a Service");
        };
        assert!(Arc::ptr_eq(a, b), "an unchanged object keeps its Arc");
        let mut snap = Snapshot::default();
        apply_changes(&mut snap, [Change::Put(svc("gone", 80))]);
        apply_changes(&mut snap, pending);
        let names: Vec<_> = snap.services.keys().map(|k| k.name.clone()).collect();
        assert_eq!(names, ["added", "edited"]);
    }
}
