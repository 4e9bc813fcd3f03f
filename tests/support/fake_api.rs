//! An in-process fake Kubernetes API server speaking the HTTP protocol the real kube client
//! uses: JSON lists with a resourceVersion, `?watch=true` event streams (ADDED, MODIFIED,
//! DELETED, BOOKMARK), an in-stream 410 Expired for a compacted resourceVersion, create /
//! replace (with resourceVersion conflicts) / merge-patch (including the status subresource)
//! / delete, for Ingresses, IngressClasses, Services, EndpointSlices, Secrets, Events,
//! Leases, Namespaces and the Gateway API kinds (which [`FakeApi::hide`] can make answer 404,
//! as a cluster without their CRDs does). It can be stopped (listener closed, every connection dropped) and started again
//! on the same port, and it records every request with its bearer token.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

type Body = BoxBody<Bytes, Infallible>;

/// Where a resource lives: (group/version prefix, plural, kind, namespaced).
const RESOURCES: &[(&str, &str, &str, bool)] = &[
    ("apis/networking.k8s.io/v1", "ingresses", "Ingress", true),
    (
        "apis/networking.k8s.io/v1",
        "ingressclasses",
        "IngressClass",
        false,
    ),
    ("api/v1", "services", "Service", true),
    (
        "apis/discovery.k8s.io/v1",
        "endpointslices",
        "EndpointSlice",
        true,
    ),
    ("api/v1", "secrets", "Secret", true),
    ("api/v1", "events", "Event", true),
    ("apis/coordination.k8s.io/v1", "leases", "Lease", true),
    ("api/v1", "namespaces", "Namespace", false),
    (
        "apis/gateway.networking.k8s.io/v1",
        "gatewayclasses",
        "GatewayClass",
        false,
    ),
    (
        "apis/gateway.networking.k8s.io/v1",
        "gateways",
        "Gateway",
        true,
    ),
    (
        "apis/gateway.networking.k8s.io/v1",
        "httproutes",
        "HTTPRoute",
        true,
    ),
    (
        "apis/gateway.networking.k8s.io/v1",
        "grpcroutes",
        "GRPCRoute",
        true,
    ),
    (
        "apis/gateway.networking.k8s.io/v1beta1",
        "referencegrants",
        "ReferenceGrant",
        true,
    ),
];

fn api_version(prefix: &str) -> &str {
    prefix
        .trim_start_matches("apis/")
        .trim_start_matches("api/")
}

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The query string as sent (percent-encoded).
    pub query: String,
    pub token: String,
}

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    plural: &'static str,
    kind: &'static str, // ADDED / MODIFIED / DELETED
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Watches asking for a resourceVersion below this get 410 Expired.
    min_rv: u64,
    objects: BTreeMap<(&'static str, String, String), Value>,
    history: Vec<Change>,
}

struct Inner {
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
    requests: Mutex<Vec<Recorded>>,
    /// Bumped to drop every open connection.
    epoch: watch::Sender<u64>,
    running: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Kinds answered 404 (not installed).
    hidden: Mutex<Vec<String>>,
}

/// The fake API server.
#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (changes, _) = broadcast::channel(65_536);
        let api = FakeApi {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    rv: 1,
                    ..Default::default()
                }),
                changes,
                requests: Mutex::new(Vec::new()),
                epoch: watch::channel(0).0,
                running: Mutex::new(None),
                hidden: Mutex::new(Vec::new()),
            }),
            addr,
        };
        api.serve(listener);
        api
    }

    fn serve(&self, listener: TcpListener) {
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let inner = inner.clone();
                let mut epoch = inner.epoch.subscribe();
                tokio::spawn(async move {
                    let svc_inner = inner.clone();
                    let svc = service_fn(move |req| handle(svc_inner.clone(), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        biased;
                        _ = epoch.changed() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        *self.inner.running.lock().unwrap() = Some(task);
    }

    /// Answer 404 for this kind from now on, as an API server without its CRD.
    pub fn hide(&self, kind: &str) {
        self.inner.hidden.lock().unwrap().push(kind.to_string());
    }

    /// Stop: close the listener and drop every connection (watches included).
    pub fn stop(&self) {
        if let Some(t) = self.inner.running.lock().unwrap().take() {
            t.abort();
        }
        self.inner.epoch.send_modify(|e| *e += 1);
    }

    /// Start again on the same port.
    pub async fn restart(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
    }

    /// Forget history up to now and drop all watches: a client resuming from any older
    /// resourceVersion gets 410 Expired and must relist.
    pub fn compact_and_drop_watches(&self) {
        {
            let mut st = self.inner.state.lock().unwrap();
            st.min_rv = st.rv + 1;
            st.history.clear();
        }
        self.inner.epoch.send_modify(|e| *e += 1);
    }

    pub fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: u\ncurrent-context: fake\n",
            self.addr
        )
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Create or replace objects from YAML (one or more documents).
    pub fn apply_yaml(&self, yaml: &str) {
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            if v.is_null() {
                continue;
            }
            self.apply(v);
        }
    }

    /// Create or replace one object.
    pub fn apply(&self, mut obj: Value) {
        let kind = obj["kind"].as_str().unwrap().to_string();
        let (_, plural, _, namespaced) = *RESOURCES.iter().find(|r| r.2 == kind).unwrap();
        if namespaced && obj["metadata"]["namespace"].is_null() {
            obj["metadata"]["namespace"] = json!("default");
        }
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let mut st = self.inner.state.lock().unwrap();
        let exists = st.objects.contains_key(&(plural, ns.clone(), name.clone()));
        let kind = if exists { "MODIFIED" } else { "ADDED" };
        commit(&mut st, &self.inner.changes, plural, ns, name, obj, kind);
    }

    pub fn delete(&self, kind: &str, ns: &str, name: &str) {
        let (_, plural, _, _) = *RESOURCES.iter().find(|r| r.2 == kind).unwrap();
        let mut st = self.inner.state.lock().unwrap();
        remove(&mut st, &self.inner.changes, plural, ns, name);
    }

    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let (_, plural, _, _) = *RESOURCES.iter().find(|r| r.2 == kind).unwrap();
        let st = self.inner.state.lock().unwrap();
        st.objects
            .get(&(plural, ns.to_string(), name.to_string()))
            .cloned()
    }

    pub fn list(&self, kind: &str) -> Vec<Value> {
        let (_, plural, _, _) = *RESOURCES.iter().find(|r| r.2 == kind).unwrap();
        let st = self.inner.state.lock().unwrap();
        st.objects
            .iter()
            .filter(|((p, _, _), _)| *p == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn commit(
    st: &mut State,
    changes: &broadcast::Sender<Change>,
    plural: &'static str,
    ns: String,
    name: String,
    mut obj: Value,
    kind: &'static str,
) -> Value {
    st.rv += 1;
    let rv = st.rv;
    let meta = &mut obj["metadata"];
    meta["resourceVersion"] = json!(rv.to_string());
    if meta["uid"].is_null() {
        meta["uid"] = json!(format!("uid-{plural}-{ns}-{name}"));
    }
    if meta["creationTimestamp"].is_null() {
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    st.objects.insert((plural, ns, name), obj.clone());
    let change = Change {
        rv,
        plural,
        kind,
        object: obj.clone(),
    };
    st.history.push(change.clone());
    let _ = changes.send(change);
    obj
}

fn remove(
    st: &mut State,
    changes: &broadcast::Sender<Change>,
    plural: &'static str,
    ns: &str,
    name: &str,
) -> Option<Value> {
    let mut obj = st
        .objects
        .remove(&(plural, ns.to_string(), name.to_string()))?;
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    let change = Change {
        rv: st.rv,
        plural,
        kind: "DELETED",
        object: obj.clone(),
    };
    st.history.push(change.clone());
    let _ = changes.send(change);
    Some(obj)
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn full(status: u16, v: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

fn status_obj(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// Parsed request path.
struct Target {
    prefix: &'static str,
    plural: &'static str,
    kind: &'static str,
    ns: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let path = path.trim_start_matches('/');
    for (prefix, plural, kind, _) in RESOURCES {
        let Some(rest) = path.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let (ns, rest) = if parts.first() == Some(&"namespaces") && parts.len() >= 3 {
            (Some(parts[1].to_string()), &parts[2..])
        } else {
            (None, &parts[..])
        };
        if rest.first() != Some(plural) {
            continue;
        }
        return Some(Target {
            prefix,
            plural,
            kind,
            ns,
            name: rest.get(1).map(|s| s.to_string()),
            status: rest.get(2) == Some(&"status"),
        });
    }
    None
}

fn query_map(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v
                .replace("%3D", "=")
                .replace("%2F", "/")
                .replace("%2C", ",");
            (k.to_string(), v)
        })
        .collect()
}

fn matches(obj: &Value, ns: &Option<String>, field: Option<&String>) -> bool {
    if let Some(ns) = ns {
        if obj["metadata"]["namespace"].as_str() != Some(ns) {
            return false;
        }
    }
    if let Some(sel) = field {
        for term in sel.split(',') {
            if let Some((k, v)) = term.split_once('=') {
                let actual = match k {
                    "type" => obj["type"].as_str(),
                    "metadata.name" => obj["metadata"]["name"].as_str(),
                    "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
                    _ => None,
                };
                if actual != Some(v) {
                    return false;
                }
            }
        }
    }
    true
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = query_map(req.uri().query().unwrap_or(""));
    inner.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: req.uri().query().unwrap_or("").to_string(),
        token,
    });
    if path == "/version" {
        let v = json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"});
        return Ok(full(200, v));
    }
    let Some(t) = parse_path(&path) else {
        return Ok(full(404, status_obj(404, "NotFound", "unknown path")));
    };
    if inner.hidden.lock().unwrap().iter().any(|k| k == t.kind) {
        return Ok(full(
            404,
            status_obj(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let ns = t.ns.clone().unwrap_or_default();
    let resp = match (method.as_str(), &t.name) {
        ("GET", None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch_stream(inner, t, query)
        }
        ("GET", None) => {
            let st = inner.state.lock().unwrap();
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|((p, _, _), v)| {
                    *p == t.plural && matches(v, &t.ns, query.get("fieldSelector"))
                })
                .map(|(_, v)| v.clone())
                .collect();
            full(
                200,
                json!({"kind": format!("{}List", t.kind), "apiVersion": api_version(t.prefix),
                       "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            )
        }
        ("GET", Some(name)) => {
            let st = inner.state.lock().unwrap();
            match st.objects.get(&(t.plural, ns, name.clone())) {
                Some(v) => full(200, v.clone()),
                None => full(404, status_obj(404, "NotFound", "not found")),
            }
        }
        ("POST", None) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return Ok(full(400, status_obj(400, "BadRequest", "bad json")));
            };
            if t.ns.is_some() {
                obj["metadata"]["namespace"] = json!(ns);
            }
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            let mut st = inner.state.lock().unwrap();
            if st
                .objects
                .contains_key(&(t.plural, ns.clone(), name.clone()))
            {
                full(409, status_obj(409, "AlreadyExists", "already exists"))
            } else {
                let v = commit(&mut st, &inner.changes, t.plural, ns, name, obj, "ADDED");
                full(201, v)
            }
        }
        ("PUT", Some(name)) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return Ok(full(400, status_obj(400, "BadRequest", "bad json")));
            };
            let mut st = inner.state.lock().unwrap();
            let key = (t.plural, ns.clone(), name.clone());
            match st.objects.get(&key) {
                None => full(404, status_obj(404, "NotFound", "not found")),
                Some(cur) => {
                    let sent = obj["metadata"]["resourceVersion"].as_str();
                    if sent.is_some() && sent != cur["metadata"]["resourceVersion"].as_str() {
                        full(
                            409,
                            status_obj(409, "Conflict", "the object has been modified"),
                        )
                    } else {
                        if t.ns.is_some() {
                            obj["metadata"]["namespace"] = json!(ns);
                        }
                        obj["metadata"]["uid"] = cur["metadata"]["uid"].clone();
                        let v = commit(
                            &mut st,
                            &inner.changes,
                            t.plural,
                            ns,
                            name.clone(),
                            obj,
                            "MODIFIED",
                        );
                        full(200, v)
                    }
                }
            }
        }
        ("PATCH", Some(name)) => {
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return Ok(full(400, status_obj(400, "BadRequest", "bad json")));
            };
            let mut st = inner.state.lock().unwrap();
            let key = (t.plural, ns.clone(), name.clone());
            match st.objects.get(&key).cloned() {
                None => full(404, status_obj(404, "NotFound", "not found")),
                Some(mut cur) => {
                    if t.status {
                        merge_patch(&mut cur["status"], &patch["status"]);
                    } else {
                        merge_patch(&mut cur, &patch);
                    }
                    let v = commit(
                        &mut st,
                        &inner.changes,
                        t.plural,
                        ns,
                        name.clone(),
                        cur,
                        "MODIFIED",
                    );
                    full(200, v)
                }
            }
        }
        ("DELETE", Some(name)) => {
            let mut st = inner.state.lock().unwrap();
            match remove(&mut st, &inner.changes, t.plural, &ns, name) {
                Some(v) => full(200, v),
                None => full(404, status_obj(404, "NotFound", "not found")),
            }
        }
        _ => full(405, status_obj(405, "MethodNotAllowed", "not supported")),
    };
    Ok(resp)
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch_stream(inner: Arc<Inner>, t: Target, query: BTreeMap<String, String>) -> Response<Body> {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290u64);
    let field = query.get("fieldSelector").cloned();
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let mut epoch = inner.epoch.subscribe();
    let mut live = inner.changes.subscribe();
    let (backlog, expired, current_rv) = {
        let st = inner.state.lock().unwrap();
        let expired = from != 0 && from < st.min_rv;
        let backlog: Vec<Change> = st
            .history
            .iter()
            .filter(|c| c.rv > from && c.plural == t.plural)
            .cloned()
            .collect();
        (backlog, expired, st.rv)
    };
    let plural = t.plural;
    let ns = t.ns.clone();
    tokio::spawn(async move {
        if expired {
            let _ = tx
                .send(line(
                    "ERROR",
                    &status_obj(410, "Expired", "too old resource version"),
                ))
                .await;
            return;
        }
        let mut last = from;
        for c in backlog {
            if matches(&c.object, &ns, field.as_ref())
                && tx.send(line(c.kind, &c.object)).await.is_err()
            {
                return;
            }
            last = c.rv;
        }
        let _ = current_rv;
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut bookmark = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                _ = epoch.changed() => return,
                _ = &mut deadline => return,
                _ = bookmark.tick() => {
                    let rv = inner.state.lock().unwrap().rv;
                    let kind = match plural { "ingresses" => "Ingress", "services" => "Service",
                        "endpointslices" => "EndpointSlice", "secrets" => "Secret",
                        "ingressclasses" => "IngressClass", "leases" => "Lease", _ => "Event" };
                    let b = json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}});
                    if tx.send(line("BOOKMARK", &b)).await.is_err() { return; }
                }
                c = live.recv() => {
                    let Ok(c) = c else { return };
                    if c.plural != plural || c.rv <= last { continue; }
                    last = c.rv;
                    if matches(&c.object, &ns, field.as_ref())
                        && tx.send(line(c.kind, &c.object)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}
