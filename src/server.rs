//! Builds the Pingora server from a [`Config`]: one proxy service on the plain-HTTP and the
//! HTTPS listeners (certificates by SNI from a [`CertStore`], HTTP/2 by ALPN, optional h2c),
//! the admin service, and the background service that runs the source and the controller.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::Opt;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tokio::sync::watch;
use tracing::info;

use crate::accesslog::AccessLog;
use crate::admin::Admin;
use crate::config::{Config, PingressConf, SourceKind};
use crate::controller::Controller;
use crate::edge::conn::{Deadlines, Held, OpenConn};
use crate::generation::Shared;
use crate::listen::Listening;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::proxy_protocol::{PreTls, ProxyProtocol};
use crate::source::files;
use crate::source::kube::{self as kube_source, KubeSourceConf};
use crate::status::Writer;
use crate::tls::{CertStore, Certs, KeepChain};
use pingora::protocols::l4::stream::Stream as L4Stream;

/// Runs the object source and the controller for the life of the server.
struct ControlPlane {
    conf: PingressConf,
    shared: Arc<Shared>,
    /// Taken by the controller when the service starts.
    certs: std::sync::Mutex<Option<Certs>>,
}

#[async_trait]
impl BackgroundService for ControlPlane {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, rx) = watch::channel(None);
        let mut reports = None;
        let source = match self.conf.source.kind {
            SourceKind::Manifests => {
                let dir = self.conf.source.manifests_dir.clone();
                info!(dir = %dir.display(), "reading manifests directory");
                tokio::spawn(files::run(
                    dir,
                    Duration::from_millis(self.conf.source.poll_interval_ms),
                    tx,
                    self.shared.metrics.clone(),
                ))
            }
            SourceKind::Kubernetes => {
                let (report_tx, report_rx) = watch::channel(None);
                reports = Some(report_tx);
                let conf = self.conf.clone();
                let metrics = self.shared.metrics.clone();
                tokio::spawn(async move {
                    let mut kconf = KubeSourceConf::from(&conf.source);
                    kconf.claim = Some((&conf).into());
                    // Retry until a client can be built (e.g. a kubeconfig still being mounted).
                    let client = loop {
                        match kube_source::client(&kconf).await {
                            Ok(c) => break c,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot build a Kubernetes client; retrying in 5 s");
                                tokio::time::sleep(Duration::from_secs(5)).await;
                            }
                        }
                    };
                    info!(namespaces = ?kconf.namespaces, "watching the Kubernetes API");
                    let writer = Writer::new(
                        client.clone(),
                        conf.status.clone(),
                        &conf.leader_election,
                        metrics.clone(),
                    );
                    let interval = Duration::from_millis(conf.leader_election.renew_interval_ms);
                    let writer = tokio::spawn(writer.run(report_rx, interval));
                    kube_source::run(client, kconf, tx, metrics).await;
                    writer.abort();
                })
            }
        };
        let mut controller = Controller::new((&self.conf).into(), self.shared.clone())
            .with_tracked_clients(self.conf.limits.tracked_clients);
        if let Some(r) = reports {
            controller = controller.with_reports(r);
        }
        let certs = self.certs.lock().ok().and_then(|mut c| c.take());
        if let Some(certs) = certs {
            controller = controller.with_certs(certs);
        }
        let debounce = Duration::from_millis(self.conf.debounce_ms);
        let control = tokio::spawn(controller.run(rx, debounce));
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        info!("shutting down: /readyz is 503 now; requests in flight finish");
        self.shared.set_draining();
        // Routes and endpoints stay current while requests drain; the runtime ends both
        // tasks when the process exits.
        let _ = control.await;
        source.abort();
    }
}

/// Wraps the proxy app for two jobs Pingora's app does not do: reading the PROXY protocol
/// header on plain-HTTP listeners configured for it (HTTPS listeners do it in Pingora's
/// pre-TLS hook), and delaying the closing of idle keep-alive connections at shutdown.
///
/// When shutdown starts, Pingora stops accepting and answers every further request with
/// `Connection: close`, which moves active clients to the new process cleanly; but it also
/// closes idle keep-alive connections right away, which races with clients sending a request
/// on them at that moment (a reset the client cannot retry). Waiting `delay` before that
/// close lets active clients leave through the clean path first.
///
/// It also counts the open client connections and applies the connection limits: Pingora's
/// HTTP app serves a whole connection (every HTTP/1 keep-alive request, or every HTTP/2
/// stream) with one stream, which carries the count and the client's slot
/// ([`Held`]) until it is dropped.
struct Draining<A> {
    inner: Arc<A>,
    delay: Duration,
    proxy_protocol: Option<Arc<ProxyProtocol>>,
    connections: prometheus::IntGauge,
    /// `pingress.edge`: connection limits and the HTTP/1 connection deadlines.
    max_connections: usize,
    max_per_client: usize,
    per_client: Arc<crate::edge::conn::PerClient>,
    timeouts: crate::edge::conn::ConnTimeouts,
    closed: prometheus::IntCounterVec,
    /// `closed{reason="head_timeout"}` and `{reason="send_timeout"}`, looked up once
    /// rather than at every accept.
    deadline_closes: crate::edge::conn::DeadlineCounters,
    /// TLS handshakes under way: a connection handed to the app has finished its own.
    handshakes: Arc<crate::edge::handshake::Handshakes>,
}

impl<A> Draining<A> {
    /// Counts a new connection, unless that passes `max_connections`.
    fn open(&self) -> Option<OpenConn> {
        self.connections.inc();
        let open = OpenConn(self.connections.clone());
        if self.max_connections > 0 && self.connections.get() > self.max_connections as i64 {
            self.closed.with_label_values(&["max_connections"]).inc();
            return None;
        }
        Some(open)
    }

    /// The stream with its deadlines and what it holds, unless its client (the socket
    /// peer, or the PROXY header's source) has `max_per_client` connections already.
    fn guarded(
        &self,
        session: pingora::protocols::Stream,
        open: OpenConn,
    ) -> Option<pingora::protocols::Stream> {
        let client = session
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let slot = match client {
            Some(ip) if self.max_per_client > 0 => {
                let Some(slot) = self.per_client.try_open(ip, self.max_per_client) else {
                    self.closed
                        .with_label_values(&["max_connections_per_client"])
                        .inc();
                    return None;
                };
                Some(slot)
            }
            _ => None,
        };
        Some(Box::new(Deadlines::new(
            session,
            self.timeouts,
            self.deadline_closes.clone(),
            Held { open, slot },
        )))
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Draining<A> {
    /// Not an `async fn`: the checks of a new connection do not wait (unless a PROXY header
    /// must be read first), so the connection's future is the proxy app's own, returned as
    /// it is, and no wrapper of ours is polled at each of its wake-ups. What the connection
    /// holds (its place in the count, its client's slot) lives in its stream and is released
    /// with it.
    fn process_new<'a, 'b, 'f>(
        self: &'a Arc<Self>,
        session: pingora::protocols::Stream,
        shutdown: &'b ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<pingora::protocols::Stream>> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        if session.as_any().is::<Deadlines>() {
            // Ours already (a stream handed back for another round): counted and guarded.
            return self.inner.process_new(session, shutdown);
        }
        let plain = session.as_any().is::<L4Stream>();
        if !plain {
            self.handshakes.done(session.id());
        }
        let Some(open) = self.open() else {
            return Box::pin(std::future::ready(None));
        };
        match &self.proxy_protocol {
            Some(pp) if plain => Box::pin(async move {
                let mut l4 = session.into_any().downcast::<L4Stream>().ok()?;
                pp.accept(&mut l4).await.ok()?;
                let session = self.guarded(l4, open)?;
                self.inner.process_new(session, shutdown).await
            }),
            _ => match self.guarded(session, open) {
                Some(session) => self.inner.process_new(session, shutdown),
                None => Box::pin(std::future::ready(None)),
            },
        }
    }

    async fn cleanup(&self) {
        tokio::time::sleep(self.delay).await;
        self.inner.cleanup().await;
        // The last spans (tracing on): sent from a blocking thread.
        let _ = tokio::task::spawn_blocking(crate::trace::flush).await;
    }
}

/// Build a ready-to-run Pingora server. Fails when a listening address is taken (except in
/// a graceful upgrade, which takes the old process's sockets) or the default certificate
/// files cannot be used.
pub fn build(config: Config, opt: Opt) -> anyhow::Result<Server> {
    let Config {
        server: conf,
        pingress,
    } = config;
    let metrics = Arc::new(Metrics::new());
    let store = CertStore::new(pingress.tls.min_version);
    let certs = Certs::new(&pingress.tls, store.clone(), metrics.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let proxy_addrs = || {
        let http = pingress
            .http_listen
            .iter()
            .map(|a| ("http_listen", a.as_str()));
        http.chain(
            pingress
                .https_listen
                .iter()
                .map(|a| ("https_listen", a.as_str())),
        )
    };
    if !opt.upgrade {
        let admin = std::iter::once(("admin_listen", pingress.admin_listen.as_str()));
        let debug = (!pingress.debug_listen.is_empty())
            .then_some(("debug_listen", pingress.debug_listen.as_str()));
        crate::listen::check_free(proxy_addrs().chain(admin).chain(debug))?;
    }
    let listen_addrs: Vec<std::net::SocketAddr> = proxy_addrs()
        .filter_map(|(_, a)| crate::config::parse_listen(a).ok())
        .collect();

    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let trust = Arc::new(
        crate::client::Trust::new(&pingress.trusted_proxies, &pingress.forwarded_for_header)
            .map_err(|e| anyhow::anyhow!("pingress.trusted_proxies: {e}"))?,
    );
    let proxy_protocol = (!pingress.proxy_protocol.is_empty()).then(|| {
        let addrs = pingress
            .proxy_protocol
            .iter()
            .filter_map(|a| crate::config::parse_listen(a).ok())
            .collect();
        Arc::new(ProxyProtocol::new(
            addrs,
            trust.clone(),
            metrics.proxy_protocol_rejected.clone(),
        ))
    });
    let shared = Shared::new(metrics);
    let access_log = pingress.access_log.enabled.then(AccessLog::stdout);
    let ports: Vec<u16> = listen_addrs.iter().map(|a| a.port()).collect();
    let gateway = Gateway::new(
        shared.clone(),
        pingress.upstream.clone(),
        access_log,
        &pingress.tls,
        &ports,
        trust,
        &pingress.limits,
    )
    .with_tracing(
        crate::trace::Tracing::new(&pingress.tracing).map_err(|e| anyhow::anyhow!("{e}"))?,
    )
    .with_edge(&pingress.edge);
    let drain = Duration::from_millis(pingress.keepalive_drain_ms);
    let edge = pingress.edge.clone();
    let mut app = pingora_proxy::http_proxy(&server.configuration, gateway);
    let mut options = HttpServerOptions::default();
    options.h2c = pingress.h2c;
    options.h2_idle_timeout = Some(Duration::from_millis(edge.h2_idle_timeout_ms));
    app.server_options = Some(options);
    // HTTP/2 limits: streams, windows, header list, and the response bytes buffered per
    // stream for a client that does not read (past it, back-pressure reaches the pod).
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(edge.h2_max_concurrent_streams)
        .initial_window_size(edge.h2_stream_window_bytes)
        .initial_connection_window_size(edge.h2_connection_window_bytes)
        .max_header_list_size(edge.h2_max_header_list_bytes)
        .max_send_buffer_size(edge.h2_max_send_buffer_bytes);
    app.h2_options = Some(h2);
    let handshakes = crate::edge::handshake::Handshakes::new(
        Duration::from_millis(edge.tls_handshake_timeout_ms),
        shared
            .metrics
            .downstream_closed
            .with_label_values(&["tls_handshake_timeout"]),
    );
    let mut proxy = Service::new(
        "pingress http".to_string(),
        Draining {
            handshakes: handshakes.clone(),
            inner: Arc::new(app),
            delay: drain,
            proxy_protocol: proxy_protocol.clone(),
            connections: shared.metrics.downstream_connections.clone(),
            max_connections: edge.max_connections,
            max_per_client: edge.max_connections_per_client,
            per_client: Default::default(),
            timeouts: crate::edge::conn::ConnTimeouts {
                head: Duration::from_millis(edge.head_timeout_ms),
                idle: (edge.keepalive_timeout_seconds > 0)
                    .then(|| Duration::from_secs(edge.keepalive_timeout_seconds)),
                send: Some(Duration::from_millis(edge.send_timeout_ms)),
            },
            closed: shared.metrics.downstream_closed.clone(),
            deadline_closes: crate::edge::conn::DeadlineCounters {
                head: shared
                    .metrics
                    .downstream_closed
                    .with_label_values(&["head_timeout"]),
                send: shared
                    .metrics
                    .downstream_closed
                    .with_label_values(&["send_timeout"]),
            },
        },
    );
    // The TLS handshake deadline, and the PROXY header on HTTPS listeners configured for
    // it, in Pingora's pre-TLS hook.
    let proxy_tls = proxy_protocol.clone().filter(|_| {
        pingress
            .https_listen
            .iter()
            .any(|a| pingress.proxy_protocol.contains(a))
    });
    proxy.endpoints().set_pre_tls_callback(Arc::new(PreTls {
        handshakes,
        proxy: proxy_tls,
    }));
    // With the default 0, reads go straight into Pingora's request buffers: no 64 KiB L4
    // read buffer per connection (zeroed at accept, copied through on every read, held
    // while idle).
    let buffer = L4BufferSettings::default().read(pingress.listener_read_buffer_bytes);
    for addr in &pingress.http_listen {
        proxy.add_listener(ListenerConfig::tcp(addr.as_str()).l4_buffer(buffer));
    }
    for addr in &pingress.https_listen {
        // Client certificates (auth-tls-*): the verifier asks only for the SNIs that
        // want one; the callback keeps the chain for the request phase.
        let client_auth = store.client_auth();
        let mut tls = TlsSettings::with_callbacks(Box::new(KeepChain(client_auth.clone())))
            .map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
        tls.set_cert_resolver(store.clone());
        tls.set_client_cert_verifier(client_auth);
        if pingress.tls.http2 {
            tls.enable_h2();
        }
        let endpoint = ListenerConfig::tcp(addr.as_str())
            .tls(tls)
            .l4_buffer(buffer);
        proxy.add_listener(endpoint);
    }

    let mut admin = Service::new(
        "pingress admin".to_string(),
        HttpServer::new_app(Admin {
            shared: shared.clone(),
            listening: Listening::new(listen_addrs),
        }),
    );
    admin.add_tcp(&pingress.admin_listen);
    admin.threads = Some(1);
    let debug = (!pingress.debug_listen.is_empty()).then(|| {
        let mut debug = Service::new(
            "pingress debug".to_string(),
            HttpServer::new_app(crate::debug::DebugApp {
                shared: shared.clone(),
                certs: store.clone(),
            }),
        );
        debug.add_tcp(&pingress.debug_listen);
        debug.threads = Some(1);
        debug
    });

    let control = background_service(
        "pingress control plane",
        ControlPlane {
            conf: pingress,
            shared,
            certs: std::sync::Mutex::new(Some(certs)),
        },
    );
    server.add_service(proxy);
    server.add_service(admin);
    if let Some(debug) = debug {
        server.add_service(debug);
    }
    server.add_service(control);
    Ok(server)
}
