//! `pingress floor` (hidden): the load harness's Pingora baseline, not part of the gateway.
//!
//! A plain Pingora reverse proxy to one fixed backend, run from the same binary (same
//! compiler flags, allocator and Pingora build) and the same config file as the gateway: the
//! Pingora server section, the listeners with their read-buffer setting, TLS 1.2+ with
//! HTTP/2 by ALPN on the HTTPS listeners, the upstream timeouts, no compression module. Per
//! request it does the Pingora-facing work the gateway does and nothing of its own: the same
//! six forwarded headers (X-Forwarded-For/-Proto/-Host/-Port, X-Real-IP, X-Request-ID; on
//! HTTP/2 the host from `:authority`, as the gateway takes it) and the same peer options,
//! but no route lookup, no endpoint choice, no metrics, no logs.
//!
//! What the gateway costs above this floor is pingress's own code; what the floor costs above
//! nginx and haproxy is Pingora's (docs/benchmarks.md).

use std::net::SocketAddr;
use std::path::Path;

use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};
use pingress::config::{Config, UpstreamConf};

struct Floor {
    backend: SocketAddr,
    upstream: UpstreamConf,
}

#[async_trait]
impl ProxyHttp for Floor {
    /// Whether the request came over TLS.
    type CTX = bool;

    fn new_ctx(&self) -> bool {
        false
    }

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, tls: &mut bool) -> Result<bool> {
        *tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _tls: &mut bool,
    ) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.backend, false, String::new());
        self.upstream.apply_timeouts(&mut peer.options);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        tls: &mut bool,
    ) -> Result<()> {
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(ip) = client.and_then(|ip| HeaderValue::try_from(ip.to_string()).ok()) {
            up.insert_header("x-forwarded-for", ip.clone())?;
            up.insert_header("x-real-ip", ip)?;
        }
        up.insert_header("x-forwarded-proto", if *tls { "https" } else { "http" })?;
        // The Host field, or on HTTP/2 (`:authority`, no Host) the authority.
        let req = session.req_header();
        if let Some(host) = req.headers.get(http::header::HOST).cloned().or_else(|| {
            req.uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        }) {
            up.insert_header("x-forwarded-host", host)?;
        }
        if let Some(port) = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port())
        {
            up.insert_header("x-forwarded-port", port)?;
        }
        up.insert_header("x-request-id", pingress::proxy::new_request_id())?;
        Ok(())
    }
}

/// Run the floor proxy with `config`'s server section and listeners until stopped.
pub fn run(
    config: Config,
    backend: SocketAddr,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<()> {
    let Config {
        server: conf,
        pingress,
    } = config;
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let app = Floor {
        backend,
        upstream: pingress.upstream.clone(),
    };
    let mut proxy = http_proxy_service(&server.configuration, app);
    let buffer = L4BufferSettings::default().read(pingress.listener_read_buffer_bytes);
    for addr in &pingress.http_listen {
        proxy.add_listener(ListenerConfig::tcp(addr.as_str()).l4_buffer(buffer));
    }
    for addr in &pingress.https_listen {
        let (Some(cert), Some(key)) = (cert, key) else {
            anyhow::bail!("pingress.https_listen ({addr}) needs --cert and --key");
        };
        let mut tls = TlsSettings::intermediate(&cert.to_string_lossy(), &key.to_string_lossy())
            .map_err(|e| anyhow::anyhow!("TLS settings ({}): {e}", cert.display()))?;
        tls.enable_h2();
        proxy.add_listener(
            ListenerConfig::tcp(addr.as_str())
                .tls(tls)
                .l4_buffer(buffer),
        );
    }
    server.add_service(proxy);
    eprintln!("pingora floor proxy to {backend}");
    server.run_forever()
}
