//! TLS test support: a test CA and certificates it signs, `kubernetes.io/tls` Secret
//! manifests, HTTPS and gRPC backends ("pods"), and what `openssl s_client` sees.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// A certificate authority for one test.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A PEM certificate and its PEM key.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pingress test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate for `names` (the first is the CN) with organization `org`, so
    /// tests can tell two certificates for the same name apart.
    pub fn issue(&self, names: &[&str], org: &str) -> Pem {
        let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Write the CA certificate to `dir/ca.pem` for curl's `--cacert`.
    pub fn write(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("ca.pem");
        std::fs::write(&p, self.pem()).unwrap();
        p
    }
}

/// A `kubernetes.io/tls` Secret manifest (base64 `data`, as `kubectl create secret tls`).
pub fn tls_secret(ns: &str, name: &str, pem: &Pem) -> String {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some(ns.into());
    s.type_ = Some("kubernetes.io/tls".into());
    let mut data = BTreeMap::new();
    data.insert("tls.crt".into(), ByteString(pem.cert.as_bytes().to_vec()));
    data.insert("tls.key".into(), ByteString(pem.key.as_bytes().to_vec()));
    s.data = Some(data);
    let body = serde_yaml::to_string(&s).unwrap();
    format!("---\n{body}")
}

/// An Ingress with a TLS section: `tls` is (secretName, hosts); one `/` rule per host.
pub fn tls_ingress(
    ns: &str,
    name: &str,
    annotations: &[(&str, &str)],
    tls: &[(&str, &[&str])],
    hosts: &[&str],
    svc: &str,
    port: &str,
) -> String {
    let mut s = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
    );
    if !annotations.is_empty() {
        s.push_str("  annotations:\n");
        for (k, v) in annotations {
            s.push_str(&format!("    {k}: \"{v}\"\n"));
        }
    }
    s.push_str("spec:\n  ingressClassName: pingress\n");
    if !tls.is_empty() {
        s.push_str("  tls:\n");
        for (secret, hosts) in tls {
            let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
            s.push_str(&format!(
                "  - secretName: {secret}\n    hosts: [{}]\n",
                hosts.join(", ")
            ));
        }
    }
    s.push_str("  rules:\n");
    for h in hosts {
        s.push_str(&format!(
            "  - host: \"{h}\"\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: {svc}\n            port: {{number: {port}}}\n"
        ));
    }
    s
}

/// `openssl s_client` against `addr` with SNI `sni` (None: no SNI at all) and `extra`
/// arguments (e.g. `-tls1_2`); stdin is empty, so it ends right after the handshake.
pub fn handshake(addr: SocketAddr, sni: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string()]);
    match sni {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    cmd.args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (apt-get install openssl)")
}

/// The subject of the certificate the gateway presents for `sni` (None: no SNI at all), as
/// `openssl s_client` prints it, e.g. `CN=secure.example.test, O=gen-1`.
pub fn served_subject(addr: SocketAddr, sni: Option<&str>) -> String {
    let out = handshake(addr, sni, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(|s| s.replace(" = ", "="))
        .unwrap_or_else(|| format!("no certificate: {}", String::from_utf8_lossy(&out.stderr)))
}

/// A rustls server config for a backend with this certificate and ALPN list.
fn server_config(pem: &Pem, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = rustls_pemfile::certs(&mut pem.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut pem.key.as_bytes())
        .unwrap()
        .unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Accept connections forever, optionally through TLS, and hand each stream to `serve`.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    serve: F,
) where
    F: Fn(Box<dyn Io>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let serve = Arc::new(serve);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let serve = serve.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve(Box::new(stream)).await,
                Some(a) => {
                    if let Ok(tls) = a.accept(stream).await {
                        serve(Box::new(tls)).await
                    }
                }
            }
        });
    }
}

/// A byte stream a backend can serve on.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An echo pod that speaks HTTPS (HTTP/1.1 over TLS) with certificate `pem`.
pub async fn https_pod(name: &str, pem: &Pem) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    let config = server_config(pem, &[b"http/1.1"]);
    tokio::spawn(accept_loop(listener, Some(config), move |io| {
        pingress::echo::serve_connection(io, name)
    }));
    addr
}

/// A gRPC backend, cleartext HTTP/2 (h2c) or, with `pem`, HTTP/2 over TLS. Methods of
/// service `test.Echo` (messages are raw bytes):
/// * `Unary`: answers `echo:<msg>` with trailers `grpc-status: 0`, `x-trailer: unary-done`.
/// * `Fail`: a trailers-only answer, `grpc-status: 5`, `grpc-message: no such thing`.
/// * `Bidi`: answers each message with `echo:<msg>` as soon as it arrives; at the end,
///   trailers with `grpc-status: 0` and `x-count: <messages>`.
/// * `ServerStream`: the request is a number N; answers N messages `item-<i>`.
/// * `ClientStream`: reads every message, then answers once with `got:<messages joined by +>`.
/// * `Gather`: the request is `<N>/<tag>`; the answer (`echo:<msg>`) is held until N `Gather`
///   calls have arrived at this pod, so N calls are open at once; after 20 s without them,
///   `grpc-status: 4` saying how many came.
///
/// Also returns what the pod has seen ([`PodStats`]).
pub async fn grpc_pod(pem: Option<&Pem>) -> (SocketAddr, Arc<PodStats>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = pem.map(|p| server_config(p, &[b"h2"]));
    let stats = Arc::new(PodStats::default());
    let pod = stats.clone();
    tokio::spawn(accept_loop(listener, config, move |io| {
        pod.connections.fetch_add(1, Ordering::SeqCst);
        let pod = pod.clone();
        async move {
            let Ok(mut conn) = h2::server::handshake(io).await else {
                return;
            };
            let open_here = Arc::new(AtomicUsize::new(0));
            while let Some(Ok((req, respond))) = conn.accept().await {
                let now = open_here.fetch_add(1, Ordering::SeqCst) + 1;
                pod.peak_calls_per_connection
                    .fetch_max(now, Ordering::SeqCst);
                let (pod, open_here) = (pod.clone(), open_here.clone());
                tokio::spawn(async move {
                    grpc_call(req, respond, &pod).await;
                    open_here.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    }));
    (addr, stats)
}

/// What a [`grpc_pod`] has seen.
#[derive(Default)]
pub struct PodStats {
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// The most calls ever open at the same time on one connection.
    pub peak_calls_per_connection: AtomicUsize,
    /// `Gather` calls arrived so far (never decreases).
    gathered: tokio::sync::watch::Sender<usize>,
}

/// gRPC length-prefixed message framing.
pub fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

/// Take every complete message off the front of `buf`.
fn grpc_unframe(buf: &mut BytesMut) -> Vec<Bytes> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        buf.advance(5);
        out.push(buf.split_to(len).freeze());
    }
    out
}

fn grpc_headers() -> http::Response<()> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

fn trailers(pairs: &[(&'static str, String)]) -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    for (k, v) in pairs {
        t.insert(*k, v.parse().unwrap());
    }
    t
}

async fn grpc_call(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    pod: &PodStats,
) {
    let method = req.uri().path().to_string();
    let mut body = req.into_body();
    let mut buf = BytesMut::new();
    if method == "/test.Echo/Fail" {
        let resp = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", "5")
            .header("grpc-message", "no such thing")
            .body(())
            .unwrap();
        let _ = respond.send_response(resp, true);
        return;
    }
    let Ok(mut send) = respond.send_response(grpc_headers(), false) else {
        return;
    };
    let mut count = 0usize;
    let mut collected: Vec<String> = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        for msg in grpc_unframe(&mut buf) {
            count += 1;
            match method.as_str() {
                "/test.Echo/Gather" => {
                    let text = String::from_utf8_lossy(&msg).into_owned();
                    let want: usize = text.split('/').next().unwrap().parse().unwrap();
                    pod.gathered.send_modify(|n| *n += 1);
                    let mut seen = pod.gathered.subscribe();
                    let waited = tokio::time::timeout(
                        std::time::Duration::from_secs(20),
                        seen.wait_for(|n| *n >= want),
                    )
                    .await;
                    if waited.is_err() {
                        let came = *pod.gathered.borrow();
                        let status = [
                            ("grpc-status", "4".to_string()),
                            ("grpc-message", format!("only {came} of {want} calls came")),
                        ];
                        let _ = send.send_trailers(trailers(&status));
                        return;
                    }
                    let _ = send.send_data(grpc_frame(format!("echo:{text}").as_bytes()), false);
                }
                "/test.Echo/Bidi" | "/test.Echo/Unary" => {
                    let mut out = b"echo:".to_vec();
                    out.extend_from_slice(&msg);
                    let _ = send.send_data(grpc_frame(&out), false);
                }
                "/test.Echo/ClientStream" => {
                    collected.push(String::from_utf8_lossy(&msg).into_owned());
                }
                "/test.Echo/ServerStream" => {
                    let n: usize = std::str::from_utf8(&msg).unwrap().parse().unwrap();
                    for i in 0..n {
                        let _ = send.send_data(grpc_frame(format!("item-{i}").as_bytes()), false);
                    }
                }
                _ => {}
            }
        }
    }
    if method == "/test.Echo/ClientStream" {
        let reply = format!("got:{}", collected.join("+"));
        let _ = send.send_data(grpc_frame(reply.as_bytes()), false);
    }
    let extra = match method.as_str() {
        "/test.Echo/Unary" | "/test.Echo/Gather" => ("x-trailer", "unary-done".to_string()),
        _ => ("x-count", count.to_string()),
    };
    let _ = send.send_trailers(trailers(&[("grpc-status", "0".into()), extra]));
}
