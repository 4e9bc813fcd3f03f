//! The Pingora `ProxyHttp` implementation: the hot path.
//!
//! * `request_filter`: look the request up in the current generation (one `ArcSwap` load,
//!   no lock); then the route's policy phases in their fixed order ([`phases`]): redirects,
//!   HTTP to HTTPS (308), canary, body limit, fallback; 404/503 ourselves when there is
//!   nothing to proxy to.
//! * `upstream_peer`: pick a ready endpoint of the route's pool (round robin, EWMA,
//!   consistent hash or cookie affinity), skipping endpoints that already failed to connect
//!   for this request; the route's protocol picks HTTP/1.1, HTTPS, h2c or HTTP/2 over TLS to
//!   the pod, and its timeouts override the server config's.
//! * `fail_to_connect`: retry on another endpoint (idempotent requests unless the route
//!   allows more), within the route's tries and time.
//! * `upstream_request_filter`: X-Forwarded-*, X-Real-IP, X-Request-ID; the route's path
//!   rewrite and header changes.
//! * `response_filter`: the route's response headers and affinity cookie; HSTS on HTTPS
//!   responses for hosts with TLS configured.
//! * `fail_to_proxy`: a pod that times out answers 504 (as ingress-nginx), other pod errors
//!   502.
//! * `logging`: metrics (through the route's pre-resolved handles) and the JSON access log.
//!
//! Pingora boxes each hook's future per call (`async_trait`), copying its whole size: what
//! only a refused, redirected or authenticated request awaits is boxed where it is awaited,
//! so the proxying path's futures stay small (a test holds them under 256 bytes). State
//! that only some routes or features use lives in [`Ctx`]'s boxed `extra`.

mod error_pages;
mod ext_auth;
mod mirror;

/// Framing and hop-by-hop request headers, never copied into a sub-request (auth-url) or a
/// mirrored copy, which carry no body of the client's.
const HOP_BY_HOP: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];
pub mod phases;
mod request_id;
mod upgrade;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::Digest;
use pingora::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

use crate::accesslog::{rfc3339_now, AccessLog, Entry};
use crate::client::Trust;
use crate::config::{LimitsConf, TlsConf, UpstreamConf};
use crate::generation::{Action, Route, Shared};
use crate::metrics::{RouteLabels, RouteStats};
use crate::policy::limits::Refusal;
use crate::routing::Request;
use crate::tls::{CertInfo, ClientCertCheck, ConnCert};
use crate::translate::model::{Balance, BasicAuth, ClientTls, Cors, Redirect};
use crate::translate::template::{host_without_port, Vars};

pub use request_id::new_request_id;

/// Per-request state.
pub struct Ctx {
    start: Instant,
    route: Option<Arc<Route>>,
    /// The endpoint of the current attempt.
    upstream: Option<SocketAddr>,
    /// Endpoints that failed to connect for this request.
    tried: Vec<SocketAddr>,
    upstream_start: Option<Instant>,
    upstream_time: Option<Duration>,
    /// The client's plain X-Request-ID, or a generated one; shared (not copied) into the
    /// upstream request and our own answers.
    request_id: Option<HeaderValue>,
    /// Status of a response we wrote ourselves.
    own_status: u16,
    /// The request came over TLS.
    tls: bool,
    conn: Option<Arc<ConnGuard>>,
    /// The attempt was picked by EWMA: report its outcome to the pool.
    ewma: bool,
    /// Request body bytes seen, against the route's body limit.
    body_seen: u64,
    /// The request goes to the route's canary.
    canary: bool,
    /// The connection's peer (the socket's, or the PROXY header's).
    peer: Option<Peer>,
    /// Basic auth passed: the Authorization header is not sent upstream.
    strip_authorization: bool,
    /// What only some routes, trusted proxies or tracing need; boxed apart, so a plain
    /// request neither writes it when its context is made nor checks it when dropped.
    extra: Option<Box<Extra>>,
}

/// Per-request state of the less common features ([`Ctx::extra`]).
struct Extra {
    /// An affinity cookie to set on the response.
    set_cookie: Option<HeaderValue>,
    /// The pod answered a status the route's custom-http-errors lists.
    intercept: Option<u16>,
    /// The route this request was meant for when its `default-backend` serves it instead.
    fell_back: Option<Arc<Route>>,
    /// The client behind a trusted peer ([`crate::client`]) when it is another address;
    /// otherwise the peer is the client (see [`Ctx::client`]).
    behind: Option<Peer>,
    /// Counts this request against its route's limit-connections while it lives.
    inflight: Option<pingora_limits::inflight::Guard>,
    /// The route's CORS settings and the Allow-Origin for this request's Origin.
    cors: Option<(Arc<Cors>, HeaderValue)>,
    /// External auth passed: header changes for the upstream request, cookies for the
    /// client.
    auth_headers: Vec<(http::HeaderName, Option<HeaderValue>)>,
    auth_cookies: Vec<HeaderValue>,
    /// The route checks client certificates: what the upstream headers say.
    client_cert: Option<(Arc<ClientTls>, Arc<CertInfo>)>,
    /// The request's span (tracing on).
    trace: Option<opentelemetry::Context>,
}

/// What a request without [`Extra`] state reads.
static NO_EXTRA: Extra = Extra::new();

impl Extra {
    /// The state in `slot`, made on first use: [`Ctx::extra_mut`], or the field itself
    /// where another field of the context is borrowed.
    fn made(slot: &mut Option<Box<Extra>>) -> &mut Extra {
        slot.get_or_insert_with(|| Box::new(Extra::new()))
    }

    const fn new() -> Extra {
        Extra {
            set_cookie: None,
            intercept: None,
            fell_back: None,
            behind: None,
            inflight: None,
            cors: None,
            auth_headers: Vec::new(),
            auth_cookies: Vec::new(),
            client_cert: None,
            trace: None,
        }
    }
}

impl Ctx {
    /// The client address: the one behind a trusted peer, or the peer itself.
    fn client(&self) -> Option<&Peer> {
        self.extra().behind.as_ref().or(self.peer.as_ref())
    }

    /// The less common state, empty when none was set.
    fn extra(&self) -> &Extra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }

    /// The less common state, to set.
    fn extra_mut(&mut self) -> &mut Extra {
        Extra::made(&mut self.extra)
    }
}

/// An address, as header text, and whether it is a trusted proxy.
#[derive(Clone)]
struct Peer {
    ip: IpAddr,
    value: HeaderValue,
    trusted: bool,
}

impl Peer {
    /// The peer `ip` under `trust`, from this thread's [`PEERS`] when it was made lately.
    fn new(ip: IpAddr, trust: &Arc<Trust>) -> Option<Peer> {
        let ip = crate::client::canonical(ip);
        PEERS.with(|slots| {
            let mut slots = slots.borrow_mut();
            let slot = &mut slots[peer_slot(ip)];
            if let Some((t, p)) = slot.as_ref() {
                if p.ip == ip && Arc::ptr_eq(t, trust) {
                    return Some(p.clone());
                }
            }
            let peer = Peer {
                ip,
                value: HeaderValue::try_from(ip.to_string()).ok()?,
                trusted: trust.trusts(ip),
            };
            *slot = Some((trust.clone(), peer.clone()));
            Some(peer)
        })
    }
}

/// Slots of [`PEERS`].
const PEER_SLOTS: usize = 16;

/// A recent peer and the trust settings it was made under.
type PeerSlot = Option<(Arc<Trust>, Peer)>;

thread_local! {
    /// Peers made lately on this thread, by the last byte of the address. An HTTP/2 stream
    /// has no connection state in Pingora's session, so its peer would otherwise be made
    /// for every request (3,200 instructions: the address's `Display`, a header value, the
    /// trust lookup); the streams of one connection hit one slot. A slot keeps the [`Trust`] it was made under (the `Arc`, so that a freed
    /// Trust's address cannot come back as another's): gateways with other trust settings
    /// in one process (tests) never share an entry.
    static PEERS: std::cell::RefCell<[PeerSlot; PEER_SLOTS]> =
        const { std::cell::RefCell::new([const { None }; PEER_SLOTS]) };
}

/// The [`PEERS`] slot of `ip`.
fn peer_slot(ip: IpAddr) -> usize {
    let last = match ip {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    usize::from(last) % PEER_SLOTS
}

/// What is the same for all requests of one HTTP/1 downstream connection. It is carried
/// from request to request on a keep-alive connection and dropped with the connection.
/// (Open connections are counted for HTTP/1 and HTTP/2 alike in `server::Draining`.)
pub struct ConnGuard {
    /// The peer, its header text formatted and its trust looked up once per connection
    /// rather than once per request.
    peer: Option<Peer>,
}

impl ConnGuard {
    fn new(peer: Option<Peer>) -> Arc<ConnGuard> {
        Arc::new(ConnGuard { peer })
    }
}

/// The gateway's proxy logic.
pub struct Gateway {
    shared: Arc<Shared>,
    upstream: UpstreamConf,
    access_log: Option<AccessLog>,
    /// `Strict-Transport-Security` value; None when disabled.
    hsts: Option<HeaderValue>,
    /// Port for redirect `Location`s (omitted when 443).
    redirect_port: u16,
    /// `X-Forwarded-Port` values of the listening ports, made once.
    ports: Vec<(u16, HeaderValue)>,
    /// Metrics of requests that failed before a route was looked up.
    no_route_stats: RouteStats,
    /// Which peers are believed about the client address.
    trust: Arc<Trust>,
    /// Statuses for requests over a rate limit and over a connection limit.
    limit_statuses: (u16, u16),
    /// Basic-auth verdicts by a 128-bit keyed hash (two SipHash keys drawn at start) of
    /// (user, stored hash, password): bcrypt costs milliseconds, a cached verdict a lookup.
    /// The key is a PRF of the credentials under a secret key: no password is kept, and a
    /// wrong password cannot be made to hit a cached verdict without the key. (SHA-256
    /// here cost 3.6k instructions per request, half of basic auth's cost.)
    auth_cache: std::sync::Mutex<lru::LruCache<[u64; 2], bool>>,
    auth_keys: (std::hash::RandomState, std::hash::RandomState),
    /// Slow verifications under way, by cache key: concurrent requests with the same
    /// credentials wait for the one check instead of each paying for bcrypt.
    auth_pending: std::sync::Mutex<
        std::collections::HashMap<[u64; 2], tokio::sync::watch::Receiver<Option<bool>>>,
    >,
    /// External auth sub-requests and their cache.
    ext_auth: ext_auth::Checker,
    /// Gateway API RequestMirror copies.
    mirrors: mirror::Mirrors,
    /// OpenTelemetry spans; None while tracing is off.
    tracing: Option<crate::trace::Tracing>,
    /// Client-facing limits (`pingress.edge`).
    edge: Edge,
}

/// The `reason` of a 413 in `pingress_requests_refused_total`, before or while streaming.
const BODY_OVER_LIMIT: &str = "body over the limit";

/// The per-request part of `pingress.edge`.
struct Edge {
    limits: crate::edge::HeadLimits,
    /// Body limit of routes without proxy-body-size (0: none).
    max_body: u64,
    /// Longest gap between body reads.
    body_timeout: Duration,
    /// Slowest body accepted once `body_timeout` has passed, in bytes per second (0: any).
    min_body_rate: u64,
    /// Longest wait to write to the client.
    send_timeout: Duration,
    /// HTTP/1 keep-alive idle, in seconds.
    keepalive: u64,
}

impl From<&crate::config::EdgeConf> for Edge {
    fn from(c: &crate::config::EdgeConf) -> Self {
        Edge {
            limits: c.head_limits(),
            max_body: c.max_body_bytes,
            body_timeout: Duration::from_millis(c.body_timeout_ms),
            min_body_rate: c.min_body_rate_bytes_per_second,
            send_timeout: Duration::from_millis(c.send_timeout_ms),
            keepalive: c.keepalive_timeout_seconds,
        }
    }
}

/// A basic-auth check waiting for a slow password hash.
struct SlowCheck {
    key: [u64; 2],
    password: Vec<u8>,
    hash: crate::policy::htpasswd::Hash,
}

/// Removes a basic-auth check from the pending map when it ends.
struct PendingCheck<'a> {
    map: &'a std::sync::Mutex<
        std::collections::HashMap<[u64; 2], tokio::sync::watch::Receiver<Option<bool>>>,
    >,
    key: [u64; 2],
}

impl Drop for PendingCheck<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&self.key);
        }
    }
}

/// Basic-auth verdicts kept.
const AUTH_CACHE: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(10_000) {
    Some(n) => n,
    None => unreachable!(),
};

const NO_ROUTE: RouteLabels = RouteLabels {
    ingress: "-",
    namespace: "-",
    service: "-",
};

const HTTPS: HeaderValue = HeaderValue::from_static("https");
const FORBIDDEN: &[u8] = b"403 forbidden: this client address is not allowed on this route\n";
const OVER_RATE: &[u8] = b"request refused: over this route's request rate limit for this client\n";
const OVER_CONNECTIONS: &[u8] =
    b"request refused: over this route's concurrent request limit for this client\n";
const NO_CERT: &[u8] = b"400 Bad Request: no required SSL certificate was sent\n";
const BAD_CERT: &[u8] = b"400 Bad Request: the SSL certificate error\n";
const CN_MISMATCH: &[u8] = b"403 Forbidden: client certificate unauthorized\n";
const MISDIRECTED: &[u8] = b"421 Misdirected Request: this connection's TLS handshake was not for this host; open a new connection\n";
const CLOSED: &[u8] =
    b"503 service unavailable: this route's access control could not be built (see the Ingress's diagnostics)\n";
const HTTP: HeaderValue = HeaderValue::from_static("http");
// Header names looked up on every request, made at compile time (a `&str` name is parsed
// and checked at every lookup).
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// How many concurrent streams one HTTP/2 connection to a pod may carry.
const UPSTREAM_H2_STREAMS: usize = 100;

impl Gateway {
    pub fn new(
        shared: Arc<Shared>,
        upstream: UpstreamConf,
        access_log: Option<AccessLog>,
        tls: &TlsConf,
        listen_ports: &[u16],
        trust: Arc<Trust>,
        limits: &LimitsConf,
    ) -> Self {
        Gateway {
            trust,
            limit_statuses: (limits.req_status_code, limits.conn_status_code),
            auth_cache: std::sync::Mutex::new(lru::LruCache::new(AUTH_CACHE)),
            auth_keys: Default::default(),
            auth_pending: Default::default(),
            ext_auth: ext_auth::Checker::new(Duration::from_millis(upstream.connect_timeout_ms)),
            mirrors: mirror::Mirrors::new(Duration::from_millis(upstream.connect_timeout_ms)),
            ports: listen_ports
                .iter()
                .map(|p| (*p, HeaderValue::from(*p)))
                .collect(),
            shared,
            upstream,
            access_log,
            hsts: tls
                .hsts
                .header_value()
                .and_then(|v| HeaderValue::from_str(&v).ok()),
            redirect_port: tls.redirect_port,
            no_route_stats: RouteStats::default(),
            tracing: None,
            edge: Edge::from(&crate::config::EdgeConf::default()),
        }
    }

    /// Apply these client-facing limits and timeouts.
    pub fn with_edge(mut self, edge: &crate::config::EdgeConf) -> Self {
        self.edge = Edge::from(edge);
        self
    }

    /// Strict HTTP at the edge (src/edge.rs), before anything routes on the request, and
    /// the per-connection settings of HTTP/1: pipelining answered in order, the body read
    /// gap, the keep-alive idle time. A refusal closes the connection: after ambiguous
    /// framing nothing else on it can be trusted.
    async fn strict(&self, session: &mut Session, ctx: &mut Ctx) -> Option<Result<bool>> {
        if session.is_http2() {
            session.set_write_timeout(Some(self.edge.send_timeout));
            let Err(refusal) = crate::edge::check_h2(session.req_header()) else {
                return None;
            };
            std::hint::cold_path();
            return Some(Box::pin(self.refuse(session, ctx, refusal)).await);
        }
        let down = session.as_downstream_mut();
        // The connection's own deadlines (src/edge/conn.rs) keep the keep-alive idle time
        // and the send timeout of an HTTP/1 connection; Pingora's would register a timer
        // for every wait of every request.
        let ours = match down
            .stream()
            .and_then(crate::edge::conn::Deadlines::clock_of)
        {
            Some(clock) => {
                clock.head_done();
                true
            }
            None => false,
        };
        down.set_pipelining_enabled(true);
        down.set_read_timeout(Some(self.edge.body_timeout));
        let keepalive = if ours { 0 } else { self.edge.keepalive };
        if down.get_keepalive().is_some_and(|k| k != keepalive) {
            // 0: no idle limit of Pingora's (a reused connection has it already).
            down.set_keepalive(Some(keepalive));
        }
        if !ours {
            down.set_write_timeout(Some(self.edge.send_timeout));
        }
        let raw = down.to_h1_raw();
        let Err(refusal) = crate::edge::check_h1(down.req_header(), &raw, &self.edge.limits) else {
            // Absolute-form wins over Host (RFC 9112 §3.2.2; Pingora refuses a Host that
            // differs): without a Host, route on the target's authority.
            let req = down.req_header_mut();
            if let Some(a) = crate::edge::absolute_authority(req.raw_path()) {
                if !req.headers.contains_key(http::header::HOST) {
                    let a = HeaderValue::from_bytes(a).ok()?;
                    let _ = req.insert_header(http::header::HOST, a);
                }
            }
            return None;
        };
        std::hint::cold_path();
        session.set_keepalive(None);
        Some(Box::pin(self.refuse(session, ctx, refusal)).await)
    }

    /// Answers a request the edge checks refused, and counts it.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        refusal: crate::edge::Refusal,
    ) -> Result<bool> {
        self.count_refusal(&refusal.status.to_string(), refusal.reason);
        tracing::debug!(
            status = refusal.status,
            reason = refusal.reason,
            "request refused at the edge"
        );
        let body: &'static [u8] = match refusal.status {
            414 => b"414 URI too long\n",
            431 => b"431 request header fields too large\n",
            _ => b"400 bad request\n",
        };
        self.respond_with(session, ctx, refusal.status, body).await
    }

    /// Counts a request refused at the edge (`pingress_requests_refused_total`).
    fn count_refusal(&self, status: &str, reason: &str) {
        self.shared
            .metrics
            .edge_refusals
            .with_label_values(&[status, reason])
            .inc();
    }

    /// A body that trickles (Apache's mod_reqtimeout `MinRate`): past `body_timeout` from
    /// the request's start, each `min_body_rate` bytes received buys one more second.
    /// HTTP/1 request bodies only: an upgraded connection (WebSocket) and HTTP/2 streams
    /// (gRPC streaming; bounded by the stream limit and windows) may idle.
    fn too_slow(&self, session: &Session, ctx: &Ctx) -> bool {
        let rate = self.edge.min_body_rate;
        if rate == 0 || session.is_http2() || session.was_upgraded() {
            return false;
        }
        let allowed =
            self.edge.body_timeout + Duration::from_secs_f64(ctx.body_seen as f64 / rate as f64);
        ctx.start.elapsed() > allowed
    }

    /// The body limit of a route: its proxy-body-size, else the edge default (0: none).
    fn body_limit(&self, route: Option<&Route>) -> u64 {
        route
            .and_then(|r| r.policy.as_ref())
            .and_then(|p| p.body_limit)
            .unwrap_or(self.edge.max_body)
    }

    /// Trace requests with this tracer.
    pub fn with_tracing(mut self, tracing: Option<crate::trace::Tracing>) -> Self {
        self.tracing = tracing;
        self
    }

    /// 308 to the same host and path over HTTPS (method and body are kept by the client).
    async fn redirect_https(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let host = host_without_port(request_host(req));
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let location = if self.redirect_port == 443 {
            format!("https://{host}{path}")
        } else {
            format!("https://{host}:{}{path}", self.redirect_port)
        };
        let code = crate::translate::HTTP_REDIRECT_CODE;
        let mut resp = ResponseHeader::build(code, Some(4))?;
        resp.insert_header(http::header::LOCATION, location)?;
        resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
        if let Some(id) = &ctx.request_id {
            resp.insert_header("x-request-id", id.clone())?;
        }
        ctx.own_status = code;
        self.shared.metrics.https_redirects.inc();
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    /// Whether an upstream answer with `code` is retried on another endpoint (the route's
    /// `proxy-next-upstream http_NNN`), within its tries and time; the endpoint that gave it
    /// is not picked again.
    fn retry_on_status(&self, session: &Session, ctx: &mut Ctx, code: u16) -> bool {
        let Some(route) = &ctx.route else {
            return false;
        };
        let Some(r) = route.policy.as_ref().and_then(|p| p.retry) else {
            return false;
        };
        let Action::Proxy(pool) = &route.action else {
            return false;
        };
        let attempts = ctx.tried.len() + 1;
        let tries = if r.tries == 0 {
            usize::MAX
        } else {
            r.tries as usize
        };
        let ok = r.on_status(code)
            && (session.req_header().method.is_idempotent() || r.non_idempotent)
            && attempts < tries
            && attempts < pool.len()
            && r.timeout.is_none_or(|t| ctx.start.elapsed() < t);
        if !ok {
            return false;
        }
        if let Some(a) = ctx.upstream.take() {
            if ctx.ewma {
                pool.ewma_done(a, None);
                ctx.ewma = false;
            }
            ctx.tried.push(a);
        }
        true
    }

    /// Answer an intercepted upstream status from the route's error backend; when that
    /// fails, a plain answer with the original status. Returns the status sent.
    async fn error_page(&self, session: &mut Session, ctx: &mut Ctx, code: u16) -> u16 {
        let Some(route) = ctx.route.clone() else {
            return code;
        };
        let backend = route
            .policy
            .as_ref()
            .and_then(|p| p.errors.as_ref())
            .map(|e| &e.backend);
        let addr = match backend.map(|b| &b.action) {
            Some(Action::Proxy(pool)) => pool.select(&[]),
            _ => None,
        };
        let port = match &route.action {
            Action::Proxy(p) => p.key.port.to_string(),
            Action::Respond(_) => String::new(),
        };
        let req = session.req_header();
        let failed = error_pages::Failed {
            code,
            accept: req.headers.get(http::header::ACCEPT),
            original_uri: req.uri.path_and_query().map_or("/", |p| p.as_str()),
            host: request_host(req),
            namespace: &route.namespace,
            ingress: &route.ingress,
            service: &route.service,
            service_port: port,
            request_id: ctx.request_id.as_ref(),
        };
        let limit = Duration::from_millis(self.upstream.read_timeout_ms);
        let page = match addr {
            Some(a) => error_pages::fetch(a, &failed, limit).await,
            None => Err("the error backend has no ready endpoint".into()),
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(
                    ingress = &*route.ingress,
                    status = code,
                    "custom-http-errors: {e}; answering with the pod's status"
                );
                ctx.own_status = code;
                session.set_keepalive(None);
                let _ = self.respond(session, ctx, code).await;
                return code;
            }
        };
        let written: Result<()> = async {
            let mut resp = ResponseHeader::build(page.status, Some(4))?;
            if let Some(ct) = page.headers.get(http::header::CONTENT_TYPE) {
                resp.insert_header(http::header::CONTENT_TYPE, ct.clone())?;
            }
            resp.insert_header(http::header::CONTENT_LENGTH, page.body.len())?;
            // Pingora does not reuse a client connection after this path: say so (on
            // HTTP/1 its session writes `Connection: close` once keep-alive is off).
            session.set_keepalive(None);
            if let Some(id) = &ctx.request_id {
                resp.insert_header("x-request-id", id.clone())?;
            }
            self.add_hsts(ctx, &mut resp)?;
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(page.body), true).await?;
            Ok(())
        }
        .await;
        if let Err(e) = written {
            tracing::debug!("custom-http-errors: writing the page: {e}");
        }
        ctx.own_status = page.status;
        page.status
    }

    /// A route's own redirect (app-root, permanent/temporal, from-to-www).
    async fn redirect(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        code: u16,
        r: &Redirect,
    ) -> Result<bool> {
        let req = session.req_header();
        let port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port());
        let location = phases::redirect_location(r, req, request_host(req), ctx.tls, port);
        let mut resp = ResponseHeader::build(code, Some(4))?;
        resp.insert_header(http::header::LOCATION, location)?;
        resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
        if let Some(id) = &ctx.request_id {
            resp.insert_header("x-request-id", id.clone())?;
        }
        self.add_hsts(ctx, &mut resp)?;
        ctx.own_status = code;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    /// `X-Forwarded-Port` for a local port: shared when it is one we listen on.
    fn port_value(&self, port: u16) -> HeaderValue {
        self.ports
            .iter()
            .find(|(p, _)| *p == port)
            .map_or_else(|| HeaderValue::from(port), |(_, v)| v.clone())
    }

    /// Count a request a policy refused.
    fn refused(&self, route: &Route, policy: &str) {
        self.shared
            .metrics
            .policy_refusals
            .with_label_values(&[&route.ingress, policy])
            .inc();
    }

    /// 204 to a CORS preflight.
    async fn preflight(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let mut resp = ResponseHeader::build(204, Some(8))?;
        resp.insert_header(http::header::CONTENT_TYPE, "text/plain charset=UTF-8")?;
        resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
        if let Some(id) = &ctx.request_id {
            resp.insert_header("x-request-id", id.clone())?;
        }
        self.add_hsts(ctx, &mut resp)?;
        ctx.own_status = 204;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    /// HSTS for HTTPS responses on hosts with TLS configured, and the CORS headers of an
    /// allowed cross-origin request (on every status, as nginx's `add_header ... always`).
    fn add_hsts(&self, ctx: &Ctx, resp: &mut ResponseHeader) -> Result<()> {
        if let Some((c, acao)) = &ctx.extra().cors {
            phases::add_cors(c, acao, resp)?;
        }
        if let (true, Some(v), Some(route)) = (ctx.tls, &self.hsts, &ctx.route) {
            if route.tls_host {
                // By its text: a `HeaderName` Pingora has no title-case spelling for is
                // copied to the heap for its case map on every insert.
                resp.insert_header("strict-transport-security", v.clone())?;
            }
        }
        Ok(())
    }

    async fn respond(&self, session: &mut Session, ctx: &mut Ctx, status: u16) -> Result<bool> {
        let body: &'static [u8] = match status {
            404 => b"404 not found: no route for this host and path\n",
            413 => b"413 request entity too large: the body is over this route's limit\n",
            503 => b"503 service unavailable: no ready endpoints for this backend\n",
            500 => b"500 internal server error: this route's backend cannot be used\n",
            _ => b"error\n",
        };
        self.respond_with(session, ctx, status, body).await
    }

    /// The route's access phases, in ingress-nginx's order: limits (nginx's preaccess
    /// phase, so they also count clients the allow list then refuses), then the allow and
    /// deny lists. Returns the refusal's status and text.
    fn guard(&self, ctx: &mut Ctx, route: &Route) -> Option<(u16, &'static [u8], &'static str)> {
        let access = route.policy.as_ref().and_then(|p| p.access.as_ref());
        if route.limiter.is_none() && access.is_none() {
            return None;
        }
        let Some(ip) = ctx.client().map(|c| c.ip) else {
            // No client address to check (not an IP connection): refused.
            return Some((403, FORBIDDEN, "access"));
        };
        if let Some(l) = &route.limiter {
            let mut inflight = None;
            let refusal = l.admit(ip, &mut inflight);
            if inflight.is_some() {
                ctx.extra_mut().inflight = inflight;
            }
            match refusal {
                Some(Refusal::Rate) => {
                    return Some((self.limit_statuses.0, OVER_RATE, "rate"));
                }
                Some(Refusal::Connections) => {
                    return Some((self.limit_statuses.1, OVER_CONNECTIONS, "connections"));
                }
                None => {}
            }
        }
        if access.is_some_and(|a| !a.permits(ip)) {
            return Some((403, FORBIDDEN, "access"));
        }
        None
    }

    /// The basic-auth verdict when it needs no wait: no or unknown credentials, a cached
    /// verdict, a fast hash. `Err` when a slow hash (bcrypt, apr1, crypt) has to be checked
    /// off the runtime, by [`Self::basic_auth_slow`].
    fn basic_auth_quick(&self, session: &Session, auth: &BasicAuth) -> Result<bool, SlowCheck> {
        let Some(v) = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
        else {
            return Ok(false);
        };
        let Some((user, password)) = phases::basic_credentials(v.as_bytes()) else {
            return Ok(false);
        };
        let Some((stored, hash)) = auth.users.users.get(&user) else {
            return Ok(false);
        };
        use std::hash::BuildHasher as _;
        let parts = (user.as_bytes(), stored.as_bytes(), &password[..]);
        let key = [
            self.auth_keys.0.hash_one(parts),
            self.auth_keys.1.hash_one(parts),
        ];
        let cached = self
            .auth_cache
            .lock()
            .ok()
            .and_then(|mut c| c.get(&key).copied());
        if let Some(ok) = cached {
            return Ok(ok);
        }
        if hash.is_slow() {
            return Err(SlowCheck {
                key,
                password,
                hash: hash.clone(),
            });
        }
        let ok = hash.verify(&password);
        self.cache_verdict(key, ok);
        Ok(ok)
    }

    /// A slow hash checked on the blocking pool, one check per key at a time (single
    /// flight: later requests with the same credentials wait for its verdict).
    async fn basic_auth_slow(&self, check: SlowCheck) -> bool {
        let SlowCheck {
            key,
            password,
            hash,
        } = check;
        let (tx, waiting) = {
            let Ok(mut pending) = self.auth_pending.lock() else {
                return false;
            };
            match pending.get(&key) {
                Some(rx) => (None, Some(rx.clone())),
                None => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    pending.insert(key, rx);
                    (Some(tx), None)
                }
            }
        };
        if let Some(mut rx) = waiting {
            if let Ok(v) = rx.wait_for(|v| v.is_some()).await {
                return v.unwrap_or(false);
            }
            // The request doing the check went away before it finished: check here.
        }
        // The entry goes when this check ends, finished or cancelled.
        let _pending = tx.as_ref().map(|_| PendingCheck {
            map: &self.auth_pending,
            key,
        });
        let ok = tokio::task::spawn_blocking(move || hash.verify(&password))
            .await
            .unwrap_or(false);
        // Cached before the waiters are told, so later requests hit the cache.
        self.cache_verdict(key, ok);
        if let Some(tx) = tx {
            tx.send_replace(Some(ok));
        }
        ok
    }

    fn cache_verdict(&self, key: [u64; 2], ok: bool) {
        if let Ok(mut c) = self.auth_cache.lock() {
            c.put(key, ok);
        }
    }

    /// 401 with the route's `WWW-Authenticate` challenge.
    async fn unauthorized(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        challenge: &HeaderValue,
    ) -> Result<bool> {
        let extra = vec![(http::header::WWW_AUTHENTICATE, challenge.clone())];
        self.answer(session, ctx, 401, extra, b"401 unauthorized\n")
            .await
    }

    /// Our own answer with extra headers and a plain-text body.
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        extra: Vec<(http::HeaderName, HeaderValue)>,
        body: &'static [u8],
    ) -> Result<bool> {
        let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
        for (k, v) in extra {
            resp.append_header(k, v)?;
        }
        resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        if let Some(id) = &ctx.request_id {
            resp.insert_header("x-request-id", id.clone())?;
        }
        self.add_hsts(ctx, &mut resp)?;
        ctx.own_status = status;
        session
            .write_response_header(Box::new(resp), body.is_empty())
            .await?;
        if !body.is_empty() {
            session
                .write_response_body(Some(Bytes::from_static(body)), true)
                .await?;
        }
        Ok(true)
    }

    /// The client-certificate phase of a route with auth-tls: None to go on (the upstream
    /// headers noted), or the answer written.
    async fn client_cert(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Arc<Route>,
        ct: &Arc<ClientTls>,
    ) -> Option<Result<bool>> {
        let ssl = session.digest().and_then(|d| d.ssl_digest.as_ref());
        let on_tls = ssl.is_some();
        let conn = ssl.and_then(|s| s.extension.get::<ConnCert>());
        let (status, body) = match crate::tls::check_client_cert(conn, on_tls, ct) {
            ClientCertCheck::Pass(info) => {
                ctx.extra_mut().client_cert = Some((ct.clone(), info));
                return None;
            }
            ClientCertCheck::Missing => (400, NO_CERT),
            ClientCertCheck::Invalid => (400, BAD_CERT),
            ClientCertCheck::CnMismatch => (403, CN_MISMATCH),
            ClientCertCheck::Misdirected => (421, MISDIRECTED),
        };
        self.refused(route, "client-certificate");
        ctx.route = Some(route.clone());
        if let (400, Some(page)) = (status, &ct.error_page) {
            let extra = vec![(http::header::LOCATION, page.clone())];
            return Some(Box::pin(self.answer(session, ctx, 302, extra, b"")).await);
        }
        Some(Box::pin(self.respond_with(session, ctx, status, body)).await)
    }

    /// The auth-url phase: None to go on (the auth service's headers and cookies noted for
    /// the upstream request and the answer), or the answer written.
    async fn external_auth(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Arc<Route>,
        ext: &crate::translate::model::ExternalAuth,
    ) -> Option<Result<bool>> {
        let timeout = route
            .policy
            .as_ref()
            .and_then(|p| p.timeouts.read)
            .unwrap_or(Duration::from_millis(self.upstream.read_timeout_ms));
        let verdict = {
            let xff = self.forwarded_for(session.req_header(), ctx);
            let vars = vars(session, ctx);
            self.ext_auth.check(ext, &vars, xff.as_ref(), timeout).await
        };
        match verdict {
            ext_auth::Verdict::Pass { headers, cookies } => {
                if !headers.is_empty() || !cookies.is_empty() {
                    let extra = ctx.extra_mut();
                    extra.auth_headers = headers;
                    extra.auth_cookies = cookies;
                }
            }
            ext_auth::Verdict::Refuse {
                status,
                www_authenticate,
                cookies,
            } => {
                self.refused(route, "auth");
                ctx.route = Some(route.clone());
                let mut extra: Vec<_> = www_authenticate
                    .map(|w| (http::header::WWW_AUTHENTICATE, w))
                    .into_iter()
                    .collect();
                extra.extend(cookies.into_iter().map(|c| (http::header::SET_COOKIE, c)));
                let body: &'static [u8] = if status == 401 {
                    b"401 unauthorized\n"
                } else {
                    b"403 forbidden\n"
                };
                return Some(self.answer(session, ctx, status, extra, body).await);
            }
            ext_auth::Verdict::SignIn { location, cookies } => {
                self.refused(route, "auth");
                ctx.route = Some(route.clone());
                let Ok(location) = HeaderValue::try_from(location) else {
                    let body = b"500 internal server error\n";
                    return Some(self.answer(session, ctx, 500, Vec::new(), body).await);
                };
                let mut extra = vec![(http::header::LOCATION, location)];
                extra.extend(cookies.into_iter().map(|c| (http::header::SET_COOKIE, c)));
                return Some(self.answer(session, ctx, 302, extra, b"").await);
            }
            ext_auth::Verdict::Error(why) => {
                tracing::warn!(ingress = &*route.ingress, "auth-url: {why}; answering 500");
                ctx.route = Some(route.clone());
                let body =
                    b"500 internal server error: the auth service did not give a usable answer\n";
                return Some(self.answer(session, ctx, 500, Vec::new(), body).await);
            }
        }
        None
    }

    /// The X-Forwarded-For sent on: the peer alone, or a trusted peer's value with the
    /// peer appended.
    fn forwarded_for(&self, req: &RequestHeader, ctx: &Ctx) -> Option<HeaderValue> {
        let prev = req.headers.get(&X_FORWARDED_FOR).filter(|v| !v.is_empty());
        self.forwarded_for_after(prev, ctx)
    }

    /// [`Self::forwarded_for`] with the client's X-Forwarded-For (non-empty) looked up.
    fn forwarded_for_after(&self, prev: Option<&HeaderValue>, ctx: &Ctx) -> Option<HeaderValue> {
        let peer = ctx.peer.as_ref()?;
        Some(match prev {
            Some(prev) if peer.trusted => {
                let ip = &peer.value;
                let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
                v.extend_from_slice(prev.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip.as_bytes());
                HeaderValue::from_bytes(&v).unwrap_or_else(|_| ip.clone())
            }
            _ => peer.value.clone(),
        })
    }

    /// Our own answer with a plain-text body.
    async fn respond_with(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        body: &'static [u8],
    ) -> Result<bool> {
        self.answer(session, ctx, status, Vec::new(), body).await
    }
}

/// Host of a request, as nginx's `$http_host`: the Host field, or else the target's
/// authority (HTTP/2's `:authority`; HTTP/1's absolute-form has been given a Host by the
/// edge checks), port included.
fn request_host(req: &RequestHeader) -> &str {
    match req.headers.get(http::header::HOST).map(|v| v.to_str()) {
        Some(host) => host.unwrap_or(""),
        None => req
            .uri
            .authority()
            .map_or("", |a| authority_host(a.as_str())),
    }
}

/// `host[:port]` of an authority: what follows any userinfo. The edge checks refuse an
/// authority with userinfo before anything routes; this keeps it out all the same, without
/// the http crate's `Authority::host` (three string searches, ~360 instructions a call).
fn authority_host(a: &str) -> &str {
    match a.bytes().rposition(|b| b == b'@') {
        Some(at) => &a[at + 1..],
        None => a,
    }
}

impl Gateway {
    /// The connection's peer, as Pingora knows it (the PROXY header's source when there
    /// was one).
    fn peer_of(&self, session: &Session) -> Option<Peer> {
        Peer::new(session.client_addr()?.as_inet()?.ip(), &self.trust)
    }

    /// Find the peer (the connection's on HTTP/1; on HTTP/2, which has no connection state
    /// here, this thread's recent peers) and the client; a trusted peer's `https`
    /// X-Forwarded-Proto makes the request HTTPS.
    fn client_address(&self, session: &Session, ctx: &mut Ctx) {
        let peer = match &ctx.conn {
            Some(c) => c.peer.clone(),
            None => self.peer_of(session),
        };
        let Some(peer) = peer else {
            return;
        };
        if peer.trusted {
            let headers = &session.req_header().headers;
            let ip = self.trust.client_behind(peer.ip, headers);
            if ip != peer.ip {
                ctx.extra_mut().behind = Peer::new(ip, &self.trust);
            }
            if headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
            {
                ctx.tls = true;
            }
        }
        ctx.peer = Some(peer);
    }
}

/// The variables of a request, for templates (auth-url, snippets).
fn vars<'a>(session: &'a Session, ctx: &'a Ctx) -> Vars<'a> {
    let req = session.req_header();
    Vars {
        host: request_host(req),
        scheme: if ctx.tls { "https" } else { "http" },
        method: req.method.as_str(),
        request_uri: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        headers: &req.headers,
        remote_addr: ctx.client().and_then(|c| c.value.to_str().ok()),
        request_id: ctx.request_id.as_ref().and_then(|v| v.to_str().ok()),
        server_port: session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port()),
    }
}

/// A request id is kept from the client only when it is short and plain.
fn acceptable_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic())
}

#[async_trait]
impl ProxyHttp for Gateway {
    /// Boxed: Pingora keeps the context by value in its per-request future, which is
    /// moved into a heap allocation for every request; a pointer moves for nothing.
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx {
            start: Instant::now(),
            route: None,
            upstream: None,
            tried: Vec::new(),
            upstream_start: None,
            upstream_time: None,
            request_id: None,
            own_status: 0,
            tls: false,
            conn: None,
            ewma: false,
            body_seen: 0,
            canary: false,
            peer: None,
            strip_authorization: false,
            extra: None,
        })
    }

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // No response compression module: it would cost work on every request while disabled.
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &Self::CTX,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        ctx.conn
            .clone()
            .map(|c| Box::new(c) as Box<dyn std::any::Any + Send + Sync>)
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(c) = prev.downcast::<Arc<ConnGuard>>() {
            ctx.conn = Some(*c);
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // Branches that answer here instead of proxying (refusals, redirects, errors) are
        // marked `cold_path`: the compiler lays them out of the proxying path's way, whose
        // first-level instruction-cache misses are most of pingress's wall-clock cost over
        // the Pingora floor (docs/benchmarks.md).
        if let Some(done) = self.strict(session, ctx).await {
            return done;
        }
        if !self.shared.has_routes() {
            std::hint::cold_path();
            Box::pin(
                self.shared
                    .wait_for_routes(std::time::Duration::from_secs(10)),
            )
            .await;
        }
        if ctx.conn.is_none() && !session.is_http2() {
            ctx.conn = Some(ConnGuard::new(self.peer_of(session)));
        }
        ctx.tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        self.client_address(session, ctx);
        if let Some(t) = &self.tracing {
            let req = session.req_header();
            let client = ctx.client().and_then(|c| c.value.to_str().ok());
            let span = t.start(req, host_without_port(request_host(req)), client);
            ctx.extra_mut().trace = Some(span);
        }
        let req = session.req_header();
        ctx.request_id = match req.headers.get(&X_REQUEST_ID) {
            Some(v) if acceptable_request_id(v.as_bytes()) => Some(v.clone()),
            _ => HeaderValue::try_from(new_request_id()).ok(),
        };
        let mut route = {
            let generation = self.shared.generation.load();
            let view = Request {
                host: request_host(req),
                path: req.uri.path(),
                query: req.uri.query(),
                method: req.method.as_str(),
                headers: Some(&req.headers),
                listener: crate::routing::Listener {
                    tls: ctx.tls,
                    port: session
                        .server_addr()
                        .and_then(|a| a.as_inet())
                        .map_or(0, |a| a.port()),
                },
            };
            generation.route_for(&view).clone()
        };
        if let Some(policy) = &route.policy {
            // Phase 1: an access control that could not be built closes the route.
            if policy.denied {
                std::hint::cold_path();
                self.refused(&route, "closed");
                ctx.route = Some(route);
                return Box::pin(self.respond_with(session, ctx, 503, CLOSED)).await;
            }
            // Then client certificates, as nginx checks them before any location phase
            // (plain HTTP: after the redirect to HTTPS, below).
            if let (Some(ct), true) = (&policy.client_tls, ctx.tls) {
                let ct = ct.clone();
                if let Some(done) = self.client_cert(session, ctx, &route, &ct).await {
                    return done;
                }
            }
            // Phase 2: CORS. A preflight (OPTIONS) from an allowed origin is answered
            // here, before redirects, lists and auth; other allowed requests get the
            // headers on whatever answers them.
            if let Some(c) = &policy.cors {
                let req = session.req_header();
                if let Some(acao) = c.allow(req.headers.get(http::header::ORIGIN)) {
                    ctx.extra_mut().cors = Some((c.clone(), acao));
                    if req.method == http::Method::OPTIONS {
                        std::hint::cold_path();
                        ctx.route = Some(route);
                        return Box::pin(self.preflight(session, ctx)).await;
                    }
                }
            }
            // Phase 3: redirects of the route come before HTTP to HTTPS (ingress-nginx).
            if let Some(r) = &policy.redirect {
                std::hint::cold_path();
                let (code, r) = (r.code, r.clone());
                ctx.route = Some(route);
                return Box::pin(self.redirect(session, ctx, code, &r)).await;
            }
        }
        if route.https_redirect && !ctx.tls {
            std::hint::cold_path();
            ctx.route = Some(route);
            return Box::pin(self.redirect_https(session, ctx)).await;
        }
        if let (Some(ct), false) = (
            route.policy.as_ref().and_then(|p| p.client_tls.clone()),
            ctx.tls,
        ) {
            if let Some(done) = self.client_cert(session, ctx, &route, &ct).await {
                return done;
            }
        }
        // Phase 4: limits and allow/deny lists, by the route the request matched (a canary
        // Ingress's own access annotations are not used, as in ingress-nginx).
        if let Some((status, body, what)) = self.guard(ctx, &route) {
            std::hint::cold_path();
            self.refused(&route, what);
            ctx.route = Some(route);
            return Box::pin(self.respond_with(session, ctx, status, body)).await;
        }
        // Phase 5: authentication. What waits (a slow password hash, the auth service) and
        // what answers is boxed apart, as above.
        if let Some(auth) = route.policy.as_ref().and_then(|p| p.basic_auth.clone()) {
            let passes = match self.basic_auth_quick(session, &auth) {
                Ok(verdict) => verdict,
                Err(slow) => Box::pin(self.basic_auth_slow(slow)).await,
            };
            if !passes {
                std::hint::cold_path();
                self.refused(&route, "auth");
                ctx.route = Some(route);
                return Box::pin(self.unauthorized(session, ctx, &auth.challenge)).await;
            }
            ctx.strip_authorization = true;
        }
        if let Some(ext) = route.policy.as_ref().and_then(|p| p.external_auth.clone()) {
            if let Some(done) = Box::pin(self.external_auth(session, ctx, &route, &ext)).await {
                return done;
            }
        }
        if let Some(policy) = &route.policy {
            // Phase 3: backend choice.
            if let Some((rule, canary)) = &policy.canary {
                // A client pinned by its affinity cookie stays where it is; otherwise header,
                // cookie, then weight decide.
                let req = session.req_header();
                let pinned = match &policy.balance {
                    Balance::Cookie(a) => phases::pinned_to_canary(a, req),
                    _ => None,
                };
                if pinned.unwrap_or_else(|| phases::canary_wanted(rule, req)) {
                    ctx.canary = true;
                    route = canary.clone();
                }
            }
        }
        if let Some(policy) = &route.policy {
            // Gateway API RequestMirror: copies go out now, whatever answers the client.
            for m in &policy.mirrors {
                if m.share >= 1_000_000 || fastrand::u32(0..1_000_000) < m.share {
                    let req = session.req_header();
                    self.mirrors.send(&m.backend, req, request_host(req));
                }
            }
        }
        if let Some(split) = route.policy.as_ref().and_then(|p| p.split.as_ref()) {
            // Gateway API weights: one draw per request (a rule whose weights are all 0 has
            // no split and answers 500 itself).
            if let Some(r) = split.pick(fastrand::u32(0..split.total().max(1))) {
                let r = r.clone();
                route = r;
            }
        }
        let mut status = match &route.action {
            Action::Respond(code) => Some(*code),
            Action::Proxy(pool) if pool.is_empty() => Some(503),
            Action::Proxy(_) => None,
        };
        if phases::body_too_large(self.body_limit(Some(&route)), session.req_header()) {
            std::hint::cold_path();
            self.count_refusal("413", BODY_OVER_LIMIT);
            session.set_keepalive(None);
            ctx.route = Some(route);
            return Box::pin(self.respond(session, ctx, 413)).await;
        }
        if let Some(policy) = &route.policy {
            if status == Some(503) {
                if let Some(fb) = &policy.fallback {
                    ctx.extra_mut().fell_back = Some(route.clone());
                    route = fb.clone();
                    status = match &route.action {
                        Action::Proxy(pool) if !pool.is_empty() => None,
                        _ => Some(503),
                    };
                }
            }
        }
        ctx.route = Some(route);
        match status {
            Some(code) => {
                std::hint::cold_path();
                Box::pin(self.respond(session, ctx, code)).await
            }
            None => Ok(false),
        }
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(b) = body else {
            return Ok(());
        };
        ctx.body_seen += b.len() as u64;
        let limit = self.body_limit(ctx.route.as_deref());
        if limit > 0 && ctx.body_seen > limit {
            self.count_refusal("413", BODY_OVER_LIMIT);
            return Error::e_explain(HTTPStatus(413), "request body over the route's limit");
        }
        if self.too_slow(session, ctx) {
            self.shared
                .metrics
                .downstream_closed
                .with_label_values(&["body_rate"])
                .inc();
            return Error::e_explain(HTTPStatus(408), "request body slower than min_body_rate");
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(InternalError, "no route for this request");
        };
        let Action::Proxy(pool) = &route.action else {
            return Error::e_explain(InternalError, "no upstream pool for this route");
        };
        let policy = route.policy.as_deref();
        let picked = match policy.map(|p| &p.balance) {
            None | Some(Balance::RoundRobin) => pool.select(&ctx.tried),
            Some(Balance::Ewma) => {
                ctx.ewma = true;
                pool.select_ewma(&ctx.tried)
            }
            Some(Balance::Hash(parts)) => {
                let client = ctx.client().and_then(|c| c.value.to_str().ok());
                let key = phases::hash_key(parts, session.req_header(), client);
                pool.select_hash(&key, &ctx.tried)
            }
            Some(Balance::Cookie(a)) => {
                match phases::affinity_pick(a, pool, session.req_header(), &ctx.tried) {
                    Some((addr, new)) => {
                        if let Some(mut v) = new {
                            if ctx.canary {
                                v.push_str(phases::CANARY_MARK);
                            }
                            let ua = session
                                .req_header()
                                .headers
                                .get(http::header::USER_AGENT)
                                .and_then(|v| v.to_str().ok());
                            let cookie = phases::affinity_cookie(a, &v, ctx.tls, ua);
                            // The field, not `extra_mut`: `route` borrows the context.
                            Extra::made(&mut ctx.extra).set_cookie = cookie;
                        }
                        Some(addr)
                    }
                    None => None,
                }
            }
        };
        let Some(addr) = picked else {
            return Error::e_explain(HTTPStatus(503), "no ready endpoint left to try");
        };
        ctx.upstream = Some(addr);
        let tls = route.protocol.tls();
        // Pods are reached by IP: no SNI is sent (as with nginx's default
        // `proxy_ssl_server_name off`) and their certificates are not verified.
        let sni = if tls {
            addr.ip().to_string()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, tls, sni);
        let o = &mut peer.options;
        self.upstream.apply_timeouts(o);
        if let Some(t) = policy.map(|p| p.timeouts) {
            if let Some(d) = t.connect {
                o.connection_timeout = Some(d);
            }
            if let Some(d) = t.read {
                o.read_timeout = Some(d);
            }
            if let Some(d) = t.send {
                o.write_timeout = Some(d);
            }
        }
        if tls {
            o.verify_cert = false;
            o.verify_hostname = false;
        }
        if route.protocol.http2() {
            o.set_http_version(2, 2);
            o.max_h2_streams = UPSTREAM_H2_STREAMS;
        } else if !tls && session.is_upgrade_req() && session.is_body_empty() {
            // Pingora's upgrade race (cloudflare/pingora#946): src/proxy/upgrade.rs.
            upgrade::gate(&mut peer);
        }
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(a) = ctx.upstream.take() {
            ctx.tried.push(a);
        }
        let pool_len = match ctx.route.as_ref().map(|r| &r.action) {
            Some(Action::Proxy(p)) => p.len(),
            _ => 0,
        };
        if ctx.ewma {
            if let (Some(Action::Proxy(p)), Some(a)) =
                (ctx.route.as_ref().map(|r| &r.action), ctx.tried.last())
            {
                p.ewma_done(*a, None);
            }
            ctx.ewma = false;
        }
        let idempotent = session.req_header().method.is_idempotent();
        let retry = ctx
            .route
            .as_ref()
            .and_then(|r| r.policy.as_ref())
            .and_then(|p| p.retry);
        let ok = match retry {
            None => idempotent && ctx.tried.len() <= self.upstream.connect_retries,
            Some(r) => {
                let timeout = e.etype() == &ConnectTimedout;
                let wanted = if timeout { r.on_timeout } else { r.on_error };
                let tries = if r.tries == 0 {
                    usize::MAX
                } else {
                    r.tries as usize
                };
                wanted
                    && (idempotent || r.non_idempotent)
                    && ctx.tried.len() < tries
                    && r.timeout.is_none_or(|t| ctx.start.elapsed() < t)
            }
        };
        e.set_retry(ok && ctx.tried.len() < pool_len);
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.upstream_start = Some(Instant::now());
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Values are shared `HeaderValue`s where possible (no copy): the peer address
        // formatted once per HTTP/1 connection (per request on HTTP/2), the Host and request
        // id as received, static protocol names, per-port values made at start-up. Each
        // insert still costs Pingora a header-name allocation.
        //
        // X-Forwarded-* from the client are replaced, unless the peer is a trusted proxy
        // ([`crate::client`]): then its X-Forwarded-For gets the peer appended and its
        // X-Forwarded-Proto, -Host and -Port are kept.
        let req = session.req_header();
        let trusted = ctx.peer.as_ref().is_some_and(|p| p.trusted);
        let prev = req.headers.get(&X_FORWARDED_FOR).filter(|v| !v.is_empty());
        if let Some(xff) = self.forwarded_for_after(prev, ctx) {
            up.insert_header("x-forwarded-for", xff)?;
        }
        if let Some(prev) = prev {
            // What the client sent, as ingress-nginx passes it on.
            up.insert_header("x-original-forwarded-for", prev.clone())?;
        }
        if let Some(client) = ctx.client() {
            up.insert_header("x-real-ip", client.value.clone())?;
        }
        let keep = |name: &str| trusted && req.headers.contains_key(name);
        if !keep("x-forwarded-proto") {
            let proto = if ctx.tls { HTTPS } else { HTTP };
            up.insert_header("x-forwarded-proto", proto)?;
        }
        if !keep("x-forwarded-host") {
            // As ingress-nginx's `$best_http_host`: the Host field, or on HTTP/2 the
            // `:authority` with its port (nginx makes it the Host).
            let host = req.headers.get(http::header::HOST).cloned().or_else(|| {
                let a = authority_host(req.uri.authority()?.as_str());
                HeaderValue::from_str(a).ok()
            });
            match host {
                Some(host) => up.insert_header("x-forwarded-host", host)?,
                None => {
                    up.remove_header("x-forwarded-host");
                }
            }
        }
        if !keep("x-forwarded-port") {
            match session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port())
            {
                Some(port) => up.insert_header("x-forwarded-port", self.port_value(port))?,
                None => {
                    up.remove_header("x-forwarded-port");
                }
            }
        }
        if let Some(id) = &ctx.request_id {
            up.insert_header("x-request-id", id.clone())?;
        }
        if let (Some(t), Some(cx)) = (&self.tracing, &ctx.extra().trace) {
            // The pod's parent is this request's span (W3C traceparent / tracestate).
            for (name, value) in t.inject(cx) {
                up.insert_header(name, value)?;
            }
        }
        if let Some((ct, info)) = &ctx.extra().client_cert {
            // As nginx's proxy_set_header: what the client sent under these names is
            // replaced, and an empty value is not sent.
            let set = |up: &mut RequestHeader, name: &'static str, v: Option<&HeaderValue>| match v
            {
                Some(v) => up.insert_header(name, v.clone()).map(|_| ()),
                None => {
                    up.remove_header(name);
                    Ok(())
                }
            };
            set(up, "ssl-client-verify", Some(&info.verify))?;
            set(up, "ssl-client-subject-dn", info.subject_header.as_ref())?;
            set(up, "ssl-client-issuer-dn", info.issuer_header.as_ref())?;
            if ct.pass_certificate {
                set(up, "ssl-client-cert", info.escaped_pem.as_ref())?;
            }
        }
        if ctx.strip_authorization {
            // The credentials were for the gateway (ingress-nginx clears them too).
            up.remove_header(&http::header::AUTHORIZATION);
        }
        for (name, value) in &ctx.extra().auth_headers {
            // auth-response-headers: what the auth service said, or nothing (each attempt
            // builds its request anew, so these are not taken).
            match value {
                Some(v) => up.insert_header(name.clone(), v.clone())?,
                None => {
                    up.remove_header(name);
                }
            }
        }
        if let Some(from) = &ctx.extra().fell_back {
            std::hint::cold_path();
            // The default backend serves a route without endpoints (ingress-nginx's headers).
            let port = match &from.action {
                Action::Proxy(p) => HeaderValue::from(p.key.port),
                Action::Respond(_) => HeaderValue::from_static(""),
            };
            let uri = up
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let name = from.ingress.rsplit('/').next().unwrap_or("");
            up.insert_header("x-code", HeaderValue::from_static("503"))?;
            up.insert_header("x-original-uri", uri)?;
            up.insert_header("x-namespace", &*from.namespace)?;
            up.insert_header("x-ingress-name", name)?;
            up.insert_header("x-service-name", &*from.service)?;
            up.insert_header("x-service-port", port)?;
        }
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.policy.as_ref()) {
            // Phase 5: rewrite, then header changes.
            if let Some(rw) = &policy.rewrite {
                if let Some(path) = rw.apply(up.uri.path()) {
                    let uri = match up.uri.query() {
                        Some(q) => format!("{path}?{q}"),
                        None => path,
                    };
                    match uri.parse::<http::Uri>() {
                        Ok(u) => up.set_uri(u),
                        Err(_) => {
                            return Error::e_explain(
                                HTTPStatus(400),
                                "rewritten request target is not a valid URI",
                            )
                        }
                    }
                }
            }
            phases::apply_request_headers(&policy.request_headers, up)?;
            if let Some(s) = &policy.snippet {
                if !s.request.is_empty() {
                    phases::apply_request_snippet(&s.request, &vars(session, ctx), None, up)?;
                }
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            // An upgraded connection (WebSocket) may idle: the body read gap is for
            // request bodies, not for the tunnel.
            session.as_downstream_mut().set_read_timeout(None);
        }
        if let Some(code) = ctx.extra().intercept {
            // Handled in fail_to_proxy, before anything is written to the client.
            return Error::e_explain(
                HTTPStatus(code),
                "answered by the custom-http-errors backend",
            );
        }
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.policy.as_ref()) {
            // Phase 6: response headers and the affinity cookie.
            phases::apply_response_headers(&policy.response_headers, resp)?;
            if let Some(extra) = ctx.extra.as_deref_mut() {
                if let Some(c) = extra.set_cookie.take() {
                    resp.append_header(http::header::SET_COOKIE, c)?;
                }
                for c in std::mem::take(&mut extra.auth_cookies) {
                    resp.append_header(http::header::SET_COOKIE, c)?;
                }
            }
            if let Some(s) = &policy.snippet {
                if !s.response.is_empty() {
                    let status = resp.status.as_u16();
                    let vars = vars(session, ctx);
                    phases::apply_response_snippet(&s.response, &vars, Some(status), resp)?;
                }
            }
        }
        self.add_hsts(ctx, resp)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> pingora_proxy::FailToProxy {
        if let (Some(code), HTTPStatus(c)) = (ctx.extra().intercept, e.etype()) {
            if code == *c && session.response_written().is_none() {
                let status = self.error_page(session, ctx, code).await;
                return pingora_proxy::FailToProxy {
                    error_code: status,
                    can_reuse_downstream: false,
                };
            }
        }
        let code = match e.etype() {
            HTTPStatus(code) => *code,
            // A pod that does not answer in time: 504, as ingress-nginx.
            ConnectTimedout | ReadTimedout | WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    WriteError | ReadError | ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 {
            let _ = session.respond_error(code).await;
        }
        pingora_proxy::FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(s) = ctx.upstream_start {
            ctx.upstream_time = Some(s.elapsed());
        }
        let code = resp.status.as_u16();
        if self.retry_on_status(session, ctx, code) {
            let mut e = Error::explain(
                HTTPStatus(code),
                "upstream status retried on another endpoint (proxy-next-upstream)",
            );
            e.set_retry(true);
            return Err(e.into_up());
        }
        let errors = ctx
            .route
            .as_ref()
            .and_then(|r| r.policy.as_ref())
            .and_then(|p| p.errors.as_ref());
        if let Some(e) = errors {
            let code = resp.status.as_u16();
            if e.codes.contains(&code) {
                ctx.extra_mut().intercept = Some(code);
            }
        }
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, _error: &Error) -> bool {
        // An intercepted status is answered from the error backend: not an error of ours.
        ctx.extra().intercept.is_some()
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        // A client past the body read gap or the send timeout: its connection ends here.
        if let Some(e) = e.filter(|e| e.esource == pingora::ErrorSource::Downstream) {
            let reason = match e.etype {
                pingora::ErrorType::ReadTimedout => Some("body_timeout"),
                pingora::ErrorType::WriteTimedout => Some("send_timeout"),
                _ => None,
            };
            if let Some(r) = reason {
                self.shared
                    .metrics
                    .downstream_closed
                    .with_label_values(&[r])
                    .inc();
            }
        }
        // The next request's head deadline starts with its first byte.
        if let Some(clock) = session
            .as_downstream()
            .stream()
            .and_then(crate::edge::conn::Deadlines::clock_of)
        {
            clock.idle();
        }
        if ctx.ewma {
            if let (Some(Action::Proxy(p)), Some(a)) =
                (ctx.route.as_ref().map(|r| &r.action), ctx.upstream)
            {
                p.ewma_done(a, if e.is_some() { None } else { ctx.upstream_time });
            }
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.own_status);
        let elapsed = ctx.start.elapsed();
        let req = session.req_header();
        let (labels, stats) = match &ctx.route {
            Some(r) => (r.labels(), &r.stats),
            None => (NO_ROUTE, &self.no_route_stats),
        };
        let ingress = labels.ingress;
        if let Some(cx) = &ctx.extra().trace {
            let service = (labels.namespace, labels.service);
            crate::trace::finish(cx, ingress, service, ctx.upstream, status);
        }
        stats.record(
            &self.shared.metrics,
            &labels,
            status,
            &req.method,
            elapsed,
            ctx.upstream_time,
        );
        if let Some(log) = &self.access_log {
            let client = ctx.client().and_then(|c| c.value.to_str().ok());
            let client = client.unwrap_or("");
            let upstream = ctx
                .upstream
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into());
            let time = rfc3339_now();
            log.log(&Entry {
                time: &time,
                client,
                method: req.method.as_str(),
                host: request_host(req),
                path: req.uri.path(),
                status,
                bytes: session.body_bytes_sent(),
                duration_ms: elapsed.as_micros() as f64 / 1000.0,
                upstream: &upstream,
                ingress,
                request_id: ctx
                    .request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_peers_answer_for_their_own_address_and_trust_setting() {
        let none = Arc::new(Trust::default());
        let proxies = Arc::new(Trust::new(&["127.0.0.0/8".into()], "x-forwarded-for").unwrap());
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        // Same slot (last byte 1), another address.
        let other: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(peer_slot(local), peer_slot(other));
        for _ in 0..2 {
            let p = Peer::new(local, &none).unwrap();
            assert_eq!((p.value.to_str().unwrap(), p.trusted), ("127.0.0.1", false));
            let p = Peer::new(local, &proxies).unwrap();
            assert_eq!((p.value.to_str().unwrap(), p.trusted), ("127.0.0.1", true));
            let p = Peer::new(other, &proxies).unwrap();
            assert_eq!((p.value.to_str().unwrap(), p.trusted), ("10.0.0.1", false));
            // An IPv4-mapped address is its IPv4 address.
            let p = Peer::new("::ffff:127.0.0.1".parse().unwrap(), &proxies).unwrap();
            assert_eq!((p.value.to_str().unwrap(), p.trusted), ("127.0.0.1", true));
        }
    }

    #[test]
    fn a_request_host_is_the_host_field_or_the_authority_with_its_port() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.set_uri("https://user@h2.example.com:8443/x".parse().unwrap());
        assert_eq!(request_host(&req), "h2.example.com:8443");
        req.set_uri("https://[::1]:8443/x".parse().unwrap());
        assert_eq!(request_host(&req), "[::1]:8443");
        req.insert_header("host", "h1.example.com").unwrap();
        assert_eq!(request_host(&req), "h1.example.com");
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(request_host(&req), "");
    }

    #[test]
    fn request_ids_are_accepted_only_when_plain() {
        assert!(acceptable_request_id(b"abc-123"));
        assert!(!acceptable_request_id(b""));
        assert!(!acceptable_request_id(b"has space"));
        assert!(!acceptable_request_id(&[b'a'; 129]));
    }

    /// The futures of the hooks Pingora calls on every request. `async_trait` boxes each one
    /// per call, and the box is filled by copying the future's whole size (every state of its
    /// state machine, not only the live one) into a new allocation: bytes a request writes
    /// for nothing. Answers that only a refused or redirected request awaits are boxed
    /// apart, so they do not size the proxying path's future.
    #[test]
    fn per_request_hook_futures_stay_small() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let gw = Gateway::new(
            Shared::new(metrics),
            UpstreamConf::default(),
            None,
            &TlsConf::default(),
            &[],
            Arc::new(Trust::default()),
            &LimitsConf::default(),
        );
        let (stream, _peer) = tokio::io::duplex(64);
        let mut session = Session::new_h1(Box::new(stream));
        let mut ctx = gw.new_ctx();
        let mut up = RequestHeader::build("GET", b"/", None).unwrap();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        let sizes = [
            ("request_filter", {
                let f = gw.request_filter(&mut session, &mut ctx);
                std::mem::size_of_val(&*f)
            }),
            ("upstream_peer", {
                let f = gw.upstream_peer(&mut session, &mut ctx);
                std::mem::size_of_val(&*f)
            }),
            ("upstream_request_filter", {
                let f = gw.upstream_request_filter(&mut session, &mut up, &mut ctx);
                std::mem::size_of_val(&*f)
            }),
            ("response_filter", {
                let f = gw.response_filter(&mut session, &mut resp, &mut ctx);
                std::mem::size_of_val(&*f)
            }),
            ("logging", {
                let f = gw.logging(&mut session, None, &mut ctx);
                std::mem::size_of_val(&*f)
            }),
        ];
        eprintln!("{sizes:?}");
        for (hook, size) in sizes {
            assert!(size <= 256, "{hook}'s future is {size} bytes");
        }
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port("a.example.com:8080"), "a.example.com");
        assert_eq!(host_without_port("a.example.com"), "a.example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
