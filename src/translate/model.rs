//! The typed per-route policy that Ingress annotations (and, later, Gateway API filters)
//! translate into: redirects, URL rewrites, header changes, timeouts, retries, body limit,
//! balancing, canary and error pages. Generic over how a backend is named (`R`): a
//! [`super::RouteSpec`] in translation, a live route with its pool in a generation. Nothing
//! here is a string to be interpreted later: every value is parsed and checked in translate.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// A regex that compares (and hashes) by its source text. Shared: routes with the same
/// pattern can hold one compiled regex, with one warm cache.
#[derive(Debug, Clone)]
pub struct Pattern(pub std::sync::Arc<regex::Regex>);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

/// Answer with a redirect instead of proxying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub code: u16,
    pub to: RedirectTo,
}

/// Where a redirect points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectTo {
    /// This URL as it is; the request's path and query are not appended
    /// (`permanent-redirect`, `temporal-redirect`).
    Url(String),
    /// The request's scheme and Host with this path (`app-root`; query dropped).
    Path(String),
    /// `<scheme>://<host>:<port><request URI without one trailing slash>`, with the request's
    /// scheme and local port (`from-to-www-redirect`).
    Host(String),
    /// Gateway API RequestRedirect: each part given replaces the request's own.
    Parts(RedirectParts),
}

/// The parts of a Gateway API RequestRedirect. The query is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectParts {
    /// None: the request's scheme.
    pub scheme: Option<String>,
    /// None: the request's host (without its port).
    pub host: Option<String>,
    /// None: the scheme's well-known port when a scheme is given, else `listener_port`.
    pub port: Option<u16>,
    /// The Gateway listener port of the rule when it has one; None: the local port.
    pub listener_port: Option<u16>,
    pub path: Option<PathChange>,
}

/// A new path for a request (Gateway API `HTTPPathModifier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathChange {
    /// The whole path becomes this.
    Full(String),
    /// The matched path prefix (whole elements) is replaced by this.
    Prefix { matched: String, with: String },
}

impl PathChange {
    /// The changed path. A prefix that does not match leaves the path as it is.
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathChange::Full(p) => p.clone(),
            PathChange::Prefix { matched, with } => {
                let matched = matched.trim_end_matches('/');
                let rest = match path.strip_prefix(matched) {
                    Some(r) if r.is_empty() || r.starts_with('/') => r,
                    _ => return path.to_string(),
                };
                let mut out = String::with_capacity(with.len() + rest.len());
                out.push_str(with.trim_end_matches('/'));
                out.push_str(rest);
                if out.is_empty() {
                    out.push('/');
                } else if !out.starts_with('/') {
                    out.insert(0, '/');
                }
                out
            }
        }
    }
}

/// Gateway API backendRefs with weights: each request goes to one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<R> {
    /// (cumulative weight, backend) for the backends with a weight above 0; the last
    /// cumulative weight is the total.
    pub backends: Vec<(u32, R)>,
}

impl<R> Split<R> {
    /// The sum of the weights.
    pub fn total(&self) -> u32 {
        self.backends.last().map_or(0, |(w, _)| *w)
    }

    /// The backend for a draw `n` in `0..total()`.
    pub fn pick(&self, n: u32) -> Option<&R> {
        self.backends.iter().find(|(w, _)| n < *w).map(|(_, r)| r)
    }
}

/// How the path sent upstream is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// nginx `rewrite <pattern> <target> break`: when the pattern matches the path, the whole
    /// path becomes `target` with `$1`..`$9` replaced by the captures; the query is kept.
    Captures { pattern: Pattern, target: String },
    /// Gateway API URLRewrite path.
    Path(PathChange),
}

/// Header changes, applied in order: remove, set (replace), add (append).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// Timeouts to the pods; None keeps the server config's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    /// The longest wait between two reads from the pod.
    pub read: Option<Duration>,
    /// The longest wait between two writes to the pod.
    pub send: Option<Duration>,
}

impl Timeouts {
    pub fn is_empty(&self) -> bool {
        *self == Timeouts::default()
    }
}

/// When a failed attempt is retried on another endpoint (`proxy-next-upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Connection errors (refused, reset before an answer).
    pub on_error: bool,
    /// Connect timeouts.
    pub on_timeout: bool,
    /// Retry non-idempotent requests (POST, PATCH, ...) too.
    pub non_idempotent: bool,
    /// Upstream answers retried on another endpoint: a bit per status of
    /// [`Retry::STATUSES`] (`http_500` ... `http_429`).
    pub statuses: u8,
    /// Attempts in all, the first included; 0 = as many as there are endpoints.
    pub tries: u32,
    /// Stop retrying once this much time has passed since the first attempt.
    pub timeout: Option<Duration>,
}

impl Retry {
    /// The statuses `proxy-next-upstream` can name, in bit order.
    pub const STATUSES: [u16; 7] = [500, 502, 503, 504, 403, 404, 429];

    /// Whether an upstream answer with this status is retried.
    pub fn on_status(&self, status: u16) -> bool {
        Self::STATUSES
            .iter()
            .position(|s| *s == status)
            .is_some_and(|i| self.statuses & (1 << i) != 0)
    }
}

impl Default for Retry {
    /// ingress-nginx's default: `error timeout`, 3 tries, no time limit.
    fn default() -> Self {
        Retry {
            on_error: true,
            on_timeout: true,
            non_idempotent: false,
            statuses: 0,
            tries: 3,
            timeout: None,
        }
    }
}

/// How an endpoint of the pool is chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Lowest exponentially weighted moving average of response time, among two random
    /// endpoints (peak EWMA, as ingress-nginx's `ewma`).
    Ewma,
    /// Consistent hashing of a key built from the request (`upstream-hash-by`).
    Hash(Vec<HashPart>),
    /// Cookie affinity (`affinity: cookie`).
    Cookie(Box<Affinity>),
}

/// One piece of a hash key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashPart {
    Literal(String),
    /// Path and query as sent by the client.
    RequestUri,
    /// The client address.
    RemoteAddr,
    /// The Host header without port.
    Host,
    /// A request header (lowercase name).
    Header(HeaderName),
    /// A request cookie.
    Cookie(String),
    /// A query parameter.
    Arg(String),
}

/// How a sticky cookie picks its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityMode {
    /// The cookie holds a random key on a consistent-hash ring: scaling moves a few clients.
    Balanced,
    /// The cookie names the endpoint: clients stay until it goes away.
    Persistent,
}

/// Cookie affinity settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    pub mode: AffinityMode,
    pub name: String,
    /// None: the path of the matched rule.
    pub path: Option<String>,
    pub domain: Option<String>,
    /// Seconds from now for `Expires`.
    pub expires: Option<i64>,
    pub max_age: Option<i64>,
    /// Used verbatim (`None`, `Lax`, `Strict` in any case).
    pub samesite: Option<String>,
    /// Always `Secure` (otherwise only on HTTPS requests).
    pub secure: bool,
    /// Leave out `SameSite=None` for user agents known to reject it.
    pub conditional_samesite_none: bool,
    /// Pick a new endpoint (and cookie) when the cookie's endpoint failed.
    pub change_on_failure: bool,
}

/// When a request goes to the canary backend instead of the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryRule {
    /// `canary-by-header` (lowercase) and how its value decides.
    pub header: Option<(HeaderName, HeaderRule)>,
    /// `canary-by-cookie`: `always` -> canary, `never` -> primary, else fall through.
    pub cookie: Option<String>,
    /// Out of `total`: the share of the remaining requests sent to the canary.
    pub weight: u32,
    pub total: u32,
}

/// How the canary header's value decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderRule {
    /// `always` -> canary, `never` -> primary (final), anything else falls through.
    AlwaysNever,
    /// Exactly this value (case-sensitive) -> canary, else fall through.
    Value(String),
    /// A regex match -> canary, else fall through.
    Pattern(Pattern),
}

/// Upstream error statuses answered from another backend (`custom-http-errors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPages<R> {
    pub codes: Vec<u16>,
    /// The error backend; it receives `GET /` with the X-Code family of headers.
    pub backend: R,
}

/// Every per-route setting beyond "proxy to this backend". Empty for most routes; a route
/// with the default policy pays one branch on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy<R> {
    pub redirect: Option<Redirect>,
    pub rewrite: Option<Rewrite>,
    /// Changes to the request sent upstream (`upstream-vhost` sets Host here,
    /// `x-forwarded-prefix` sets X-Forwarded-Prefix).
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub timeouts: Timeouts,
    /// None: the server config's connect retries, idempotent requests only.
    pub retry: Option<Retry>,
    /// Largest request body in bytes; None: the server default; Some(0): unlimited.
    pub body_limit: Option<u64>,
    pub balance: Balance,
    /// The canary decision and the canary's route.
    pub canary: Option<(CanaryRule, R)>,
    pub errors: Option<ErrorPages<R>>,
    /// Serves the route while its backend has no ready endpoint (`default-backend`).
    pub fallback: Option<R>,
    /// An access-control setting could not be built: the route answers 503 (fail closed);
    /// the reason is in the Ingress's diagnostics.
    pub denied: bool,
    /// Client address allow and deny lists: 403 for others.
    pub access: Option<IpAccess>,
    /// Rate and connection limits per client address.
    pub limits: Option<LimitSpec>,
    /// auth-type basic: the users of the auth Secret.
    pub basic_auth: Option<std::sync::Arc<BasicAuth>>,
    /// enable-cors and its settings.
    pub cors: Option<std::sync::Arc<Cors>>,
    /// auth-url.
    pub external_auth: Option<std::sync::Arc<ExternalAuth>>,
    /// Header operations parsed from configuration-snippet / server-snippet.
    pub snippet: Option<std::sync::Arc<crate::translate::annotations::snippet::SnippetOps>>,
    /// auth-tls-*: the client certificates of the route's host.
    pub client_tls: Option<std::sync::Arc<ClientTls>>,
    /// Gateway API weighted backendRefs: the request goes to one of these routes.
    pub split: Option<Split<R>>,
    /// Gateway API RequestMirror: copies of the request go to these routes, answers ignored.
    pub mirrors: Vec<Mirror<R>>,
}

/// One RequestMirror filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror<R> {
    pub backend: R,
    /// Share of requests mirrored, in millionths (1_000_000: all).
    pub share: u32,
}

/// Which origins CORS allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// `*`: every request, with or without an Origin.
    Any,
    List(Vec<OriginPattern>),
}

/// One allowed origin, lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    Exact(String),
    /// `scheme://` + one DNS label + `.host[:port]`.
    Subdomain {
        prefix: String,
        suffix: String,
    },
}

impl OriginPattern {
    fn matches(&self, origin: &str) -> bool {
        let o = origin.as_bytes();
        match self {
            OriginPattern::Exact(e) => o.eq_ignore_ascii_case(e.as_bytes()),
            OriginPattern::Subdomain { prefix, suffix } => {
                let (p, s) = (prefix.as_bytes(), suffix.as_bytes());
                o.len() > p.len() + s.len()
                    && o[..p.len()].eq_ignore_ascii_case(p)
                    && o[o.len() - s.len()..].eq_ignore_ascii_case(s)
                    && o[p.len()..o.len() - s.len()]
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            }
        }
    }
}

/// The CORS answer headers of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub origins: Origins,
    pub credentials: bool,
    pub methods: http::HeaderValue,
    pub headers: http::HeaderValue,
    pub expose: Option<http::HeaderValue>,
    pub max_age: http::HeaderValue,
}

impl Cors {
    /// The `Access-Control-Allow-Origin` for a request with this Origin, or None when the
    /// request gets no CORS headers.
    pub fn allow(&self, origin: Option<&http::HeaderValue>) -> Option<http::HeaderValue> {
        match &self.origins {
            Origins::Any => Some(http::HeaderValue::from_static("*")),
            Origins::List(list) => {
                let o = origin?;
                let text = o.to_str().ok()?;
                list.iter().any(|p| p.matches(text)).then(|| o.clone())
            }
        }
    }
}

/// auth-url: a sub-request decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAuth {
    pub url: crate::translate::template::Template,
    pub method: http::Method,
    /// auth-method was given (ingress-nginx then also sends X-Original-URI and X-Scheme).
    pub method_set: bool,
    pub signin: Option<crate::translate::template::Template>,
    pub signin_param: String,
    /// Copied from a 2xx auth answer into the upstream request (removed when absent).
    pub response_headers: Vec<http::HeaderName>,
    /// X-Auth-Request-Redirect; None: the request URI.
    pub request_redirect: Option<crate::translate::template::Template>,
    /// auth-cache-key, the statuses cached and for how long.
    pub cache: Option<(
        crate::translate::template::Template,
        Vec<u16>,
        std::time::Duration,
    )>,
    pub always_set_cookie: bool,
}

/// auth-tls-verify-client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VerifyClient {
    /// A certificate that verifies is required.
    #[default]
    On,
    /// No certificate is asked for.
    Off,
    /// A certificate is asked for; when sent, it must verify.
    Optional,
    /// A certificate is asked for and passed on whether or not it verifies.
    OptionalNoCa,
}

/// Client certificates of a host (auth-tls-secret and its companions).
pub struct ClientTls {
    /// The CA Secret, `namespace/name`.
    pub secret: String,
    /// Its `ca.crt`, the trust anchors.
    pub roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Verifies chains to `roots` (webpki, client-auth usage).
    pub verifier: std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>,
    pub verify: VerifyClient,
    /// Most intermediates between the client's certificate and a root (OpenSSL's depth).
    pub depth: u32,
    /// auth-tls-pass-certificate-to-upstream: send `ssl-client-cert`.
    pub pass_certificate: bool,
    /// auth-tls-match-cn: matched against the RFC 2253 subject.
    pub match_cn: Option<regex::Regex>,
    /// auth-tls-error-page: where a failed check is redirected (302) instead of a 400.
    pub error_page: Option<http::HeaderValue>,
}

impl PartialEq for ClientTls {
    fn eq(&self, o: &Self) -> bool {
        self.secret == o.secret
            && self.roots == o.roots
            && self.verify == o.verify
            && self.depth == o.depth
            && self.pass_certificate == o.pass_certificate
            && self.match_cn.as_ref().map(regex::Regex::as_str)
                == o.match_cn.as_ref().map(regex::Regex::as_str)
            && self.error_page == o.error_page
    }
}

impl Eq for ClientTls {}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("secret", &self.secret)
            .field("roots", &self.roots.len())
            .field("verify", &self.verify)
            .field("depth", &self.depth)
            .field("pass_certificate", &self.pass_certificate)
            .field(
                "match_cn",
                &self.match_cn.as_ref().map(regex::Regex::as_str),
            )
            .field("error_page", &self.error_page)
            .finish()
    }
}

/// Basic authentication of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub users: crate::policy::htpasswd::Users,
    /// `Basic realm="..."` for 401 answers.
    pub challenge: http::HeaderValue,
}

/// whitelist-source-range / denylist-source-range: a client in `deny`, or outside a
/// non-empty `allow`, is refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpAccess {
    pub allow: Vec<ipnet::IpNet>,
    pub deny: Vec<ipnet::IpNet>,
}

impl IpAccess {
    pub fn permits(&self, ip: std::net::IpAddr) -> bool {
        !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
    }
}

/// limit-* annotations of one Ingress; `zone` (the Ingress) keeps limiters apart, as
/// ingress-nginx's one zone set per Ingress shared by all its paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitSpec {
    pub zone: String,
    pub rps: Option<u32>,
    pub rpm: Option<u32>,
    pub connections: Option<u32>,
    pub burst_multiplier: u32,
    /// Clients not limited (limit-whitelist).
    pub allow: Vec<ipnet::IpNet>,
}

impl<R> Default for Policy<R> {
    fn default() -> Self {
        Policy {
            redirect: None,
            rewrite: None,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            timeouts: Timeouts::default(),
            retry: None,
            body_limit: None,
            balance: Balance::RoundRobin,
            canary: None,
            errors: None,
            fallback: None,
            denied: false,
            access: None,
            limits: None,
            basic_auth: None,
            cors: None,
            external_auth: None,
            snippet: None,
            client_tls: None,
            split: None,
            mirrors: Vec::new(),
        }
    }
}

impl<R> Policy<R> {
    /// Whether nothing is set.
    pub fn is_default(&self) -> bool {
        self.redirect.is_none()
            && self.rewrite.is_none()
            && self.request_headers.is_empty()
            && self.response_headers.is_empty()
            && self.timeouts.is_empty()
            && self.retry.is_none()
            && self.body_limit.is_none()
            && self.balance == Balance::RoundRobin
            && self.canary.is_none()
            && self.errors.is_none()
            && self.fallback.is_none()
            && !self.denied
            && self.access.is_none()
            && self.limits.is_none()
            && self.basic_auth.is_none()
            && self.cors.is_none()
            && self.external_auth.is_none()
            && self.snippet.is_none()
            && self.client_tls.is_none()
            && self.split.is_none()
            && self.mirrors.is_empty()
    }

    /// The backends (canary, error pages, fallback, weighted split, mirrors), as [`Policy::map`]
    /// visits them.
    pub fn routes(&self) -> impl Iterator<Item = &R> {
        (self.canary.iter().map(|(_, r)| r))
            .chain(self.errors.iter().map(|e| &e.backend))
            .chain(self.fallback.iter())
            .chain(
                self.split
                    .iter()
                    .flat_map(|s| s.backends.iter().map(|(_, r)| r)),
            )
            .chain(self.mirrors.iter().map(|m| &m.backend))
    }

    /// Convert the backends (canary, error pages, fallback) with `f`.
    pub fn map<U>(self, mut f: impl FnMut(R) -> U) -> Policy<U> {
        Policy {
            redirect: self.redirect,
            rewrite: self.rewrite,
            request_headers: self.request_headers,
            response_headers: self.response_headers,
            timeouts: self.timeouts,
            retry: self.retry,
            body_limit: self.body_limit,
            balance: self.balance,
            canary: self.canary.map(|(rule, r)| (rule, f(r))),
            errors: self.errors.map(|e| ErrorPages {
                codes: e.codes,
                backend: f(e.backend),
            }),
            fallback: self.fallback.map(&mut f),
            denied: self.denied,
            access: self.access,
            limits: self.limits,
            basic_auth: self.basic_auth,
            cors: self.cors,
            external_auth: self.external_auth,
            snippet: self.snippet,
            client_tls: self.client_tls,
            split: self.split.map(|s| Split {
                backends: s.backends.into_iter().map(|(w, r)| (w, f(r))).collect(),
            }),
            mirrors: self
                .mirrors
                .into_iter()
                .map(|m| Mirror {
                    backend: f(m.backend),
                    share: m.share,
                })
                .collect(),
        }
    }
}

impl Rewrite {
    /// The rewritten path for `path`, or None when the pattern does not match.
    pub fn apply(&self, path: &str) -> Option<String> {
        match self {
            Rewrite::Captures { pattern, target } => {
                let caps = pattern.0.captures(path)?;
                let mut out = String::with_capacity(target.len() + path.len());
                let mut rest = target.as_str();
                while let Some(i) = rest.find('$') {
                    out.push_str(&rest[..i]);
                    let after = &rest[i + 1..];
                    match after.as_bytes().first() {
                        Some(d @ b'0'..=b'9') => {
                            let n = usize::from(d - b'0');
                            out.push_str(caps.get(n).map_or("", |m| m.as_str()));
                            rest = &after[1..];
                        }
                        _ => {
                            out.push('$');
                            rest = after;
                        }
                    }
                }
                out.push_str(rest);
                if !out.starts_with('/') {
                    out.insert(0, '/');
                }
                Some(out)
            }
            Rewrite::Path(change) => Some(change.apply(path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gateway API's HTTPPathModifier table for ReplacePrefixMatch, row by row.
    #[test]
    fn replace_prefix_match_follows_the_gateway_api_table() {
        let rows = [
            ("/foo", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo", "/foo/", "/xyz", "/xyz/"),
            ("/foo/", "/foo/", "/xyz", "/xyz/"),
            ("/foo", "/foo", "", "/"),
            ("/foo", "/foo/", "", "/"),
            ("/foo/", "/foo/", "", "/"),
            ("/foo", "/foo", "/", "/"),
            ("/foo", "/foo/", "/", "/"),
            ("/foo/", "/foo/", "/", "/"),
            ("/", "/bar", "/xyz", "/xyz/bar"),
        ];
        for (matched, path, with, want) in rows {
            let c = PathChange::Prefix {
                matched: matched.into(),
                with: with.into(),
            };
            assert_eq!(c.apply(path), want, "{matched} {path} {with}");
        }
        let full = PathChange::Full("/one".into());
        assert_eq!(full.apply("/any/thing"), "/one");
    }

    #[test]
    fn a_split_picks_by_cumulative_weight() {
        let s = Split {
            backends: vec![(1, "a"), (4, "b")],
        };
        assert_eq!(s.total(), 4);
        assert_eq!(s.pick(0), Some(&"a"));
        assert_eq!(s.pick(1), Some(&"b"));
        assert_eq!(s.pick(3), Some(&"b"));
        assert_eq!(s.pick(4), None);
    }
}
