//! TLS termination over real sockets: certificates by SNI (checked with `openssl s_client`
//! and a verifying `curl`), Secret rotation and broken Secrets, HTTP-to-HTTPS redirects for
//! every annotation combination, HSTS, minimum TLS version, HTTP/2 by ALPN (curl, h2load),
//! h2c, and HTTPS to the pods.

use crate::support;

use std::net::SocketAddr;

use support::tls::*;
use support::*;

const NS: &str = "shop";

/// (annotation key, value).
type Annotation<'a> = (&'a str, &'a str);

/// A site with TLS: Service `web` with `pods`, `secrets` (name, pem) and one Ingress.
fn tls_site(
    pods: &[SocketAddr],
    secrets: &[(&str, &Pem)],
    ingress: String,
) -> Vec<(String, String)> {
    let mut files = vec![
        (
            "00-base.yaml".to_string(),
            format!(
                "{CLASS}{}{}",
                service(NS, "web", &[("http", 80)]),
                slices(NS, "web", "http", pods)
            ),
        ),
        ("20-ingress.yaml".to_string(), ingress),
    ];
    for (name, pem) in secrets {
        files.push((format!("10-secret-{name}.yaml"), tls_secret(NS, name, pem)));
    }
    files
}

/// `tls_site` for one TLS host, secure.example.test, with its certificate in Secret `cert`.
fn secure_site(pod: SocketAddr, pem: &Pem) -> Vec<(String, String)> {
    let host = "secure.example.test";
    let ing = tls_ingress(NS, "web", &[], &[("cert", &[host])], &[host], "web", "80");
    tls_site(&[pod], &[("cert", pem)], ing)
}

fn refs(files: &[(String, String)]) -> Vec<(&str, String)> {
    files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect()
}

/// `curl` with the test CA, resolving `host` to the gateway's HTTPS port; returns
/// (status, HTTP version, body) or the error text.
async fn curl_https(gw: &Gateway, ca: &std::path::Path, host: &str, extra: &[&str]) -> String {
    let port = gw.https.port();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(extra)
        .arg(format!("https://{host}:{port}/"))
        .output()
        .await
        .expect("curl (apt-get install curl)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A reqwest client that trusts `ca` and sends `host` to the gateway's HTTPS port.
fn https_client(gw: &Gateway, ca: &Ca, host: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(host, gw.https)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap()
}

fn https_url(gw: &Gateway, host: &str, path: &str) -> String {
    format!("https://{host}:{}{path}", gw.https.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_exact_then_wildcard_then_default_certificate() {
    let ca = Ca::new();
    let exact = ca.issue(&["secure.example.test"], "exact");
    let wild = ca.issue(&["*.wild.example.test"], "wildcard");
    let pod = pod("web-1").await;
    let ing = tls_ingress(
        NS,
        "web",
        &[],
        &[
            ("exact", &["secure.example.test"]),
            ("wild", &["*.wild.example.test"]),
        ],
        &["secure.example.test", "a.wild.example.test"],
        "web",
        "80",
    );
    let files = tls_site(&[pod], &[("exact", &exact), ("wild", &wild)], ing);
    let gw = Gateway::start(&refs(&files)).await;

    let subject = served_subject(gw.https, Some("secure.example.test"));
    assert!(
        subject.contains("CN=secure.example.test") && subject.contains("O=exact"),
        "{subject}"
    );
    let subject = served_subject(gw.https, Some("a.wild.example.test"));
    assert!(subject.contains("O=wildcard"), "{subject}");
    // A wildcard covers exactly one label.
    let subject = served_subject(gw.https, Some("x.a.wild.example.test"));
    assert!(!subject.contains("O=wildcard"), "{subject}");
    for sni in [Some("unknown.example.test"), None] {
        let subject = served_subject(gw.https, sni);
        assert!(
            subject.contains("rcgen self signed cert"),
            "default (self-signed) certificate for {sni:?}: {subject}"
        );
    }
    assert!(
        gw.stderr().contains("self-signed certificate"),
        "start-up warning"
    );

    // A verifying client gets through to the pod on both names.
    let ca_file = ca.write(gw.dir.path());
    for host in ["secure.example.test", "a.wild.example.test"] {
        let out = curl_https(&gw, &ca_file, host, &["--http2"]).await;
        assert!(out.contains("\"pod\":\"web-1\""), "{host}: {out}");
        assert!(out.trim_end().ends_with("200 2"), "HTTP/2 by ALPN: {out}");
        let out = curl_https(&gw, &ca_file, host, &["--http1.1"]).await;
        assert!(out.trim_end().ends_with("200 1.1"), "{out}");
    }
    let echo: Echo = https_client(&gw, &ca, "secure.example.test")
        .get(https_url(&gw, "secure.example.test", "/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        echo.headers.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );
    let expiry = gw
        .metric("pingress_tls_certificate_expiry_timestamp_seconds{secret=\"shop/exact\"}")
        .await
        .unwrap();
    assert!(expiry > 1.7e9, "{expiry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secret_is_served_on_the_next_handshake_and_broken_ones_keep_the_last_good() {
    let ca = Ca::new();
    let gen1 = ca.issue(&["secure.example.test"], "gen-1");
    let gen2 = ca.issue(&["secure.example.test"], "gen-2");
    let pod = HeldPod::start().await;
    let files = secure_site(pod.addr, &gen1);
    let gw = Gateway::start(&refs(&files)).await;
    assert!(served_subject(gw.https, Some("secure.example.test")).contains("O=gen-1"));

    // A request held open at the pod, on a connection made with the old certificate.
    let client = https_client(&gw, &ca, "secure.example.test");
    let held = tokio::spawn({
        let url = https_url(&gw, "secure.example.test", "/hold");
        let client = client.clone();
        async move {
            let r = client.get(url).send().await?;
            Ok::<_, reqwest::Error>((r.status().as_u16(), r.text().await?))
        }
    });
    pod.wait_arrived(1).await;

    gw.write("10-secret-cert.yaml", &tls_secret(NS, "cert", &gen2));
    eventually("the rotated certificate on a new handshake", || async {
        served_subject(gw.https, Some("secure.example.test"))
            .contains("O=gen-2")
            .then_some(())
    })
    .await;
    pod.release();
    assert_eq!(
        held.await.unwrap().unwrap(),
        (200, "released".to_string()),
        "in-flight request on the old connection"
    );

    // A key that does not match: diagnosed, gen-2 stays in service.
    let broken = Pem {
        cert: ca.issue(&["secure.example.test"], "gen-3").cert,
        key: gen1.key.clone(),
    };
    gw.write("10-secret-cert.yaml", &tls_secret(NS, "cert", &broken));
    eventually("tls_secret diagnostic", || async {
        (gw.metric("pingress_diagnostics{kind=\"tls_secret\"}").await == Some(1.0)).then_some(())
    })
    .await;
    assert!(served_subject(gw.https, Some("secure.example.test")).contains("O=gen-2"));
    assert!(
        gw.stderr().contains("does not match the certificate"),
        "{}",
        gw.stderr()
    );
    // Deleted: still gen-2; other routes keep serving.
    gw.remove("10-secret-cert.yaml");
    eventually("secret not found diagnostic", || async {
        gw.stderr()
            .contains("secret shop/cert not found")
            .then_some(())
    })
    .await;
    assert!(served_subject(gw.https, Some("secure.example.test")).contains("O=gen-2"));
    let r = client
        .get(https_url(&gw, "secure.example.test", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_as_the_annotations_say() {
    let ca = Ca::new();
    let pem = ca.issue(&["*.example.test"], "site");
    let pod = pod("web-1").await;
    // One Ingress per annotation combination, each with its own TLS host, plus a host
    // without TLS and force-ssl-redirect.
    let cases: [(&str, &[Annotation], bool); 5] = [
        ("default", &[], true),
        (
            "off",
            &[("nginx.ingress.kubernetes.io/ssl-redirect", "false")],
            false,
        ),
        (
            "forced",
            &[("nginx.ingress.kubernetes.io/force-ssl-redirect", "true")],
            true,
        ),
        (
            "offforced",
            &[
                ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
                ("nginx.ingress.kubernetes.io/force-ssl-redirect", "true"),
            ],
            true,
        ),
        (
            "onexplicit",
            &[("nginx.ingress.kubernetes.io/ssl-redirect", "true")],
            true,
        ),
    ];
    let mut ingresses = String::new();
    for (name, annotations, _) in &cases {
        let host = format!("{name}.example.test");
        ingresses.push_str(&tls_ingress(
            NS,
            name,
            annotations,
            &[("cert", &[&host])],
            &[&host],
            "web",
            "80",
        ));
    }
    ingresses.push_str(&tls_ingress(
        NS,
        "notls-forced",
        &[("nginx.ingress.kubernetes.io/force-ssl-redirect", "true")],
        &[],
        &["notls-forced.example.test"],
        "web",
        "80",
    ));
    ingresses.push_str(&tls_ingress(
        NS,
        "notls",
        &[],
        &[],
        &["notls.example.test"],
        "web",
        "80",
    ));
    let files = tls_site(&[pod], &[("cert", &pem)], ingresses);
    let gw = Gateway::start(&refs(&files)).await;

    for (name, _, redirect) in cases {
        let host = format!("{name}.example.test");
        let r = gw
            .client
            .post(format!("http://{}/a/b?x=1", gw.http))
            .header("host", format!("{host}:8080"))
            .body("payload")
            .send()
            .await
            .unwrap();
        if redirect {
            assert_eq!(r.status(), 308, "{name}");
            assert_eq!(
                r.headers()["location"],
                format!("https://{host}/a/b?x=1").as_str(),
                "{name}"
            );
        } else {
            assert_eq!(r.status(), 200, "{name}");
            let echo: Echo = r.json().await.unwrap();
            assert_eq!(echo.method, "POST");
            assert_eq!(echo.body_len, 7);
            assert_eq!(
                echo.headers.get("x-forwarded-proto").map(String::as_str),
                Some("http")
            );
        }
        // Over HTTPS every one of them is served, with HSTS.
        let r = https_client(&gw, &ca, &host)
            .get(https_url(&gw, &host, "/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name} over https");
        assert_eq!(
            r.headers()["strict-transport-security"],
            "max-age=31536000; includeSubDomains",
            "{name}"
        );
    }
    assert_eq!(gw.who("notls-forced.example.test", "/").await, "308");
    assert_eq!(gw.who("notls.example.test", "/").await, "web-1");
    // No HSTS for a host without TLS configured, even when reached over HTTPS.
    let r = https_client(&gw, &ca, "notls.example.test")
        .get(https_url(&gw, "notls.example.test", "/"))
        .send()
        .await;
    // The default certificate is self-signed: a verifying client refuses it.
    assert!(
        r.is_err(),
        "default certificate must not verify for notls.example.test"
    );
    let r = gw
        .insecure_https_client("notls.example.test")
        .get(https_url(&gw, "notls.example.test", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_none());
    assert!(gw.metric("pingress_https_redirects_total").await.unwrap() >= 4.0);
    assert_eq!(
        gw.metric("pingress_diagnostics{kind=\"invalid_annotation\"}")
            .await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_settings_redirect_port_and_minimum_tls_version_come_from_the_config() {
    let ca = Ca::new();
    let pem = ca.issue(&["secure.example.test"], "site");
    let pod = pod("web-1").await;
    let files = secure_site(pod, &pem);
    let gw = Gateway::start_with(
        &refs(&files),
        "  tls:\n    min_version: \"1.3\"\n    redirect_port: 8443\n    hsts: {enabled: false}\n",
    )
    .await;
    let r = gw
        .client
        .get(format!("http://{}/p", gw.http))
        .header("host", "secure.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        "https://secure.example.test:8443/p"
    );
    let r = https_client(&gw, &ca, "secure.example.test")
        .get(https_url(&gw, "secure.example.test", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_none());

    let handshake = |version| handshake(gw.https, Some("secure.example.test"), &[version]);
    let tls13 = handshake("-tls1_3");
    assert!(
        String::from_utf8_lossy(&tls13.stdout).contains("TLSv1.3"),
        "{}",
        String::from_utf8_lossy(&tls13.stdout)
    );
    let tls12 = handshake("-tls1_2");
    let out = String::from_utf8_lossy(&tls12.stdout);
    assert!(
        !tls12.status.success() && out.contains("no peer certificate available"),
        "TLS 1.2 must fail: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_certificate_from_a_secret_or_from_files() {
    let ca = Ca::new();
    let site_pem = ca.issue(&["secure.example.test"], "site");
    let fallback = ca.issue(&["fallback.example.test"], "fallback-secret");
    let pod = pod("web-1").await;
    let mut files = secure_site(pod, &site_pem);
    files.push((
        "11-fallback.yaml".into(),
        tls_secret(NS, "fallback", &fallback),
    ));
    let gw = Gateway::start_with(
        &refs(&files),
        "  tls:\n    default_certificate: {secret: shop/fallback}\n",
    )
    .await;
    for sni in [Some("unknown.example.test"), None] {
        let subject = served_subject(gw.https, sni);
        assert!(subject.contains("O=fallback-secret"), "{sni:?}: {subject}");
    }
    assert!(served_subject(gw.https, Some("secure.example.test")).contains("O=site"));
    assert!(!gw.stderr().contains("self-signed"), "{}", gw.stderr());
    drop(gw);

    let dir = tempfile::tempdir().unwrap();
    let from_files = ca.issue(&["fallback.example.test"], "fallback-files");
    std::fs::write(dir.path().join("tls.crt"), &from_files.cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), &from_files.key).unwrap();
    let gw = Gateway::start_with(
        &refs(&secure_site(pod, &site_pem)),
        &format!(
            "  tls:\n    default_certificate: {{cert_file: {0}/tls.crt, key_file: {0}/tls.key}}\n",
            dir.path().display()
        ),
    )
    .await;
    let subject = served_subject(gw.https, Some("unknown.example.test"));
    assert!(subject.contains("O=fallback-files"), "{subject}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_versions_below_1_2_are_refused_by_default() {
    let pod = pod("web-1").await;
    let gw = Gateway::start(&[("site.yaml", site("web", "secure.example.test", &[pod]))]).await;
    for version in ["-tls1_2", "-tls1_3"] {
        let out = handshake(gw.https, None, &[version]);
        assert!(
            out.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for version in ["-tls1", "-tls1_1"] {
        let out = handshake(gw.https, None, &[version, "-cipher", "DEFAULT:@SECLEVEL=0"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() && text.contains("no peer certificate available"),
            "{version} must be refused: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_by_alpn_with_h2load_and_h2c_when_enabled() {
    let pod = pod("web-1").await;
    // A catch-all rule: h2load's :authority is the address it connects to.
    let files = [(
        "site.yaml",
        format!(
            "{CLASS}{}{}{}",
            service(NS, "web", &[("http", 80)]),
            slices(NS, "web", "http", &[pod]),
            ingress(NS, "web", &[], Some(("web", "80")))
        ),
    )];
    let gw = Gateway::start_with(&files, "  h2c: true\n").await;
    let out = tokio::process::Command::new("h2load")
        .args(["-n", "400", "-c", "4", "-m", "10"])
        .arg(format!("https://{}/", gw.https))
        .output()
        .await
        .expect("h2load (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(
        text.contains("400 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    assert!(text.contains("status codes: 400 2xx"), "{text}");

    // An open HTTP/2 connection counts as one client connection, whatever its streams.
    let open = || async { gw.metric("pingress_downstream_connections_active").await };
    let before = eventually("h2load's connections are closed", || async {
        open().await.filter(|v| *v == 0.0)
    })
    .await;
    let h2 = gw.insecure_https_client("h2.example.com");
    for _ in 0..3 {
        let r = h2
            .get(format!("https://h2.example.com:{}/", gw.https.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        // The forwarded headers of a stream: the Host is the :authority, port included
        // (nginx's $http_host), and the peer is the connection's.
        let e: Echo = r.json().await.unwrap();
        let h = &e.headers;
        let authority = format!("h2.example.com:{}", gw.https.port());
        assert_eq!(h["x-forwarded-host"], authority);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-real-ip"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
    eventually("one HTTP/2 connection counted", || async {
        open().await.filter(|v| *v == before + 1.0)
    })
    .await;
    drop(h2);
    eventually("and uncounted when it closes", || async {
        open().await.filter(|v| *v == before)
    })
    .await;

    // h2c with prior knowledge on the plain listener, and HTTP/1.1 still works there.
    let curl = |args: &'static [&'static str]| {
        let url = format!("http://{}/", gw.http);
        async move {
            let out = tokio::process::Command::new("curl")
                .args([
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{http_version}",
                ])
                .args(args)
                .arg(url)
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    assert_eq!(curl(&["--http2-prior-knowledge"]).await, "200 2");
    assert_eq!(curl(&["--http1.1"]).await, "200 1.1");
    let out = tokio::process::Command::new("h2load")
        .args(["-n", "200", "-c", "2", "-m", "10"])
        .arg(format!("http://{}/", gw.http))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("200 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    drop(gw);

    // Off by default: prior knowledge gets no HTTP/2 answer.
    let gw = Gateway::start(&files).await;
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "--http2-prior-knowledge",
        ])
        .arg(format!("http://{}/", gw.http))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.ends_with(" 2"), "h2c must be off by default: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_the_pods_with_backend_protocol_https() {
    let ca = Ca::new();
    let pod_cert = ca.issue(&["pod.internal"], "pod");
    let tls_pod = https_pod("tls-pod", &pod_cert).await;
    let mut files = tls_site(&[tls_pod], &[], String::new());
    files.push((
        "30-https.yaml".into(),
        tls_ingress(
            NS,
            "secure-backend",
            &[("nginx.ingress.kubernetes.io/backend-protocol", "HTTPS")],
            &[],
            &["backend.example.test"],
            "web",
            "80",
        ),
    ));
    let gw = Gateway::start(&refs(&files)).await;
    let echo = gw.echo("backend.example.test", "/x").await;
    assert_eq!(echo.pod, "tls-pod");
    assert_eq!(echo.path, "/x");
    // Without the annotation the same pod is spoken to in cleartext, and refuses.
    gw.write(
        "30-https.yaml",
        &tls_ingress(
            NS,
            "secure-backend",
            &[],
            &[],
            &["backend.example.test"],
            "web",
            "80",
        ),
    );
    gw.wait_for("backend.example.test", "/x", "502").await;
}
