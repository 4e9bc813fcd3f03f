//! Upstream pools: one per (namespace, service, port), holding the ready pod endpoints from
//! that Service's EndpointSlices, balanced round robin with pingora-load-balancing's
//! selection algorithm.
//!
//! Routes hold an `Arc<Pool>`; an endpoint change swaps the pool's endpoint set (one
//! `ArcSwap::store`) without touching routes. A request that already picked an endpoint keeps
//! it; the next request sees the new set.

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use pingora_load_balancing::selection::{BackendIter, BackendSelection, RoundRobin};
use pingora_load_balancing::Backend;
use prometheus::IntGauge;

use crate::metrics::Metrics;
use crate::source::Snapshot;
use crate::translate::UpstreamKey;

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One immutable endpoint set with its selector.
struct EndpointSet {
    addrs: BTreeSet<SocketAddr>,
    selector: Arc<RoundRobin>,
}

impl EndpointSet {
    fn new(addrs: BTreeSet<SocketAddr>) -> Self {
        let backends: BTreeSet<Backend> = addrs
            .iter()
            .map(|a| Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(*a),
                weight: 1,
                ext: Default::default(),
            })
            .collect();
        EndpointSet {
            selector: Arc::new(RoundRobin::build(&backends)),
            addrs,
        }
    }
}

/// The pods behind one Service port.
pub struct Pool {
    pub key: UpstreamKey,
    set: ArcSwap<EndpointSet>,
    ready_gauge: Option<IntGauge>,
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
            ready_gauge,
        }
    }

    /// Number of ready endpoints.
    pub fn len(&self) -> usize {
        self.set.load().addrs.len()
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
        self.set.store(Arc::new(EndpointSet::new(addrs)));
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

/// Index EndpointSlices by (namespace, service name).
pub fn index_slices(snap: &Snapshot) -> HashMap<(&str, &str), Vec<&EndpointSlice>> {
    let mut idx: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for (key, slice) in &snap.endpoint_slices {
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        idx.entry((key.namespace.as_str(), svc.as_str()))
            .or_default()
            .push(slice);
    }
    idx
}

/// The ready endpoints of a pool: addresses of ready, non-terminating endpoints, with the
/// port of the slice port named like the Service port.
pub fn endpoints_for(slices: &[&EndpointSlice], key: &UpstreamKey) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
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
            if !ready || terminating {
                continue;
            }
            for addr in &ep.addresses {
                if let Ok(ip) = addr.parse::<IpAddr>() {
                    out.insert(SocketAddr::new(ip, port));
                }
            }
        }
    }
    out
}

/// All live pools, by key. Owned by the controller; routes hold `Arc`s to the pools.
pub struct Upstreams {
    pools: HashMap<UpstreamKey, Arc<Pool>>,
    metrics: Option<Arc<Metrics>>,
}

impl Upstreams {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Upstreams {
            pools: HashMap::new(),
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
        p
    }

    /// Drop pools no route uses any more (requests in flight keep their `Arc`).
    pub fn retain(&mut self, used: &HashSet<UpstreamKey>) {
        let metrics = self.metrics.clone();
        self.pools.retain(|k, _| {
            let keep = used.contains(k);
            if !keep {
                if let Some(m) = &metrics {
                    let _ = m.ready_endpoints.remove_label_values(&[
                        k.namespace.as_str(),
                        k.service.as_str(),
                        &k.port.to_string(),
                    ]);
                }
            }
            keep
        });
    }

    /// Recompute every pool's endpoints from the snapshot; returns how many pools changed.
    pub fn refresh(&self, snap: &Snapshot) -> usize {
        self.refresh_where(snap, |_| true)
    }

    /// Recompute the endpoints of the pools of these (namespace, service) pairs only.
    pub fn refresh_services(
        &self,
        snap: &Snapshot,
        services: &BTreeSet<(String, String)>,
    ) -> usize {
        if services.is_empty() {
            return 0;
        }
        self.refresh_where(snap, |k| {
            services.contains(&(k.namespace.clone(), k.service.clone()))
        })
    }

    fn refresh_where(&self, snap: &Snapshot, wanted: impl Fn(&UpstreamKey) -> bool) -> usize {
        let idx = index_slices(snap);
        let mut changed = 0;
        for (key, pool) in self.pools.iter().filter(|(k, _)| wanted(k)) {
            let slices = idx
                .get(&(key.namespace.as_str(), key.service.as_str()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            if pool.set_endpoints(endpoints_for(slices, key)) {
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
