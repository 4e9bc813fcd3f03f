//! Writing back to the cluster (in-cluster source only): leader election through a
//! coordination.k8s.io Lease, Ingress `status.loadBalancer.ingress`, and Kubernetes Events for
//! translation diagnostics. Every replica serves traffic; only the lease holder writes.
//!
//! Writes are idempotent: status is compared with what the Ingress already says and written
//! only when it differs; an Event is created when a diagnostic appears, not again while it
//! stays (a steady state writes nothing).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::{LeaderElectionConf, StatusConf};
use crate::metrics::Metrics;
use crate::proxy::new_request_id;
use crate::source::{ObjKey, Snapshot};
use crate::translate::{DiagKind, Diagnostic};

pub mod gateway;

/// What the controller tells the writer after each generation.
#[derive(Debug, Clone)]
pub struct Report {
    pub snapshot: Arc<Snapshot>,
    /// Ingresses of our class.
    pub ours: Arc<Vec<ObjKey>>,
    pub diagnostics: Vec<Diagnostic>,
    /// Gateway API status as translation computed it, and our controllerName.
    pub gateway: Arc<crate::translate::gateway::Report>,
    pub gateway_controller: String,
}

/// This replica's identity: `$POD_NAME`, else hostname-pid.
pub fn default_identity() -> String {
    if let Ok(p) = std::env::var("POD_NAME") {
        if !p.is_empty() {
            return p;
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "pingress".into());
    format!("{host}-{}", std::process::id())
}

/// Lease-based leader election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    pub fn new(client: Client, conf: &LeaderElectionConf, identity: String) -> Elector {
        let ns = conf
            .namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "default".into());
        Elector {
            api: Api::namespaced(client, &ns),
            name: conf.lease_name.clone(),
            identity,
            duration: Duration::from_secs(u64::from(conf.lease_duration_seconds)),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Acquire or renew the lease; true while we hold it.
    pub async fn tick(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        let holder = current.holder_identity.as_deref().unwrap_or("");
        let ours = holder == self.identity;
        let expired = match (&current.renew_time, current.lease_duration_seconds) {
            (Some(MicroTime(t)), Some(d)) => {
                now.as_millisecond() - t.as_millisecond() > i64::from(d) * 1000
            }
            _ => true,
        };
        if !ours && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours { current.acquire_time } else { None };
        lease.spec = Some(spec(transitions, acquired));
        // The replace carries the resourceVersion we read: a concurrent writer gets a 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if !ours {
                    info!(identity = %self.identity, lease = %self.name, "became leader");
                }
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// One entry of `status.loadBalancer.ingress`: (ip, hostname).
type LbEntry = (Option<String>, Option<String>);

fn lb_entry(addr: &str) -> LbEntry {
    if addr.parse::<std::net::IpAddr>().is_ok() {
        (Some(addr.to_string()), None)
    } else {
        (None, Some(addr.to_string()))
    }
}

fn current_status(ing: &Ingress) -> Vec<LbEntry> {
    let mut v: Vec<LbEntry> = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|list| {
            list.iter()
                .map(|e| (e.ip.clone(), e.hostname.clone()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The status each Ingress should have: ours get `addresses`; others that still carry exactly
/// our addresses (they left our class) get an empty list. Returns only the ones to write.
pub fn status_changes(
    snap: &Snapshot,
    ours: &[ObjKey],
    addresses: &[String],
) -> Vec<(ObjKey, Vec<LbEntry>)> {
    let mut desired: Vec<LbEntry> = addresses.iter().map(|a| lb_entry(a)).collect();
    desired.sort();
    desired.dedup();
    let ours: HashSet<&ObjKey> = ours.iter().collect();
    let mut out = Vec::new();
    for (key, ing) in &snap.ingresses {
        let current = current_status(ing);
        if ours.contains(key) {
            if current != desired {
                out.push((key.clone(), desired.clone()));
            }
        } else if !desired.is_empty() && current == desired {
            out.push((key.clone(), Vec::new()));
        }
    }
    out
}

fn camel(kind: DiagKind) -> String {
    kind.as_str()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The status and Event writer.
pub struct Writer {
    client: Client,
    status: StatusConf,
    elector: Elector,
    metrics: Arc<Metrics>,
    /// Diagnostics already turned into Events while they last.
    emitted: HashSet<(ObjKey, DiagKind, String)>,
    /// Status we wrote, by Ingress and the resourceVersion it had then: not written again
    /// until the watch shows a newer version.
    written: HashMap<ObjKey, (Option<String>, Vec<LbEntry>)>,
    /// Gateway API status we wrote, by kind and object, with the resourceVersion it had.
    gateway_written: HashMap<(&'static str, ObjKey), (Option<String>, serde_json::Value)>,
    warned_no_address: bool,
}

impl Writer {
    pub fn new(
        client: Client,
        status: StatusConf,
        election: &LeaderElectionConf,
        metrics: Arc<Metrics>,
    ) -> Writer {
        let identity = election.identity.clone().unwrap_or_else(default_identity);
        Writer {
            elector: Elector::new(client.clone(), election, identity),
            client,
            status,
            metrics,
            emitted: HashSet::new(),
            written: HashMap::new(),
            gateway_written: HashMap::new(),
            warned_no_address: false,
        }
    }

    /// Run until the controller goes away: renew the lease every `interval`, and while
    /// leader, bring status and Events in line with the latest report.
    pub async fn run(mut self, mut rx: watch::Receiver<Option<Arc<Report>>>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = rx.changed() => if r.is_err() { return },
            }
            let leader = match self.elector.tick().await {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "leader election failed; not writing until it succeeds");
                    false
                }
            };
            let was = self.metrics.leader.get() == 1;
            self.metrics.leader.set(i64::from(leader));
            if was && !leader {
                info!(identity = %self.elector.identity(), "lost leadership");
            }
            if !leader {
                self.emitted.clear();
                self.written.clear();
                self.gateway_written.clear();
                continue;
            }
            let report = rx.borrow_and_update().clone();
            if let Some(report) = report {
                if self.status.enabled {
                    self.sync_status(&report).await;
                    self.sync_gateway_status(&report).await;
                }
                self.sync_events(&report).await;
            }
        }
    }

    /// Count one write to the Kubernetes API (`status` or `event`) and its result.
    fn count_write(&self, kind: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.metrics
            .api_writes
            .with_label_values(&[kind, result])
            .inc();
    }

    async fn addresses(&mut self) -> Vec<String> {
        let mut out = self.status.addresses.clone();
        if let Some(var) = &self.status.address_from_env {
            if let Ok(v) = std::env::var(var) {
                if !v.is_empty() {
                    out.push(v);
                }
            }
        }
        if let Some(svc) = &self.status.service {
            let (ns, name) = svc.split_once('/').unwrap_or(("default", svc));
            let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
            match api.get_opt(name).await {
                Ok(Some(s)) => {
                    let lb = s
                        .status
                        .and_then(|st| st.load_balancer)
                        .and_then(|lb| lb.ingress)
                        .unwrap_or_default();
                    for e in lb {
                        out.extend(e.ip.or(e.hostname));
                    }
                    if let Some(ips) = s.spec.and_then(|sp| sp.external_ips) {
                        out.extend(ips);
                    }
                }
                Ok(None) => warn!(service = %svc, "status.service not found"),
                Err(e) => warn!(service = %svc, error = %e, "cannot read status.service"),
            }
        }
        if out.is_empty() && !self.warned_no_address {
            warn!("no address to publish in Ingress status: set pingress.status.addresses, address_from_env or service");
            self.warned_no_address = true;
        }
        out
    }

    async fn sync_status(&mut self, report: &Report) {
        let addresses = self.addresses().await;
        if addresses.is_empty() {
            return;
        }
        for (key, entries) in status_changes(&report.snapshot, &report.ours, &addresses) {
            let rv = report
                .snapshot
                .ingresses
                .get(&key)
                .and_then(|i| i.metadata.resource_version.clone());
            if self.written.get(&key) == Some(&(rv.clone(), entries.clone())) {
                continue; // written already; the watch has not caught up yet
            }
            let list: Vec<serde_json::Value> = entries
                .iter()
                .map(|(ip, host)| match (ip, host) {
                    (Some(ip), _) => json!({"ip": ip}),
                    (_, Some(h)) => json!({"hostname": h}),
                    _ => json!({}),
                })
                .collect();
            let value = if list.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::Value::Array(list)
            };
            let patch = json!({"status": {"loadBalancer": {"ingress": value}}});
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), &key.namespace);
            match api
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    debug!(ingress = %key, "status written");
                    self.count_write("status", true);
                    self.written.insert(key, (rv, entries));
                }
                Err(e) => {
                    self.count_write("status", false);
                    warn!(ingress = %key, error = %e, "cannot write Ingress status");
                }
            }
        }
    }

    /// Bring the status of our GatewayClasses, Gateways and routes in line with the report.
    async fn sync_gateway_status(&mut self, report: &Report) {
        if report.gateway.classes.is_empty() {
            return;
        }
        let addresses = self.addresses().await;
        let now = Time(Timestamp::now());
        let changes = gateway::changes(
            &report.snapshot,
            &report.gateway,
            &report.gateway_controller,
            &addresses,
            &now,
        );
        for c in changes {
            let key = (c.kind, c.key.clone());
            if self.gateway_written.get(&key)
                == Some(&(c.resource_version.clone(), c.status.clone()))
            {
                continue; // written already; the watch has not caught up yet
            }
            let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                crate::translate::gateway::GROUP,
                c.version,
                c.kind,
            ));
            let api: Api<kube::api::DynamicObject> = if c.kind == "GatewayClass" {
                Api::all_with(self.client.clone(), &ar)
            } else {
                Api::namespaced_with(self.client.clone(), &c.key.namespace, &ar)
            };
            let patch = json!({ "status": c.status });
            match api
                .patch_status(&c.key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    debug!(kind = c.kind, object = %c.key, "Gateway API status written");
                    self.count_write("status", true);
                    self.gateway_written
                        .insert(key, (c.resource_version, c.status));
                }
                Err(e) => {
                    self.count_write("status", false);
                    warn!(kind = c.kind, object = %c.key, error = %e, "cannot write Gateway API status");
                }
            }
        }
    }

    async fn sync_events(&mut self, report: &Report) {
        let mut now = HashSet::new();
        for d in &report.diagnostics {
            let Some(key) = &d.ingress else { continue };
            let id = (key.clone(), d.kind, d.message.clone());
            now.insert(id.clone());
            if self.emitted.contains(&id) {
                continue;
            }
            let uid = report
                .snapshot
                .ingresses
                .get(key)
                .and_then(|i| i.metadata.uid.clone());
            let ts = Timestamp::now();
            let event = Event {
                metadata: ObjectMeta {
                    name: Some(format!("{}.{}", key.name, &new_request_id()[..16])),
                    namespace: Some(key.namespace.clone()),
                    ..Default::default()
                },
                involved_object: ObjectReference {
                    api_version: Some("networking.k8s.io/v1".into()),
                    kind: Some("Ingress".into()),
                    name: Some(key.name.clone()),
                    namespace: Some(key.namespace.clone()),
                    uid,
                    ..Default::default()
                },
                reason: Some(camel(d.kind)),
                message: Some(d.message.clone()),
                type_: Some("Warning".into()),
                count: Some(1),
                first_timestamp: Some(Time(ts)),
                last_timestamp: Some(Time(ts)),
                source: Some(EventSource {
                    component: Some("pingress".into()),
                    host: None,
                }),
                reporting_component: Some("pingress".into()),
                reporting_instance: Some(self.elector.identity().to_string()),
                ..Default::default()
            };
            let api: Api<Event> = Api::namespaced(self.client.clone(), &key.namespace);
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {
                    self.count_write("event", true);
                    self.emitted.insert(id);
                }
                Err(e) => {
                    self.count_write("event", false);
                    warn!(ingress = %key, error = %e, "cannot create Event");
                }
            }
        }
        // Forget resolved diagnostics, so a recurrence is reported again.
        self.emitted.retain(|id| now.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::files::parse_manifests;

    fn snap(yaml: &str) -> Snapshot {
        let mut s = Snapshot::default();
        for o in parse_manifests(yaml, "t").unwrap().objects {
            s.insert(o);
        }
        s
    }

    const INGS: &str = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: a, namespace: n}\nspec: {}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: b, namespace: n}\nspec: {}\nstatus:\n  loadBalancer:\n    ingress: [{ip: 10.0.0.1}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: c, namespace: n}\nspec: {}\nstatus:\n  loadBalancer:\n    ingress: [{ip: 10.9.9.9}]\n";

    #[test]
    fn status_is_written_for_ours_and_cleared_for_ingresses_that_left() {
        let s = snap(INGS);
        let a = ObjKey::new("n", "a");
        let addrs = vec!["10.0.0.1".to_string()];
        let changes = status_changes(&s, std::slice::from_ref(&a), &addrs);
        // a: ours, gets the address; b: not ours but carries our address: cleared;
        // c: someone else's address: untouched.
        assert_eq!(
            changes,
            vec![
                (a.clone(), vec![(Some("10.0.0.1".into()), None)]),
                (ObjKey::new("n", "b"), vec![])
            ]
        );
        let b = ObjKey::new("n", "b");
        assert!(status_changes(&s, &[b], &addrs).is_empty(), "already right");
    }

    #[test]
    fn hostnames_and_ips_are_told_apart() {
        assert_eq!(
            lb_entry("lb.example.com"),
            (None, Some("lb.example.com".into()))
        );
        assert_eq!(lb_entry("2001:db8::1"), (Some("2001:db8::1".into()), None));
        assert_eq!(camel(DiagKind::ServiceNotFound), "ServiceNotFound");
    }
}
