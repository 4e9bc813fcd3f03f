//! Client certificates (auth-tls-*) end to end over real TLS: a client with a certificate
//! from the Ingress's CA gets through with nginx's upstream headers; without one, with
//! one from another CA, or with the wrong CN it gets 400 / 400 / 403; a handshake for a
//! host without auth-tls on the same listener is not asked for a certificate; a request
//! for an auth-tls host on a connection made for another host gets 421; a missing CA
//! Secret closes the host (503).

use crate::support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::tls::{tls_secret, Ca, Pem};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "default";

fn ca_secret(name: &str, ca: &Ca) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca.pem());
    format!("---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {NS}\ntype: Opaque\ndata:\n  ca.crt: {b64}\n")
}

/// An Ingress for `host` with TLS from Secret `cert` and these annotations.
fn ing(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    let mut s = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: {NS}\n  annotations:\n"
    );
    for (k, v) in annotations {
        writeln!(s, "    nginx.ingress.kubernetes.io/{k}: {v:?}").unwrap();
    }
    if annotations.is_empty() {
        s.push_str("    {}\n");
    }
    writeln!(
        s,
        "spec:\n  ingressClassName: pingress\n  tls:\n  - secretName: cert\n    hosts: [{host}]\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service: {{name: web, port: {{name: http}}}}"
    )
    .unwrap();
    s
}

/// A client certificate resolver that records whether the server asked for one.
#[derive(Debug)]
struct Identity {
    key: Option<Arc<rustls::sign::CertifiedKey>>,
    asked: AtomicBool,
}

impl rustls::client::ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, Ordering::SeqCst);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn identity(pem: Option<&Pem>) -> Arc<Identity> {
    let key = pem.map(|p| {
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut p.cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut p.key.as_bytes())
            .unwrap()
            .unwrap();
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
        Arc::new(rustls::sign::CertifiedKey::new(chain, signer))
    });
    Arc::new(Identity {
        key,
        asked: AtomicBool::new(false),
    })
}

/// One HTTP/1.1 GET over TLS with SNI `sni` and Host `host`, presenting `client` (if it
/// has a certificate) when asked. Returns (asked, status, headers, body).
async fn get(
    addr: SocketAddr,
    server_ca: &Ca,
    sni: &str,
    host: &str,
    client: &Arc<Identity>,
) -> (bool, u16, String, String) {
    get_with(addr, server_ca, sni, host, client, rustls::DEFAULT_VERSIONS).await
}

async fn get_with(
    addr: SocketAddr,
    server_ca: &Ca,
    sni: &str,
    host: &str,
    client: &Arc<Identity>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (bool, u16, String, String) {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut server_ca.pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_client_cert_resolver(client.clone());
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nssl-client-verify: SUCCESS\r\nssl-client-subject-dn: CN=forged\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        client.asked.load(Ordering::SeqCst),
        status,
        head.to_string(),
        body.to_string(),
    )
}

fn echo_headers(body: &str) -> BTreeMap<String, String> {
    let e: pingress::echo::Echo =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not an echo: {e}: {body}"));
    e.headers
}

/// The subject of a PEM certificate as `openssl x509 -nameopt RFC2253` prints it (the
/// format of nginx's `$ssl_client_s_dn`).
fn openssl_subject(pem: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.pem");
    std::fs::write(&p, pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(&p)
        .output()
        .expect("openssl (apt-get install openssl)");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .trim_start_matches("subject=")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_checked_per_host() {
    let server_ca = Ca::new();
    let server = server_ca.issue(
        &[
            "mtls.example.com",
            "opt.example.com",
            "plain.example.com",
            "closed.example.com",
            "page.example.com",
        ],
        "pingress",
    );
    let client_ca = Ca::new();
    let alice = client_ca.issue(&["alice"], "Acme, Inc");
    let carol = client_ca.issue(&["carol"], "Acme, Inc");
    let stranger = Ca::new().issue(&["alice"], "Elsewhere");
    let pod = pod("web").await;
    let gw = Gateway::start(&[
        (
            "00-web.yaml",
            format!(
                "{}{}",
                service(NS, "web", &[("http", 80)]),
                slices(NS, "web", "http", &[pod])
            ),
        ),
        ("01-cert.yaml", tls_secret(NS, "cert", &server)),
        ("02-ca.yaml", ca_secret("client-ca", &client_ca)),
        (
            "10-mtls.yaml",
            ing(
                "mtls",
                "mtls.example.com",
                &[
                    ("auth-tls-secret", "default/client-ca"),
                    ("auth-tls-pass-certificate-to-upstream", "true"),
                ],
            ),
        ),
        (
            "11-opt.yaml",
            ing(
                "opt",
                "opt.example.com",
                &[
                    ("auth-tls-secret", "client-ca"),
                    ("auth-tls-verify-client", "optional"),
                    ("auth-tls-match-cn", "CN=(alice|nobody)"),
                ],
            ),
        ),
        ("12-plain.yaml", ing("plain", "plain.example.com", &[])),
        (
            "13-closed.yaml",
            ing(
                "closed",
                "closed.example.com",
                &[("auth-tls-secret", "missing")],
            ),
        ),
        (
            "14-page.yaml",
            ing(
                "page",
                "page.example.com",
                &[
                    ("auth-tls-secret", "client-ca"),
                    ("auth-tls-error-page", "https://errors.example.com/cert"),
                ],
            ),
        ),
    ])
    .await;
    let a = gw.https;
    let none = || identity(None);

    // A certificate from the CA: through, with nginx's headers; the client's forged ones
    // are replaced.
    let id = identity(Some(&alice));
    let (asked, status, _, body) = eventually("mtls host serves alice", || {
        let (a, ca, id) = (a, &server_ca, id.clone());
        async move {
            let r = get(a, ca, "mtls.example.com", "mtls.example.com", &id).await;
            (r.1 == 200).then_some(r)
        }
    })
    .await;
    assert!(asked, "the mtls host's handshake asks for a certificate");
    assert_eq!(status, 200);
    let h = echo_headers(&body);
    assert_eq!(
        h.get("ssl-client-verify").map(String::as_str),
        Some("SUCCESS")
    );
    assert_eq!(
        h.get("ssl-client-subject-dn"),
        Some(&openssl_subject(&alice.cert)),
        "the subject as nginx (OpenSSL, RFC 2253) writes it"
    );
    assert_eq!(
        h.get("ssl-client-issuer-dn").map(String::as_str),
        Some("CN=pingress test CA")
    );
    let cert = h
        .get("ssl-client-cert")
        .expect("pass-certificate-to-upstream");
    let pem = percent_encoding::percent_decode_str(cert)
        .decode_utf8()
        .unwrap();
    assert_eq!(
        pem.trim(),
        alice.cert.trim(),
        "the client's certificate, URL-escaped"
    );

    // TLS 1.2 too (its CertificateVerify signs the whole transcript, which rustls keeps
    // only when a certificate may be asked for).
    for who in [Some(&alice), None] {
        let (asked, status, _, body) = get_with(
            a,
            &server_ca,
            "mtls.example.com",
            "mtls.example.com",
            &identity(who),
            &[&rustls::version::TLS12],
        )
        .await;
        assert!(asked);
        assert_eq!(
            status,
            if who.is_some() { 200 } else { 400 },
            "TLS 1.2: {body}"
        );
    }
    let (asked, status, _, _) = get_with(
        a,
        &server_ca,
        "plain.example.com",
        "plain.example.com",
        &identity(Some(&alice)),
        &[&rustls::version::TLS12],
    )
    .await;
    assert_eq!(
        (asked, status),
        (false, 200),
        "TLS 1.2, host without auth-tls"
    );

    // HTTP/2 (ALPN): the streams of one connection share its certificate.
    let mut both = alice.cert.clone();
    both.push_str(&alice.key);
    let client = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .identity(reqwest::Identity::from_pem(both.as_bytes()).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca.pem().as_bytes()).unwrap())
        .resolve("mtls.example.com", a)
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = client
            .get(format!("https://mtls.example.com:{}/", a.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let h = echo_headers(&r.text().await.unwrap());
        assert_eq!(
            h.get("ssl-client-verify").map(String::as_str),
            Some("SUCCESS")
        );
    }

    // No certificate, or one from another CA: 400.
    let (asked, status, _, body) = get(
        a,
        &server_ca,
        "mtls.example.com",
        "mtls.example.com",
        &none(),
    )
    .await;
    assert!(asked);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no required SSL certificate"), "{body}");
    let (_, status, _, body) = get(
        a,
        &server_ca,
        "mtls.example.com",
        "mtls.example.com",
        &identity(Some(&stranger)),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("certificate error"), "{body}");

    // A host without auth-tls on the same listener: not asked, served.
    let id = identity(Some(&alice));
    let (asked, status, _, body) =
        get(a, &server_ca, "plain.example.com", "plain.example.com", &id).await;
    assert!(
        !asked,
        "a host without auth-tls is not asked for a certificate"
    );
    assert_eq!(status, 200);
    assert_eq!(
        echo_headers(&body)
            .get("ssl-client-verify")
            .map(String::as_str),
        Some("SUCCESS"),
        "without auth-tls the client's headers are not ours to touch (as ingress-nginx)"
    );
    // ... and a connection made for it cannot reach the mtls host: 421.
    let (_, status, _, _) = get(a, &server_ca, "plain.example.com", "mtls.example.com", &id).await;
    assert_eq!(status, 421);

    // optional + match-cn: none passes as NONE; alice passes; carol's CN does not match.
    let (asked, status, _, body) =
        get(a, &server_ca, "opt.example.com", "opt.example.com", &none()).await;
    assert!(asked);
    assert_eq!(
        status, 403,
        "no certificate: an empty subject does not match: {body}"
    );
    let (_, status, _, body) = get(
        a,
        &server_ca,
        "opt.example.com",
        "opt.example.com",
        &identity(Some(&alice)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let h = echo_headers(&body);
    assert_eq!(
        h.get("ssl-client-verify").map(String::as_str),
        Some("SUCCESS")
    );
    assert_eq!(
        h.get("ssl-client-cert"),
        None,
        "not passed without the annotation"
    );
    let (_, status, _, body) = get(
        a,
        &server_ca,
        "opt.example.com",
        "opt.example.com",
        &identity(Some(&carol)),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("client certificate unauthorized"), "{body}");
    let (_, status, _, body) = get(
        a,
        &server_ca,
        "opt.example.com",
        "opt.example.com",
        &identity(Some(&stranger)),
    )
    .await;
    assert_eq!(
        status, 400,
        "optional still refuses a bad certificate: {body}"
    );

    // The error page takes the 400s.
    let (_, status, head, _) = get(
        a,
        &server_ca,
        "page.example.com",
        "page.example.com",
        &none(),
    )
    .await;
    assert_eq!(status, 302);
    assert!(
        head.to_ascii_lowercase()
            .contains("location: https://errors.example.com/cert"),
        "{head}"
    );

    // A missing CA Secret: closed, even to a good certificate.
    let (_, status, _, body) = get(
        a,
        &server_ca,
        "closed.example.com",
        "closed.example.com",
        &identity(Some(&alice)),
    )
    .await;
    assert_eq!(status, 503, "{body}");

    // Plain HTTP to the mtls host: TLS is configured, so the redirect to HTTPS comes
    // first (plain HTTP without the redirect counts as no certificate: unit-tested).
    let (status, _) = gw.get("mtls.example.com", "/").await.unwrap();
    assert_eq!(status, 308);
}
