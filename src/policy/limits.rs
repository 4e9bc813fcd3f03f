//! Rate and connection limits per client address per Ingress (limit-rps, limit-rpm,
//! limit-connections, limit-burst-multiplier, limit-whitelist), with ingress-nginx's
//! semantics and memory that stays fixed however many client addresses appear.
//!
//! * **Rates** are governor's GCRA, which is nginx `limit_req`'s leaky bucket with
//!   `nodelay`: a client may send `burst + 1` requests at once (nginx admits the first and
//!   then up to `burst` excess requests), then one per `1/rate`; `burst` is the rate times
//!   limit-burst-multiplier (5). Requests over it are refused at once, never delayed.
//!   limit-rps and limit-rpm can both apply; each is checked.
//! * **State** is one theoretical-arrival time per (limiter, client), kept in one sharded
//!   LRU shared by every limiter, of `limits.tracked_clients` entries. When it is full the
//!   least recently seen client's state is dropped, as nginx drops the oldest states of a
//!   full zone: memory is bounded; a flood of new addresses at worst forgets idle clients.
//! * **Connections** are concurrent requests per client (as nginx `limit_conn` counts
//!   them, an HTTP/2 stream each), in pingora-limits' fixed-size `Inflight` estimator
//!   (4 × 8192 counters for all Ingresses). Collisions can only over-count.
//! * A [`Registry`] keeps each Ingress's limiter while its settings are unchanged, across
//!   generations.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::DefaultClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use lru::LruCache;
use pingora_limits::inflight::{Guard, Inflight};

use crate::translate::model::LimitSpec;

/// Default number of (limiter, client) rate states kept, for all Ingresses together
/// (about 64 bytes each).
pub const DEFAULT_TRACKED_CLIENTS: usize = 100_000;

const SHARDS: usize = 16;

/// The state key: which limiter, which client.
type Key = (u64, IpAddr);

/// One LRU of rate states for every limiter, in shards to keep locks short.
pub struct Store {
    shards: Vec<Mutex<LruCache<Key, u64>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Store {
    pub fn new(capacity: usize) -> Arc<Store> {
        let per = std::num::NonZeroUsize::new(capacity.div_ceil(SHARDS))
            .unwrap_or(std::num::NonZeroUsize::MIN);
        Arc::new(Store {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per)))
                .collect(),
            hasher: Default::default(),
        })
    }

    fn shard(&self, key: &Key) -> &Mutex<LruCache<Key, u64>> {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h % SHARDS]
    }

    /// Rate states held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|l| l.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A governor state store over the shared LRU.
#[derive(Clone)]
pub struct StoreHandle(Arc<Store>);

impl StateStore for StoreHandle {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut shard = match self.0.shard(key).lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let prev = shard.get(key).copied().map(Nanos::from);
        let (t, next) = f(prev)?;
        shard.put(*key, next.into());
        Ok(t)
    }
}

type Gcra = RateLimiter<
    Key,
    StoreHandle,
    DefaultClock,
    NoOpMiddleware<<DefaultClock as governor::clock::Clock>::Instant>,
>;

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Rate,
    Connections,
}

/// The limits of one Ingress.
pub struct Limiter {
    id: u64,
    spec: LimitSpec,
    rps: Option<Gcra>,
    rpm: Option<Gcra>,
    inflight: Arc<Inflight>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("id", &self.id)
            .field("spec", &self.spec)
            .finish()
    }
}

impl Limiter {
    /// Admit a request from `client`: None when it may pass (holding `guard`, which counts
    /// it as in flight until dropped), or the limit it is over.
    pub fn admit(&self, client: IpAddr, guard: &mut Option<Guard>) -> Option<Refusal> {
        if self.spec.allow.iter().any(|n| n.contains(&client)) {
            return None;
        }
        if let Some(max) = self.spec.connections {
            let (g, n) = self.inflight.incr((self.id, client), 1);
            if n > max as isize {
                return Some(Refusal::Connections);
            }
            *guard = Some(g);
        }
        let key = (self.id, client);
        for gcra in [&self.rps, &self.rpm].into_iter().flatten() {
            if gcra.check_key(&key).is_err() {
                *guard = None;
                return Some(Refusal::Rate);
            }
        }
        None
    }

    pub fn spec(&self) -> &LimitSpec {
        &self.spec
    }
}

/// A quota of `n` per `per` with nginx's burst: `burst + 1` cells at once.
fn quota(n: u32, per: std::time::Duration, multiplier: u32) -> Option<Quota> {
    let burst = u64::from(n) * u64::from(multiplier.max(1)) + 1;
    let burst = NonZeroU32::new(u32::try_from(burst).unwrap_or(u32::MAX))?;
    let interval = per / n.max(1);
    Some(Quota::with_period(interval.max(std::time::Duration::from_nanos(1)))?.allow_burst(burst))
}

/// The limiters of the current generation, by settings; reused while they are unchanged.
pub struct Registry {
    store: Arc<Store>,
    inflight: Arc<Inflight>,
    limiters: HashMap<LimitSpec, Arc<Limiter>>,
    next_id: u64,
}

impl Registry {
    pub fn new(tracked_clients: usize) -> Registry {
        Registry {
            store: Store::new(tracked_clients),
            inflight: Arc::new(Inflight::new()),
            limiters: HashMap::new(),
            next_id: 0,
        }
    }

    /// The limiter for `spec`: the existing one when the settings are the same.
    pub fn get(&mut self, spec: &LimitSpec) -> Arc<Limiter> {
        if let Some(l) = self.limiters.get(spec) {
            return l.clone();
        }
        self.next_id += 1;
        let gcra = |n: Option<u32>, per| {
            let q = quota(n?, per, spec.burst_multiplier)?;
            Some(RateLimiter::new(
                q,
                StoreHandle(self.store.clone()),
                DefaultClock::default(),
            ))
        };
        let l = Arc::new(Limiter {
            id: self.next_id,
            spec: spec.clone(),
            rps: gcra(spec.rps, std::time::Duration::from_secs(1)),
            rpm: gcra(spec.rpm, std::time::Duration::from_secs(60)),
            inflight: self.inflight.clone(),
        });
        self.limiters.insert(spec.clone(), l.clone());
        l
    }

    /// Drop the limiters not in `used` (their Ingress is gone or its settings changed).
    pub fn retain<S: std::hash::BuildHasher>(
        &mut self,
        used: &std::collections::HashSet<LimitSpec, S>,
    ) {
        self.limiters.retain(|k, _| used.contains(k));
    }

    /// Drop the limiters of these settings (no route uses them any more).
    pub fn remove(&mut self, specs: &[LimitSpec]) {
        for s in specs {
            self.limiters.remove(s);
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rps: Option<u32>, rpm: Option<u32>, conns: Option<u32>) -> LimitSpec {
        LimitSpec {
            zone: "ns/ing".into(),
            rps,
            rpm,
            connections: conns,
            burst_multiplier: 5,
            allow: vec!["10.0.0.0/8".parse().unwrap()],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_of_rate_times_multiplier_plus_one_passes_then_the_rest_is_refused() {
        let mut reg = Registry::new(1000);
        let l = reg.get(&spec(Some(2), None, None));
        let mut passed = 0;
        for _ in 0..30 {
            if l.admit(ip("192.0.2.1"), &mut None).is_none() {
                passed += 1;
            }
        }
        // burst = 2 × 5 = 10: 11 at once (nginx's nodelay burst), within a test's time
        // at most a few more replenished.
        assert!((11..=13).contains(&passed), "{passed}");
        // Another client is not affected, nor an allow-listed one.
        assert_eq!(l.admit(ip("192.0.2.2"), &mut None), None);
        for _ in 0..100 {
            assert_eq!(l.admit(ip("10.1.1.1"), &mut None), None);
        }
        assert_eq!(l.admit(ip("192.0.2.1"), &mut None), Some(Refusal::Rate));
    }

    #[test]
    fn connections_are_counted_while_their_guard_lives() {
        let mut reg = Registry::new(1000);
        let l = reg.get(&spec(None, None, Some(2)));
        let (mut a, mut b, mut c) = (None, None, None);
        assert_eq!(l.admit(ip("192.0.2.1"), &mut a), None);
        assert_eq!(l.admit(ip("192.0.2.1"), &mut b), None);
        assert_eq!(l.admit(ip("192.0.2.1"), &mut c), Some(Refusal::Connections));
        assert!(c.is_none());
        drop(a.take());
        assert_eq!(l.admit(ip("192.0.2.1"), &mut c), None);
    }

    #[test]
    fn limiters_are_kept_while_their_settings_are_and_per_ingress() {
        let mut reg = Registry::new(1000);
        let a = reg.get(&spec(Some(1), None, None));
        assert!(Arc::ptr_eq(&a, &reg.get(&spec(Some(1), None, None))));
        let mut other = spec(Some(1), None, None);
        other.zone = "ns/other".into();
        let b = reg.get(&other);
        assert!(!Arc::ptr_eq(&a, &b));
        // Exhaust one Ingress's budget: the other Ingress still admits the client.
        while a.admit(ip("192.0.2.1"), &mut None).is_none() {}
        assert_eq!(b.admit(ip("192.0.2.1"), &mut None), None);
        let used: std::collections::HashSet<LimitSpec> = [other.clone()].into();
        reg.retain(&used);
        assert!(!Arc::ptr_eq(&a, &reg.get(&spec(Some(1), None, None))));
    }

    #[test]
    fn memory_stays_bounded_under_a_million_client_addresses() {
        let mut reg = Registry::new(10_000);
        let l = reg.get(&spec(Some(100), None, None));
        for i in 0..1_000_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0xC000_0000 | i));
            let _ = l.admit(ip, &mut None);
        }
        let held = reg.store().len();
        assert!(held <= 10_000 + SHARDS, "{held} states held");
        assert!(held >= 9_000, "{held}");
    }
}
