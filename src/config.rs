//! The one YAML server config: Pingora's own `ServerConf` keys at the top level plus a
//! `pingress:` section with the gateway's settings; loading, defaults and validation.
//!
//! Unknown keys are errors everywhere (a typo such as `thread: 4` must not be silently
//! ignored), and every error names the key or line it is about.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pingora::server::configuration::ServerConf;
use serde::{Deserialize, Serialize};

/// A configuration error; the message names the file, key or line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The I/O error is part of the message (not a `source`), so it is printed once.
    #[error("cannot read config file {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The whole server config: Pingora's `ServerConf` and the `pingress:` section.
#[derive(Debug)]
pub struct Config {
    /// Pingora's own keys (threads, pid_file, upgrade_sock, grace_period_seconds, ...).
    pub server: ServerConf,
    /// The gateway's own keys.
    pub pingress: PingressConf,
}

/// The `pingress:` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PingressConf {
    /// Plain-HTTP listen addresses. Default: `["0.0.0.0:80"]`.
    pub http_listen: Vec<String>,
    /// HTTPS listen addresses (TLS terminated here; certificates from Secrets, by SNI).
    /// `[]` turns HTTPS off. Default: `["0.0.0.0:443"]`.
    pub https_listen: Vec<String>,
    /// Accept HTTP/2 with prior knowledge (h2c) on the plain-HTTP listeners, besides
    /// HTTP/1.1. Default: `false`.
    pub h2c: bool,
    /// TLS, HTTPS redirect and HSTS settings.
    pub tls: TlsConf,
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`). Default: `127.0.0.1:10254`.
    pub admin_listen: String,
    /// The debug listener (`/debug/routes`, `/debug/certs`, `/debug/diagnostics`,
    /// `/debug/explain`, and a page at `/`); empty turns it off. Default: `127.0.0.1:10255`,
    /// loopback only: it shows every host, route and certificate name. Reach it with
    /// `kubectl port-forward`.
    pub debug_listen: String,
    /// Ingress class name matched by `spec.ingressClassName` when no IngressClass object of
    /// that name exists, and by the legacy `kubernetes.io/ingress.class` annotation.
    /// Default: `pingress`.
    pub ingress_class: String,
    /// Controller name: IngressClass objects whose `spec.controller` equals it are ours.
    /// Default: `pingress.dev/ingress-controller`.
    pub controller_name: String,
    /// Gateway API controller name: GatewayClasses whose `spec.controllerName` equals it are
    /// ours, and so are their Gateways and the routes attached to those.
    /// Default: `pingress.dev/gateway-controller`.
    pub gateway_controller_name: String,
    /// Claim Ingresses that name no class at all even when no default IngressClass of ours
    /// exists. Default: `false`.
    pub watch_ingress_without_class: bool,
    /// Where Kubernetes objects come from.
    pub source: SourceConf,
    /// Minimum time between two published generations. A change after a quiet period is
    /// applied at once; changes within this window of the last one are applied together
    /// when it ends. Default: 50 ms.
    pub debounce_ms: u64,
    /// Default upstream behaviour.
    pub upstream: UpstreamConf,
    /// Backend for requests that match no rule. Default: the built-in 404.
    pub default_backend: Option<DefaultBackendConf>,
    /// Access log settings.
    pub access_log: AccessLogConf,
    /// OpenTelemetry tracing; off by default.
    pub tracing: TracingConf,
    /// At shutdown or graceful upgrade, idle keep-alive client connections are closed only
    /// after this long; meanwhile each response carries `Connection: close`. Keep it below
    /// `grace_period_seconds`. Default: 1000 ms.
    pub keepalive_drain_ms: u64,
    /// Read buffer in front of each client connection, in bytes. 0 (default): reads go
    /// straight into the request buffers, with no extra copy and no per-connection buffer
    /// held while idle; Pingora's own default is 65536.
    pub listener_read_buffer_bytes: usize,
    /// Ingress status written back (in-cluster source only).
    pub status: StatusConf,
    /// Leader election among replicas: only the leader writes status and Events.
    pub leader_election: LeaderElectionConf,
    /// Proxies in front of pingress whose word about the client is believed: CIDRs or bare
    /// addresses (ingress-nginx's `proxy-real-ip-cidr` with `use-forwarded-headers` and
    /// `compute-full-forwarded-for`). From a peer in this list the client address is the
    /// right-most untrusted entry of `forwarded_for_header`, its X-Forwarded-Proto, -Host
    /// and -Port are kept (an `https` X-Forwarded-Proto satisfies ssl-redirect), and it may
    /// send PROXY headers. From any other peer, the peer is the client and its
    /// X-Forwarded-* headers are replaced. Default: `[]` (nobody is trusted).
    pub trusted_proxies: Vec<String>,
    /// The header trusted proxies put the client address in, e.g. `CF-Connecting-IP`.
    /// Default: `X-Forwarded-For`.
    pub forwarded_for_header: String,
    /// Listen addresses, written as in `http_listen` / `https_listen`, on which every
    /// connection starts with a PROXY protocol v1 or v2 header (an L4 load balancer in
    /// front); its source address is the client. A connection without one, or from a peer
    /// outside a non-empty `trusted_proxies`, is closed. Default: `[]`.
    pub proxy_protocol: Vec<String>,
    /// limit-* annotations: answers and memory.
    pub limits: LimitsConf,
    /// Client-facing limits and timeouts: head and body sizes, slow clients, connection
    /// counts, HTTP/2 windows (docs/security.md).
    pub edge: EdgeConf,
}

/// What one client may send and hold at the edge. Every limit answers as the RFCs say
/// (414, 431, 413) or closes the connection, and is counted in
/// `pingress_requests_refused_total` / `pingress_downstream_closed_total`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConf {
    /// Longest request line (method, target, version) in bytes; longer: 414. Default: 8192.
    pub max_request_line_bytes: usize,
    /// Longest header field line (name, value); longer: 431. Default: 16384.
    pub max_header_bytes: usize,
    /// Largest request head (request line, fields, blank line); larger: 431. Default:
    /// 61440 (60 KiB, Envoy's).
    pub max_head_bytes: usize,
    /// Most header fields in one request; more: 431. Default: 100 (Envoy's).
    pub max_headers: usize,
    /// Largest request body, where an Ingress's `proxy-body-size` does not say otherwise; 0:
    /// no limit. Over it: 413, before anything is forwarded when Content-Length says so,
    /// else when the body gets there. Default: 1048576 (1 MiB, ingress-nginx's).
    pub max_body_bytes: u64,
    /// Time to receive a whole request head: from the connection's accept for the first
    /// request, from its first byte for the next ones on a keep-alive connection. Past it
    /// the connection is closed (haproxy's `timeout http-request`). Default: 10000.
    pub head_timeout_ms: u64,
    /// Longest wait for the next bytes of a request body; past it the request fails (408 if
    /// nothing was answered yet) and the connection is closed. Default: 10000.
    pub body_timeout_ms: u64,
    /// Slowest request body accepted, in bytes per second: once `body_timeout_ms` has
    /// passed since the request's start, each this many bytes received allows one more
    /// second (Apache's mod_reqtimeout `MinRate`); slower, the request gets 408 (if nothing
    /// was answered yet) and the connection is closed. 0: no minimum. Default: 500.
    pub min_body_rate_bytes_per_second: u64,
    /// Longest wait to write the next bytes of a response to a client that does not read
    /// (nginx's `send_timeout`); past it the request (an HTTP/2 stream, or the HTTP/1
    /// connection) is ended and what was buffered for it is freed. Default: 60000.
    pub send_timeout_ms: u64,
    /// Time for a client to finish its TLS handshake (from accept, the PROXY header
    /// included); past it the connection is closed. At most 60000 (Pingora's own fixed
    /// limit). Default: 10000.
    pub tls_handshake_timeout_ms: u64,
    /// How long an idle HTTP/1 keep-alive connection stays open. Default: 60.
    pub keepalive_timeout_seconds: u64,
    /// How long an HTTP/2 connection with no open stream stays open. Default: 60000.
    pub h2_idle_timeout_ms: u64,
    /// Open client connections for the whole process; past it new connections are closed
    /// at once. 0: no limit. Default: 100000.
    pub max_connections: usize,
    /// Open connections per client address (the socket peer, or the PROXY header's
    /// source); past it the client's new connections are closed at once. 0: no limit.
    /// Behind an L4 load balancer without PROXY protocol every client has its address:
    /// raise this or set 0. Default: 1024.
    pub max_connections_per_client: usize,
    /// HTTP/2 streams one connection may have open. Default: 100.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control window per stream, in bytes (how much of a request body a client
    /// may send ahead). Default: 65535 (the protocol's initial window).
    pub h2_stream_window_bytes: u32,
    /// HTTP/2 flow-control window per connection. Default: 1048576.
    pub h2_connection_window_bytes: u32,
    /// Largest decoded HTTP/2 header list. Default: 65536.
    pub h2_max_header_list_bytes: u32,
    /// Response bytes buffered per HTTP/2 stream for a client that does not read (the
    /// rest waits at the pod connection: back-pressure). Default: 65536.
    pub h2_max_send_buffer_bytes: usize,
}

impl Default for EdgeConf {
    fn default() -> Self {
        EdgeConf {
            max_request_line_bytes: 8192,
            max_header_bytes: 16384,
            max_head_bytes: 61440,
            max_headers: 100,
            max_body_bytes: 1 << 20,
            head_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            min_body_rate_bytes_per_second: 500,
            send_timeout_ms: 60_000,
            tls_handshake_timeout_ms: 10_000,
            keepalive_timeout_seconds: 60,
            h2_idle_timeout_ms: 60_000,
            max_connections: 100_000,
            max_connections_per_client: 1024,
            h2_max_concurrent_streams: 100,
            h2_stream_window_bytes: 65_535,
            h2_connection_window_bytes: 1 << 20,
            h2_max_header_list_bytes: 65_536,
            h2_max_send_buffer_bytes: 65_536,
        }
    }
}

impl EdgeConf {
    /// The head limits the request checks use.
    pub fn head_limits(&self) -> crate::edge::HeadLimits {
        crate::edge::HeadLimits {
            request_line: self.max_request_line_bytes,
            field_line: self.max_header_bytes,
            head: self.max_head_bytes,
            fields: self.max_headers,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let nonzero = [
            ("max_request_line_bytes", self.max_request_line_bytes as u64),
            ("max_header_bytes", self.max_header_bytes as u64),
            ("max_head_bytes", self.max_head_bytes as u64),
            ("max_headers", self.max_headers as u64),
            ("head_timeout_ms", self.head_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("send_timeout_ms", self.send_timeout_ms),
            ("tls_handshake_timeout_ms", self.tls_handshake_timeout_ms),
            ("keepalive_timeout_seconds", self.keepalive_timeout_seconds),
            ("h2_idle_timeout_ms", self.h2_idle_timeout_ms),
            (
                "h2_max_concurrent_streams",
                self.h2_max_concurrent_streams as u64,
            ),
            (
                "h2_max_header_list_bytes",
                self.h2_max_header_list_bytes as u64,
            ),
            (
                "h2_max_send_buffer_bytes",
                self.h2_max_send_buffer_bytes as u64,
            ),
        ];
        for (key, v) in nonzero {
            if v == 0 {
                return Err(format!("pingress.edge.{key}: must be greater than 0"));
            }
        }
        // Pingora reads at most 1 MiB of head and 256 fields before its own 400.
        if self.max_head_bytes > 1_048_575 {
            return Err(format!(
                "pingress.edge.max_head_bytes: {} is over Pingora's own head limit (1048575)",
                self.max_head_bytes
            ));
        }
        if self.tls_handshake_timeout_ms > 60_000 {
            return Err(format!(
                "pingress.edge.tls_handshake_timeout_ms: {} is over Pingora's own handshake \
                 limit (60000)",
                self.tls_handshake_timeout_ms
            ));
        }
        if self.max_headers > 256 {
            return Err(format!(
                "pingress.edge.max_headers: {} is over Pingora's own limit (256 fields)",
                self.max_headers
            ));
        }
        for (key, v) in [
            ("h2_stream_window_bytes", self.h2_stream_window_bytes),
            (
                "h2_connection_window_bytes",
                self.h2_connection_window_bytes,
            ),
        ] {
            if !(65_535..=(1u32 << 31) - 1).contains(&v) {
                return Err(format!(
                    "pingress.edge.{key}: {v} is not between 65535 and 2147483647 (RFC 9113)"
                ));
            }
        }
        Ok(())
    }
}

/// How limit-rps / limit-rpm / limit-connections answer, and how much they remember.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConf {
    /// Status for a request over limit-rps / limit-rpm (ingress-nginx's
    /// `limit-req-status-code`). Default: 503.
    pub req_status_code: u16,
    /// Status for a request over limit-connections (`limit-conn-status-code`). Default: 503.
    pub conn_status_code: u16,
    /// Client rate states kept for all Ingresses together (about 64 bytes each); past it
    /// the least recently seen client's state is dropped, as nginx does in a full zone.
    /// Default: 100000.
    pub tracked_clients: usize,
}

impl Default for LimitsConf {
    fn default() -> Self {
        LimitsConf {
            req_status_code: 503,
            conn_status_code: 503,
            tracked_clients: crate::policy::limits::DEFAULT_TRACKED_CLIENTS,
        }
    }
}

impl Default for PingressConf {
    fn default() -> Self {
        PingressConf {
            http_listen: vec!["0.0.0.0:80".into()],
            https_listen: vec!["0.0.0.0:443".into()],
            h2c: false,
            tls: TlsConf::default(),
            admin_listen: "127.0.0.1:10254".into(),
            debug_listen: "127.0.0.1:10255".into(),
            ingress_class: "pingress".into(),
            controller_name: "pingress.dev/ingress-controller".into(),
            gateway_controller_name: "pingress.dev/gateway-controller".into(),
            watch_ingress_without_class: false,
            source: SourceConf::default(),
            debounce_ms: 50,
            upstream: UpstreamConf::default(),
            default_backend: None,
            access_log: AccessLogConf::default(),
            tracing: TracingConf::default(),
            keepalive_drain_ms: 1000,
            listener_read_buffer_bytes: 0,
            status: StatusConf::default(),
            leader_election: LeaderElectionConf::default(),
            trusted_proxies: Vec::new(),
            forwarded_for_header: "X-Forwarded-For".into(),
            proxy_protocol: Vec::new(),
            limits: LimitsConf::default(),
            edge: EdgeConf::default(),
        }
    }
}

/// TLS termination, redirects to HTTPS and HSTS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConf {
    /// Certificate for handshakes whose SNI matches no Ingress TLS host: a Secret
    /// (`secret: namespace/name`, live) or files (`cert_file` + `key_file`, read at start).
    /// Default: none, meaning a self-signed certificate generated at start-up.
    pub default_certificate: Option<DefaultCertConf>,
    /// Lowest TLS version accepted: `"1.2"` or `"1.3"`. Default: `"1.2"`.
    pub min_version: TlsVersion,
    /// Offer HTTP/2 by ALPN on the HTTPS listeners. Default: `true`.
    pub http2: bool,
    /// Redirect plain-HTTP requests for hosts with TLS configured to HTTPS (308), unless the
    /// Ingress says `nginx.ingress.kubernetes.io/ssl-redirect: "false"`. Default: `true`.
    pub ssl_redirect: bool,
    /// Port put in redirect `Location`s (omitted when 443). Default: 443.
    pub redirect_port: u16,
    /// `Strict-Transport-Security` on HTTPS responses for hosts with TLS configured.
    pub hsts: HstsConf,
}

impl Default for TlsConf {
    fn default() -> Self {
        TlsConf {
            default_certificate: None,
            min_version: TlsVersion::Tls12,
            http2: true,
            ssl_redirect: true,
            redirect_port: 443,
            hsts: HstsConf::default(),
        }
    }
}

/// The default certificate: a Secret, or a certificate and key file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultCertConf {
    /// `namespace/name` of a `kubernetes.io/tls` Secret.
    pub secret: Option<String>,
    /// PEM certificate chain file.
    pub cert_file: Option<PathBuf>,
    /// PEM private key file.
    pub key_file: Option<PathBuf>,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `min_version: 1.2` is a YAML float; accept it as well as the string.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            F(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::F(f) => format!("{f:.1}"),
        };
        match text.trim_start_matches("TLSv").trim_start_matches("TLS") {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            _ => Err(serde::de::Error::custom(format!(
                "TLS version `{text}` is not supported: use \"1.2\" or \"1.3\""
            ))),
        }
    }
}

/// HSTS header settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HstsConf {
    /// Send the header. Default: `true`.
    pub enabled: bool,
    /// `max-age`. Default: 31536000 (one year).
    pub max_age_seconds: u64,
    /// Add `includeSubDomains`. Default: `true`.
    pub include_subdomains: bool,
    /// Add `preload`. Default: `false`.
    pub preload: bool,
}

impl Default for HstsConf {
    fn default() -> Self {
        HstsConf {
            enabled: true,
            max_age_seconds: 31_536_000,
            include_subdomains: true,
            preload: false,
        }
    }
}

impl HstsConf {
    /// The header value, or None when disabled.
    pub fn header_value(&self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let mut v = format!("max-age={}", self.max_age_seconds);
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        Some(v)
    }
}

/// The address written to `status.loadBalancer.ingress` of our Ingresses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConf {
    /// Write Ingress status at all. Default: `true`.
    pub enabled: bool,
    /// Explicit IPs or hostnames. Default: `[]`.
    pub addresses: Vec<String>,
    /// Read the address from this environment variable, e.g. `HOST_IP` set from the downward
    /// API (`status.hostIP`) when running with hostNetwork. Default: none.
    pub address_from_env: Option<String>,
    /// Publish the addresses of this Service (`namespace/name`): its load-balancer ingress,
    /// else its external IPs. Default: none.
    pub service: Option<String>,
}

impl Default for StatusConf {
    fn default() -> Self {
        StatusConf {
            enabled: true,
            addresses: Vec::new(),
            address_from_env: None,
            service: None,
        }
    }
}

/// Leader election through a coordination.k8s.io Lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LeaderElectionConf {
    /// Lease name. Default: `pingress-leader`.
    pub lease_name: String,
    /// Lease namespace. Default: none, meaning `$POD_NAMESPACE`, else `default`.
    pub namespace: Option<String>,
    /// This replica's identity. Default: none, meaning `$POD_NAME`, else hostname-pid.
    pub identity: Option<String>,
    /// A lease not renewed for this long may be taken over. Default: 15 s.
    pub lease_duration_seconds: u32,
    /// How often the holder renews and others retry. Default: 2000 ms.
    pub renew_interval_ms: u64,
}

impl Default for LeaderElectionConf {
    fn default() -> Self {
        LeaderElectionConf {
            lease_name: "pingress-leader".into(),
            namespace: None,
            identity: None,
            lease_duration_seconds: 15,
            renew_interval_ms: 2000,
        }
    }
}

/// The object source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConf {
    /// `manifests` (a directory of YAML manifests) or `kubernetes`. Default: `manifests`.
    pub kind: SourceKind,
    /// Directory of manifests, for `kind: manifests`. Default: `/etc/pingress/manifests`.
    pub manifests_dir: PathBuf,
    /// How often the manifests directory is checked for changes. Default: 100 ms.
    pub poll_interval_ms: u64,
    /// For `kind: kubernetes`: kubeconfig file. Default: none (in-cluster service account,
    /// then `KUBECONFIG` / `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// For `kind: kubernetes`: kubeconfig context. Default: the current context.
    pub context: Option<String>,
    /// For `kind: kubernetes`: namespaces to watch. Default: `[]`, all namespaces.
    pub namespaces: Vec<String>,
}

impl Default for SourceConf {
    fn default() -> Self {
        SourceConf {
            kind: SourceKind::Manifests,
            manifests_dir: PathBuf::from("/etc/pingress/manifests"),
            poll_interval_ms: 100,
            kubeconfig: None,
            context: None,
            namespaces: Vec::new(),
        }
    }
}

/// Which source fills the store.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A directory of ordinary Kubernetes YAML manifests, watched for changes.
    Manifests,
    /// The Kubernetes API (in-cluster or kubeconfig).
    Kubernetes,
}

/// Default upstream timeouts and retry policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConf {
    /// TCP connect timeout to a pod. Default: 5000 ms.
    pub connect_timeout_ms: u64,
    /// Time to wait for each read from a pod. Default: 60000 ms.
    pub read_timeout_ms: u64,
    /// Time to wait for each write to a pod. Default: 60000 ms.
    pub write_timeout_ms: u64,
    /// How long an idle pooled connection to a pod is kept. Default: 60000 ms.
    pub idle_timeout_ms: u64,
    /// How many other endpoints an idempotent request is retried on after a connect
    /// failure. Default: 2.
    pub connect_retries: usize,
}

impl Default for UpstreamConf {
    fn default() -> Self {
        UpstreamConf {
            connect_timeout_ms: 5_000,
            read_timeout_ms: 60_000,
            write_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
            connect_retries: 2,
        }
    }
}

impl UpstreamConf {
    /// Set the connect, read, write and idle timeouts of a connection to a pod.
    pub fn apply_timeouts(&self, o: &mut pingora::upstreams::peer::PeerOptions) {
        o.connection_timeout = Some(Duration::from_millis(self.connect_timeout_ms));
        o.read_timeout = Some(Duration::from_millis(self.read_timeout_ms));
        o.write_timeout = Some(Duration::from_millis(self.write_timeout_ms));
        o.idle_timeout = Some(Duration::from_millis(self.idle_timeout_ms));
    }
}

/// A Service used for requests that match no rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DefaultBackendConf {
    /// Service as `namespace/name`.
    pub service: String,
    /// Service port number or name.
    pub port: PortRef,
}

/// A Service port, by number or by name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(untagged)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(s) => f.write_str(s),
        }
    }
}

/// OpenTelemetry tracing (src/trace.rs). Off while `endpoint` is empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConf {
    /// OTLP/HTTP collector: `http://collector:4318` (`/v1/traces` is added) or the full
    /// traces URL. Default: empty, tracing off.
    pub endpoint: String,
    /// Share of new traces sampled, 0.0 to 1.0; a client's sampled trace is always
    /// followed. Default: 1.0.
    pub sampling_ratio: f64,
    /// `service.name` of the spans. Default: `pingress`.
    pub service_name: String,
    /// How often finished spans are sent. Default: 1000 ms.
    pub export_interval_ms: u64,
}

impl Default for TracingConf {
    fn default() -> Self {
        TracingConf {
            endpoint: String::new(),
            sampling_ratio: 1.0,
            service_name: "pingress".into(),
            export_interval_ms: 1000,
        }
    }
}

/// Access log settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogConf {
    /// Write one JSON line per request to stdout. Default: `true`.
    pub enabled: bool,
}

impl Default for AccessLogConf {
    fn default() -> Self {
        AccessLogConf { enabled: true }
    }
}

/// pingress's default for Pingora's `grace_period_seconds` (Pingora's own is 300): how long
/// SIGTERM waits before it stops the runtimes. A gateway run by hand should stop in seconds;
/// the shipped in-cluster config sets its own values (10 and 20).
pub const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 2;
/// pingress's default for `graceful_shutdown_timeout_seconds`.
pub const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;

/// Pingora's keys whose defaults are pingress's own when the config leaves them out.
fn our_server_defaults(mut server: ServerConf) -> ServerConf {
    server
        .grace_period_seconds
        .get_or_insert(DEFAULT_GRACE_PERIOD_SECONDS);
    server
        .graceful_shutdown_timeout_seconds
        .get_or_insert(DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS);
    server
}

impl Config {
    /// The built-in defaults (Pingora's defaults plus ours).
    pub fn default_config() -> Config {
        Config {
            server: our_server_defaults(ServerConf::default()),
            pingress: PingressConf::default(),
        }
    }

    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        Config::from_yaml(&text, &path.display().to_string())
    }

    /// Parse and validate config text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        };
        let value: serde_yaml::Value = if text.trim().is_empty() {
            serde_yaml::Value::Mapping(Default::default())
        } else {
            serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?
        };
        let mut map = match value {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => Default::default(),
            _ => return Err(invalid("the top level must be a mapping of keys".into())),
        };
        let ours = map.remove("pingress");
        // Pingora ignores unknown keys; we reject them, naming the key and its line.
        let known = pingora_keys();
        for key in map.keys() {
            let name = key.as_str().unwrap_or("<non-string key>");
            if !known.contains(name) {
                let line = find_key_line(text, name)
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                return Err(invalid(format!(
                    "unknown top-level key `{name}`{line}: expected a Pingora server key or `pingress`"
                )));
            }
        }
        let server: ServerConf = serde_yaml::from_value(serde_yaml::Value::Mapping(map.clone()))
            .map_err(|e| {
                // Name the offending key: try each key on its own.
                let bad = map.iter().find_map(|(k, v)| {
                    let mut one = serde_yaml::Mapping::new();
                    one.insert(k.clone(), v.clone());
                    serde_yaml::from_value::<ServerConf>(serde_yaml::Value::Mapping(one))
                        .err()
                        .map(|e| (k.as_str().unwrap_or("?").to_string(), e))
                });
                match bad {
                    Some((key, e)) => {
                        let line = find_key_line(text, &key)
                            .map(|l| format!(" (line {l})"))
                            .unwrap_or_default();
                        invalid(format!("`{key}`{line}: {e}"))
                    }
                    None => invalid(format!("pingora server keys: {e}")),
                }
            })?;
        let server = our_server_defaults(server)
            .validate()
            .map_err(|e| invalid(format!("pingora server keys: {e}")))?;
        let pingress: PingressConf = match ours {
            None | Some(serde_yaml::Value::Null) => PingressConf::default(),
            Some(v) => {
                // Re-parse the section from the text so errors carry line numbers.
                serde_yaml::from_value(v).map_err(|e| {
                    let located = serde_yaml::from_str::<PingressSectionOnly>(text)
                        .err()
                        .map(|e| e.to_string());
                    invalid(format!(
                        "pingress: {}",
                        located.unwrap_or_else(|| e.to_string())
                    ))
                })?
            }
        };
        let config = Config { server, pingress };
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Semantic checks that serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.pingress;
        if p.http_listen.is_empty() {
            return Err("pingress.http_listen: at least one address is needed".into());
        }
        for (i, a) in p.http_listen.iter().enumerate() {
            parse_listen(a).map_err(|e| format!("pingress.http_listen[{i}]: {e}"))?;
        }
        for (i, a) in p.https_listen.iter().enumerate() {
            parse_listen(a).map_err(|e| format!("pingress.https_listen[{i}]: {e}"))?;
        }
        parse_listen(&p.admin_listen).map_err(|e| format!("pingress.admin_listen: {e}"))?;
        if !(0.0..=1.0).contains(&p.tracing.sampling_ratio) {
            return Err(format!(
                "pingress.tracing.sampling_ratio: {} is not between 0.0 and 1.0",
                p.tracing.sampling_ratio
            ));
        }
        if !p.tracing.endpoint.is_empty() {
            crate::trace::traces_url(&p.tracing.endpoint)?;
        }
        if !p.debug_listen.is_empty() {
            parse_listen(&p.debug_listen).map_err(|e| format!("pingress.debug_listen: {e}"))?;
        }
        crate::client::Trust::new(&p.trusted_proxies, &p.forwarded_for_header).map_err(|e| {
            if e.starts_with('[') {
                format!("pingress.trusted_proxies{e}")
            } else {
                format!("pingress.forwarded_for_header: {e}")
            }
        })?;
        for (key, code) in [
            ("req_status_code", p.limits.req_status_code),
            ("conn_status_code", p.limits.conn_status_code),
        ] {
            if !(400..=599).contains(&code) {
                return Err(format!(
                    "pingress.limits.{key}: {code} is not a 4xx or 5xx status"
                ));
            }
        }
        if p.limits.tracked_clients == 0 {
            return Err("pingress.limits.tracked_clients: must be greater than 0".into());
        }
        p.edge.validate()?;
        for (i, a) in p.proxy_protocol.iter().enumerate() {
            if !p.http_listen.contains(a) && !p.https_listen.contains(a) {
                return Err(format!(
                    "pingress.proxy_protocol[{i}]: `{a}` is not one of http_listen or https_listen"
                ));
            }
        }
        if let Some(d) = &p.tls.default_certificate {
            match (&d.secret, &d.cert_file, &d.key_file) {
                (Some(s), None, None) if is_namespaced_name(s) => {}
                (Some(s), None, None) => {
                    return Err(format!(
                        "pingress.tls.default_certificate.secret: `{s}` must be `namespace/name`"
                    ))
                }
                (None, Some(_), Some(_)) => {}
                _ => {
                    return Err("pingress.tls.default_certificate: give either `secret` or both `cert_file` and `key_file`".into())
                }
            }
        }
        if p.tls.redirect_port == 0 {
            return Err("pingress.tls.redirect_port: must be greater than 0".into());
        }
        if p.ingress_class.is_empty() {
            return Err("pingress.ingress_class: must not be empty".into());
        }
        if p.controller_name.is_empty() {
            return Err("pingress.controller_name: must not be empty".into());
        }
        if p.gateway_controller_name.is_empty() {
            return Err("pingress.gateway_controller_name: must not be empty".into());
        }
        if p.source.kind == SourceKind::Manifests && p.source.manifests_dir.as_os_str().is_empty() {
            return Err("pingress.source.manifests_dir: must be set for kind manifests".into());
        }
        if p.source.poll_interval_ms == 0 {
            return Err("pingress.source.poll_interval_ms: must be greater than 0".into());
        }
        let u = &p.upstream;
        for (key, v) in [
            ("connect_timeout_ms", u.connect_timeout_ms),
            ("read_timeout_ms", u.read_timeout_ms),
            ("write_timeout_ms", u.write_timeout_ms),
            ("idle_timeout_ms", u.idle_timeout_ms),
        ] {
            if v == 0 {
                return Err(format!("pingress.upstream.{key}: must be greater than 0"));
            }
        }
        if p.leader_election.lease_duration_seconds == 0 || p.leader_election.renew_interval_ms == 0
        {
            return Err("pingress.leader_election: durations must be greater than 0".into());
        }
        if u64::from(p.leader_election.lease_duration_seconds) * 1000
            <= p.leader_election.renew_interval_ms
        {
            return Err(
                "pingress.leader_election.renew_interval_ms: must be shorter than lease_duration_seconds".into(),
            );
        }
        if let Some(svc) = &p.status.service {
            if !is_namespaced_name(svc) {
                return Err(format!(
                    "pingress.status.service: `{svc}` must be `namespace/name`"
                ));
            }
        }
        if let Some(db) = &p.default_backend {
            if !is_namespaced_name(&db.service) {
                return Err(format!(
                    "pingress.default_backend.service: `{}` must be `namespace/name`",
                    db.service
                ));
            }
        }
        if self.server.threads == 0 {
            return Err("threads: must be at least 1".into());
        }
        Ok(())
    }
}

fn is_namespaced_name(s: &str) -> bool {
    matches!(s.split_once('/'), Some((ns, n)) if !ns.is_empty() && !n.is_empty() && !n.contains('/'))
}

/// Parse a listen address (`ip:port`).
pub fn parse_listen(addr: &str) -> Result<SocketAddr, String> {
    addr.parse::<SocketAddr>()
        .map_err(|_| format!("`{addr}` is not an `ip:port` address"))
}

/// Only the `pingress:` section, for error messages with line numbers.
#[derive(Deserialize)]
struct PingressSectionOnly {
    #[allow(dead_code)]
    pingress: PingressConf,
    #[serde(flatten)]
    #[allow(dead_code)]
    _rest: serde_yaml::Mapping,
}

/// The top-level keys Pingora's `ServerConf` understands.
fn pingora_keys() -> BTreeSet<String> {
    let v = serde_yaml::to_value(ServerConf::default()).unwrap_or_default();
    let mut keys: BTreeSet<String> = v
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    // Optional keys that serialize as null still appear; feature-gated ones may not.
    keys.insert("version".into());
    keys
}

fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.starts_with(key) && l[key.len()..].trim_start().starts_with(':'))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_yaml("", "t").unwrap();
        assert_eq!(c.pingress, PingressConf::default());
        assert_eq!(c.server.threads, 1);
    }

    #[test]
    fn pingora_and_pingress_keys_are_read() {
        let c = Config::from_yaml(
            "threads: 3\ngrace_period_seconds: 5\npingress:\n  http_listen: [\"127.0.0.1:8080\"]\n  upstream:\n    connect_retries: 4\n  listener_read_buffer_bytes: 16384\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.server.threads, 3);
        assert_eq!(c.server.grace_period_seconds, Some(5));
        assert_eq!(c.pingress.http_listen, vec!["127.0.0.1:8080"]);
        assert_eq!(c.pingress.upstream.connect_retries, 4);
        assert_eq!(c.pingress.listener_read_buffer_bytes, 16384);
        assert_eq!(PingressConf::default().listener_read_buffer_bytes, 0);
    }

    #[test]
    fn unknown_pingress_key_is_an_error_naming_it() {
        let e = Config::from_yaml("pingress:\n  http_lisen: []\n", "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http_lisen"), "{e}");
        assert!(e.contains("f.yaml"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn unknown_top_level_key_is_an_error_naming_it_and_its_line() {
        let e = Config::from_yaml("version: 1\nthread: 4\n", "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`thread`") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_address_is_an_error_naming_the_key() {
        let e = Config::from_yaml("pingress:\n  admin_listen: localhost\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pingress.admin_listen"), "{e}");
        let e = Config::from_yaml("pingress:\n  http_listen: [\"1.2.3.4\"]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pingress.http_listen[0]"), "{e}");
    }

    #[test]
    fn edge_limits_out_of_range_are_errors_naming_the_key() {
        for (yaml, key) in [
            ("max_headers: 300", "max_headers"),
            ("max_head_bytes: 2000000", "max_head_bytes"),
            ("head_timeout_ms: 0", "head_timeout_ms"),
            (
                "tls_handshake_timeout_ms: 90000",
                "tls_handshake_timeout_ms",
            ),
            ("tls_handshake_timeout_ms: 0", "tls_handshake_timeout_ms"),
            ("h2_stream_window_bytes: 100", "h2_stream_window_bytes"),
        ] {
            let e = Config::from_yaml(&format!("pingress:\n  edge: {{{yaml}}}\n"), "t")
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("pingress.edge.{key}")), "{yaml}: {e}");
        }
        let c = Config::from_yaml(
            "pingress:\n  edge: {tls_handshake_timeout_ms: 60000}\n",
            "t",
        );
        assert_eq!(c.unwrap().pingress.edge.tls_handshake_timeout_ms, 60_000);
    }

    #[test]
    fn bad_yaml_is_an_error_with_a_line() {
        let e = Config::from_yaml("pingress:\n  http_listen: [\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let e = Config::from_yaml("version: 1\nthreads: many\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`threads` (line 2)"), "{e}");
    }

    #[test]
    fn default_backend_service_must_be_namespaced() {
        let e = Config::from_yaml(
            "pingress:\n  default_backend: {service: web, port: 80}\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("namespace/name"), "{e}");
        let c = Config::from_yaml(
            "pingress:\n  default_backend: {service: ns/web, port: http}\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.pingress.default_backend.unwrap().port,
            PortRef::Name("http".into())
        );
    }

    #[test]
    fn tls_settings_are_read_and_checked() {
        let c = Config::from_yaml(
            "pingress:\n  https_listen: [\"127.0.0.1:8443\"]\n  h2c: true\n  tls:\n    min_version: 1.3\n    redirect_port: 8443\n    default_certificate: {secret: ns/default-cert}\n    hsts: {max_age_seconds: 60, include_subdomains: false, preload: true}\n",
            "t",
        )
        .unwrap();
        let p = &c.pingress;
        assert!(p.h2c);
        assert_eq!(p.tls.min_version, TlsVersion::Tls13);
        assert_eq!(p.tls.redirect_port, 8443);
        assert_eq!(p.tls.hsts.header_value().unwrap(), "max-age=60; preload");
        assert_eq!(
            HstsConf::default().header_value().unwrap(),
            "max-age=31536000; includeSubDomains"
        );
        let e = Config::from_yaml("pingress:\n  tls:\n    min_version: \"1.1\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("1.1") && e.contains("line 3"), "{e}");
        let e = Config::from_yaml(
            "pingress:\n  tls:\n    default_certificate: {cert_file: /a.pem}\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("pingress.tls.default_certificate"), "{e}");
        let e = Config::from_yaml("pingress:\n  https_listen: [\"x\"]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pingress.https_listen[0]"), "{e}");
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let e = Config::load(Path::new("/nonexistent/pingress.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/pingress.yaml"), "{e}");
    }
}
