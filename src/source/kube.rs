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

/// The object map of one watcher.
#[derive(Default)]
struct WatcherState {
    name: String,
    objects: BTreeMap<(String, String), Object>,
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
                    state.objects = buf;
                    state.broken = std::mem::take(&mut state.relist_broken);
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
                match wrap(o) {
                    Some(obj @ Object::Undecodable(_)) => {
                        state.broken.insert(k, obj);
                    }
                    Some(obj) => {
                        state.broken.remove(&k);
                        state.objects.insert(k, obj);
                    }
                    None => {
                        state.broken.remove(&k);
                        state.objects.remove(&k);
                    }
                };
                true
            }
            Ok(Event::Delete(o)) => {
                let k = key_of(&o);
                let was_broken = state.broken.remove(&k).is_some();
                state.objects.remove(&k).is_some() || was_broken
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
        conf.namespaces.iter().cloned().map(Some).collect()
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
    loop {
        shared.1.notified().await;
        let started = Instant::now();
        let snap = {
            let states = shared.0.lock().unwrap_or_else(|e| e.into_inner());
            if !states.iter().all(WatcherState::ready) {
                continue;
            }
            let mut snap = Snapshot::default();
            for s in states.iter() {
                for obj in s.objects.values().chain(s.broken.values()) {
                    snap.insert(obj.clone());
                }
            }
            snap
        };
        // Watch exactly the auth Secrets the Ingresses name. A new watch holds this
        // snapshot back until its first list is in (its InitDone wakes this loop), so a
        // route is not published without its users.
        let wanted = auth_secret_refs(&snap, &conf.namespaces, conf.claim.as_ref());
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
        let mut retired = false;
        auth.0.retain(|k, (slot, task)| {
            if wanted.contains(k) {
                return true;
            }
            task.abort();
            let mut states = shared.0.lock().unwrap_or_else(|e| e.into_inner());
            states[*slot] = WatcherState {
                name: format!("retired watch of {}/{}", k.0, k.1),
                synced: true,
                ..Default::default()
            };
            retired = true;
            false
        });
        if started_new {
            continue;
        }
        if retired {
            // Rebuild without the retired Secrets.
            shared.1.notify_one();
        }
        if !announced {
            info!("every watch has completed its initial list");
            announced = true;
        }
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "snapshot built"
        );
        // Watchers only notify on real changes: no deep comparison needed here.
        tx.send_replace(Some(Arc::new(snap)));
    }
}
