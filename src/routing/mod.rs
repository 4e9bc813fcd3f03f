//! The route table: host index (exact, one-label wildcard, any host) then a path matcher
//! (Exact, element-wise Prefix) per host. Plain synchronous code, generic over the route
//! target, built once per generation and only read on the hot path.
//!
//! Lookup order for a request:
//! 1. host: the exact host if any rule names it, else the wildcard `*.<rest>` covering its
//!    first label, else the rules without a host. Hosts never fall through to one another
//!    (as in nginx server blocks): a host with rules answers only from its own rules.
//! 2. path within that host: an Exact path equal to the request path, else the longest
//!    Prefix that matches element-wise (`/foo` matches `/foo`, `/foo/`, `/foo/bar`, not
//!    `/foobar`). An Exact match is always at least as long as any matching prefix, so
//!    "longest wins, Exact beats Prefix on a tie" reduces to "Exact first".
//! 3. the host's own default (an Ingress `defaultBackend` for the hosts of that Ingress),
//!    then the table's fallback (the `defaultBackend` of an Ingress without rules).
//!
//! Lookups allocate nothing: the host is lowercased into a stack buffer and prefix candidates
//! are slices of the request path, each checked with one hash lookup.

#[cfg(test)]
mod tests;

use std::collections::HashMap;

/// How a path rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// The whole path, case-sensitive.
    Exact,
    /// Element-wise prefix on `/`; trailing slash ignored.
    Prefix,
}

/// Which hosts a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostMatch {
    /// One host, lowercase.
    Exact(String),
    /// `*.suffix`: any host with exactly one more label in front of `suffix` (lowercase).
    Wildcard(String),
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
            HostMatch::Wildcard(h) => write!(f, "*.{h}"),
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

/// The routes of one host.
#[derive(Debug, Clone)]
pub struct HostRoutes<T> {
    exact: HashMap<Box<str>, T>,
    prefix: HashMap<Box<str>, T>,
    default: Option<T>,
}

impl<T> Default for HostRoutes<T> {
    fn default() -> Self {
        HostRoutes {
            exact: HashMap::new(),
            prefix: HashMap::new(),
            default: None,
        }
    }
}

impl<T> HostRoutes<T> {
    fn lookup_path(&self, path: &str) -> Option<&T> {
        if !self.exact.is_empty() {
            if let Some(t) = self.exact.get(path) {
                return Some(t);
            }
        }
        if self.prefix.is_empty() {
            return None;
        }
        // Candidates from longest to shortest, cut only at '/' so matching is element-wise.
        let mut p = path.trim_end_matches('/');
        loop {
            if p.is_empty() {
                return self.prefix.get("/");
            }
            if let Some(t) = self.prefix.get(p) {
                return Some(t);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return self.prefix.get("/"),
            }
        }
    }

    fn map<U>(self, f: &mut impl FnMut(T) -> U) -> HostRoutes<U> {
        HostRoutes {
            exact: self.exact.into_iter().map(|(k, v)| (k, f(v))).collect(),
            prefix: self.prefix.into_iter().map(|(k, v)| (k, f(v))).collect(),
            default: self.default.map(f),
        }
    }

    fn len(&self) -> usize {
        self.exact.len() + self.prefix.len()
    }
}

/// A route that could not be added because an earlier one holds the same place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupied;

/// Hosts to routes. Build with `insert_*`, then only read.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    exact: HashMap<Box<str>, HostRoutes<T>>,
    wildcard: HashMap<Box<str>, HostRoutes<T>>,
    any: Option<HostRoutes<T>>,
    fallback: Option<T>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any: None,
            fallback: None,
        }
    }
}

impl<T> RouteTable<T> {
    fn host_mut(&mut self, host: &HostMatch) -> &mut HostRoutes<T> {
        match host {
            HostMatch::Exact(h) => self.exact.entry(h.as_str().into()).or_default(),
            HostMatch::Wildcard(h) => self.wildcard.entry(h.as_str().into()).or_default(),
            HostMatch::Any => self.any.get_or_insert_with(HostRoutes::default),
        }
    }

    /// Add a path rule; the first rule for a host+path+kind keeps its place.
    pub fn insert_path(
        &mut self,
        host: &HostMatch,
        kind: PathKind,
        path: &str,
        target: T,
    ) -> Result<(), Occupied> {
        let routes = self.host_mut(host);
        let (map, key) = match kind {
            PathKind::Exact => (&mut routes.exact, path),
            PathKind::Prefix => (&mut routes.prefix, normalize_prefix(path)),
        };
        if map.contains_key(key) {
            return Err(Occupied);
        }
        map.insert(key.into(), target);
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

    /// Find the target for a request. `host` is the raw Host header (any case, may carry a
    /// port); `path` is the request path without the query string.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&T> {
        let mut buf = [0u8; 256];
        let routes = normalize_host(host, &mut buf).and_then(|h| self.host_routes(h));
        let routes = routes.or(self.any.as_ref());
        if let Some(r) = routes {
            if let Some(t) = r.lookup_path(path).or(r.default.as_ref()) {
                return Some(t);
            }
        }
        self.fallback.as_ref()
    }

    fn host_routes(&self, host: &str) -> Option<&HostRoutes<T>> {
        if let Some(r) = self.exact.get(host) {
            return Some(r);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let dot = host.find('.')?;
        if dot == 0 {
            return None;
        }
        self.wildcard.get(&host[dot + 1..])
    }

    /// Convert every target (used to attach live upstream pools to translated routes).
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> RouteTable<U> {
        RouteTable {
            exact: self
                .exact
                .into_iter()
                .map(|(k, v)| (k, v.map(&mut f)))
                .collect(),
            wildcard: self
                .wildcard
                .into_iter()
                .map(|(k, v)| (k, v.map(&mut f)))
                .collect(),
            any: self.any.map(|r| r.map(&mut f)),
            fallback: self.fallback.map(f),
        }
    }

    /// Number of path rules.
    pub fn len(&self) -> usize {
        self.exact.values().map(HostRoutes::len).sum::<usize>()
            + self.wildcard.values().map(HostRoutes::len).sum::<usize>()
            + self.any.as_ref().map_or(0, HostRoutes::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.fallback.is_none()
    }
}

/// Lowercase a Host header value into `buf`, without its port and trailing dot.
/// Returns None for an empty or over-long host.
pub fn normalize_host<'a>(raw: &str, buf: &'a mut [u8; 256]) -> Option<&'a str> {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        match raw.find(']') {
            Some(i) => &raw[..=i],
            None => raw,
        }
    } else {
        match raw.rfind(':') {
            Some(i) => &raw[..i],
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..host.len()];
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}
