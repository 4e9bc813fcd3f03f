//! Strict HTTP at the edge, over real sockets: a corpus of request-head vectors (framing,
//! request targets, Host, header obfuscations and head limits, from RFC 9110/9112 and the
//! public request-smuggling write-ups), sent raw over plain TCP and over TLS. For each one
//! the test asserts pingress's answer, what the pod received (nothing, or exactly the one
//! request meant), that no smuggled second request ever reached the pod, and that the
//! gateway still serves afterwards. Plus pipelining, and pingress's own answers with a
//! request body still unread on the connection.

use crate::support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use support::tls::{tls_ingress, tls_secret, Ca};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const HOST: &str = "edge.test";

/// One request as the pod read it, body complete.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: Vec<u8>,
    /// Its Upgrade field, if any.
    upgrade: Option<String>,
}

/// A pod that records each request it read completely, and answers 200 `pod`.
async fn recording_pod() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let upgrade = req
                                .headers()
                                .get("upgrade")
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                            let body = req.into_body().collect().await?.to_bytes().to_vec();
                            log.lock().unwrap().push(Seen {
                                method,
                                path,
                                body,
                                upgrade,
                            });
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"pod"),
                            )))
                        }
                    },
                );
                // More fields than pingress lets through, so that its limit is what is tested.
                let _ = hyper::server::conn::http1::Builder::new()
                    .max_headers(400)
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

struct Edge {
    gw: Gateway,
    ca: Ca,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Edge {
    async fn start(extra: &str) -> Edge {
        let (pod, seen) = recording_pod().await;
        let ca = Ca::new();
        let pem = ca.issue(&[HOST], "edge");
        let site = format!(
            "{CLASS}{}{}{}{}",
            service("shop", "web", &[("http", 80)]),
            slices("shop", "web", "http", &[pod]),
            tls_secret("shop", "edge-tls", &pem),
            tls_ingress(
                "shop",
                "web",
                &[("nginx.ingress.kubernetes.io/ssl-redirect", "false")],
                &[("edge-tls", &[HOST])],
                &[HOST],
                "web",
                "80",
            ),
        );
        let gw = Gateway::start_with(&[("site.yaml", site)], extra).await;
        gw.wait_for(HOST, "/ok", "pod").await;
        Edge { gw, ca, seen }
    }

    async fn tls(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.ca.pem().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.gw.https).await.unwrap();
        connector
            .connect(ServerName::try_from(HOST).unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Send `raw` on a new connection (TLS or not), read until the gateway closes it (or
    /// 20 s), and return the statuses of the responses read, in order.
    async fn send(&self, raw: &[u8], tls: bool) -> (Vec<u16>, String) {
        if tls {
            exchange(self.tls().await, raw).await
        } else {
            exchange(
                tokio::net::TcpStream::connect(self.gw.http).await.unwrap(),
                raw,
            )
            .await
        }
    }

    fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, raw: &[u8]) -> (Vec<u16>, String) {
    // A write may fail once the gateway has answered and closed: what was read still counts.
    let _ = s.write_all(raw).await;
    let _ = s.flush().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    (statuses(&text), text)
}

/// Status codes of the HTTP/1 responses in `text`.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter(|(i, _)| *i == 0 || text[..*i].ends_with('\n') || text[..*i].ends_with("pod"))
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// What a vector must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// pingress answers this status itself; the pod gets nothing.
    Refused(u16),
    /// The pod gets exactly one request, `POST /ok` or `GET /ok`, with this body.
    Forwarded(&'static [u8]),
    /// The pod gets exactly one request, for this target (as Pingora normalised it).
    Target(&'static str),
    /// A chunked body Pingora's parser (httparse) reads leniently: whatever pingress
    /// answers, the pod gets at most the one request, re-framed, never a second.
    AtMostOne,
}

struct Vector {
    name: String,
    raw: Vec<u8>,
    want: Want,
}

/// The smuggled request some vectors hide in their body: it must never reach the pod.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: edge.test\r\n\r\n";

fn v(name: impl Into<String>, raw: impl Into<Vec<u8>>, want: Want) -> Vector {
    Vector {
        name: name.into(),
        raw: raw.into(),
        want,
    }
}

fn post(fields: &str, body: &str) -> Vec<u8> {
    format!("POST /ok HTTP/1.1\r\nHost: {HOST}\r\n{fields}Connection: close\r\n\r\n{body}")
        .into_bytes()
}

fn corpus() -> Vec<Vector> {
    use Want::*;
    let mut c = Vec::new();
    // Content-Length values: only 1*DIGIT that fits in 63 bits frames a body.
    let body5 = "hello";
    for (cl, want) in [
        ("5", Forwarded(b"hello")),
        ("05", Forwarded(b"hello")),
        ("0005", Forwarded(b"hello")),
        // Pingora accepts identical duplicates in two fields, not joined in one.
        ("5, 5", Refused(400)),
        ("+5", Refused(400)),
        ("-5", Refused(400)),
        ("5.0", Refused(400)),
        ("0x5", Refused(400)),
        ("5e0", Refused(400)),
        ("5,", Refused(400)),
        (",5", Refused(400)),
        ("5 5", Refused(400)),
        ("5, 6", Refused(400)),
        ("five", Refused(400)),
        ("", Refused(400)),
        ("9223372036854775808", Refused(400)),
        ("18446744073709551615", Refused(400)),
        ("18446744073709551616", Refused(400)),
        ("99999999999999999999999", Refused(400)),
        ("\u{b}5", Refused(400)),
        ("5\u{c}", Refused(400)),
    ] {
        c.push(v(
            format!("Content-Length: {cl:?}"),
            post(&format!("Content-Length: {cl}\r\n"), body5),
            want,
        ));
    }
    // Two Content-Length fields.
    for (a, b, want) in [
        ("5", "5", Forwarded(b"hello")),
        ("5", "6", Refused(400)),
        ("5", "", Refused(400)),
        ("0", "5", Refused(400)),
    ] {
        c.push(v(
            format!("Content-Length twice {a:?} {b:?}"),
            post(
                &format!("Content-Length: {a}\r\nContent-Length: {b}\r\n"),
                body5,
            ),
            want,
        ));
    }
    // Transfer-Encoding: exactly `chunked`, alone, on HTTP/1.1.
    let chunked = "5\r\nhello\r\n0\r\n\r\n".to_string();
    for (te, want) in [
        ("chunked", Forwarded(b"hello")),
        ("Chunked", Forwarded(b"hello")),
        ("CHUNKED", Forwarded(b"hello")),
        ("gzip, chunked", Refused(400)),
        ("deflate, chunked", Refused(400)),
        ("identity, chunked", Refused(400)),
        ("chunked, chunked", Refused(400)),
        ("chunked, gzip", Refused(400)),
        ("identity", Refused(400)),
        ("gzip", Refused(400)),
        ("xchunked", Refused(400)),
        ("chunkedx", Refused(400)),
        ("chunk", Refused(400)),
        ("chunked;q=1", Refused(400)),
        ("\"chunked\"", Refused(400)),
        ("chu nked", Refused(400)),
        ("", Refused(400)),
        ("chunked\u{b}", Refused(400)),
    ] {
        c.push(v(
            format!("Transfer-Encoding: {te:?}"),
            post(&format!("Transfer-Encoding: {te}\r\n"), &chunked),
            want,
        ));
    }
    c.push(v(
        "Transfer-Encoding twice",
        post(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            &chunked,
        ),
        Refused(400),
    ));
    // Transfer-Encoding with Content-Length, in every order and casing, with a request hidden
    // where one of the two framings would end.
    for cl in [
        "Content-Length",
        "content-length",
        "CONTENT-LENGTH",
        "Content-length",
    ] {
        for (order, fields) in [
            (
                "CL first",
                format!("{cl}: 5\r\nTransfer-Encoding: chunked\r\n"),
            ),
            (
                "TE first",
                format!("Transfer-Encoding: chunked\r\n{cl}: 5\r\n"),
            ),
        ] {
            c.push(v(
                format!("CL.TE {cl} {order}"),
                post(&fields, &format!("0\r\n\r\n{SMUGGLED}")),
                Refused(400),
            ));
            c.push(v(
                format!("TE.CL {cl} {order}"),
                post(&fields, &format!("3c\r\n{SMUGGLED}\r\n0\r\n\r\n")),
                Refused(400),
            ));
        }
    }
    // Transfer-Encoding on HTTP/1.0.
    c.push(v(
        "Transfer-Encoding on HTTP/1.0",
        format!("POST /ok HTTP/1.0\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"),
        Refused(400),
    ));
    // Chunk sizes and chunk framing.
    for (chunks, want) in [
        ("5\r\nhello\r\n0\r\n\r\n", Forwarded(b"hello")),
        ("5;ext=1\r\nhello\r\n0\r\n\r\n", Forwarded(b"hello")),
        ("2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", Forwarded(b"hello")),
        ("0\r\n\r\n", Forwarded(b"")),
    ] {
        c.push(v(
            format!("chunks {chunks:?}"),
            post("Transfer-Encoding: chunked\r\n", chunks),
            want,
        ));
    }
    for chunks in [
        "0x5\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "+5\r\nhello\r\n0\r\n\r\n",
        "g\r\nhello\r\n0\r\n\r\n",
        " 5\r\nhello\r\n0\r\n\r\n",
        "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "10000000000000000\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
    ] {
        c.push(Vector {
            name: format!("bad chunks {chunks:?}"),
            raw: post("Transfer-Encoding: chunked\r\n", chunks),
            // Chunked bodies are streamed: the head may already be on its way, but the pod
            // never reads a complete request.
            want: Refused(0),
        });
    }
    // An empty chunk-size line: httparse reads it as the last chunk, and the rest as
    // trailers. The pod gets one request with an empty body; nothing is left to smuggle.
    c.push(v(
        "empty chunk-size line",
        post(
            "Transfer-Encoding: chunked\r\n",
            &format!("\r\n{SMUGGLED}\r\n0\r\n\r\n"),
        ),
        AtMostOne,
    ));
    // Header-name obfuscations of the framing fields (whitespace before the colon, obs-fold,
    // control bytes): never a second framing.
    for fields in [
        "Transfer-Encoding : chunked\r\n",
        "Transfer-Encoding\t: chunked\r\n",
        " Transfer-Encoding: chunked\r\n",
        "X: y\r\n Transfer-Encoding: chunked\r\n",
        "X: y\r\n\tTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding:\r\n chunked\r\n",
        "Transfer\u{0}Encoding: chunked\r\n",
        "Content-Length : 5\r\n",
        "Content-Length\u{b}: 5\r\n",
        " Content-Length: 5\r\n",
        "Content-Length: 5\r\nX: y\r\n Content-Length: 6\r\n",
        "Content-Length: 5\r\nTransfer-Encoding\r\n",
    ] {
        c.push(v(
            format!("obfuscated {fields:?}"),
            post(fields, &format!("0\r\n\r\n{SMUGGLED}")),
            Refused(400),
        ));
    }
    // Field syntax: CR, LF and NUL inside values and names; bare CR; invalid name bytes.
    for fields in [
        "X: a\rb\r\n",
        "X: a\u{0}b\r\n",
        "X\r\n",
        "X a: b\r\n",
        "(X): b\r\n",
        "X[1]: b\r\n",
        ": empty-name\r\n",
        "X: a\r\rb\r\n",
    ] {
        c.push(v(
            format!("field syntax {fields:?}"),
            format!("GET /ok HTTP/1.1\r\nHost: {HOST}\r\n{fields}Connection: close\r\n\r\n"),
            Refused(400),
        ));
    }
    // Request targets (RFC 9112 §3.2).
    let get = |line: &str, fields: &str| {
        format!("{line}\r\n{fields}Connection: close\r\n\r\n").into_bytes()
    };
    let host = format!("Host: {HOST}\r\n");
    for (line, want) in [
        ("GET /ok HTTP/1.1", Forwarded(b"")),
        ("OPTIONS * HTTP/1.1", Target("*")),
        ("GET * HTTP/1.1", Refused(400)),
        ("POST * HTTP/1.1", Refused(400)),
        ("HEAD * HTTP/1.1", Refused(400)),
        ("GET ok HTTP/1.1", Refused(400)),
        ("GET ?a=b HTTP/1.1", Refused(400)),
        ("GET ftp://edge.test/ok HTTP/1.1", Refused(400)),
        ("GET http:///ok HTTP/1.1", Refused(400)),
        ("GET edge.test:80 HTTP/1.1", Refused(400)),
        ("GET /ok HTTP/1.1 extra", Refused(400)),
        ("GET  /ok HTTP/1.1", Refused(400)),
        ("GET /ok HTTP/2.0", Refused(400)),
        ("GET /ok HTTP/1.2", Refused(400)),
        ("GET /ok http/1.1", Refused(400)),
        // Pingora percent-encodes what is not allowed in a target, so the pod gets one
        // well-formed target.
        ("GET /o k HTTP/1.1", Target("/o%20k")),
        ("G(T /ok HTTP/1.1", Refused(400)),
        ("GET /ok\u{0} HTTP/1.1", Target("/ok%00")),
        ("CONNECT edge.test:443 HTTP/1.1", Refused(405)),
    ] {
        c.push(v(format!("target {line:?}"), get(line, &host), want));
    }
    // absolute-form wins over Host: without a Host it routes on the target's authority; a
    // Host that differs is refused (Pingora checks it before any hook).
    c.push(v(
        "absolute-form, no Host",
        get(&format!("GET http://{HOST}/ok HTTP/1.1"), ""),
        Forwarded(b""),
    ));
    c.push(v(
        "absolute-form, same Host",
        get(&format!("GET http://{HOST}/ok HTTP/1.1"), &host),
        Forwarded(b""),
    ));
    c.push(v(
        "absolute-form, other Host",
        get(
            &format!("GET http://{HOST}/ok HTTP/1.1"),
            "Host: other.test\r\n",
        ),
        Refused(400),
    ));
    c.push(v(
        "absolute-form with userinfo",
        get(&format!("GET http://u@{HOST}/ok HTTP/1.1"), ""),
        Refused(400),
    ));
    // Host (RFC 9112 §3.2, RFC 3986 authority).
    for (fields, want) in [
        (format!("Host: {HOST}\r\n"), Forwarded(b"")),
        (format!("Host: {HOST}:80\r\n"), Forwarded(b"")),
        ("Host: EDGE.test\r\n".to_string(), Forwarded(b"")),
        ("".to_string(), Refused(400)),
        (format!("Host: {HOST}\r\nHost: {HOST}\r\n"), Refused(400)),
        (
            format!("Host: {HOST}\r\nHost: other.test\r\n"),
            Refused(400),
        ),
        (format!("Host: {HOST}:abc\r\n"), Refused(400)),
        (format!("Host: {HOST}:99999\r\n"), Refused(400)),
        (format!("Host: {HOST}:80:80\r\n"), Refused(400)),
        (format!("Host: {HOST}/x\r\n"), Refused(400)),
        (format!("Host: {HOST}?x\r\n"), Refused(400)),
        (format!("Host: user@{HOST}\r\n"), Refused(400)),
        (format!("Host: {HOST} other\r\n"), Refused(400)),
        ("Host: [::1\r\n".to_string(), Refused(400)),
        ("Host: [zz::1]\r\n".to_string(), Refused(400)),
        (format!("Host: \"{HOST}\"\r\n"), Refused(400)),
        (format!("Host: {HOST}\\x\r\n"), Refused(400)),
    ] {
        c.push(v(
            format!("Host {fields:?}"),
            get("GET /ok HTTP/1.1", &fields),
            want,
        ));
    }
    // HTTP/1.0 needs no Host (it then matches no host rule: the default backend's 404).
    c.push(v(
        "HTTP/1.0 without Host",
        get("GET /ok HTTP/1.0", ""),
        Refused(404),
    ));
    // Head limits (defaults: 8 KiB request line, 16 KiB per field, 60 KiB head, 100 fields).
    for (n, want) in [
        (8000, Forwarded(b"")),
        (8200, Refused(414)),
        (40_000, Refused(414)),
    ] {
        c.push(v(
            format!("request line of {n} bytes"),
            get(&format!("GET /ok?{} HTTP/1.1", "a".repeat(n - 17)), &host),
            want,
        ));
    }
    for (n, want) in [
        (16_000, Forwarded(b"")),
        (16_500, Refused(431)),
        (64 * 1024, Refused(431)),
    ] {
        c.push(v(
            format!("one field of {n} bytes"),
            get(
                "GET /ok HTTP/1.1",
                &format!("{host}X: {}\r\n", "b".repeat(n - 3)),
            ),
            want,
        ));
    }
    for (n, want) in [(3, Forwarded(b"")), (4, Refused(431)), (15, Refused(431))] {
        let fields: String = (0..n)
            .map(|i| format!("X-{i}: {}\r\n", "c".repeat(15_990)))
            .collect();
        c.push(v(
            format!("{n} fields of 16 KB"),
            get("GET /ok HTTP/1.1", &format!("{host}{fields}")),
            want,
        ));
    }
    for (n, want) in [
        (97, Forwarded(b"")),
        (101, Refused(431)),
        (200, Refused(431)),
        (300, Refused(400)),
    ] {
        let fields: String = (0..n).map(|i| format!("X-{i}: v\r\n")).collect();
        c.push(v(
            format!("{n} more fields"),
            get("GET /ok HTTP/1.1", &format!("{host}{fields}")),
            want,
        ));
    }
    // Bodies against the default 1 MiB limit: refused before anything is forwarded when
    // Content-Length says so.
    c.push(v(
        "Content-Length over the body limit",
        post("Content-Length: 1048577\r\n", ""),
        Refused(413),
    ));
    c.push(v(
        "Content-Length at the body limit",
        post("Content-Length: 5\r\n", body5),
        Forwarded(b"hello"),
    ));
    // Methods.
    for m in [
        "GET", "HEAD", "DELETE", "PATCH", "PUT", "PROPFIND", "X-CUSTOM",
    ] {
        c.push(v(
            format!("method {m}"),
            format!(
                "{m} /ok HTTP/1.1
{host}Connection: close

"
            ),
            Forwarded(b""),
        ));
    }
    // Line endings: bare LF is tolerated by Pingora for the whole head; mixed forms too.
    c.push(v(
        "bare LF head",
        format!("GET /ok HTTP/1.1\nHost: {HOST}\nConnection: close\n\n"),
        Forwarded(b""),
    ));
    c.push(v(
        "leading empty line",
        format!("\r\nGET /ok HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"),
        Forwarded(b""),
    ));
    // An h2c upgrade (RFC 7540 §3.2, removed in RFC 9113) is not taken up or tunnelled:
    // the pod gets one ordinary HTTP/1.1 request, without the Upgrade.
    c.push(v(
        "h2c upgrade",
        format!(
            "GET /ok HTTP/1.1\r\n{host}Connection: Upgrade, HTTP2-Settings, close\r\n\
             Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        ),
        Forwarded(b""),
    ));
    generated(&mut c);
    c
}

/// Byte-by-byte vectors (RFC 9110 §5.1, §5.5; RFC 9112 §3; RFC 3986 §3.2.2): every
/// control byte in a field name, a field value and a request target; every delimiter in a
/// field name and a method; the characters a Host may and may not carry; HTTP versions.
fn generated(c: &mut Vec<Vector>) {
    use Want::*;
    let host = format!("Host: {HOST}\r\n");
    let get = |fields: &[u8]| {
        let mut raw = format!("GET /ok HTTP/1.1\r\n{host}").into_bytes();
        raw.extend_from_slice(fields);
        raw.extend_from_slice(b"Connection: close\r\n\r\n");
        raw
    };
    let controls = (0u8..0x20).chain([0x7f]);
    for b in controls.clone() {
        c.push(v(
            format!("control 0x{b:02x} in a field name"),
            get(&[b"X-A".as_slice(), &[b], b"B: v\r\n"].concat()),
            Refused(400),
        ));
        // CR and NUL in values are in the hand-written set above.
        if b == b'\r' || b == 0 {
            continue;
        }
        // HTAB is whitespace inside a value; LF ends the line, leaving a field line
        // without a colon.
        let want = if b == b'\t' {
            Forwarded(b"")
        } else {
            Refused(400)
        };
        c.push(v(
            format!("control 0x{b:02x} in a field value"),
            get(&[b"X: a".as_slice(), &[b], b"b\r\n"].concat()),
            want,
        ));
    }
    // obs-text in a value is passed on (RFC 9110 §5.5).
    for b in [0x80u8, 0xa0, 0xff] {
        c.push(v(
            format!("obs-text 0x{b:02x} in a field value"),
            get(&[b"X: a".as_slice(), &[b], b"b\r\n"].concat()),
            Forwarded(b""),
        ));
    }
    // Controls in the target: Pingora percent-encodes them, so the pod gets one
    // well-formed target. CR and LF end the request line, TAB and SP split it.
    for b in controls.filter(|b| ![b'\r', b'\n', b'\t', 0].contains(b)) {
        let mut raw = b"GET /ok".to_vec();
        raw.push(b);
        raw.extend_from_slice(format!(" HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes());
        c.push(v(
            format!("control 0x{b:02x} in the target"),
            raw,
            Target(format!("/ok%{b:02X}").leak()),
        ));
    }
    // Delimiters are not token characters: not in a field name, not in a method.
    for d in "\"),/;<=>?@\\]{}".chars() {
        c.push(v(
            format!("delimiter {d:?} in a field name"),
            get(format!("X{d}Y: v\r\n").as_bytes()),
            Refused(400),
        ));
    }
    for d in "\")[],/:;<=>?@\\{}".chars() {
        c.push(v(
            format!("delimiter {d:?} in a method"),
            format!("G{d}T /ok HTTP/1.1\r\n{host}Connection: close\r\n\r\n"),
            Refused(400),
        ));
    }
    // Host reg-name: sub-delims are valid (no route has such a host: the default
    // backend's 404); anything else outside unreserved is not.
    for ch in "!$&'()*+,;=~_".chars() {
        c.push(v(
            format!("Host with {ch:?}"),
            format!("GET /ok HTTP/1.1\r\nHost: edge{ch}test\r\nConnection: close\r\n\r\n"),
            Refused(404),
        ));
    }
    for ch in "\"<>\\^`{|}%#".chars() {
        c.push(v(
            format!("Host with {ch:?}"),
            format!("GET /ok HTTP/1.1\r\nHost: edge{ch}test\r\nConnection: close\r\n\r\n"),
            Refused(400),
        ));
    }
    // HTTP versions (RFC 9112 §2.3: HTTP/DIGIT.DIGIT, case-sensitive).
    for version in [
        "HTTP/1",
        "HTTP/",
        "HTTP/01.1",
        "HTTP/1.01",
        "HTTP/1.1x",
        "HTTPS/1.1",
        "HTTP/3.0",
    ] {
        c.push(v(
            format!("version {version:?}"),
            format!("GET /ok {version}\r\n{host}Connection: close\r\n\r\n"),
            Refused(400),
        ));
    }
    c.push(v(
        "HTTP/1.0 with Host",
        format!("GET /ok HTTP/1.0\r\n{host}\r\n"),
        Forwarded(b""),
    ));
}

/// Checks one vector's outcome. `seen`: what the pod read for it.
fn check(
    vector: &Vector,
    statuses: &[u16],
    text: &str,
    seen: &[Seen],
    tls: bool,
) -> Result<(), String> {
    let ctx = || {
        format!(
            "{} (tls: {tls}): answers {statuses:?}, pod saw {seen:?}\n{}",
            vector.name,
            &text[..text.len().min(300)]
        )
    };
    if seen.iter().any(|s| s.path.contains("smuggled")) {
        return Err(format!("SMUGGLED request reached the pod: {}", ctx()));
    }
    match vector.want {
        Want::Refused(code) => {
            if !seen.is_empty() {
                return Err(format!("the pod got a request: {}", ctx()));
            }
            if code != 0 && statuses.first() != Some(&code) {
                return Err(format!("want {code}: {}", ctx()));
            }
        }
        Want::Target(t) => {
            if seen.len() != 1 || seen[0].path != t || statuses.first() != Some(&200) {
                return Err(format!("want one request for {t}: {}", ctx()));
            }
        }
        Want::AtMostOne => {
            if seen.len() > 1 {
                return Err(format!("more than one request: {}", ctx()));
            }
        }
        Want::Forwarded(body) => {
            let method = String::from_utf8_lossy(&vector.raw);
            let method = method.trim_start().split(' ').next().unwrap_or("");
            if seen.len() != 1
                || seen[0].method != method
                || !seen[0].path.starts_with("/ok")
                || seen[0].body != body
            {
                return Err(format!(
                    "want exactly one request to /ok with body {:?}: {}",
                    String::from_utf8_lossy(body),
                    ctx()
                ));
            }
            if statuses.first() != Some(&200) {
                return Err(format!("want 200: {}", ctx()));
            }
            if seen[0].upgrade.is_some() {
                return Err(format!("an h2c Upgrade reached the pod: {}", ctx()));
            }
        }
    }
    if statuses.len() > 1 {
        return Err(format!("more than one response: {}", ctx()));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_vectors_are_refused_or_forwarded_unambiguously_over_tcp_and_tls() {
    let edge = Edge::start("").await;
    let corpus = corpus();
    assert!(corpus.len() >= 300, "{} vectors", corpus.len());
    let mut failures = Vec::new();
    let mut sent = 0;
    for tls in [false, true] {
        for vector in &corpus {
            edge.take_seen();
            let (statuses, text) = edge.send(&vector.raw, tls).await;
            sent += 1;
            // What the pod read for it (a forwarded request is recorded before its answer).
            let seen = edge.take_seen();
            if let Err(e) = check(vector, &statuses, &text, &seen, tls) {
                failures.push(e);
            }
        }
        // Still serving.
        let (statuses, _) = edge
            .send(
                format!("GET /ok HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
                tls,
            )
            .await;
        assert_eq!(
            statuses,
            vec![200],
            "gateway not serving after the corpus (tls: {tls})"
        );
    }
    assert!(sent >= 600, "{sent} vectors sent");
    eprintln!("{sent} vectors sent, {} distinct", corpus.len());
    assert!(
        failures.is_empty(),
        "{} of {sent} vectors failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    let refused = edge
        .gw
        .metric("pingress_requests_refused_total{reason=\"Transfer-Encoding together with Content-Length\",status=\"400\"}")
        .await;
    assert_eq!(
        refused,
        Some(32.0),
        "each CL+TE vector counted once, over both transports"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let edge = Edge::start("").await;
    for tls in [false, true] {
        edge.take_seen();
        let raw = format!(
            "GET /ok?1 HTTP/1.1\r\nHost: {HOST}\r\n\r\nPOST /ok?2 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhelloGET /ok?3 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        );
        let (statuses, text) = edge.send(raw.as_bytes(), tls).await;
        assert_eq!(statuses, vec![200, 200, 200], "tls {tls}: {text}");
        let paths: Vec<String> = edge.take_seen().into_iter().map(|s| s.path).collect();
        assert_eq!(paths, ["/ok?1", "/ok?2", "/ok?3"], "tls {tls}");
    }
}

/// Each answer pingress writes itself, with the request's body unread: a pipelined GET
/// after it is answered on the same connection, or the connection is closed; the body
/// is never read as a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_answers_discard_the_request_body() {
    let (pod, seen) = recording_pod().await;
    let ann = |k: &str, v: &str| format!("    nginx.ingress.kubernetes.io/{k}: \"{v}\"\n");
    let ing = |name: &str, host: &str, anns: String, svc: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: shop\n  annotations:\n    x: \"y\"\n{anns}spec:\n  ingressClassName: pingress\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: {svc}\n            port: {{number: 80}}\n"
        )
    };
    let site = format!(
        "{CLASS}{}{}{}{}{}{}{}{}{}",
        service("shop", "web", &[("http", 80)]),
        slices("shop", "web", "http", &[pod]),
        service("shop", "empty", &[("http", 80)]),
        ing("ok", "ok.test", String::new(), "web"),
        ing("small", "small.test", ann("proxy-body-size", "4"), "web"),
        ing(
            "moved",
            "moved.test",
            ann("permanent-redirect", "https://elsewhere.test/"),
            "web"
        ),
        ing(
            "denied",
            "denied.test",
            ann("whitelist-source-range", "10.0.0.0/8"),
            "web"
        ),
        ing("down", "down.test", String::new(), "empty"),
        ing(
            "closed",
            "closed.test",
            ann("whitelist-source-range", "not-a-cidr"),
            "web"
        ),
    );
    let gw = Gateway::start(&[("site.yaml", site)]).await;
    gw.wait_for("ok.test", "/", "pod").await;
    for (host, code) in [
        ("nowhere.test", 404),
        ("small.test", 413),
        ("moved.test", 301),
        ("denied.test", 403),
        ("down.test", 503),
        ("closed.test", 503),
    ] {
        seen.lock().unwrap().clear();
        let raw = format!(
            "POST /first HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{SMUGGLED}GET /after HTTP/1.1\r\nHost: ok.test\r\nConnection: close\r\n\r\n",
            SMUGGLED.len()
        );
        let tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let (statuses, text) = exchange(tcp, raw.as_bytes()).await;
        let paths: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path.clone())
            .collect();
        assert_eq!(statuses.first(), Some(&code), "{host}: {text}");
        assert!(
            !paths.iter().any(|p| p.contains("smuggled")),
            "{host}: the body was read as a request: {paths:?}"
        );
        match statuses.len() {
            1 => assert!(paths.is_empty(), "{host}: {paths:?}"),
            2 => {
                assert_eq!(statuses[1], 200, "{host}: {text}");
                assert_eq!(paths, ["/after"], "{host}");
            }
            _ => panic!("{host}: {statuses:?}\n{text}"),
        }
    }
}

/// Slowloris, the quick variant (the load harness runs the big one): clients that send a
/// head one byte at a time are closed once the head deadline passes, while a normal
/// client is served throughout; a keep-alive connection idle for longer than the head
/// deadline is not touched (it is the keep-alive timeout's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_closed_at_the_head_deadline_and_idle_keepalive_is_not() {
    let edge = Edge::start("  edge: {head_timeout_ms: 1500}\n").await;
    let started = std::time::Instant::now();
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(edge.gw.http).await.unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\n").await.unwrap();
        slow.push(s);
    }
    // An idle keep-alive connection, after one answered request.
    let mut idle = tokio::net::TcpStream::connect(edge.gw.http).await.unwrap();
    let one = format!("GET /ok HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    idle.write_all(one.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Trickle one header byte per 100 ms on every slow connection until each is closed.
    let trickle = tokio::spawn(async move {
        let mut open = slow;
        let mut closed = 0;
        while !open.is_empty() && started.elapsed() < Duration::from_secs(60) {
            let mut still = Vec::new();
            for mut s in open {
                if s.write_all(b"X").await.is_ok() && s.flush().await.is_ok() {
                    let mut b = [0u8; 64];
                    match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
                        _ => still.push(s),
                    }
                } else {
                    closed += 1;
                }
            }
            open = still;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (closed, started.elapsed())
    });
    // Meanwhile a normal client is served.
    for _ in 0..20 {
        let (statuses, _) = edge
            .send(
                format!("GET /ok HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
                false,
            )
            .await;
        assert_eq!(statuses, vec![200]);
    }
    let (closed, took) = trickle.await.unwrap();
    assert_eq!(closed, 40, "slow connections closed (after {took:?})");
    assert!(
        took >= Duration::from_millis(1500),
        "closed before the deadline: {took:?}"
    );
    let timeouts = edge
        .gw
        .metric("pingress_downstream_closed_total{reason=\"head_timeout\"}")
        .await;
    assert!(timeouts >= Some(40.0), "{timeouts:?}");
    // The idle keep-alive connection outlived the head deadline and still serves.
    assert!(started.elapsed() > Duration::from_millis(1500));
    idle.write_all(one.as_bytes()).await.unwrap();
    let n = idle.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "idle keep-alive connection was closed"
    );
}

/// Reads one HTTP/1 response with a small body (no chunking) and returns its status line.
async fn read_answer(s: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before the answer: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return head.lines().next().unwrap_or("").to_string();
            }
        }
    }
}

/// The keep-alive idle time (`keepalive_timeout_seconds`) is the connection's own: an idle
/// connection ends cleanly (no answer, an end of stream) once it has passed since the
/// last answer, while one that keeps sending requests more often stays open throughout,
/// past many multiples of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_close_at_the_idle_time_and_busy_ones_stay() {
    let edge = Edge::start("  edge: {keepalive_timeout_seconds: 2}\n").await;
    let one = format!("GET /ok HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let mut idle = tokio::net::TcpStream::connect(edge.gw.http).await.unwrap();
    idle.write_all(one.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut idle).await, "HTTP/1.1 200 OK");
    let answered = std::time::Instant::now();
    let busy_gw = edge.gw.http;
    let busy = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(busy_gw).await.unwrap();
        let started = std::time::Instant::now();
        let mut served = 0;
        while started.elapsed() < Duration::from_secs(7) {
            s.write_all(one.as_bytes()).await.unwrap();
            assert_eq!(
                read_answer(&mut s).await,
                "HTTP/1.1 200 OK",
                "after {served}"
            );
            served += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        served
    });
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(30), idle.read(&mut buf))
        .await
        .expect("the idle connection is closed")
        .expect("closed cleanly, not reset");
    let after = answered.elapsed();
    assert_eq!(n, 0, "bytes on an idle connection: {:?}", &buf[..n]);
    assert!(
        after >= Duration::from_millis(1900),
        "closed after {after:?}"
    );
    let served = busy.await.unwrap();
    assert!(served >= 10, "the busy connection served {served} requests");
}

/// The send timeout on HTTP/1 (`send_timeout_ms`, nginx's `send_timeout`): a client that
/// asks for 16 MiB and does not read is cut once no write has made progress for that long,
/// and counted; meanwhile others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_that_does_not_read_is_cut_at_the_send_timeout() {
    let gw = web_gateway("s.test", "  edge: {send_timeout_ms: 1500}\n").await;
    let size = 16 << 20;
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    s.write_all(format!("GET /?size={size} HTTP/1.1\r\nHost: s.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Not reading: the gateway's writes stop when the socket buffers are full.
    assert_eq!(gw.who("s.test", "/").await, "web");
    closes_counted(&gw, "send_timeout", 1.0).await;
    // What was buffered arrives, then the connection ends short of the body.
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("still open after the send timeout, {total} bytes read"),
        }
    }
    assert!(total < size, "read {total} bytes: the whole body");
    assert_eq!(gw.who("s.test", "/").await, "web");
}

/// Connection limits: past `max_connections_per_client` (and `max_connections`) a new
/// connection is closed at once, counted; closing one lets the next in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limits_are_closed_and_counted() {
    for (key, reason) in [
        ("max_connections_per_client", "max_connections_per_client"),
        ("max_connections", "max_connections"),
    ] {
        let edge = Edge::start(&format!("  edge: {{{key}: 3}}\n")).await;
        let one = format!("GET /ok HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        // The test client's own pooled connection (from the readiness wait) may hold a slot:
        // open keep-alive connections until one is refused.
        let mut open = Vec::new();
        let refused_at = loop {
            assert!(open.len() <= 3, "{key}: {} connections served", open.len());
            let mut s = tokio::net::TcpStream::connect(edge.gw.http).await.unwrap();
            let _ = s.write_all(one.as_bytes()).await;
            let mut buf = vec![0u8; 4096];
            match s.read(&mut buf).await {
                Ok(n) if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") => {
                    open.push(s)
                }
                _ => break open.len(),
            }
        };
        assert!(
            refused_at >= 2,
            "{key}: refused at connection {}",
            refused_at + 1
        );
        assert_eq!(
            edge.gw
                .metric(&format!(
                    "pingress_downstream_closed_total{{reason=\"{reason}\"}}"
                ))
                .await,
            Some(1.0),
            "{key}"
        );
        drop(open.pop());
        eventually(
            &format!("{key}: a slot frees when a connection closes"),
            || async {
                let (statuses, _) = edge
                    .send(
                        format!("GET /ok HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                        false,
                    )
                    .await;
                (statuses == [200]).then_some(())
            },
        )
        .await;
    }
}

/// Waits until `pingress_downstream_closed_total{reason}` reads `want`.
async fn closes_counted(gw: &Gateway, reason: &str, want: f64) {
    let series = format!("pingress_downstream_closed_total{{reason=\"{reason}\"}}");
    eventually(&format!("{reason} closes counted ({want})"), || async {
        (gw.metric(&series).await == Some(want)).then_some(())
    })
    .await;
}

/// A gateway (with `extra` config) serving `host` from one pod named `web`, routed.
async fn web_gateway(host: &str, extra: &str) -> Gateway {
    let web = pod("web").await;
    let gw = Gateway::start_with(&[("site.yaml", site("web", host, &[web]))], extra).await;
    gw.wait_for(host, "/", "web").await;
    gw
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// HTTP/2 zero-window stall: a client opens 100 streams for 8 MiB each and never opens its
/// flow-control windows. Each stalled stream holds a bounded share (Pingora's pipeline from
/// the pod: four queued 64 KiB chunks, the one being written, the read buffer, and the h2
/// send buffer); the rest of the 8 MiB waits at the pod connection. A normal client is
/// served meanwhile, and at the send timeout the stalled streams are ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_zero_window_stall_is_bounded_released_and_others_are_served() {
    let gw = web_gateway("z.test", "  h2c: true\n  edge: {send_timeout_ms: 3000}\n").await;
    let before = rss_kib(gw.pid());
    let tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut streams = Vec::new();
    for _ in 0..100 {
        let req = http::Request::get("http://z.test/?size=8388608")
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        streams.push(resp);
        client = client.ready().await.unwrap();
    }
    // Every stream gets its response head (headers need no window); no body byte flows.
    let mut bodies = Vec::new();
    for s in streams {
        let resp = tokio::time::timeout(Duration::from_secs(20), s)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        bodies.push(resp.into_body());
    }
    let grown = rss_kib(gw.pid()).saturating_sub(before);
    // 100 streams x 640 KiB: 8 MiB each would be 800 MiB.
    assert!(
        grown < 100 * 640,
        "RSS grew by {grown} KiB for 100 stalled streams"
    );
    // Another client is served meanwhile.
    assert_eq!(gw.who("z.test", "/").await, "web");
    // At the send timeout each stalled stream is ended (reset or cut short): the client
    // sees its body end with an error instead of 8 MiB.
    let mut ended = 0;
    for mut b in bodies {
        let r = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match b.data().await {
                    Some(Ok(_)) => continue,
                    Some(Err(_)) => return true,
                    None => return false,
                }
            }
        })
        .await;
        if r == Ok(true) {
            ended += 1;
        }
    }
    assert_eq!(ended, 100, "stalled streams ended by the send timeout");
    closes_counted(&gw, "send_timeout", 100.0).await;
    drop(client);
    conn.abort();
    eprintln!("zero-window stall: RSS grew by {grown} KiB for 100 streams x 8 MiB");
}

/// A body that stops arriving is cut at the read gap (`body_timeout_ms`): the connection
/// ends, the pod never gets a complete request, and the close is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_cut_at_the_read_gap_and_counted() {
    let edge = Edge::start("  edge: {body_timeout_ms: 1000}\n").await;
    edge.take_seen();
    let started = std::time::Instant::now();
    let (_, text) = edge
        .send(
            format!("POST /ok HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n\r\nabc")
                .as_bytes(),
            false,
        )
        .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "closed before the gap: {took:?}"
    );
    assert!(
        took < Duration::from_secs(15),
        "not closed by the read gap: {took:?}"
    );
    assert!(
        edge.take_seen().is_empty(),
        "the pod got the cut request: {text}"
    );
    closes_counted(&edge.gw, "body_timeout", 1.0).await;
}

/// A body that trickles in under the read gap (one byte per 200 ms) is cut once it falls
/// below `min_body_rate_bytes_per_second` past the grace of `body_timeout_ms`: 408, the
/// connection closed, counted, nothing complete at the pod. A slow but steady upload above
/// the rate, lasting longer than the grace, is forwarded whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_cut_below_the_minimum_rate() {
    let edge =
        Edge::start("  edge: {body_timeout_ms: 1500, min_body_rate_bytes_per_second: 100}\n").await;
    edge.take_seen();
    // Steady: 3,000 bytes in 300-byte pieces every 400 ms (750 B/s), about 4 s in all.
    let mut s = tokio::net::TcpStream::connect(edge.gw.http).await.unwrap();
    s.write_all(
        format!("POST /ok HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 3000\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    for _ in 0..10 {
        s.write_all(&[b'a'; 300]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut answer)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "steady upload: {answer}"
    );
    let seen = edge.take_seen();
    assert!(
        seen.len() == 1 && seen[0].body.len() == 3000,
        "steady upload: pod saw {seen:?}"
    );

    // Trickle: one byte per 200 ms of a 100,000-byte body.
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(edge.gw.http).await.unwrap();
    s.write_all(
        format!("POST /ok HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100000\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let closed = loop {
        if started.elapsed() > Duration::from_secs(40) {
            break false;
        }
        if s.write_all(b"x").await.is_err() {
            break true;
        }
        let mut b = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&b[..n]),
            Err(_) => {}
        }
    };
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(closed, "the trickle was never cut ({took:?})");
    assert!(
        took >= Duration::from_millis(1500),
        "cut inside the grace: {took:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "trickle answered: {answer}"
    );
    assert!(
        edge.take_seen().is_empty(),
        "the pod got the trickled request"
    );
    closes_counted(&edge.gw, "body_rate", 1.0).await;

    // A WebSocket may idle: its messages after the grace are not a slow body.
    use futures_util::{SinkExt, StreamExt};
    let ws_pod = pod("ws-pod").await;
    let gw = Gateway::start_with(
        &[("ws.yaml", site("ws", "ws.test", &[ws_pod]))],
        "  edge: {body_timeout_ms: 1000, min_body_rate_bytes_per_second: 100}\n",
    )
    .await;
    gw.wait_for("ws.test", "/", "ws-pod").await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/chat", gw.http),
    )
    .unwrap();
    req.headers_mut().insert("host", "ws.test".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    for i in 0..2 {
        if i == 1 {
            // Idle past the grace (a deliberate wait, not a synchronisation).
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        ws.send(tokio_tungstenite::tungstenite::Message::Text(format!(
            "hello {i}"
        )))
        .await
        .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(20), ws.next()).await;
        let reply = match reply {
            Ok(Some(Ok(m))) => m,
            other => panic!(
                "message {i}: no reply ({other:?}); gateway log:\n{}",
                gw.stderr()
            ),
        };
        assert_eq!(reply.into_text().unwrap(), format!("ws-pod: hello {i}"));
    }
}

/// TLS handshake deadline: connections that send nothing, or a ClientHello that never
/// ends, are closed at `tls_handshake_timeout_ms` (Pingora's own limit is 60 s) and
/// counted; a failed handshake is not held until the deadline; a finished handshake is
/// not cut, even on a connection idle past the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_are_closed_at_the_deadline() {
    let edge = Edge::start("  edge: {tls_handshake_timeout_ms: 1500}\n").await;
    let started = std::time::Instant::now();
    // A finished handshake, one request answered, then idle.
    let mut done = edge.tls().await;
    let one = format!("GET /ok HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    done.write_all(one.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = done.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut s = tokio::net::TcpStream::connect(edge.gw.https).await.unwrap();
        if i % 2 == 1 {
            // The start of a handshake record that promises 512 bytes and stops.
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
        }
        stalled.push(s);
    }
    // Not TLS at all: the handshake fails at once.
    let mut garbage = tokio::net::TcpStream::connect(edge.gw.https).await.unwrap();
    garbage
        .write_all(format!("GET /ok HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let closed = |mut s: tokio::net::TcpStream| async move {
        let mut b = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(40), s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    };
    assert!(closed(garbage).await, "the failed handshake was not closed");
    // Meanwhile TLS clients are served.
    for _ in 0..5 {
        let (statuses, _) = edge
            .send(
                format!("GET /ok HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
                true,
            )
            .await;
        assert_eq!(statuses, vec![200]);
    }
    for (i, s) in stalled.into_iter().enumerate() {
        assert!(
            closed(s).await,
            "stalled handshake {i} still open after 40 s"
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "closed before the deadline: {took:?}"
    );
    assert_eq!(
        edge.gw
            .metric("pingress_downstream_closed_total{reason=\"tls_handshake_timeout\"}")
            .await,
        Some(20.0),
        "only the 20 stalled handshakes count"
    );
    // The finished connection outlived the deadline and still serves.
    done.write_all(one.as_bytes()).await.unwrap();
    let n = done.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "a finished handshake was cut"
    );
}

/// HTTP/2 written frame by frame (RFC 9113, RFC 7541), for what the `h2` client refuses to
/// send: malformed requests, bad frames, floods. Field blocks are HPACK literals without
/// Huffman coding; answers are read as frames, and a response status from the static table
/// (200, 400, 404, ...).
mod h2raw {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const PRIORITY: u8 = 2;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An HPACK integer with an `n`-bit prefix, `first` holding the pattern bits.
    pub fn int(out: &mut Vec<u8>, n: u8, first: u8, mut v: usize) {
        let max = (1usize << n) - 1;
        if v < max {
            out.push(first | v as u8);
            return;
        }
        out.push(first | max as u8);
        v -= max;
        while v >= 128 {
            out.push((v % 128) as u8 | 0x80);
            v /= 128;
        }
        out.push(v as u8);
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        int(out, 7, 0, s.len());
        out.extend_from_slice(s);
    }

    /// A literal field without indexing, new name.
    pub fn lit(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x00];
        string(&mut out, name);
        string(&mut out, value);
        out
    }

    /// A literal field added to the dynamic table, new name.
    pub fn lit_indexed(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x40];
        string(&mut out, name);
        string(&mut out, value);
        out
    }

    /// An indexed field.
    pub fn indexed(i: usize) -> Vec<u8> {
        let mut out = Vec::new();
        int(&mut out, 7, 0x80, i);
        out
    }

    pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        fields
            .iter()
            .flat_map(|(n, v)| lit(n.as_bytes(), v.as_bytes()))
            .collect()
    }

    /// The pseudo-headers of `GET {path}` for `host`.
    pub fn get(host: &'static str, path: &'static str) -> Vec<(&'static str, &'static str)> {
        vec![
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", host),
            (":path", path),
        ]
    }

    #[derive(Debug)]
    pub struct Frame {
        pub ty: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    /// How a connection ended for the stream that was watched.
    #[derive(Debug, PartialEq)]
    pub enum Outcome {
        /// A response; its status when it is in HPACK's static table.
        Response(Option<u16>),
        Reset(u32),
        GoAway(u32),
        Closed,
        /// Nothing within the wait.
        Silent,
    }

    /// A connection past the preface and the SETTINGS exchange.
    pub struct Conn {
        pub tcp: tokio::net::TcpStream,
        buf: Vec<u8>,
    }

    impl Conn {
        pub async fn open(addr: std::net::SocketAddr) -> Conn {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat())
                .await
                .unwrap();
            let mut c = Conn {
                tcp,
                buf: Vec::new(),
            };
            loop {
                let f = c
                    .next(Duration::from_secs(20))
                    .await
                    .expect("the server's SETTINGS");
                if f.ty == SETTINGS && f.flags & ACK == 0 {
                    break;
                }
            }
            c.tcp
                .write_all(&frame(SETTINGS, ACK, 0, &[]))
                .await
                .unwrap();
            c
        }

        /// The next frame, or None when the connection ends or nothing comes in `wait`.
        pub async fn next(&mut self, wait: Duration) -> Option<Frame> {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                if self.buf.len() >= 9 {
                    let len = (self.buf[0] as usize) << 16
                        | (self.buf[1] as usize) << 8
                        | self.buf[2] as usize;
                    if self.buf.len() >= 9 + len {
                        let f = Frame {
                            ty: self.buf[3],
                            flags: self.buf[4],
                            stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap())
                                & 0x7fff_ffff,
                            payload: self.buf[9..9 + len].to_vec(),
                        };
                        self.buf.drain(..9 + len);
                        return Some(f);
                    }
                }
                let mut chunk = [0u8; 16384];
                match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                    _ => return None,
                }
            }
        }

        /// Send `bytes` (a write refused by a closed connection is not an error) and wait
        /// for what becomes of `stream`.
        pub async fn outcome(&mut self, bytes: &[u8], stream: u32) -> Outcome {
            let _ = self.tcp.write_all(bytes).await;
            self.watch(stream, Duration::from_secs(20)).await
        }

        pub async fn watch(&mut self, stream: u32, wait: Duration) -> Outcome {
            loop {
                let Some(f) = self.next(wait).await else {
                    return if self
                        .tcp
                        .peek(&mut [0u8; 1])
                        .await
                        .map(|n| n == 0)
                        .unwrap_or(true)
                    {
                        Outcome::Closed
                    } else {
                        Outcome::Silent
                    };
                };
                match f.ty {
                    GOAWAY => {
                        let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
                        return Outcome::GoAway(code);
                    }
                    RST_STREAM if f.stream == stream => {
                        return Outcome::Reset(u32::from_be_bytes(
                            f.payload[..4].try_into().unwrap(),
                        ));
                    }
                    HEADERS if f.stream == stream => {
                        // The status is the first field: indexed from the static table
                        // (8..=14) when it is one of 200 204 206 304 400 404 500.
                        let status = match f.payload.first() {
                            Some(&b) if (0x88..=0x8e).contains(&b) => {
                                Some([200, 204, 206, 304, 400, 404, 500][(b - 0x88) as usize])
                            }
                            _ => None,
                        };
                        return Outcome::Response(status);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// What one raw HTTP/2 vector must get.
#[derive(Debug, Clone, Copy)]
enum H2Want {
    /// Refused: a stream reset, a GOAWAY, a 400 or a closed connection; the pod gets
    /// nothing.
    Refused,
    /// The pod gets exactly one request to this path, with this body; the client a 200.
    Forwarded(&'static str, &'static [u8]),
}

fn h2_corpus() -> Vec<(String, Vec<u8>, H2Want)> {
    use h2raw::*;
    use H2Want::*;
    let headers = |fields: &[(&str, &str)], flags: u8| frame(HEADERS, flags, 1, &block(fields));
    let end = END_HEADERS | END_STREAM;
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut f = get(HOST, "/ok");
        f.extend_from_slice(extra);
        headers(&f, end)
    };
    let mut c: Vec<(String, Vec<u8>, H2Want)> = Vec::new();
    let mut push = |name: &str, raw: Vec<u8>, want| c.push((name.to_string(), raw, want));
    // Well-formed requests.
    push(
        "GET",
        headers(&get(HOST, "/ok"), end),
        Forwarded("/ok", b""),
    );
    let post = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", HOST),
        (":path", "/ok"),
    ];
    push(
        "POST with a body",
        [
            headers(&post, END_HEADERS),
            frame(DATA, END_STREAM, 1, b"hello"),
        ]
        .concat(),
        Forwarded("/ok", b"hello"),
    );
    push(
        "POST with content-length",
        [
            headers(
                &[&post[..], &[("content-length", "5")]].concat(),
                END_HEADERS,
            ),
            frame(DATA, 0, 1, b"hel"),
            frame(DATA, END_STREAM, 1, b"lo"),
        ]
        .concat(),
        Forwarded("/ok", b"hello"),
    );
    push(
        "te: trailers",
        with(&[("te", "trailers")]),
        Forwarded("/ok", b""),
    );
    push(
        "cookie in two fields",
        with(&[("cookie", "a=1"), ("cookie", "b=2")]),
        Forwarded("/ok", b""),
    );
    push(
        "headers split by CONTINUATION",
        {
            let b = block(&get(HOST, "/ok"));
            let (a, rest) = b.split_at(10);
            [
                frame(HEADERS, END_STREAM, 1, a),
                frame(CONTINUATION, END_HEADERS, 1, rest),
            ]
            .concat()
        },
        Forwarded("/ok", b""),
    );
    push(
        "trailers",
        [
            headers(&post, END_HEADERS),
            frame(DATA, 0, 1, b"hello"),
            frame(HEADERS, end, 1, &block(&[("x-checksum", "1")])),
        ]
        .concat(),
        Forwarded("/ok", b"hello"),
    );
    // Pseudo-headers in trailers are malformed (RFC 9113 §8.1), but the h2 crate drops
    // them while decoding (`Headers::into_fields`), before anything of pingress's sees the
    // block, and Pingora does not forward request trailers: the pod gets the request and
    // body only, the trailer never.
    push(
        "pseudo-header in trailers",
        [
            headers(&post, END_HEADERS),
            frame(DATA, 0, 1, b"hello"),
            frame(
                HEADERS,
                end,
                1,
                &block(&[(":path", "/smuggled"), ("x", "1")]),
            ),
        ]
        .concat(),
        Forwarded("/ok", b"hello"),
    );
    // Malformed requests (RFC 9113 §8.1.1, §8.2, §8.3): a stream error, never forwarded.
    for (name, extra) in [
        ("uppercase field name", ("X-Upper", "a")),
        ("connection", ("connection", "keep-alive")),
        ("keep-alive", ("keep-alive", "5")),
        ("proxy-connection", ("proxy-connection", "keep-alive")),
        ("transfer-encoding", ("transfer-encoding", "chunked")),
        ("upgrade", ("upgrade", "websocket")),
        ("te other than trailers", ("te", "gzip")),
        ("NUL in a value", ("x", "a\0b")),
        ("CR in a value", ("x", "a\rb")),
        ("LF in a value", ("x", "a\nb")),
        ("space in a name", ("x y", "v")),
        ("colon in a name", ("x:y", "v")),
        ("empty name", ("", "v")),
        ("content-length not a number", ("content-length", "abc")),
    ] {
        push(name, with(&[extra]), Refused);
    }
    let pseudo = |fields: &[(&'static str, &'static str)]| headers(fields, end);
    push(
        "no :method",
        pseudo(&[(":scheme", "http"), (":authority", HOST), (":path", "/ok")]),
        Refused,
    );
    push(
        "no :path",
        pseudo(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", HOST),
        ]),
        Refused,
    );
    push(
        "no :scheme",
        pseudo(&[(":method", "GET"), (":authority", HOST), (":path", "/ok")]),
        Refused,
    );
    push("empty :path", pseudo(&get(HOST, "")), Refused);
    push(
        "two :path",
        pseudo(&[&get(HOST, "/ok")[..], &[(":path", "/other")]].concat()),
        Refused,
    );
    push(
        "pseudo-header after a field",
        pseudo(&[
            (":method", "GET"),
            (":scheme", "http"),
            ("x", "v"),
            (":authority", HOST),
            (":path", "/ok"),
        ]),
        Refused,
    );
    push(
        "unknown pseudo-header",
        pseudo(&[&get(HOST, "/ok")[..], &[(":foo", "bar")]].concat()),
        Refused,
    );
    push(
        ":status in a request",
        pseudo(&[&get(HOST, "/ok")[..], &[(":status", "200")]].concat()),
        Refused,
    );
    push(":path without a slash", pseudo(&get(HOST, "ok")), Refused);
    push(":path * with GET", pseudo(&get(HOST, "*")), Refused);
    push(
        ":authority with a space",
        pseudo(&get("edge test", "/ok")),
        Refused,
    );
    push(
        ":authority with userinfo",
        pseudo(&get("u@edge.test", "/ok")),
        Refused,
    );
    push(
        ":authority with a bad port",
        pseudo(&get("edge.test:abc", "/ok")),
        Refused,
    );
    push(
        "Host differing from :authority",
        with(&[("host", "other.test")]),
        Refused,
    );
    push(
        "content-length over the body",
        [
            headers(
                &[&post[..], &[("content-length", "9")]].concat(),
                END_HEADERS,
            ),
            frame(DATA, END_STREAM, 1, b"hello"),
        ]
        .concat(),
        Refused,
    );
    push(
        "content-length under the body",
        [
            headers(
                &[&post[..], &[("content-length", "3")]].concat(),
                END_HEADERS,
            ),
            frame(DATA, END_STREAM, 1, b"hello"),
        ]
        .concat(),
        Refused,
    );
    push(
        "two content-length values",
        with(&[("content-length", "0"), ("content-length", "1")]),
        Refused,
    );
    push(
        "CONNECT with :path",
        pseudo(&[
            (":method", "CONNECT"),
            (":scheme", "http"),
            (":authority", HOST),
            (":path", "/ok"),
        ]),
        Refused,
    );
    push(
        "trailers without END_STREAM",
        [
            headers(&post, END_HEADERS),
            frame(DATA, 0, 1, b"hello"),
            frame(HEADERS, END_HEADERS, 1, &block(&[("x-checksum", "1")])),
            frame(DATA, END_STREAM, 1, b""),
        ]
        .concat(),
        Refused,
    );
    // Frame-level errors (RFC 9113 §4-§6): the connection ends with a GOAWAY.
    push(
        "HEADERS on stream 0",
        frame(HEADERS, end, 0, &block(&get(HOST, "/ok"))),
        Refused,
    );
    push(
        "HEADERS on an even stream",
        frame(HEADERS, end, 2, &block(&get(HOST, "/ok"))),
        Refused,
    );
    push(
        "DATA on an idle stream",
        frame(DATA, END_STREAM, 1, b"x"),
        Refused,
    );
    push(
        "SETTINGS of 5 bytes",
        frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 1]),
        Refused,
    );
    push(
        "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
        frame(SETTINGS, 0, 0, &[0, 4, 0x80, 0, 0, 0]),
        Refused,
    );
    push(
        "SETTINGS_ENABLE_PUSH 2",
        frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 2]),
        Refused,
    );
    push(
        "SETTINGS_MAX_FRAME_SIZE under 16384",
        frame(SETTINGS, 0, 0, &[0, 5, 0, 0, 0x10, 0]),
        Refused,
    );
    push("SETTINGS on a stream", frame(SETTINGS, 0, 1, &[]), Refused);
    push(
        "WINDOW_UPDATE of 0 on the connection",
        frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0]),
        Refused,
    );
    push("PING of 7 bytes", frame(PING, 0, 0, &[0; 7]), Refused);
    push("PING on a stream", frame(PING, 0, 1, &[0; 8]), Refused);
    push(
        "frame over SETTINGS_MAX_FRAME_SIZE",
        [
            headers(&post, END_HEADERS),
            frame(DATA, END_STREAM, 1, &vec![b'x'; 16385]),
        ]
        .concat(),
        Refused,
    );
    push(
        "stream depending on itself",
        [
            frame(PRIORITY, 0, 1, &[0, 0, 0, 1, 16]),
            headers(&get(HOST, "/ok"), end),
        ]
        .concat(),
        Refused,
    );
    push(
        "CONTINUATION without HEADERS",
        frame(CONTINUATION, END_HEADERS, 1, &block(&get(HOST, "/ok"))),
        Refused,
    );
    push(
        "other frame between HEADERS and CONTINUATION",
        [
            frame(HEADERS, END_STREAM, 1, &block(&get(HOST, "/ok"))[..5]),
            frame(PING, 0, 0, &[0; 8]),
        ]
        .concat(),
        Refused,
    );
    // HPACK errors (RFC 7541): COMPRESSION_ERROR.
    push(
        "HPACK index 0",
        frame(HEADERS, end, 1, &indexed(0)),
        Refused,
    );
    push(
        "HPACK index past the tables",
        frame(HEADERS, end, 1, &indexed(1000)),
        Refused,
    );
    push(
        "HPACK table size update over the limit",
        frame(HEADERS, end, 1, &{
            let mut b = Vec::new();
            int(&mut b, 5, 0x20, 1 << 20);
            b.extend(block(&get(HOST, "/ok")));
            b
        }),
        Refused,
    );
    push(
        "HPACK string longer than the block",
        frame(HEADERS, end, 1, &[0x00, 0x7f, 0x7f, b'x']),
        Refused,
    );
    c
}

/// Raw HTTP/2 vectors over h2c: each on its own connection, the pod's view checked, and
/// the gateway serving HTTP/2 afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_vectors_are_refused_or_forwarded_unambiguously() {
    let edge = Edge::start("  h2c: true\n").await;
    let corpus = h2_corpus();
    let mut failures = Vec::new();
    for (name, raw, want) in &corpus {
        edge.take_seen();
        let mut conn = h2raw::Conn::open(edge.gw.http).await;
        let outcome = conn.outcome(raw, 1).await;
        drop(conn);
        let seen = edge.take_seen();
        let ok = match want {
            H2Want::Refused => {
                seen.is_empty()
                    && matches!(
                        outcome,
                        h2raw::Outcome::Reset(_)
                            | h2raw::Outcome::GoAway(_)
                            | h2raw::Outcome::Closed
                            | h2raw::Outcome::Response(Some(400))
                    )
            }
            H2Want::Forwarded(path, body) => {
                outcome == h2raw::Outcome::Response(Some(200))
                    && seen.len() == 1
                    && seen[0].path == *path
                    && seen[0].body == *body
            }
        };
        if !ok {
            failures.push(format!(
                "{name}: want {want:?}, got {outcome:?}, pod saw {seen:?}"
            ));
        }
    }
    // Still serving HTTP/2.
    let mut conn = h2raw::Conn::open(edge.gw.http).await;
    let ok = h2raw::frame(
        h2raw::HEADERS,
        5,
        1,
        &h2raw::block(&h2raw::get(HOST, "/ok")),
    );
    assert_eq!(
        conn.outcome(&ok, 1).await,
        h2raw::Outcome::Response(Some(200))
    );
    eprintln!("{} HTTP/2 vectors", corpus.len());
    assert!(corpus.len() >= 50, "{} vectors", corpus.len());
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

/// HTTP/2 floods: rapid reset (CVE-2023-44487), CONTINUATION without end (CVE-2024-27316
/// and kin), an HPACK bomb (a 4 KB field repeated by one-byte references), and SETTINGS
/// and PING floods from a client that does not read. Each ends in a GOAWAY or a stream
/// refusal, or is absorbed without growing memory; the pod is spared; other clients are
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_floods_are_cut_off_or_absorbed() {
    use h2raw::*;
    let edge = Edge::start("  h2c: true\n").await;
    let pid = edge.gw.pid();
    let before = rss_kib(pid);
    let reset = block(&get(HOST, "/reset"));
    let mut seen = Vec::new();
    let serving = || async {
        let mut conn = Conn::open(edge.gw.http).await;
        let ok = frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &block(&get(HOST, "/ok")),
        );
        conn.outcome(&ok, 1).await == Outcome::Response(Some(200))
    };
    let until_goaway = |mut conn: Conn| async move {
        loop {
            match conn.next(Duration::from_secs(20)).await {
                Some(f) if f.ty == GOAWAY => {
                    return Some(u32::from_be_bytes(f.payload[4..8].try_into().unwrap()))
                }
                Some(_) => continue,
                None => return None,
            }
        }
    };

    // Rapid reset: 5,000 streams opened and cancelled at once.
    edge.take_seen();
    let mut conn = Conn::open(edge.gw.http).await;
    let mut flood = Vec::new();
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        flood.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &reset));
        flood.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), conn.tcp.write_all(&flood)).await;
    let code = until_goaway(conn).await;
    // ENHANCE_YOUR_CALM (0xb).
    assert_eq!(code, Some(0xb), "rapid reset: GOAWAY code");
    let reached = edge.take_seen().len();
    assert!(
        reached < 500,
        "rapid reset: {reached} of 5000 cancelled streams reached the pod"
    );
    assert!(serving().await, "not serving after the rapid reset");

    // CONTINUATION flood: a field block that never ends.
    let mut conn = Conn::open(edge.gw.http).await;
    let mut flood = frame(HEADERS, END_STREAM, 1, &block(&get(HOST, "/continuation")));
    let filler = lit(b"x-filler", &[b'a'; 1000]);
    for _ in 0..10_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &filler));
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), conn.tcp.write_all(&flood)).await;
    let code = until_goaway(conn).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "CONTINUATION flood: GOAWAY {code:?}"
    );
    // (Cancelled streams of the rapid reset may still be arriving.)
    seen.extend(edge.take_seen());
    assert!(
        !seen.iter().any(|s| s.path == "/continuation"),
        "CONTINUATION flood reached the pod"
    );

    // HPACK bomb: 4 KB into the dynamic table, then 2,000 one-byte references to it
    // (8 MB decoded from 6 KB).
    let mut conn = Conn::open(edge.gw.http).await;
    let mut b = block(&get(HOST, "/bomb"));
    b.extend(lit_indexed(b"x-bomb", &[b'b'; 4000]));
    for _ in 0..2000 {
        b.extend(indexed(62));
    }
    let mut bomb = Vec::new();
    for (i, chunk) in b.chunks(16_000).enumerate() {
        let last = (i + 1) * 16_000 >= b.len();
        let flags = if last { END_HEADERS } else { 0 } | if i == 0 { END_STREAM } else { 0 };
        bomb.extend(frame(
            if i == 0 { HEADERS } else { CONTINUATION },
            flags,
            1,
            chunk,
        ));
    }
    let outcome = conn.outcome(&bomb, 1).await;
    assert!(
        !matches!(outcome, Outcome::Response(Some(200)) | Outcome::Silent),
        "HPACK bomb: {outcome:?}"
    );
    seen.extend(edge.take_seen());
    assert!(
        !seen.iter().any(|s| s.path == "/bomb"),
        "HPACK bomb reached the pod"
    );

    // SETTINGS and PING floods from a client that never reads its ACKs.
    for (name, f) in [
        ("SETTINGS", frame(SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0])),
        ("PING", frame(PING, 0, 0, &[7; 8])),
    ] {
        let mut conn = Conn::open(edge.gw.http).await;
        let flood = f.repeat(200_000);
        // The gateway stops reading while its ACKs cannot be written: the write may stall.
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.tcp.write_all(&flood)).await;
        let grown = rss_kib(pid).saturating_sub(before);
        assert!(grown < 40 * 1024, "{name} flood: RSS grew by {grown} KiB");
        assert!(serving().await, "not serving during the {name} flood");
        drop(conn);
    }
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(grown < 40 * 1024, "RSS grew by {grown} KiB over the floods");
    assert!(serving().await, "not serving after the floods");
    seen.extend(edge.take_seen());
    let reached = seen.iter().filter(|s| s.path == "/reset").count();
    assert!(
        reached < 500,
        "rapid reset: {reached} of 5000 cancelled streams reached the pod"
    );
    eprintln!(
        "HTTP/2 floods: RSS grew by {grown} KiB; rapid reset let {reached} of 5000 through; \
         HPACK bomb: {outcome:?}"
    );
}
