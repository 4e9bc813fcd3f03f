//! The controller: takes snapshots from a source, translates them, attaches live upstream
//! pools and publishes a new generation; or, when only EndpointSlices changed, just swaps the
//! endpoint sets of the affected pools. When only Ingresses changed, only the islands of
//! Ingresses they can affect are translated again and replace their host entries in a copy
//! of the published table ([`crate::translate::islands`]). Changes are debounced (see
//! [`Controller::run`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::generation::{Action, Generation, Route, Shared};
use crate::policy::limits::Registry as LimitRegistry;
use crate::source::Snapshot;
use crate::status::Report;
use crate::tls::Certs;
use crate::translate::islands::{table_uses, Islands, Partial};
use crate::translate::{
    translate_with, BackendSpec, Diagnostic, RouteSpec, TranslateConf, Translation,
};
use crate::upstream::Upstreams;

/// Turns translated routes into live ones (their canary, error and fallback routes too):
/// pools from `upstreams`, limiters from `limits`; records what the generation uses, so
/// the rest can be dropped.
struct Link<'a> {
    upstreams: &'a mut Upstreams,
    limits: &'a mut LimitRegistry,
}

impl Link<'_> {
    fn convert(&mut self, spec: RouteSpec) -> Arc<Route> {
        let ingress = spec
            .ingress
            .as_ref()
            .map_or_else(|| "-".to_string(), |k| k.to_string());
        let (namespace, service, action) = match &spec.backend {
            BackendSpec::Service(key) => (
                key.namespace.clone(),
                key.service.clone(),
                Action::Proxy(self.upstreams.pool(key)),
            ),
            BackendSpec::Unavailable { namespace, service } => {
                (namespace.clone(), service.clone(), Action::Respond(503))
            }
            BackendSpec::NotFound => ("-".into(), "-".into(), Action::Respond(404)),
            BackendSpec::Invalid { namespace, service } => {
                (namespace.clone(), service.clone(), Action::Respond(500))
            }
        };
        let limiter = (spec.policy.as_ref())
            .and_then(|p| p.limits.as_ref())
            .map(|l| self.limits.get(l));
        let policy = spec.policy.map(|p| Box::new(p.map(|r| self.convert(r))));
        Arc::new(Route {
            ingress: ingress.into(),
            namespace: namespace.into(),
            service: service.into(),
            action,
            protocol: spec.protocol,
            https_redirect: spec.https_redirect,
            tls_host: spec.tls_host,
            stats: Default::default(),
            policy,
            limiter,
        })
    }
}

/// What one `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Routes were re-translated and a new generation published.
    Generation(u64),
    /// Only endpoint sets changed; this many pools were updated.
    Endpoints(usize),
}

pub struct Controller {
    conf: TranslateConf,
    shared: Arc<Shared>,
    upstreams: Upstreams,
    last: Option<Arc<Snapshot>>,
    last_diagnostics: BTreeSet<String>,
    next_id: u64,
    reports: Option<watch::Sender<Option<Arc<Report>>>>,
    /// Certificates for the HTTPS listener, rebuilt with each generation.
    certs: Option<Certs>,
    /// The islands of the last translation, with the last accepted version of each Ingress
    /// (kept serving when an update is refused).
    islands: Islands,
    /// What the last certificate update reported (kept while the TLS entries are unchanged).
    cert_diags: Vec<Diagnostic>,
    /// The Ingresses of ours, oldest first (rebuilt only when the set changes).
    ours: Arc<Vec<crate::source::ObjKey>>,
    /// Rate and connection limiters, kept across generations while their settings are.
    limits: LimitRegistry,
}

impl Controller {
    pub fn new(conf: TranslateConf, shared: Arc<Shared>) -> Controller {
        let upstreams = Upstreams::new(Some(shared.metrics.clone()));
        Controller {
            conf,
            shared,
            upstreams,
            last: None,
            last_diagnostics: BTreeSet::new(),
            next_id: 1,
            reports: None,
            certs: None,
            islands: Islands::default(),
            cert_diags: Vec::new(),
            ours: Arc::default(),
            limits: LimitRegistry::new(crate::policy::limits::DEFAULT_TRACKED_CLIENTS),
        }
    }

    /// Keep at most this many client rate states for all limiters together.
    pub fn with_tracked_clients(mut self, n: usize) -> Controller {
        self.limits = LimitRegistry::new(n);
        self
    }

    /// Also send a [`Report`] (our Ingresses and diagnostics) after each new generation, for
    /// the status and Event writer.
    pub fn with_reports(mut self, tx: watch::Sender<Option<Arc<Report>>>) -> Controller {
        self.reports = Some(tx);
        self
    }

    /// Also keep the HTTPS listener's certificates in line with the Ingresses' TLS entries.
    pub fn with_certs(mut self, certs: Certs) -> Controller {
        self.certs = Some(certs);
        self
    }

    /// Bring the published state in line with a snapshot.
    pub fn apply(&mut self, snap: Arc<Snapshot>) -> Applied {
        let started = std::time::Instant::now();
        let metrics = self.shared.metrics.clone();
        let only_endpoints = self
            .last
            .as_ref()
            .filter(|last| last.same_routing_inputs(&snap));
        let applied = if let Some(last) = only_endpoints {
            let services = last.changed_slice_services(&snap);
            let changed = self.upstreams.refresh_services(&snap, &services);
            if changed > 0 {
                metrics.endpoint_updates.inc();
                metrics
                    .apply_duration
                    .with_label_values(&["endpoints"])
                    .observe(started.elapsed().as_secs_f64());
                info!(
                    pools = changed,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "endpoints updated"
                );
            }
            let prev = self.shared.debug.load();
            let diagnostics = prev
                .as_ref()
                .map(|d| d.diagnostics.clone())
                .unwrap_or_default();
            let gateway = prev.as_ref().map(|d| d.gateway.clone()).unwrap_or_default();
            self.shared
                .debug
                .store(Some(Arc::new(crate::generation::DebugState {
                    snapshot: snap.clone(),
                    diagnostics,
                    gateway,
                })));
            Applied::Endpoints(changed)
        } else {
            let partial =
                (self.last.as_ref()).and_then(|last| self.islands.step(last, &snap, &self.conf));
            let changed = (self.last.as_ref()).map(|last| last.changed_endpoint_services(&snap));
            let (generation, translated) = match partial {
                Some(p) => {
                    let n = p.translated;
                    (self.publish_partial(p, &snap, changed), Some(n))
                }
                None => (self.publish_whole(&snap, changed), None),
            };
            let id = generation.id;
            info!(
                generation = id,
                hosts = generation.routes.host_count(),
                pools = self.upstreams.len(),
                ingresses_translated = translated.map_or(-1, |n| n as i64),
                islands = self.islands.len(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "routes published"
            );
            self.shared.generation.store(Arc::new(generation));
            metrics.generations.inc();
            metrics
                .apply_duration
                .with_label_values(&["routes"])
                .observe(started.elapsed().as_secs_f64());
            Applied::Generation(id)
        };
        self.last = Some(snap);
        self.shared.set_ready();
        applied
    }

    /// Translate the whole snapshot and build the generation from it.
    fn publish_whole(
        &mut self,
        snap: &Arc<Snapshot>,
        changed: Option<BTreeSet<(String, String)>>,
    ) -> Generation {
        let mut t = translate_with(snap, &self.conf, self.islands.last_good());
        self.islands.rebuild(snap, &mut t);
        if let Some(certs) = &mut self.certs {
            certs.set_client_auth_hosts(&t.client_auth_hosts);
            self.cert_diags = certs.update(&t.tls, snap);
            t.diagnostics.extend(self.cert_diags.iter().cloned());
        }
        self.ours = Arc::new(std::mem::take(&mut t.ingresses));
        let gateway = Arc::new(std::mem::take(&mut t.gateway));
        self.publish_reports(snap, &t.diagnostics, gateway);
        self.link(t, snap, changed)
    }

    /// Build the generation from the published one with the host entries of a partial
    /// translation in place of the islands' old ones.
    fn publish_partial(
        &mut self,
        p: Partial,
        snap: &Arc<Snapshot>,
        changed: Option<BTreeSet<(String, String)>>,
    ) -> Generation {
        let mut diagnostics = self.islands.diagnostics();
        if let Some(certs) = &mut self.certs {
            certs.set_client_auth_hosts(&self.islands.client_auth_hosts());
            if p.tls_changed {
                self.cert_diags = certs.update(&self.islands.tls(), snap);
            }
        }
        diagnostics.extend(self.cert_diags.iter().cloned());
        if p.ours_changed {
            self.ours = Arc::new(self.islands.ours());
        }
        let gateway = (self.shared.debug.load().as_ref())
            .map(|d| d.gateway.clone())
            .unwrap_or_default();
        self.publish_reports(snap, &diagnostics, gateway);
        let prev = self.shared.generation.load_full();
        let mut routes = prev.routes.clone();
        let mut link = Link {
            upstreams: &mut self.upstreams,
            limits: &mut self.limits,
        };
        let part = p.routes.map(&mut |spec| link.convert(spec));
        routes.replace_hosts(&p.removed_hosts, p.removed_fallback, part);
        self.upstreams.refresh_changed(snap, changed.as_ref());
        self.upstreams.remove(&p.dropped_pools);
        self.limits.remove(&p.dropped_limits);
        let id = self.next_id;
        self.next_id += 1;
        Generation {
            id,
            routes,
            default_route: prev.default_route.clone(),
        }
    }

    /// Log the diagnostics, hand them to the status writer and the debug view.
    fn publish_reports(
        &mut self,
        snap: &Arc<Snapshot>,
        diagnostics: &[Diagnostic],
        gateway: Arc<crate::translate::gateway::Report>,
    ) {
        self.report(diagnostics);
        if let Some(tx) = &self.reports {
            tx.send_replace(Some(Arc::new(Report {
                snapshot: snap.clone(),
                ours: self.ours.clone(),
                diagnostics: diagnostics.to_vec(),
                gateway: gateway.clone(),
                gateway_controller: self.conf.gateway_controller.clone(),
            })));
        }
        self.shared
            .debug
            .store(Some(Arc::new(crate::generation::DebugState {
                snapshot: snap.clone(),
                diagnostics: Arc::new(diagnostics.to_vec()),
                gateway,
            })));
    }

    /// Attach live pools to the translated routes; new pools get their endpoints before the
    /// generation that uses them is published, and so do the pools of the Services in
    /// `changed` (None: every pool).
    fn link(
        &mut self,
        t: Translation,
        snap: &Snapshot,
        changed: Option<BTreeSet<(String, String)>>,
    ) -> Generation {
        let (used, used_limits) = table_uses(&t.routes, &t.default_route);
        let mut link = Link {
            upstreams: &mut self.upstreams,
            limits: &mut self.limits,
        };
        let default_route = link.convert(t.default_route);
        let routes = t.routes.map(&mut |spec| link.convert(spec));
        self.upstreams.refresh_changed(snap, changed.as_ref());
        self.upstreams.retain(&used);
        self.limits.retain(&used_limits);
        let id = self.next_id;
        self.next_id += 1;
        Generation {
            id,
            routes,
            default_route,
        }
    }

    /// Log new and resolved diagnostics once, and set the per-kind gauges.
    fn report(&mut self, diagnostics: &[Diagnostic]) {
        let metrics = &self.shared.metrics;
        let mut counts: HashMap<&'static str, i64> = HashMap::new();
        let mut now = BTreeSet::new();
        for d in diagnostics {
            *counts.entry(d.kind.as_str()).or_default() += 1;
            let line = d.to_string();
            if !self.last_diagnostics.contains(&line) {
                warn!(kind = d.kind.as_str(), "{line}");
            }
            now.insert(line);
        }
        for gone in self.last_diagnostics.difference(&now) {
            info!("resolved: {gone}");
        }
        for kind in crate::translate::DiagKind::ALL {
            let n = counts.get(kind.as_str()).copied().unwrap_or(0);
            metrics
                .diagnostics
                .with_label_values(&[kind.as_str()])
                .set(n);
        }
        self.last_diagnostics = now;
    }

    /// Apply snapshots from a source until it goes away. Debounced on the leading edge: a
    /// change after a quiet period is applied at once; changes that follow within `debounce`
    /// of the last apply are collected and applied together when that window ends. So an
    /// isolated change costs no waiting, and a burst costs one apply per window.
    pub async fn run(mut self, mut rx: watch::Receiver<Option<Arc<Snapshot>>>, debounce: Duration) {
        let mut last_apply: Option<tokio::time::Instant> = None;
        loop {
            if rx.changed().await.is_err() {
                return;
            }
            if let Some(t) = last_apply {
                tokio::time::sleep_until(t + debounce).await;
            }
            let snap = rx.borrow_and_update().clone();
            if let Some(snap) = snap {
                self.apply(snap);
                last_apply = Some(tokio::time::Instant::now());
            }
        }
    }
}
