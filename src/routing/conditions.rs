//! Match conditions beyond the path: method, headers, query parameters and cookies, and the
//! request view they are checked against. Header names are matched case-insensitively,
//! query parameter and cookie names exactly; values exactly or by regex.

use http::HeaderMap;

/// What a lookup sees of a request. Built on the stack per request; checking conditions
/// allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The raw Host header (any case, may carry a port).
    pub host: &'a str,
    /// The path without the query string.
    pub path: &'a str,
    /// The query string without `?`.
    pub query: Option<&'a str>,
    pub method: &'a str,
    pub headers: Option<&'a HeaderMap>,
    /// Which edge listener the request came in on (Gateway API rules are bound to listeners).
    pub listener: Listener,
}

/// The edge listener of a request: TLS or not, and the local port number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Listener {
    pub tls: bool,
    pub port: u16,
}

/// The listeners a Gateway API rule is served on: a Gateway listener on port 80 (HTTP) or
/// 443 (HTTPS) means every plain or every TLS listener of pingress (`port` 0 here); any other
/// port means the pingress listeners bound to that port number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerMatch {
    pub tls: bool,
    /// 0: every listener of that kind.
    pub port: u16,
}

impl ListenerMatch {
    fn matches(&self, l: Listener) -> bool {
        self.tls == l.tls && (self.port == 0 || self.port == l.port)
    }
}

impl<'a> Request<'a> {
    /// A request known only by host and path (conditional rules never match it).
    pub fn new(host: &'a str, path: &'a str) -> Request<'a> {
        Request {
            host,
            path,
            query: None,
            method: "GET",
            headers: None,
            listener: Listener::default(),
        }
    }
}

/// How a value is compared.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    Regex(regex::Regex),
}

impl PartialEq for ValueMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ValueMatch::Exact(a), ValueMatch::Exact(b)) => a == b,
            (ValueMatch::Regex(a), ValueMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for ValueMatch {}

impl ValueMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatch::Exact(want) => v == want,
            ValueMatch::Regex(re) => re.is_match(v),
        }
    }
}

impl std::fmt::Display for ValueMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueMatch::Exact(v) => write!(f, "= {v:?}"),
            ValueMatch::Regex(r) => write!(f, "~ {:?}", r.as_str()),
        }
    }
}

/// Conditions that must all hold for a rule to match (besides its path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Upper-case method name.
    pub method: Option<String>,
    /// Lowercase header name and value match.
    pub headers: Vec<(String, ValueMatch)>,
    pub query: Vec<(String, ValueMatch)>,
    pub cookies: Vec<(String, ValueMatch)>,
    /// Non-empty: the rule is served only on these listeners (Gateway API attachment).
    pub listeners: Vec<ListenerMatch>,
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        self.method.is_none()
            && self.headers.is_empty()
            && self.query.is_empty()
            && self.cookies.is_empty()
            && self.listeners.is_empty()
    }

    /// Gateway API precedence among rules of the same path: a method match first, then more
    /// header matches, then more query matches (cookies count with headers).
    pub fn precedence(&self) -> (bool, usize, usize) {
        (
            self.method.is_some(),
            self.headers.len() + self.cookies.len(),
            self.query.len(),
        )
    }

    /// Whether the request satisfies every condition.
    pub fn matches(&self, req: &Request) -> bool {
        if !self.listeners.is_empty() && !self.listeners.iter().any(|l| l.matches(req.listener)) {
            return false;
        }
        if let Some(m) = &self.method {
            if req.method != m {
                return false;
            }
        }
        for (name, want) in &self.headers {
            // A header sent several times matches on its first value, as Gateway API allows.
            let got = req
                .headers
                .and_then(|h| h.get(name.as_str()))
                .and_then(|v| v.to_str().ok());
            if !got.is_some_and(|v| want.matches(v)) {
                return false;
            }
        }
        for (name, want) in &self.query {
            if !query_param(req.query, name).is_some_and(|v| want.matches(v)) {
                return false;
            }
        }
        for (name, want) in &self.cookies {
            let headers = req.headers;
            if !cookie(headers, name).is_some_and(|v| want.matches(v)) {
                return false;
            }
        }
        true
    }
}

/// The first value of a query parameter (not percent-decoded).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The value of a cookie from the request's `Cookie` headers.
pub fn cookie<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
