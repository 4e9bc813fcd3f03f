//! Upstream pools: one per (namespace, service, port), holding the ready pod endpoints from
//! that Service's EndpointSlices, balanced round robin with pingora-load-balancing's
//! selection algorithm.
//!
//! Routes hold an `Arc<Pool>`; an endpoint change swaps the pool's endpoint set (one
//! `ArcSwap::store`) without touching routes. A request that already picked an endpoint keeps
//! it; the next request sees the new set.
//!
//! Besides round robin, a pool picks by consistent hash (Ketama, from
//! pingora-load-balancing: `upstream-hash-by` and balanced cookie affinity), by endpoint id
//! (persistent cookie affinity) and by peak EWMA of response times. The hash ring is built
//! on first use per endpoint set, so pools that never hash pay nothing; it depends only on
//! the endpoints, so stickiness survives every route change. EWMA scores live in the pool,
//! which outlives generations while a route uses its key.

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use pingora_load_balancing::selection::consistent::KetamaHashing;
use pingora_load_balancing::selection::{BackendIter, BackendSelection, RoundRobin};
use pingora_load_balancing::Backend;
use prometheus::IntGauge;

use crate::metrics::Metrics;
use crate::source::Snapshot;
use crate::translate::UpstreamKey;

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One immutable endpoint set with its selectors.
struct EndpointSet {
    addrs: BTreeSet<SocketAddr>,
    selector: Arc<RoundRobin>,
    /// Consistent-hash ring over `addrs`, built on first use.
    ring: std::sync::OnceLock<Arc<KetamaHashing>>,
}

fn backends(addrs: &BTreeSet<SocketAddr>) -> BTreeSet<Backend> {
    addrs
        .iter()
        .map(|a| Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(*a),
            weight: 1,
            ext: Default::default(),
        })
        .collect()
}

impl EndpointSet {
    fn new(addrs: BTreeSet<SocketAddr>) -> Self {
        EndpointSet {
            selector: Arc::new(RoundRobin::build(&backends(&addrs))),
            addrs,
            ring: std::sync::OnceLock::new(),
        }
    }

    fn ring(&self) -> &Arc<KetamaHashing> {
        self.ring
            .get_or_init(|| Arc::new(KetamaHashing::build(&backends(&self.addrs))))
    }
}

/// A stable id for an endpoint (persistent cookie affinity): FNV-1a of its address text,
/// in hex, so the same pod gets the same id in every process and generation.
pub fn endpoint_id(addr: &SocketAddr) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in addr.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Peak-EWMA state of one endpoint: a decaying average of response times (µs) and the
/// requests in flight.
#[derive(Debug, Default)]
struct Ewma {
    score_us: f64,
    stamp: Option<std::time::Instant>,
    inflight: i64,
}

/// Decay time of the EWMA (as ingress-nginx's `ewma` balancer: 10 s).
const EWMA_DECAY_S: f64 = 10.0;

/// The pods behind one Service port.
pub struct Pool {
    pub key: UpstreamKey,
    set: ArcSwap<EndpointSet>,
    /// The size of `set`, stored after it: `len`/`is_empty` on every request without an
    /// `ArcSwap` load (about 80 instructions and 10 instruction-cache lines a request).
    ready: AtomicUsize,
    ready_gauge: Option<IntGauge>,
    /// EWMA per endpoint; touched only by routes that balance by EWMA.
    ewma: std::sync::Mutex<HashMap<SocketAddr, Ewma>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("key", &self.key)
            .field("endpoints", &self.set.load().addrs)
            .finish()
    }
}

impl Pool {
    pub fn new(key: UpstreamKey, ready_gauge: Option<IntGauge>) -> Self {
        Pool {
            key,
            set: ArcSwap::from_pointee(EndpointSet::new(BTreeSet::new())),
            ready: AtomicUsize::new(0),
            ready_gauge,
            ewma: Default::default(),
        }
    }

    /// Number of ready endpoints. (Between a change's two stores it may briefly disagree
    /// with `select`, which then finds no endpoint and the request is answered 503.)
    pub fn len(&self) -> usize {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current endpoints.
    pub fn endpoints(&self) -> BTreeSet<SocketAddr> {
        self.set.load().addrs.clone()
    }

    /// Replace the endpoint set; returns whether it changed.
    pub fn set_endpoints(&self, addrs: BTreeSet<SocketAddr>) -> bool {
        if self.set.load().addrs == addrs {
            return false;
        }
        if let Some(g) = &self.ready_gauge {
            g.set(addrs.len() as i64);
        }
        let n = addrs.len();
        self.set.store(Arc::new(EndpointSet::new(addrs)));
        self.ready.store(n, Ordering::Relaxed);
        true
    }

    /// Pick the next endpoint round robin, skipping the ones in `tried`.
    pub fn select(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let set = self.set.load();
        let n = set.addrs.len();
        if n == 0 {
            return None;
        }
        let mut iter = set.selector.iter(b"");
        for _ in 0..n * 2 {
            let Some(b) = iter.next() else { break };
            if let Some(a) = b.addr.as_inet() {
                if !tried.contains(a) {
                    return Some(*a);
                }
            }
        }
        // Concurrent requests share the round-robin counter; fall back to a plain scan.
        set.addrs.iter().find(|a| !tried.contains(a)).copied()
    }
}

impl Pool {
    /// The endpoint a hash key maps to on the consistent-hash ring, skipping `tried` ones
    /// (the next endpoints on the ring).
    pub fn select_hash(&self, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
        let set = self.set.load();
        if set.addrs.is_empty() {
            return None;
        }
        let mut iter = set.ring().iter(key);
        for _ in 0..set.addrs.len() * 4 {
            let Some(b) = iter.next() else { break };
            if let Some(a) = b.addr.as_inet() {
                if !tried.contains(a) {
                    return Some(*a);
                }
            }
        }
        set.addrs.iter().find(|a| !tried.contains(a)).copied()
    }

    /// The endpoint with this [`endpoint_id`], if it is still in the set and not tried.
    pub fn select_id(&self, id: &str, tried: &[SocketAddr]) -> Option<SocketAddr> {
        self.set
            .load()
            .addrs
            .iter()
            .find(|a| !tried.contains(a) && endpoint_id(a) == id)
            .copied()
    }

    /// Peak EWMA: of two endpoints picked at random (not tried), the one with the lower
    /// score, weighted by its requests in flight.
    pub fn select_ewma(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let set = self.set.load();
        let left: Vec<&SocketAddr> = set.addrs.iter().filter(|a| !tried.contains(a)).collect();
        // One lock for reading the scores and counting the pick in flight.
        let mut state = self.ewma.lock().unwrap_or_else(|e| e.into_inner());
        let pick = match left.len() {
            0 => return None,
            1 => *left[0],
            n => {
                let i = fastrand::usize(..n);
                let j = (i + 1 + fastrand::usize(..n - 1)) % n;
                let cost = |a: &SocketAddr| {
                    state
                        .get(a)
                        .map_or(0.0, |e| decayed(e) * (e.inflight.max(0) + 1) as f64)
                };
                if cost(left[j]) < cost(left[i]) {
                    *left[j]
                } else {
                    *left[i]
                }
            }
        };
        state.entry(pick).or_default().inflight += 1;
        Some(pick)
    }

    /// Record a finished EWMA-balanced request to `addr` that took `took` (None: it failed).
    pub fn ewma_done(&self, addr: SocketAddr, took: Option<std::time::Duration>) {
        let mut state = self.ewma.lock().unwrap_or_else(|e| e.into_inner());
        if state.len() > 4 * self.len().max(16) {
            let live = self.endpoints();
            state.retain(|a, _| live.contains(a));
        }
        let e = state.entry(addr).or_default();
        e.inflight -= 1;
        // A failure counts as a slow answer, so the endpoint is avoided for a while.
        let sample = took.map_or(1e6, |t| t.as_micros() as f64);
        let now = std::time::Instant::now();
        let score = decayed(e);
        // The first sample, or a peak (a slow answer counts at once), replaces the score.
        e.score_us = if e.stamp.is_none() || sample > score {
            sample
        } else {
            let w = (-e.stamp.map_or(0.0, |s| now.duration_since(s).as_secs_f64()) / EWMA_DECAY_S)
                .exp();
            score * w + sample * (1.0 - w)
        };
        e.stamp = Some(now);
    }
}

fn decayed(e: &Ewma) -> f64 {
    match e.stamp {
        None => 0.0,
        Some(s) => e.score_us * (-s.elapsed().as_secs_f64() / EWMA_DECAY_S).exp(),
    }
}

/// The ready endpoints of a pool: addresses of ready, non-terminating endpoints, with the
/// port of the slice port named like the Service port.
pub fn endpoints_for(slices: &[&EndpointSlice], key: &UpstreamKey) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    each_endpoint(slices, key, |addr, ready| {
        if ready {
            out.insert(addr);
        }
    });
    out
}

/// Every endpoint of a pool with whether it takes traffic (ready and not terminating), for
/// the debug view.
pub fn all_endpoints_for(slices: &[&EndpointSlice], key: &UpstreamKey) -> Vec<(SocketAddr, bool)> {
    let mut out = Vec::new();
    each_endpoint(slices, key, |addr, ready| out.push((addr, ready)));
    out.sort();
    out.dedup();
    out
}

fn each_endpoint(
    slices: &[&EndpointSlice],
    key: &UpstreamKey,
    mut f: impl FnMut(SocketAddr, bool),
) {
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let port = slice
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.as_deref().unwrap_or("") == key.port_name);
        let Some(port) = port.and_then(|p| p.port) else {
            continue;
        };
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            let ready = c.and_then(|c| c.ready) != Some(false);
            let terminating = c.and_then(|c| c.terminating) == Some(true);
            for addr in &ep.addresses {
                if let Ok(ip) = addr.parse::<IpAddr>() {
                    f(SocketAddr::new(ip, port), ready && !terminating);
                }
            }
        }
    }
}

/// `service-upstream`: the Service's ClusterIP and port as the one endpoint (none for a
/// headless Service).
fn cluster_ip_endpoint(snap: &Snapshot, key: &UpstreamKey) -> BTreeSet<SocketAddr> {
    let svc = snap
        .services
        .get(&crate::source::ObjKey::new(&key.namespace, &key.service));
    let ip = svc
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    match (ip, u16::try_from(key.port)) {
        (Some(ip), Ok(port)) => BTreeSet::from([SocketAddr::new(ip, port)]),
        _ => BTreeSet::new(),
    }
}

/// All live pools, by key. Owned by the controller; routes hold `Arc`s to the pools.
pub struct Upstreams {
    pools: HashMap<UpstreamKey, Arc<Pool>>,
    /// Pools created since the last [`Upstreams::refresh_changed`]: they have no endpoints yet.
    fresh: Vec<UpstreamKey>,
    /// The pools of each (namespace, Service), for endpoint changes.
    by_service: HashMap<(String, String), Vec<UpstreamKey>>,
    metrics: Option<Arc<Metrics>>,
}

impl Upstreams {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Upstreams {
            pools: HashMap::new(),
            fresh: Vec::new(),
            by_service: HashMap::new(),
            metrics,
        }
    }

    /// The pool for a key, created empty when new.
    pub fn pool(&mut self, key: &UpstreamKey) -> Arc<Pool> {
        if let Some(p) = self.pools.get(key) {
            return p.clone();
        }
        let gauge = self.metrics.as_ref().map(|m| {
            m.ready_endpoints.with_label_values(&[
                key.namespace.as_str(),
                key.service.as_str(),
                &key.port.to_string(),
            ])
        });
        if let Some(g) = &gauge {
            g.set(0);
        }
        let p = Arc::new(Pool::new(key.clone(), gauge));
        self.pools.insert(key.clone(), p.clone());
        self.fresh.push(key.clone());
        self.by_service
            .entry((key.namespace.clone(), key.service.clone()))
            .or_default()
            .push(key.clone());
        p
    }

    /// Drop pools no route uses any more (requests in flight keep their `Arc`).
    pub fn retain<S: std::hash::BuildHasher>(&mut self, used: &HashSet<UpstreamKey, S>) {
        let unused: Vec<UpstreamKey> = (self.pools.keys())
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        self.remove(&unused);
    }

    /// Drop these pools (a partial translation's pools that no route uses any more), with
    /// their endpoint gauges.
    pub fn remove(&mut self, keys: &[UpstreamKey]) {
        for k in keys {
            if self.pools.remove(k).is_none() {
                continue;
            }
            if let Some(m) = &self.metrics {
                let _ = m.ready_endpoints.remove_label_values(&[
                    k.namespace.as_str(),
                    k.service.as_str(),
                    &k.port.to_string(),
                ]);
            }
            let svc = (k.namespace.clone(), k.service.clone());
            if let Some(keys) = self.by_service.get_mut(&svc) {
                keys.retain(|x| x != k);
                if keys.is_empty() {
                    self.by_service.remove(&svc);
                }
            }
        }
    }

    /// Recompute every pool's endpoints from the snapshot; returns how many pools changed.
    pub fn refresh(&self, snap: &Snapshot) -> usize {
        self.refresh_keys(snap, self.pools.keys())
    }

    /// Give the pools created since the last call their endpoints, and recompute those of
    /// the pools of these (namespace, service) pairs (whose slices or Service changed; None:
    /// every pool): a new generation costs what it changed, not one lookup per pool.
    pub fn refresh_changed(
        &mut self,
        snap: &Snapshot,
        services: Option<&BTreeSet<(String, String)>>,
    ) -> usize {
        let fresh = std::mem::take(&mut self.fresh);
        let Some(services) = services else {
            return self.refresh(snap);
        };
        let named = services
            .iter()
            .filter_map(|s| self.by_service.get(s))
            .flatten();
        self.refresh_keys(snap, fresh.iter().chain(named))
    }

    /// Recompute the endpoints of the pools of these (namespace, service) pairs only: the
    /// cost is theirs, not the pool count's (docs/benchmarks.md, "Scale").
    pub fn refresh_services(
        &self,
        snap: &Snapshot,
        services: &BTreeSet<(String, String)>,
    ) -> usize {
        let named = services
            .iter()
            .filter_map(|s| self.by_service.get(s))
            .flatten();
        self.refresh_keys(snap, named)
    }

    /// Recompute the endpoints of these pools (each once; keys without a pool are skipped).
    /// Each pool's slices come from the snapshot's index by Service.
    fn refresh_keys<'a>(
        &self,
        snap: &Snapshot,
        keys: impl Iterator<Item = &'a UpstreamKey>,
    ) -> usize {
        let mut seen = HashSet::new();
        let mut changed = 0;
        for key in keys {
            let Some(pool) = self.pools.get(key) else {
                continue;
            };
            if !seen.insert(key) {
                continue;
            }
            let endpoints = if key.cluster_ip {
                cluster_ip_endpoint(snap, key)
            } else {
                endpoints_for(&snap.slices_of(&key.namespace, &key.service), key)
            };
            if pool.set_endpoints(endpoints) {
                changed += 1;
            }
        }
        changed
    }

    pub fn len(&self) -> usize {
        self.pools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }
}
