//! The real client address end to end: forwarded headers from untrusted and trusted peers,
//! ssl-redirect behind a TLS-terminating proxy, and PROXY protocol v1 and v2 on plain and
//! TLS listeners. Clients bind distinct loopback addresses (127.0.0.x) to be trusted or not.

use crate::support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use support::tls::{tls_ingress, tls_secret, Ca};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const TRUSTED: &str = "127.0.0.2";
const UNTRUSTED: &str = "127.0.0.3";

/// A client whose connections come from `ip`.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(
    client: &reqwest::Client,
    gw: &Gateway,
    host: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<Echo>) {
    let mut rb = client
        .get(format!("http://{}/", gw.http))
        .header("host", host);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (status, serde_json::from_str(&body).ok())
}

/// The access log's `client` for the request with this id.
async fn logged_client(gw: &Gateway, id: &str) -> String {
    eventually(&format!("access log line for {id}"), || async {
        let log = std::fs::read_to_string(gw.access_log()).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["request_id"] == id)
            .map(|v| v["client"].as_str().unwrap_or("").to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client_and_keeps_its_forwarded_headers() {
    let web = pod("web").await;
    let gw = Gateway::start_with(
        &[("all.yaml", site("web", "c.example.com", &[web]))],
        &format!("  trusted_proxies: [\"{TRUSTED}/32\", \"10.0.0.0/8\"]\n"),
    )
    .await;
    gw.wait_for("c.example.com", "/", "web").await;
    let planted = [
        ("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "outer.example.com"),
        ("x-forwarded-port", "443"),
    ];

    // From the trusted proxy: the right-most untrusted entry is the client (10.1.2.3 is
    // a trusted hop, 6.6.6.6 a planted one); its X-Forwarded-* are kept and the peer is
    // appended to X-Forwarded-For.
    let mut h = planted.to_vec();
    h.push(("x-request-id", "trusted-1"));
    let (status, e) = get(&client_from(TRUSTED), &gw, "c.example.com", &h).await;
    let e = e.unwrap_or_else(|| panic!("status {status}"));
    let h = &e.headers;
    assert_eq!(h["x-real-ip"], "203.0.113.9");
    assert_eq!(
        h["x-forwarded-for"],
        format!("6.6.6.6, 203.0.113.9, 10.1.2.3, {TRUSTED}")
    );
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "outer.example.com");
    assert_eq!(h["x-forwarded-port"], "443");
    assert_eq!(logged_client(&gw, "trusted-1").await, "203.0.113.9");

    // The same headers from anyone else are replaced.
    let mut h = planted.to_vec();
    h.push(("x-request-id", "untrusted-1"));
    let (status, e) = get(&client_from(UNTRUSTED), &gw, "c.example.com", &h).await;
    let e = e.unwrap_or_else(|| panic!("status {status}"));
    let h = &e.headers;
    assert_eq!(h["x-real-ip"], UNTRUSTED);
    assert_eq!(h["x-forwarded-for"], UNTRUSTED);
    assert_eq!(
        h["x-original-forwarded-for"],
        "6.6.6.6, 203.0.113.9, 10.1.2.3"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "c.example.com");
    assert_eq!(h["x-forwarded-port"], gw.http.port().to_string());
    assert_eq!(logged_client(&gw, "untrusted-1").await, UNTRUSTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_header_names_the_client() {
    let web = pod("web").await;
    let gw = Gateway::start_with(
        &[("all.yaml", site("web", "cf.example.com", &[web]))],
        &format!("  trusted_proxies: [\"{TRUSTED}\"]\n  forwarded_for_header: CF-Connecting-IP\n"),
    )
    .await;
    gw.wait_for("cf.example.com", "/", "web").await;
    let h = [
        ("cf-connecting-ip", "198.51.100.4"),
        ("x-forwarded-for", "6.6.6.6"),
    ];
    let (_, e) = get(&client_from(TRUSTED), &gw, "cf.example.com", &h).await;
    assert_eq!(e.unwrap().headers["x-real-ip"], "198.51.100.4");
    let (_, e) = get(&client_from(UNTRUSTED), &gw, "cf.example.com", &h).await;
    assert_eq!(e.unwrap().headers["x-real-ip"], UNTRUSTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_ssl_redirect_is_satisfied_by_a_trusted_https_forwarded_proto() {
    // Behind a TLS-terminating load balancer the gateway sees plain HTTP: without trust
    // in the balancer's X-Forwarded-Proto, force-ssl-redirect would loop forever.
    let web = pod("web").await;
    let mut m = format!(
        "{CLASS}{}{}",
        service("default", "web", &[("http", 80)]),
        slices("default", "web", "http", &[web])
    );
    m.push_str(&tls_ingress(
        "default",
        "lb",
        &[("nginx.ingress.kubernetes.io/force-ssl-redirect", "true")],
        &[],
        &["lb.example.com"],
        "web",
        "80",
    ));
    let gw = Gateway::start_with(
        &[("all.yaml", m)],
        &format!("  trusted_proxies: [\"{TRUSTED}\"]\n"),
    )
    .await;
    let https = [("x-forwarded-proto", "https")];
    let trusted = client_from(TRUSTED);
    let (status, e) = eventually("the route serves through the trusted proxy", || async {
        let r = get(&trusted, &gw, "lb.example.com", &https).await;
        (r.0 == 200).then_some(r)
    })
    .await;
    assert_eq!(status, 200);
    let e = e.unwrap();
    assert_eq!(e.headers["x-forwarded-proto"], "https");
    // Plain HTTP at the balancer, or a client claiming https itself: redirected.
    let (status, _) = get(
        &trusted,
        &gw,
        "lb.example.com",
        &[("x-forwarded-proto", "http")],
    )
    .await;
    assert_eq!(status, 308);
    let (status, _) = get(&trusted, &gw, "lb.example.com", &[]).await;
    assert_eq!(status, 308);
    let (status, _) = get(&client_from(UNTRUSTED), &gw, "lb.example.com", &https).await;
    assert_eq!(status, 308);
}

/// A PROXY v2 header for a TCP connection from `src`.
fn v2_header(src: &str, dst: SocketAddr) -> Vec<u8> {
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (src.parse::<SocketAddr>().unwrap(), dst),
    )
    .build()
    .unwrap()
}

/// Send one request on `s` (after whatever was written before) and read the echo.
async fn echo_over<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, host: &str) -> Echo {
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("answer within 20 s")
        .ok();
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not an echo: {e}: {text}"))
}

/// Whether the gateway closes `s` without an HTTP answer after `sent`.
async fn closed_without_answer(mut s: tokio::net::TcpStream, sent: &[u8]) -> bool {
    let _ = s.write_all(sent).await;
    let mut buf = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("closed within 20 s");
    r.is_err() || buf.is_empty()
}

async fn connect_from(ip: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_and_v2_name_the_client_on_plain_and_tls_listeners() {
    let web = pod("web").await;
    let ca = Ca::new();
    let pem = ca.issue(&["pp.example.com"], "pp");
    let mut m = format!(
        "{CLASS}{}{}",
        service("default", "web", &[("http", 80)]),
        slices("default", "web", "http", &[web])
    );
    m.push_str(&tls_secret("default", "pp-tls", &pem));
    m.push_str(&tls_ingress(
        "default",
        "pp",
        &[("nginx.ingress.kubernetes.io/ssl-redirect", "false")],
        &[("pp-tls", &["pp.example.com"])],
        &["pp.example.com"],
        "web",
        "80",
    ));
    let gw = Gateway::start_with(
        &[("all.yaml", m)],
        &format!(
            "  trusted_proxies: [\"{TRUSTED}\"]\n  proxy_protocol: [\"{{http}}\", \"{{https}}\"]\n"
        ),
    )
    .await;

    // v1 on the plain listener, header and request in one write.
    let e = eventually("a v1 client is served", || async {
        let mut s = connect_from(TRUSTED, gw.http).await;
        s.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 51234 80\r\n")
            .await
            .unwrap();
        let e = echo_over(&mut s, "pp.example.com").await;
        (e.pod == "web").then_some(e)
    })
    .await;
    assert_eq!(e.headers["x-real-ip"], "203.0.113.9");
    // The PROXY source is not a trusted proxy: its own X-Forwarded-For is not believed.
    assert_eq!(e.headers["x-forwarded-for"], "203.0.113.9");

    // v2 on the plain listener.
    let mut s = connect_from(TRUSTED, gw.http).await;
    s.write_all(&v2_header("198.51.100.4:4000", gw.http))
        .await
        .unwrap();
    let e = echo_over(&mut s, "pp.example.com").await;
    assert_eq!(e.headers["x-real-ip"], "198.51.100.4");

    // v2 before the TLS handshake on the HTTPS listener.
    let mut s = connect_from(TRUSTED, gw.https).await;
    s.write_all(&v2_header(
        "[2001:db8::7]:4000",
        "[2001:db8::1]:443".parse().unwrap(),
    ))
    .await
    .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("pp.example.com").unwrap();
    let mut tls = connector.connect(name, s).await.unwrap();
    let e = echo_over(&mut tls, "pp.example.com").await;
    assert_eq!(e.headers["x-real-ip"], "2001:db8::7");
    assert_eq!(e.headers["x-forwarded-proto"], "https");

    // v2 LOCAL (a balancer's health check): the socket's own peer.
    let mut s = connect_from(TRUSTED, gw.http).await;
    let local = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Local,
        ppp::v2::Protocol::Stream,
        ppp::v2::Addresses::Unspecified,
    )
    .build()
    .unwrap();
    s.write_all(&local).await.unwrap();
    let e = echo_over(&mut s, "pp.example.com").await;
    assert_eq!(e.headers["x-real-ip"], TRUSTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_listeners_close_connections_without_a_header_or_from_untrusted_peers() {
    let web = pod("web").await;
    let gw = Gateway::start_with(
        &[("all.yaml", site("web", "pp.example.com", &[web]))],
        &format!("  trusted_proxies: [\"{TRUSTED}\"]\n  proxy_protocol: [\"{{http}}\"]\n"),
    )
    .await;
    let header = b"PROXY TCP4 203.0.113.9 127.0.0.1 51234 80\r\n".to_vec();
    // The listener works for a trusted balancer ...
    eventually("a v1 client is served", || async {
        let mut s = connect_from(TRUSTED, gw.http).await;
        s.write_all(&header).await.unwrap();
        (echo_over(&mut s, "pp.example.com").await.pod == "web").then_some(())
    })
    .await;
    let request = b"GET / HTTP/1.1\r\nHost: pp.example.com\r\n\r\n";
    // ... but plain HTTP without a header is closed unanswered,
    let s = connect_from(TRUSTED, gw.http).await;
    assert!(closed_without_answer(s, request).await);
    // and so is a valid header from a peer outside trusted_proxies.
    let mut sent = header.clone();
    sent.extend_from_slice(request);
    let s = connect_from(UNTRUSTED, gw.http).await;
    assert!(closed_without_answer(s, &sent).await);
    let malformed = gw
        .metric("pingress_proxy_protocol_rejected_total{reason=\"malformed\"}")
        .await;
    let untrusted = gw
        .metric("pingress_proxy_protocol_rejected_total{reason=\"untrusted\"}")
        .await;
    assert_eq!((malformed, untrusted), (Some(1.0), Some(1.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_address_settings_are_config_errors_naming_the_key() {
    for (extra, want) in [
        (
            "  trusted_proxies: [\"10.0.0.0/8\", \"10.0.0.0/40\"]\n",
            "pingress.trusted_proxies[1]",
        ),
        (
            "  forwarded_for_header: \"bad header\"\n",
            "pingress.forwarded_for_header",
        ),
        (
            "  proxy_protocol: [\"127.0.0.1:1\"]\n",
            "pingress.proxy_protocol[0]",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("pingress.yaml");
        std::fs::write(
            &conf,
            format!("pingress:\n  source: {{kind: manifests, manifests_dir: /tmp}}\n{extra}"),
        )
        .unwrap();
        let out = std::process::Command::new(bin())
            .args(["-t", "-c"])
            .arg(&conf)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}: accepted");
        assert!(err.contains(want), "{extra}: {err}");
    }
}
