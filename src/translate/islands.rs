//! Incremental translation: an Ingress edit re-translates only the Ingresses it can affect.
//!
//! The Ingresses of ours are grouped into islands: two Ingresses with a [`Touch`] in common (a
//! host, a Service they send to, a basic-auth Secret) are in the same island, and so are all
//! Ingresses connected through such pairs. An Ingress's translation depends on no Ingress
//! outside its island, with one exception passed to every partial translation whole: the
//! wildcard TLS hosts of all Ingresses (`*.example.com` gives `a.example.com` TLS).
//!
//! After a whole translation, [`Islands::rebuild`] records each island: its Ingresses and
//! touches, the host entries of the route table it made, the pools and limiters its routes
//! use, its TLS entries, diagnostics and client-certificate hosts. When the next snapshot
//! differs only in Ingresses and Services (and EndpointSlices), [`Islands::step`] takes the
//! islands that send to a changed Service and those the changed Ingresses belong to or will
//! touch, translates just their Ingresses
//! ([`super::translate_part`]) and says which host entries of the published table to replace
//! ([`Partial`]). The cost of an edit is its islands', not the cluster's.
//!
//! Everything else is translated whole, as before: a change to a Secret, IngressClass or
//! Namespace or to the global default backend's Service, any Gateway API object in the
//! snapshot (Gateway API routes
//! share hosts with Ingresses and are placed after all of them), a change to the set of
//! wildcard TLS hosts, the first translation, and anything a partial step cannot place.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::model::LimitSpec;
use super::{
    annotations, touches, translate_part, BackendSpec, Diagnostic, LastGood, RouteSpec, TlsBinding,
    Touch, TranslateConf, Translation, UpstreamKey,
};
use crate::routing::{HostMatch, RouteTable};
use crate::source::{ObjKey, Snapshot};

#[cfg(test)]
mod tests;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Where an Ingress sorts among all of them: creationTimestamp, then namespace/name (the
/// order translation takes them in).
type Order = (Option<Time>, ObjKey);

/// The islands of the last translation and what they produced.
#[derive(Debug, Default)]
pub struct Islands {
    /// False until a whole translation has been split, and after one that could not be (a
    /// snapshot with Gateway API objects): the next change is translated whole.
    usable: bool,
    islands: HashMap<u64, Island>,
    by_touch: HashMap<Touch, u64>,
    by_ingress: HashMap<ObjKey, u64>,
    next_id: u64,
    /// How many TLS hosts `*.x` each `x` has, over every Ingress of ours.
    wildcard_tls: HashMap<String, u32>,
    /// The accepted version of each object ([`Translation::accepted`] of every island).
    accepted: LastGood,
    /// Diagnostics of no island (the global default backend).
    global_diags: Vec<Diagnostic>,
    /// The diagnostics of each island that has any.
    diags: BTreeMap<u64, Vec<Diagnostic>>,
    /// The TLS entries of each Ingress that has any, oldest Ingress first.
    tls: BTreeMap<Order, Vec<TlsBinding>>,
    /// Hosts whose handshakes ask for a client certificate.
    client_auth: BTreeSet<String>,
    /// Every Ingress of ours, oldest first.
    ours: BTreeSet<Order>,
    /// Pools used by a route of no island (the global default backend): never dropped here.
    pinned_pools: HashSet<UpstreamKey>,
}

#[derive(Debug, Default)]
struct Island {
    ingresses: Vec<Order>,
    touches: Vec<Touch>,
    /// The route table's host entries it made ([`HostMatch::Any`]: the rules without host).
    hosts: Vec<HostMatch>,
    /// It set the table's fallback (a catch-all defaultBackend).
    fallback: bool,
    pools: HashSet<UpstreamKey>,
    limits: HashSet<LimitSpec>,
    /// `x` of each of its `*.x` TLS hosts (once per TLS entry that names one).
    wildcard_tls: Vec<String>,
    client_auth: Vec<String>,
}

/// What a partial translation changes in the published generation.
#[derive(Debug)]
pub struct Partial {
    /// Host entries to drop before `routes` is merged in (the affected islands' old ones).
    pub removed_hosts: Vec<HostMatch>,
    /// Drop the table's fallback too.
    pub removed_fallback: bool,
    /// The new host entries (and fallback) of the affected islands, finished.
    pub routes: RouteTable<RouteSpec>,
    /// Pools and limiters no route uses any more.
    pub dropped_pools: Vec<UpstreamKey>,
    pub dropped_limits: Vec<LimitSpec>,
    /// The TLS entries (oldest Ingress first) differ from the last generation's.
    pub tls_changed: bool,
    /// The set of Ingresses of ours differs.
    pub ours_changed: bool,
    /// How many Ingresses were translated.
    pub translated: usize,
}

/// Where diagnostics that name no Ingress of an island go.
#[derive(Clone, Copy, PartialEq)]
enum Unowned {
    /// To the list of no island (a whole translation: the global default backend).
    Global,
    /// To the first new island (a partial translation names nothing global).
    FirstIsland,
}

/// Groups of items connected by a shared touch: indices into `items`, each group in item
/// order, groups by their first item.
fn group(items: &[(Order, Vec<Touch>)]) -> Vec<Vec<usize>> {
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut parent: Vec<usize> = (0..items.len()).collect();
    let mut first: HashMap<&Touch, usize> = HashMap::default();
    for (i, (_, ts)) in items.iter().enumerate() {
        for t in ts {
            let j = *first.entry(t).or_insert(i);
            let (a, b) = (root(&mut parent, i), root(&mut parent, j));
            // The smaller index is the root, so a group's root is its first item.
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..items.len() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    groups.into_values().collect()
}

/// Pools and limiters a route uses (its canary, error, fallback, split and mirror routes'
/// too): the one definition of what keeps a pool or a limiter alive, for an island and for
/// a whole table ([`table_uses`]).
fn uses(spec: &RouteSpec, pools: &mut HashSet<UpstreamKey>, limits: &mut HashSet<LimitSpec>) {
    if let BackendSpec::Service(k) = &spec.backend {
        pools.insert(k.clone());
    }
    if let Some(p) = &spec.policy {
        if let Some(l) = &p.limits {
            limits.insert(l.clone());
        }
        for r in p.routes() {
            uses(r, pools, limits);
        }
    }
}

/// A client-auth host as [`Translation::client_auth_hosts`] writes it, parsed back.
fn host_of(written: &str) -> HostMatch {
    match written {
        "*" => HostMatch::Any,
        h => match h.strip_prefix("*.") {
            Some(rest) => HostMatch::Wildcard(rest.to_string()),
            None => HostMatch::Exact(h.to_string()),
        },
    }
}

fn order_of(snap: &Snapshot, key: &ObjKey) -> Order {
    let created = snap
        .ingresses
        .get(key)
        .and_then(|i| i.metadata.creation_timestamp.clone());
    (created, key.clone())
}

/// The ordered (Ingress, touches) of a translation: every Ingress of ours, with no touches
/// when it was refused without a last good version.
fn items_of(snap: &Snapshot, t: &mut Translation) -> Vec<(Order, Vec<Touch>)> {
    let mut touched: HashMap<ObjKey, Vec<Touch>> =
        std::mem::take(&mut t.touches).into_iter().collect();
    (t.ingresses.iter())
        .map(|k| (order_of(snap, k), touched.remove(k).unwrap_or_default()))
        .collect()
}

impl Islands {
    /// The last accepted version of each object: pass it to the next translation.
    pub fn last_good(&self) -> &LastGood {
        &self.accepted
    }

    /// Record the islands of a whole translation of `snap` (taking its `accepted` and
    /// `touches`). With Gateway API objects in the snapshot nothing is split, and the next
    /// change is translated whole too.
    pub fn rebuild(&mut self, snap: &Snapshot, t: &mut Translation) {
        *self = Islands {
            accepted: std::mem::take(&mut t.accepted),
            ..Islands::default()
        };
        if snap.has_gateway_api() {
            t.touches.clear();
            return;
        }
        let mut pools = HashSet::default();
        uses(&t.default_route, &mut pools, &mut HashSet::default());
        self.pinned_pools = pools;
        let items = items_of(snap, t);
        self.usable = self.add(items, t, Unowned::Global).is_ok();
    }

    /// Translate only what the change from `prev` to `snap` can affect, when it is a change
    /// of Ingresses alone; None when the change must be translated whole.
    pub fn step(
        &mut self,
        prev: &Snapshot,
        snap: &Snapshot,
        conf: &TranslateConf,
    ) -> Option<Partial> {
        if !self.usable || snap.has_gateway_api() {
            return None;
        }
        let (changed, services) = prev.changed_ingresses_and_services(snap)?;
        // The global default backend reads its Service outside every island.
        let global = conf.default_backend.as_ref().map(|(k, _)| k);
        if services.iter().any(|s| Some(s) == global) {
            return None;
        }
        // The islands that send to a changed Service, those the changed Ingresses are in,
        // and those their new versions touch.
        let mut hit: BTreeSet<u64> = BTreeSet::new();
        for s in services {
            hit.extend(self.by_touch.get(&Touch::Service(s)));
        }
        for k in &changed {
            hit.extend(self.by_ingress.get(k));
            if let Some(ing) = snap.ingresses.get(k) {
                let (ann, _, _) = annotations::read(ing.metadata.annotations.as_ref());
                for t in touches(k, ing, &ann) {
                    hit.extend(self.by_touch.get(&t));
                }
            }
        }
        let mut keys: BTreeSet<ObjKey> = changed.into_iter().collect();
        for id in &hit {
            keys.extend(self.islands[id].ingresses.iter().map(|(_, k)| k.clone()));
        }
        let mut sub = snap.clone();
        sub.ingresses = Default::default();
        for k in &keys {
            if let Some(ing) = snap.ingresses.get(k) {
                sub.ingresses.insert(k.clone(), ing.clone());
            }
        }
        let wildcard: std::collections::HashSet<String, _> =
            self.wildcard_tls.keys().cloned().collect();
        let mut t = translate_part(&sub, conf, &self.accepted, &wildcard);

        // The new versions may touch only what the affected islands held or nobody did
        // (always so, since their touches were looked up above; checked all the same).
        for (_, ts) in &t.touches {
            if ts
                .iter()
                .any(|x| self.by_touch.get(x).is_some_and(|id| !hit.contains(id)))
            {
                return None;
            }
        }
        // The wildcard TLS parents given to the translation must still be the right ones.
        let mut delta: HashMap<&str, i64> = HashMap::default();
        for id in &hit {
            for p in &self.islands[id].wildcard_tls {
                *delta.entry(p).or_default() -= 1;
            }
        }
        for b in &t.tls {
            for h in &b.hosts {
                if let Some(p) = h.strip_prefix("*.") {
                    *delta.entry(p).or_default() += 1;
                }
            }
        }
        for (p, d) in &delta {
            let before = i64::from(self.wildcard_tls.get(*p).copied().unwrap_or(0));
            if (before > 0) != (before + d > 0) {
                return None;
            }
        }

        // Commit: take the old islands out, put the new ones in.
        let mut removed_hosts = Vec::new();
        let mut removed_fallback = false;
        let (mut old_pools, mut old_limits) = (HashSet::default(), HashSet::default());
        let mut old_tls = Vec::new();
        let mut old_ours = BTreeSet::new();
        for id in &hit {
            let island = self.remove(*id, &mut old_tls);
            removed_hosts.extend(island.hosts);
            removed_fallback |= island.fallback;
            old_pools.extend(island.pools);
            old_limits.extend(island.limits);
            old_ours.extend(island.ingresses);
        }
        let items = items_of(&sub, &mut t);
        let new_ours: BTreeSet<Order> = items.iter().map(|(o, _)| o.clone()).collect();
        let Ok(ids) = self.add(items, &t, Unowned::FirstIsland) else {
            self.usable = false;
            return None;
        };
        let (mut new_pools, mut new_limits) = (HashSet::default(), HashSet::default());
        let mut new_tls = Vec::new();
        for id in &ids {
            let island = &self.islands[id];
            new_pools.extend(island.pools.iter().cloned());
            new_limits.extend(island.limits.iter().cloned());
            for o in &island.ingresses {
                new_tls.extend(self.tls.get(o).into_iter().flatten());
            }
        }
        for k in &keys {
            self.accepted.ingresses.remove(k);
        }
        self.accepted
            .ingresses
            .extend(std::mem::take(&mut t.accepted.ingresses));
        let dropped_pools = (old_pools.into_iter())
            .filter(|p| !new_pools.contains(p) && !self.pinned_pools.contains(p))
            .collect();
        let dropped_limits = (old_limits.into_iter())
            .filter(|l| !new_limits.contains(l))
            .collect();
        let tls_changed =
            old_tls.len() != new_tls.len() || old_tls.iter().zip(&new_tls).any(|(a, b)| a != *b);
        Some(Partial {
            removed_hosts,
            removed_fallback,
            routes: t.routes,
            dropped_pools,
            dropped_limits,
            tls_changed,
            ours_changed: old_ours != new_ours,
            translated: sub.ingresses.len(),
        })
    }

    /// Take an island out of every index; its TLS entries are appended to `tls`.
    fn remove(&mut self, id: u64, tls: &mut Vec<TlsBinding>) -> Island {
        let island = self.islands.remove(&id).unwrap_or_default();
        for t in &island.touches {
            self.by_touch.remove(t);
        }
        for o in &island.ingresses {
            self.by_ingress.remove(&o.1);
            self.ours.remove(o);
            tls.extend(self.tls.remove(o).into_iter().flatten());
        }
        for p in &island.wildcard_tls {
            if let Some(n) = self.wildcard_tls.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.wildcard_tls.remove(p);
                }
            }
        }
        for h in &island.client_auth {
            self.client_auth.remove(h);
        }
        self.diags.remove(&id);
        island
    }

    /// Add the islands of a translation's `items` with what the translation made for them;
    /// Err when a host entry of its table belongs to none of them (the state is then unusable).
    fn add(
        &mut self,
        items: Vec<(Order, Vec<Touch>)>,
        t: &Translation,
        unowned: Unowned,
    ) -> Result<Vec<u64>, ()> {
        let mut ids = Vec::new();
        for members in group(&items) {
            let id = self.next_id;
            self.next_id += 1;
            let mut island = Island::default();
            for i in members {
                let (order, ts) = &items[i];
                self.by_ingress.insert(order.1.clone(), id);
                self.ours.insert(order.clone());
                island.ingresses.push(order.clone());
                for x in ts {
                    if self.by_touch.insert(x.clone(), id).is_none() {
                        island.touches.push(x.clone());
                    }
                }
            }
            self.islands.insert(id, island);
            ids.push(id);
        }
        for (host, routes) in t.routes.entries() {
            let id = *self.by_touch.get(&Touch::Host(host.clone())).ok_or(())?;
            let island = self.islands.get_mut(&id).ok_or(())?;
            for spec in routes.targets() {
                uses(spec, &mut island.pools, &mut island.limits);
            }
            island.hosts.push(host);
        }
        if let Some(fallback) = t.routes.fallback() {
            let id = *self.by_touch.get(&Touch::Host(HostMatch::Any)).ok_or(())?;
            let island = self.islands.get_mut(&id).ok_or(())?;
            uses(fallback, &mut island.pools, &mut island.limits);
            island.fallback = true;
        }
        let order: HashMap<&ObjKey, &Order> = (items.iter()).map(|(o, _)| (&o.1, o)).collect();
        for b in &t.tls {
            let (Some(o), Some(id)) = (order.get(&b.ingress), self.by_ingress.get(&b.ingress))
            else {
                continue;
            };
            let island = self.islands.get_mut(id).ok_or(())?;
            for h in &b.hosts {
                if let Some(p) = h.strip_prefix("*.") {
                    island.wildcard_tls.push(p.to_string());
                    *self.wildcard_tls.entry(p.to_string()).or_default() += 1;
                }
            }
            self.tls.entry((*o).clone()).or_default().push(b.clone());
        }
        for d in &t.diagnostics {
            let owner = d.ingress.as_ref().and_then(|k| self.by_ingress.get(k));
            match (owner, unowned, ids.first()) {
                (Some(id), _, _) | (None, Unowned::FirstIsland, Some(id)) => {
                    self.diags.entry(*id).or_default().push(d.clone())
                }
                _ => self.global_diags.push(d.clone()),
            }
        }
        for h in &t.client_auth_hosts {
            let id = *self.by_touch.get(&Touch::Host(host_of(h))).ok_or(())?;
            self.islands
                .get_mut(&id)
                .ok_or(())?
                .client_auth
                .push(h.clone());
            self.client_auth.insert(h.clone());
        }
        Ok(ids)
    }

    /// Every diagnostic of the islands and of none.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut out = self.global_diags.clone();
        out.extend(self.diags.values().flatten().cloned());
        out
    }

    /// Every TLS entry, oldest Ingress first.
    pub fn tls(&self) -> Vec<TlsBinding> {
        self.tls.values().flatten().cloned().collect()
    }

    /// Hosts whose handshakes ask for a client certificate, sorted.
    pub fn client_auth_hosts(&self) -> Vec<String> {
        self.client_auth.iter().cloned().collect()
    }

    /// Every Ingress of ours, oldest first.
    pub fn ours(&self) -> Vec<ObjKey> {
        self.ours.iter().map(|(_, k)| k.clone()).collect()
    }

    /// Whether the next change may be translated in part.
    pub fn usable(&self) -> bool {
        self.usable
    }

    /// Pools the routes of every island and of none use (for tests: they must be the pools
    /// of a whole translation of the same snapshot).
    pub fn pools(&self) -> BTreeSet<UpstreamKey> {
        (self.islands.values())
            .flat_map(|i| i.pools.iter())
            .chain(self.pinned_pools.iter())
            .cloned()
            .collect()
    }

    /// How many islands there are.
    pub fn len(&self) -> usize {
        self.islands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.islands.is_empty()
    }
}

/// Pools and limiters a whole translated table and its default route use: what the
/// controller keeps after a whole translation (everything else is dropped).
pub fn table_uses(
    routes: &RouteTable<RouteSpec>,
    default_route: &RouteSpec,
) -> (HashSet<UpstreamKey>, HashSet<LimitSpec>) {
    let (mut pools, mut limits) = (HashSet::default(), HashSet::default());
    uses(default_route, &mut pools, &mut limits);
    for (_, r) in routes.entries() {
        for spec in r.targets() {
            uses(spec, &mut pools, &mut limits);
        }
    }
    if let Some(f) = routes.fallback() {
        uses(f, &mut pools, &mut limits);
    }
    (pools, limits)
}
