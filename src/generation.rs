//! What the hot path reads: one immutable `Generation` of routes with live upstream pools
//! attached, swapped in whole by the controller, plus the readiness flag and metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::metrics::{Metrics, RouteLabels, RouteStats};
use crate::routing::{Request, RouteTable};
use crate::translate::model::Policy;
use crate::translate::Protocol;
use crate::upstream::Pool;

/// What to do with a request that matched a route.
#[derive(Debug)]
pub enum Action {
    /// Proxy to the pool's ready endpoints (503 while it has none).
    Proxy(Arc<Pool>),
    /// Answer with this status and a short plain-text body.
    Respond(u16),
}

/// A route target with the labels used for metrics and logs.
#[derive(Debug)]
pub struct Route {
    /// `namespace/name` of the Ingress, or `-` for the global default backend.
    pub ingress: Box<str>,
    /// Namespace and Service of the backend (`-` when none).
    pub namespace: Box<str>,
    pub service: Box<str>,
    pub action: Action,
    /// How to talk to the pods.
    pub protocol: Protocol,
    /// Plain-HTTP requests get a 308 to HTTPS.
    pub https_redirect: bool,
    /// TLS is configured for the host: HTTPS responses carry HSTS.
    pub tls_host: bool,
    /// Request metrics under this route's labels.
    pub stats: RouteStats,
    /// Redirects, rewrites, header changes, timeouts, balancing, canary, ...; None for a
    /// plain route, which so pays one branch per phase.
    pub policy: Option<Box<Policy<Arc<Route>>>>,
    /// The limits of the policy, live (kept across generations).
    pub limiter: Option<Arc<crate::policy::limits::Limiter>>,
}

impl Route {
    pub fn labels(&self) -> RouteLabels<'_> {
        RouteLabels {
            ingress: &self.ingress,
            namespace: &self.namespace,
            service: &self.service,
        }
    }
}

/// One published set of routes.
#[derive(Debug)]
pub struct Generation {
    /// Increases by one per published generation; 0 is the empty start-up generation.
    pub id: u64,
    pub routes: RouteTable<Arc<Route>>,
    /// For requests that match no route.
    pub default_route: Arc<Route>,
}

impl Generation {
    /// The generation in force before the source has been read: everything is 404.
    pub fn empty() -> Generation {
        Generation {
            id: 0,
            routes: RouteTable::default(),
            default_route: Arc::new(Route {
                ingress: "-".into(),
                namespace: "-".into(),
                service: "-".into(),
                action: Action::Respond(404),
                protocol: Protocol::Http1,
                https_redirect: false,
                tls_host: false,
                stats: RouteStats::default(),
                policy: None,
                limiter: None,
            }),
        }
    }

    /// The route for a request known by host and path.
    #[inline]
    pub fn route(&self, host: &str, path: &str) -> &Arc<Route> {
        self.route_for(&Request::new(host, path))
    }

    /// The route for a request (conditional rules see its method, headers and query).
    #[inline]
    pub fn route_for(&self, req: &Request) -> &Arc<Route> {
        self.routes
            .lookup_request(req)
            .unwrap_or(&self.default_route)
    }
}

/// State shared by the controller (writer) and the proxy and admin services (readers).
pub struct Shared {
    pub generation: ArcSwap<Generation>,
    ready: AtomicBool,
    ready_notify: tokio::sync::Notify,
    draining: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// What the debug listener shows besides the generation: the snapshot it was built
    /// from and the diagnostics of its translation.
    pub debug: arc_swap::ArcSwapOption<DebugState>,
}

/// The inputs of the published generation, for the debug listener.
#[derive(Debug)]
pub struct DebugState {
    pub snapshot: Arc<crate::source::Snapshot>,
    /// Shared, not copied, by the endpoint-only updates that keep them.
    pub diagnostics: Arc<Vec<crate::translate::Diagnostic>>,
    /// Gateway API conditions of the translation (for the admin listener's
    /// `/gateway-api/status`, in both source modes).
    pub gateway: Arc<crate::translate::gateway::Report>,
}

impl Shared {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Shared> {
        Arc::new(Shared {
            generation: ArcSwap::from_pointee(Generation::empty()),
            ready: AtomicBool::new(false),
            ready_notify: tokio::sync::Notify::new(),
            draining: AtomicBool::new(false),
            metrics,
            debug: arc_swap::ArcSwapOption::empty(),
        })
    }

    /// Ready once the source has been read in full and the first generation published, and
    /// until shutdown starts.
    pub fn is_ready(&self) -> bool {
        self.has_routes() && !self.draining.load(Ordering::Acquire)
    }

    /// Whether the first generation has been published.
    #[inline]
    pub fn has_routes(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        if !self.ready.swap(true, Ordering::AcqRel) {
            self.ready_notify.notify_waiters();
        }
    }

    /// Wait (at most `limit`) for the first generation: a process that just took over the
    /// listening sockets in a graceful upgrade must not answer 404 before its routes load.
    pub async fn wait_for_routes(&self, limit: std::time::Duration) {
        if self.has_routes() {
            return;
        }
        let notified = self.ready_notify.notified();
        if self.has_routes() {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }

    /// Whether shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Shutdown started: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}
