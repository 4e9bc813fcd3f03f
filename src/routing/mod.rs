//! The route table: host index (exact, one-label wildcard, any host) then the ordered rules
//! of each host. Plain synchronous code, generic over the route target, built once per
//! generation and only read on the hot path. Ingress (with ingress-nginx's annotations) and
//! Gateway API routes both translate into it.
//!
//! Lookup order for a request:
//! 1. host: the exact host if any rule names it, else the Ingress wildcard `*.<rest>`
//!    covering its first label, else the longest Gateway API wildcard suffix (`*.a.b` covers
//!    any number of labels before `a.b`), else the rules without a host. Hosts never fall
//!    through to one another (as in nginx server blocks): a host with rules answers only
//!    from its own rules.
//! 2. the host's root rule, for the path `/` only (ingress-nginx `app-root`).
//! 3. path within that host: an Exact path equal to the request path, then the host's
//!    regex rules, in their order: the first whose regex matches wins (one leftmost-first
//!    multi-pattern search per request), then the longest Prefix that matches element-wise
//!    (`/foo` matches `/foo`, `/foo/`, `/foo/bar`, not `/foobar`). An Exact match is always
//!    at least as long as any matching prefix, so "longest wins, Exact beats Prefix on a
//!    tie" reduces to "Exact first". Ingress hosts never mix regex and prefix rules (a
//!    regex-mode host has only regex rules), so the regex-before-prefix order is the
//!    Gateway API one (as Contour's: Exact, RegularExpression, PathPrefix).
//! 4. the host's own default (an Ingress `defaultBackend` for the hosts of that Ingress),
//!    then the table's fallback (the `defaultBackend` of an Ingress without rules).
//!
//! Each path place (a "slot") holds its unconditional rule and, before it, rules with
//! conditions on the listener, method, headers, query parameters or cookies, ordered at build time by
//! precedence (more conditions first). A slot whose rules' conditions all fail does not
//! match, and the search goes on to the next shorter prefix or regex. A slot without
//! conditional rules costs one branch.
//!
//! Lookups allocate nothing: the host is lowercased into a stack buffer, prefix candidates
//! are slices of the request path, each checked with one hash lookup, and the regex search
//! reuses pooled caches (regex-automata: lock-free for the thread that owns the pool, a
//! short mutex for the others). Hosts with the same regex patterns share one compiled
//! matcher, and so one warm cache.

use std::sync::Arc;

#[cfg(test)]
mod tests;

/// The route table's maps are looked up on every request (host, then exact path): foldhash
/// (seeded per process, as hashbrown's default) instead of SipHash. Their keys come from
/// the configuration, never from a request, so a client cannot build collisions.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A host or path key of those maps: inline up to 24 bytes (nearly every host and path), so
/// a lookup compares it in the hash bucket it has already read, without a second cache miss
/// on a heap string (at 1,000 hosts those misses, with the metrics', were most of pingress's
/// cost over the Pingora floor: docs/benchmarks.md).
type Key = compact_str::CompactString;

pub mod conditions;

pub use conditions::{Conditions, Listener, ListenerMatch, Request, ValueMatch};

/// How a path rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// The whole path, case-sensitive.
    Exact,
    /// Element-wise prefix on `/`; trailing slash ignored.
    Prefix,
    /// A regular expression (Rust `regex` syntax) searched in the path; the pattern carries
    /// its own anchors and flags. Rules of this kind are tried in insertion order.
    Regex,
}

/// Which hosts a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostMatch {
    /// One host, lowercase.
    Exact(String),
    /// `*.suffix`: any host with exactly one more label in front of `suffix` (lowercase).
    Wildcard(String),
    /// Gateway API `*.suffix`: any host with one or more labels in front of `suffix`
    /// (lowercase). Looked up after the exact host and the one-label wildcard, longest
    /// suffix first.
    Suffix(String),
    /// Rules without a host.
    Any,
}

/// Why a host string cannot be used in a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host `{0}` is an IP address; Ingress hosts must be DNS names")]
    IpAddress(String),
    #[error("host `{0}` is not a valid DNS name")]
    Invalid(String),
    #[error("host `{0}`: a wildcard must be the whole first label (`*.example.com`)")]
    BadWildcard(String),
}

impl HostMatch {
    /// Parse the `host` of an Ingress rule (None or empty: any host).
    pub fn parse(host: Option<&str>) -> Result<HostMatch, HostError> {
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            return Ok(HostMatch::Any);
        };
        let lower = host.to_ascii_lowercase();
        if lower.parse::<std::net::IpAddr>().is_ok() || lower.contains(':') {
            return Err(HostError::IpAddress(host.into()));
        }
        let (wild, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if rest.contains('*') {
            return Err(HostError::BadWildcard(host.into()));
        }
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if rest.len() > 253 || !rest.split('.').all(valid_label) {
            return Err(HostError::Invalid(host.into()));
        }
        Ok(if wild {
            HostMatch::Wildcard(rest.to_string())
        } else {
            HostMatch::Exact(rest.to_string())
        })
    }
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(h) | HostMatch::Suffix(h) => write!(f, "*.{h}"),
            HostMatch::Any => f.write_str("*"),
        }
    }
}

/// Normalize a prefix rule path: no trailing slash except for `/` itself.
pub fn normalize_prefix(path: &str) -> &str {
    let t = path.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// The rules of one path place: conditional rules (most specific first), then the
/// unconditional one.
#[derive(Debug, Clone)]
pub struct Slot<T> {
    conditional: Vec<(Conditions, T)>,
    plain: Option<T>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            conditional: Vec::new(),
            plain: None,
        }
    }
}

impl<T> Slot<T> {
    #[inline]
    fn pick(&self, req: &Request) -> Option<&T> {
        if !self.conditional.is_empty() {
            if let Some((_, t)) = self.conditional.iter().find(|(c, _)| c.matches(req)) {
                return Some(t);
            }
        }
        self.plain.as_ref()
    }

    /// Add a rule; the first one with the same conditions keeps its place.
    fn add(&mut self, cond: Option<Conditions>, target: T) -> Result<(), Occupied> {
        match cond.filter(|c| !c.is_empty()) {
            None if self.plain.is_some() => Err(Occupied),
            None => {
                self.plain = Some(target);
                Ok(())
            }
            Some(c) => {
                if self.conditional.iter().any(|(have, _)| *have == c) {
                    return Err(Occupied);
                }
                // Stable: among equally specific rules the earlier keeps precedence.
                let at = self
                    .conditional
                    .iter()
                    .position(|(have, _)| have.precedence() < c.precedence())
                    .unwrap_or(self.conditional.len());
                self.conditional.insert(at, (c, target));
                Ok(())
            }
        }
    }

    fn map<U>(self, f: &mut impl FnMut(T) -> U) -> Slot<U> {
        Slot {
            conditional: self
                .conditional
                .into_iter()
                .map(|(c, t)| (c, f(t)))
                .collect(),
            plain: self.plain.map(f),
        }
    }

    fn len(&self) -> usize {
        self.conditional.len() + usize::from(self.plain.is_some())
    }

    fn targets(&self) -> impl Iterator<Item = (Option<&Conditions>, &T)> {
        self.conditional
            .iter()
            .map(|(c, t)| (Some(c), t))
            .chain(self.plain.iter().map(|t| (None, t)))
    }
}

/// The regex rules of one host, in order, with one multi-pattern matcher over all of them.
#[derive(Debug, Clone)]
struct RegexRules<T> {
    /// Pattern source and its rules, in precedence order.
    slots: Vec<(Box<str>, Slot<T>)>,
    /// The compiled patterns, built by [`RouteTable::finish`]: shared by every host of the
    /// table with the same patterns in the same order (1,000 hosts with the rule
    /// `/svc(/|$)(.*)` have one matcher, with one warm lazy-DFA cache, not 1,000).
    matchers: Option<Arc<Matchers>>,
}

/// One host's regex patterns, compiled.
#[derive(Debug)]
struct Matchers {
    /// Leftmost-first over the patterns: an anchored-or-not search reports the first
    /// pattern (in order) that matches.
    set: regex_automata::meta::Regex,
    /// Each pattern alone, for continuing past a slot whose conditions all failed.
    each: Vec<regex::Regex>,
}

impl Matchers {
    fn new(patterns: &[&str]) -> Result<Self, String> {
        // A larger lazy-DFA cache than the 2 MiB default: with hundreds of patterns the DFA
        // would otherwise keep clearing its cache and fall back to slower engines.
        let set = regex_automata::meta::Regex::builder()
            .configure(regex_automata::meta::Config::new().hybrid_cache_capacity(32 << 20))
            .build_many(patterns)
            .map_err(|e| e.to_string())?;
        let each = patterns
            .iter()
            .map(|p| regex::Regex::new(p))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        Ok(Matchers { set, each })
    }
}

/// The matchers compiled so far while a table is finished, by pattern list.
type MatcherCache = HashMap<Vec<Box<str>>, Arc<Matchers>>;

impl<T> Default for RegexRules<T> {
    fn default() -> Self {
        RegexRules {
            slots: Vec::new(),
            matchers: None,
        }
    }
}

impl<T> RegexRules<T> {
    fn lookup(&self, req: &Request) -> Option<&T> {
        let m = self.matchers.as_deref()?;
        let first = m.set.search(&regex_automata::Input::new(req.path))?;
        let i = first.pattern().as_usize();
        if let Some(t) = self.slots[i].1.pick(req) {
            return Some(t);
        }
        // That rule's conditions failed: the next matching rule in order.
        (i + 1..self.slots.len())
            .filter(|&j| m.each[j].is_match(req.path))
            .find_map(|j| self.slots[j].1.pick(req))
    }
}

/// The routes of one host.
#[derive(Debug, Clone)]
pub struct HostRoutes<T> {
    /// For the path `/` only, before every other rule (ingress-nginx `app-root`).
    root: Option<T>,
    exact: HashMap<Key, Slot<T>>,
    prefix: HashMap<Key, Slot<T>>,
    regex: Option<Box<RegexRules<T>>>,
    default: Option<T>,
}

impl<T> Default for HostRoutes<T> {
    fn default() -> Self {
        HostRoutes {
            root: None,
            exact: HashMap::default(),
            prefix: HashMap::default(),
            regex: None,
            default: None,
        }
    }
}

impl<T> HostRoutes<T> {
    fn lookup_path(&self, req: &Request) -> Option<&T> {
        let path = req.path;
        if let Some(t) = &self.root {
            if path == "/" {
                return Some(t);
            }
        }
        if !self.exact.is_empty() {
            if let Some(t) = self.exact.get(path).and_then(|s| s.pick(req)) {
                return Some(t);
            }
        }
        if let Some(t) = self.regex.as_ref().and_then(|r| r.lookup(req)) {
            return Some(t);
        }
        if !self.prefix.is_empty() {
            return self.lookup_prefix(req);
        }
        None
    }

    fn lookup_prefix(&self, req: &Request) -> Option<&T> {
        // Candidates from longest to shortest, cut only at '/' so matching is element-wise.
        let mut p = req.path.trim_end_matches('/');
        loop {
            if p.is_empty() {
                return self.prefix.get("/").and_then(|s| s.pick(req));
            }
            if let Some(t) = self.prefix.get(p).and_then(|s| s.pick(req)) {
                return Some(t);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return self.prefix.get("/").and_then(|s| s.pick(req)),
            }
        }
    }

    fn map<U>(self, f: &mut impl FnMut(T) -> U) -> HostRoutes<U> {
        HostRoutes {
            root: self.root.map(&mut *f),
            exact: self.exact.into_iter().map(|(k, v)| (k, v.map(f))).collect(),
            prefix: self
                .prefix
                .into_iter()
                .map(|(k, v)| (k, v.map(f)))
                .collect(),
            regex: self.regex.map(|r| {
                Box::new(RegexRules {
                    slots: r.slots.into_iter().map(|(p, s)| (p, s.map(f))).collect(),
                    matchers: r.matchers,
                })
            }),
            default: self.default.map(f),
        }
    }

    fn len(&self) -> usize {
        self.exact.values().map(Slot::len).sum::<usize>()
            + self.prefix.values().map(Slot::len).sum::<usize>()
            + self
                .regex
                .as_ref()
                .map_or(0, |r| r.slots.iter().map(|(_, s)| s.len()).sum())
    }

    fn finish(&mut self, cache: &mut MatcherCache) -> Result<(), String> {
        let Some(r) = &mut self.regex else {
            return Ok(());
        };
        let key: Vec<Box<str>> = r.slots.iter().map(|(p, _)| p.clone()).collect();
        if let Some(m) = cache.get(&key) {
            r.matchers = Some(m.clone());
            return Ok(());
        }
        let patterns: Vec<&str> = key.iter().map(|p| &**p).collect();
        let m = Arc::new(Matchers::new(&patterns)?);
        cache.insert(key, m.clone());
        r.matchers = Some(m);
        Ok(())
    }

    /// Every target of the host: app-root, path rules (conditional ones too), default.
    pub fn targets(&self) -> impl Iterator<Item = &T> {
        let slots = (self.exact.values()).chain(self.prefix.values()).chain(
            self.regex
                .iter()
                .flat_map(|r| r.slots.iter().map(|(_, s)| s)),
        );
        (self.root.iter())
            .chain(slots.flat_map(|s| s.targets().map(|(_, t)| t)))
            .chain(self.default.iter())
    }

    /// The app-root target: for the path `/` only, before every other rule.
    pub fn root(&self) -> Option<&T> {
        self.root.as_ref()
    }

    /// The host's default target, for requests no path rule matched.
    pub fn host_default(&self) -> Option<&T> {
        self.default.as_ref()
    }

    /// Every rule of the host: (kind, path or pattern, conditions, target), in lookup order
    /// within each kind.
    pub fn rules(&self) -> Vec<(PathKind, &str, Option<&Conditions>, &T)> {
        let mut out = Vec::new();
        let mut exact: Vec<_> = self.exact.iter().collect();
        exact.sort_by(|a, b| a.0.cmp(b.0));
        for (p, s) in exact {
            out.extend(s.targets().map(|(c, t)| (PathKind::Exact, &**p, c, t)));
        }
        let mut prefix: Vec<_> = self.prefix.iter().collect();
        prefix.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        for (p, s) in prefix {
            out.extend(s.targets().map(|(c, t)| (PathKind::Prefix, &**p, c, t)));
        }
        for (p, s) in self.regex.iter().flat_map(|r| r.slots.iter()) {
            out.extend(s.targets().map(|(c, t)| (PathKind::Regex, &**p, c, t)));
        }
        out
    }
}

/// The steps of one lookup ([`RouteTable::trace`]).
pub struct Trace<'a, T> {
    /// The Host as looked up (lowercase, no port); None when it is not a valid host.
    pub normalized: Option<String>,
    /// The host entry the request fell to.
    pub host: Option<HostMatch>,
    pub rules: Option<&'a HostRoutes<T>>,
    /// The path rule (or app-root) that matched.
    pub path_target: Option<&'a T>,
    /// The host's default backend, used when no path rule matched.
    pub host_default: Option<&'a T>,
    /// The table's fallback (an Ingress `defaultBackend` without rules).
    pub fallback: Option<&'a T>,
}

/// Shards of a host map: 64 is enough for a copy of a 50,000-host table with a few hosts
/// replaced to copy about 800 entries, and small enough that their headers stay in cache.
const SHARDS: usize = 64;

/// A host map split into shards behind `Arc`s. A copy of it copies 64 pointers; changing
/// a host then copies that host's shard only (`Arc::make_mut`). A lookup hashes the host
/// once more to pick its shard (keys come from the configuration, so a fixed seed is fine).
#[derive(Debug, Clone)]
struct HostMap<V> {
    shards: Box<[Arc<HashMap<Key, V>>]>,
    len: usize,
}

impl<V> Default for HostMap<V> {
    fn default() -> Self {
        HostMap {
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::default())).collect(),
            len: 0,
        }
    }
}

#[inline]
fn shard_of(host: &str) -> usize {
    use std::hash::BuildHasher;
    const SEED: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x7069_6e67);
    (SEED.hash_one(host) >> 58) as usize
}

impl<V> HostMap<V> {
    #[inline]
    fn get(&self, host: &str) -> Option<&V> {
        self.shards[shard_of(host)].get(host)
    }

    fn contains_key(&self, host: &str) -> bool {
        self.get(host).is_some()
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn len(&self) -> usize {
        self.len
    }

    fn iter(&self) -> impl Iterator<Item = (&Key, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }
}

impl<V: Clone> HostMap<V> {
    /// The shard of `host`, to change (copied first when another map shares it).
    fn shard_mut(&mut self, host: &str) -> &mut HashMap<Key, V> {
        Arc::make_mut(&mut self.shards[shard_of(host)])
    }

    fn get_mut(&mut self, host: &str) -> Option<&mut V> {
        self.shard_mut(host).get_mut(host)
    }

    fn get_or_default(&mut self, host: &str) -> &mut V
    where
        V: Default,
    {
        let shard = Arc::make_mut(&mut self.shards[shard_of(host)]);
        if !shard.contains_key(host) {
            shard.insert(host.into(), V::default());
            self.len += 1;
        }
        shard.get_mut(host).expect("just inserted")
    }

    fn insert(&mut self, host: Key, value: V) {
        if self.shard_mut(&host).insert(host, value).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, host: &str) -> Option<V> {
        let shard = &mut self.shards[shard_of(host)];
        if !shard.contains_key(host) {
            return None;
        }
        let v = Arc::make_mut(shard).remove(host);
        self.len -= 1;
        v
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&Key, &mut V)> {
        self.shards
            .iter_mut()
            .flat_map(|s| Arc::make_mut(s).iter_mut())
    }

    /// The same hosts with each value converted, shard by shard.
    fn map_values<U>(self, mut f: impl FnMut(V) -> U) -> HostMap<U> {
        let shards = (self.shards.into_vec().into_iter())
            .map(|s| {
                let m: HashMap<Key, U> = (Arc::unwrap_or_clone(s).into_iter())
                    .map(|(k, v)| (k, f(v)))
                    .collect();
                Arc::new(m)
            })
            .collect();
        HostMap {
            shards,
            len: self.len,
        }
    }

    fn into_iter(self) -> impl Iterator<Item = (Key, V)> {
        (self.shards.into_vec().into_iter()).flat_map(|s| Arc::unwrap_or_clone(s).into_iter())
    }
}

/// A route that could not be added because an earlier one holds the same place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupied;

/// Hosts to routes. Build with `insert_*`, then [`RouteTable::finish`], then only read.
///
/// Each host's routes sit behind an `Arc`, so a copy of the table (a generation built from
/// the last one with a few hosts replaced, `translate::islands`) copies a pointer per host,
/// not its path maps: 50,000 hosts cost about a millisecond, not tens.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    exact: HostMap<Arc<HostRoutes<T>>>,
    wildcard: HostMap<Arc<HostRoutes<T>>>,
    suffix: HostMap<Arc<HostRoutes<T>>>,
    any: Option<HostRoutes<T>>,
    fallback: Option<T>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable {
            exact: HostMap::default(),
            wildcard: HostMap::default(),
            suffix: HostMap::default(),
            any: None,
            fallback: None,
        }
    }
}

impl<T: Clone> RouteTable<T> {
    /// A host's routes to change (copied first if another table shares them: while a table
    /// is built, none does).
    fn host_mut(&mut self, host: &HostMatch) -> &mut HostRoutes<T> {
        match host {
            HostMatch::Exact(h) => Arc::make_mut(self.exact.get_or_default(h)),
            HostMatch::Wildcard(h) => Arc::make_mut(self.wildcard.get_or_default(h)),
            HostMatch::Suffix(h) => Arc::make_mut(self.suffix.get_or_default(h)),
            HostMatch::Any => self.any.get_or_insert_with(HostRoutes::default),
        }
    }

    /// Add an unconditional path rule; the first rule for a host+path+kind keeps its place.
    /// A `Regex` path is a pattern, checked by [`RouteTable::finish`].
    pub fn insert_path(
        &mut self,
        host: &HostMatch,
        kind: PathKind,
        path: &str,
        target: T,
    ) -> Result<(), Occupied> {
        self.insert_rule(host, kind, path, None, target)
    }

    /// Add a path rule with optional conditions. The first rule for a host+path+kind with the
    /// same conditions keeps its place.
    pub fn insert_rule(
        &mut self,
        host: &HostMatch,
        kind: PathKind,
        path: &str,
        cond: Option<Conditions>,
        target: T,
    ) -> Result<(), Occupied> {
        let routes = self.host_mut(host);
        let slot = match kind {
            PathKind::Exact => routes.exact.entry(path.into()).or_default(),
            PathKind::Prefix => routes
                .prefix
                .entry(normalize_prefix(path).into())
                .or_default(),
            PathKind::Regex => {
                let r = routes.regex.get_or_insert_with(Default::default);
                match r.slots.iter().position(|(p, _)| **p == *path) {
                    Some(i) => &mut r.slots[i].1,
                    None => {
                        r.slots.push((path.into(), Slot::default()));
                        r.matchers = None;
                        &mut r.slots.last_mut().expect("just pushed").1
                    }
                }
            }
        };
        slot.add(cond, target)
    }

    /// Set the rule for the exact path `/` of a host, checked before all its other rules.
    pub fn insert_root(&mut self, host: &HostMatch, target: T) -> Result<(), Occupied> {
        let routes = self.host_mut(host);
        if routes.root.is_some() {
            return Err(Occupied);
        }
        routes.root = Some(target);
        Ok(())
    }

    /// Make sure a host exists in the table even before it has paths (so that it answers from
    /// its own default rather than from the rules without a host).
    pub fn ensure_host(&mut self, host: &HostMatch) {
        self.host_mut(host);
    }

    /// Set the default for one host's unmatched paths.
    pub fn insert_host_default(&mut self, host: &HostMatch, target: T) -> Result<(), Occupied> {
        let routes = self.host_mut(host);
        if routes.default.is_some() {
            return Err(Occupied);
        }
        routes.default = Some(target);
        Ok(())
    }

    /// Set the fallback for requests no host or path matches.
    pub fn insert_fallback(&mut self, target: T) -> Result<(), Occupied> {
        if self.fallback.is_some() {
            return Err(Occupied);
        }
        self.fallback = Some(target);
        Ok(())
    }

    /// Compile each host's regex rules into its matcher. Call once after the last insert;
    /// Err names the host whose patterns do not compile together (each pattern is expected
    /// to have been checked on its own before it was inserted).
    pub fn finish(&mut self) -> Result<(), String> {
        let hosts = self
            .exact
            .iter_mut()
            .map(|(h, r)| (h.to_string(), Arc::make_mut(r)))
            .chain((self.wildcard.iter_mut()).map(|(h, r)| (format!("*.{h}"), Arc::make_mut(r))))
            .chain((self.suffix.iter_mut()).map(|(h, r)| (format!("*.{h}"), Arc::make_mut(r))))
            .chain(self.any.iter_mut().map(|r| ("*".to_string(), r)));
        let mut cache = MatcherCache::default();
        for (name, routes) in hosts {
            routes
                .finish(&mut cache)
                .map_err(|e| format!("host {name}: regex rules: {e}"))?;
        }
        Ok(())
    }

    /// Find the target for a request by host and path alone (conditional rules do not match).
    /// `host` is the raw Host header (any case, may carry a port); `path` is the request path
    /// without the query string.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&T> {
        self.lookup_request(&Request::new(host, path))
    }

    /// Find the target for a request.
    pub fn lookup_request(&self, req: &Request) -> Option<&T> {
        let mut buf = [0u8; 256];
        let routes = normalize_host(req.host, &mut buf).and_then(|h| self.host_routes(h));
        let routes = routes.or(self.any.as_ref());
        if let Some(r) = routes {
            if let Some(t) = r.lookup_path(req).or(r.default.as_ref()) {
                return Some(t);
            }
        }
        self.fallback.as_ref()
    }

    /// How a request is looked up, step by step (for `pingress explain`): the host entry
    /// it falls to (exact, wildcard or the rules without host), and the target the table
    /// answers with (None: the generation's default route).
    pub fn trace(&self, req: &Request) -> Trace<'_, T> {
        let mut buf = [0u8; 256];
        let normalized = normalize_host(req.host, &mut buf).map(str::to_string);
        let found = normalized
            .as_deref()
            .and_then(|h| self.host_entry(h).map(|(m, r)| (m.into_match(), r)));
        let found = found.or_else(|| self.any.as_ref().map(|r| (HostMatch::Any, r)));
        let (host, path_target, host_default) = match &found {
            Some((m, r)) => (Some(m.clone()), r.lookup_path(req), r.default.as_ref()),
            None => (None, None, None),
        };
        Trace {
            normalized,
            host,
            rules: found.map(|(_, r)| r),
            path_target,
            host_default,
            fallback: self.fallback.as_ref(),
        }
    }

    #[inline]
    fn host_routes(&self, host: &str) -> Option<&HostRoutes<T>> {
        if let Some(r) = self.exact.get(host) {
            return Some(r);
        }
        if self.wildcard.is_empty() && self.suffix.is_empty() {
            return None;
        }
        self.host_entry(host).map(|(_, r)| r)
    }

    /// The host entry for a normalised host: exact, then the one-label wildcard, then the
    /// longest multi-label suffix.
    fn host_entry<'h>(&self, host: &'h str) -> Option<(Found<'h>, &HostRoutes<T>)> {
        if let Some(r) = self.exact.get(host) {
            return Some((Found::Exact(host), r));
        }
        let dot = host.find('.').filter(|d| *d > 0)?;
        let rest = &host[dot + 1..];
        if let Some(r) = self.wildcard.get(rest) {
            return Some((Found::Wildcard(rest), r));
        }
        if self.suffix.is_empty() {
            return None;
        }
        let mut rest = rest;
        loop {
            if let Some(r) = self.suffix.get(rest) {
                return Some((Found::Suffix(rest), r));
            }
            rest = &rest[rest.find('.')? + 1..];
        }
    }

    /// The target for requests whose host has no entry or whose host entry has no match
    /// (an Ingress `defaultBackend` without rules).
    pub fn fallback(&self) -> Option<&T> {
        self.fallback.as_ref()
    }

    /// Every host of the table with its routes, sorted by host (for the debug view and
    /// `pingress check`).
    pub fn hosts(&self) -> Vec<(HostMatch, &HostRoutes<T>)> {
        let mut out: Vec<_> = self
            .exact
            .iter()
            .map(|(h, r)| (HostMatch::Exact(h.to_string()), &**r))
            .chain(
                self.wildcard
                    .iter()
                    .map(|(h, r)| (HostMatch::Wildcard(h.to_string()), &**r)),
            )
            .chain(
                self.suffix
                    .iter()
                    .map(|(h, r)| (HostMatch::Suffix(h.to_string()), &**r)),
            )
            .chain(self.any.iter().map(|r| (HostMatch::Any, r)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every host entry with its host, in no order (the full table's hosts; see
    /// [`RouteTable::hosts`] for a sorted list).
    pub fn entries(&self) -> impl Iterator<Item = (HostMatch, &HostRoutes<T>)> {
        (self.exact.iter())
            .map(|(h, r)| (HostMatch::Exact(h.to_string()), &**r))
            .chain((self.wildcard.iter()).map(|(h, r)| (HostMatch::Wildcard(h.to_string()), &**r)))
            .chain((self.suffix.iter()).map(|(h, r)| (HostMatch::Suffix(h.to_string()), &**r)))
            .chain(self.any.iter().map(|r| (HostMatch::Any, r)))
    }

    /// Replace part of a finished table: drop the entries of `removed` hosts (and the
    /// fallback when `removed_fallback`), then take every host entry of `part`, and its
    /// fallback, as they are (their regex matchers already compiled). Used for a new
    /// generation that re-translated only some Ingresses (`translate::islands`).
    pub fn replace_hosts(
        &mut self,
        removed: &[HostMatch],
        removed_fallback: bool,
        part: RouteTable<T>,
    ) {
        for h in removed {
            match h {
                HostMatch::Exact(h) => drop(self.exact.remove(h)),
                HostMatch::Wildcard(h) => drop(self.wildcard.remove(h)),
                HostMatch::Suffix(h) => drop(self.suffix.remove(h)),
                HostMatch::Any => self.any = None,
            }
        }
        if removed_fallback {
            self.fallback = None;
        }
        for (h, r) in part.exact.into_iter() {
            self.exact.insert(h, r);
        }
        for (h, r) in part.wildcard.into_iter() {
            self.wildcard.insert(h, r);
        }
        for (h, r) in part.suffix.into_iter() {
            self.suffix.insert(h, r);
        }
        if part.any.is_some() {
            self.any = part.any;
        }
        if part.fallback.is_some() {
            self.fallback = part.fallback;
        }
    }

    /// Convert every target (used to attach live upstream pools to translated routes).
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> RouteTable<U> {
        RouteTable {
            exact: self
                .exact
                .map_values(|v| Arc::new(Arc::unwrap_or_clone(v).map(&mut f))),
            wildcard: self
                .wildcard
                .map_values(|v| Arc::new(Arc::unwrap_or_clone(v).map(&mut f))),
            suffix: self
                .suffix
                .map_values(|v| Arc::new(Arc::unwrap_or_clone(v).map(&mut f))),
            any: self.any.map(|r| r.map(&mut f)),
            fallback: self.fallback.map(f),
        }
    }

    /// Number of host entries (the rules without a host count as one), without visiting
    /// them.
    pub fn host_count(&self) -> usize {
        self.exact.len() + self.wildcard.len() + self.suffix.len() + usize::from(self.any.is_some())
    }

    /// Number of path rules (visits every host).
    pub fn len(&self) -> usize {
        self.exact.values().map(|r| r.len()).sum::<usize>()
            + self.wildcard.values().map(|r| r.len()).sum::<usize>()
            + self.suffix.values().map(|r| r.len()).sum::<usize>()
            + self.any.as_ref().map_or(0, HostRoutes::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.fallback.is_none()
    }
}

impl<T: Clone> RouteTable<T> {
    /// Give `alias` a copy of `host`'s rules (ingress-nginx `server-alias`); false when
    /// `host` has none or `alias` already exists.
    pub fn copy_host(&mut self, host: &HostMatch, alias: &HostMatch) -> bool {
        let exists = match alias {
            HostMatch::Exact(h) => self.exact.contains_key(h.as_str()),
            HostMatch::Wildcard(h) => self.wildcard.contains_key(h.as_str()),
            HostMatch::Suffix(h) => self.suffix.contains_key(h.as_str()),
            HostMatch::Any => true,
        };
        let from = match host {
            HostMatch::Exact(h) => self.exact.get(h.as_str()).map(|r| &**r),
            HostMatch::Wildcard(h) => self.wildcard.get(h.as_str()).map(|r| &**r),
            HostMatch::Suffix(h) => self.suffix.get(h.as_str()).map(|r| &**r),
            HostMatch::Any => self.any.as_ref(),
        };
        let Some(routes) = from.cloned().filter(|_| !exists) else {
            return false;
        };
        *self.host_mut(alias) = routes;
        true
    }
}

impl<T: Clone> RouteTable<T> {
    /// The unconditional rule at a host's path place (`path` as inserted: a prefix is
    /// normalised, a regex is its pattern), to amend it after insertion.
    pub fn plain_mut(&mut self, host: &HostMatch, kind: PathKind, path: &str) -> Option<&mut T> {
        let routes = match host {
            HostMatch::Exact(h) => Arc::make_mut(self.exact.get_mut(h.as_str())?),
            HostMatch::Wildcard(h) => Arc::make_mut(self.wildcard.get_mut(h.as_str())?),
            HostMatch::Suffix(h) => Arc::make_mut(self.suffix.get_mut(h.as_str())?),
            HostMatch::Any => self.any.as_mut()?,
        };
        let slot = match kind {
            PathKind::Exact => routes.exact.get_mut(path)?,
            PathKind::Prefix => routes.prefix.get_mut(normalize_prefix(path))?,
            PathKind::Regex => {
                let r = routes.regex.as_mut()?;
                &mut r.slots.iter_mut().find(|(p, _)| **p == *path)?.1
            }
        };
        slot.plain.as_mut()
    }
}

/// Which kind of host entry a lookup found, borrowing the looked-up host.
enum Found<'h> {
    Exact(&'h str),
    Wildcard(&'h str),
    Suffix(&'h str),
}

impl Found<'_> {
    fn into_match(self) -> HostMatch {
        match self {
            Found::Exact(h) => HostMatch::Exact(h.into()),
            Found::Wildcard(h) => HostMatch::Wildcard(h.into()),
            Found::Suffix(h) => HostMatch::Suffix(h.into()),
        }
    }
}

/// A Host header value lowercased, without its port and trailing dot: `raw` itself when it
/// already is (the usual case, nothing copied), else a copy in `buf`. Returns None for an
/// empty or over-long host.
pub fn normalize_host<'a>(raw: &'a str, buf: &'a mut [u8; 256]) -> Option<&'a str> {
    let raw = raw.trim_ascii();
    let b = raw.as_bytes();
    let end = if b.first() == Some(&b'[') {
        // IPv6 literal: keep the brackets, drop the port.
        b.iter().position(|&c| c == b']').map_or(b.len(), |i| i + 1)
    } else {
        b.iter().rposition(|&c| c == b':').unwrap_or(b.len())
    };
    let host = &raw[..end];
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > buf.len() {
        return None;
    }
    if !host.bytes().any(|c| c.is_ascii_uppercase()) {
        return Some(host);
    }
    let out = &mut buf[..host.len()];
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}
