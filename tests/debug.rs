//! The debug listener and `pingress explain`: routes with their source Ingress, backend and
//! endpoints (ready or not), diagnostics, certificates, explanations of a match and of a
//! 404; the page at `/` in headless Chromium (no console errors, the routes shown).

use crate::support;

use std::net::SocketAddr;

use serde_json::Value;
use support::tls::{tls_secret, Ca};
use support::*;

const NS: &str = "shop";

async fn manifests() -> (Vec<(&'static str, String)>, SocketAddr, SocketAddr) {
    let ready = pod("web-1").await;
    let not_ready: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let ca = Ca::new();
    let cert = ca.issue(&["secure.example.com"], "pingress");
    let files = vec![
        (
            "00-web.yaml",
            format!(
                "{CLASS}{}{}",
                service(NS, "web", &[("http", 80)]),
                slices_with(NS, "web", "http", &[ready, not_ready], &[not_ready])
            ),
        ),
        (
            "10-web.yaml",
            ingress(
                NS,
                "web",
                &[
                    ("shop.example.com", "Prefix", "/", "web", "80"),
                    ("shop.example.com", "Exact", "/cart", "web", "80"),
                ],
                None,
            ),
        ),
        (
            "20-broken.yaml",
            ingress(
                NS,
                "broken",
                &[("broken.example.com", "Prefix", "/", "missing", "80")],
                None,
            ),
        ),
        ("30-cert.yaml", tls_secret(NS, "secure-cert", &cert)),
        (
            "31-secure.yaml",
            support::tls::tls_ingress(
                NS,
                "secure",
                &[],
                &[("secure-cert", &["secure.example.com"])],
                &["secure.example.com"],
                "web",
                "80",
            ),
        ),
    ];
    (files, ready, not_ready)
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_listener_shows_routes_diagnostics_certificates_and_explains() {
    let (files, ready, not_ready) = manifests().await;
    let files: Vec<(&str, String)> = files.into_iter().collect();
    let gw = Gateway::start(&files).await;
    gw.wait_for("shop.example.com", "/", "web-1").await;

    // Routes: host -> rules -> source Ingress, backend, endpoints with readiness.
    // Request counts are recorded in the logging phase, just after the response went out.
    let routes = eventually("the request above is counted", || async {
        let r = get_json(gw.debug, "/debug/routes").await;
        let counted = r["hosts"]
            .as_array()?
            .iter()
            .flat_map(|h| h["rules"].as_array().into_iter().flatten())
            .any(|rule| rule["target"]["requests"].as_u64() >= Some(1));
        counted.then_some(r)
    })
    .await;
    let hosts = routes["hosts"].as_array().unwrap();
    let shop = hosts
        .iter()
        .find(|h| h["host"] == "shop.example.com")
        .expect("shop host");
    let rules = shop["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(
        (&rules[0]["kind"], &rules[0]["path"]),
        (&"Exact".into(), &"/cart".into())
    );
    let t = &rules[1]["target"];
    assert_eq!(t["ingress"], "shop/web");
    assert_eq!(t["backend"]["service"], "shop/web");
    assert_eq!(t["backend"]["ready_endpoints"], 1);
    let eps = t["endpoints"].as_array().unwrap();
    assert!(eps
        .iter()
        .any(|e| e["address"] == ready.to_string() && e["ready"] == true));
    assert!(eps
        .iter()
        .any(|e| e["address"] == not_ready.to_string() && e["ready"] == false));
    assert!(
        t["requests"].as_u64().unwrap() >= 1,
        "the request above is counted"
    );

    // Diagnostics: the Ingress whose Service is missing.
    let d = get_json(gw.debug, "/debug/diagnostics").await;
    let d = d["diagnostics"].as_array().unwrap();
    assert!(
        d.iter()
            .any(|x| x["ingress"] == "shop/broken" && x["kind"] == "service_not_found"),
        "{d:?}"
    );

    // Certificates: host, subject, SANs, expiry, source Secret.
    let c = get_json(gw.debug, "/debug/certs").await;
    let c = c["certificates"].as_array().unwrap();
    let secure = c
        .iter()
        .find(|x| x["host"] == "secure.example.com")
        .expect("secure host");
    assert_eq!(secure["source"], "shop/secure-cert");
    assert!(secure["subject"]
        .as_str()
        .unwrap()
        .contains("CN=secure.example.com"));
    assert_eq!(secure["sans"][0], "secure.example.com");
    assert!(secure["days_left"].as_f64().unwrap() > 1.0);
    assert!(c.iter().any(|x| x["host"] == "default"));

    // Explain: a match, and a 404 with the host's rules listed.
    let e = get_json(gw.debug, "/debug/explain?host=shop.example.com&path=/cart").await;
    assert_eq!(e["rule"]["kind"], "Exact");
    assert_eq!(e["target"]["ingress"], "shop/web");
    let e = get_json(
        gw.debug,
        "/debug/explain?host=shop.example.com:8080&path=/nope",
    )
    .await;
    assert_eq!(e["rule"]["kind"], "Prefix", "/ covers /nope");
    let e = get_json(gw.debug, "/debug/explain?host=nope.example.com&path=/").await;
    let why = e["why"].to_string();
    assert!(
        why.contains("no Ingress rule has host nope.example.com"),
        "{why}"
    );
    assert_eq!(e["target"]["action"], "respond 404");
    // A rule whose Service is missing answers 503, and the diagnostic says why.
    let e = get_json(gw.debug, "/debug/explain?host=broken.example.com&path=/").await;
    assert_eq!(e["target"]["action"], "respond 503");
    assert!(
        e["diagnostics"].to_string().contains("service_not_found"),
        "the Ingress's diagnostic is named: {e}"
    );

    // The CLI asks the same listener.
    let debug = gw.debug.to_string();
    let text = pingress_ok([
        "explain",
        "--debug",
        &debug,
        "--host",
        "shop.example.com",
        "--path",
        "/cart",
    ]);
    assert!(text.contains("matches the Exact rule /cart"), "{text}");
    assert!(text.contains("answer: proxy (Ingress shop/web)"), "{text}");
    assert!(
        text.contains(&format!("endpoint {not_ready} not ready")),
        "{text}"
    );

    // Not on the admin listener, which is on the node's address in-cluster.
    let r = reqwest::get(format!("http://{}/debug/routes", gw.admin))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The page in a real browser: it loads with no console errors and shows the routes.
    let shot = std::env::var_os("PINGRESS_SCREENSHOT");
    let page = tokio::task::spawn_blocking(move || chromium(gw.debug, shot))
        .await
        .unwrap();
    assert!(page.dom.contains("shop.example.com"), "{}", page.dom);
    assert!(page.dom.contains("Exact /cart"), "{}", page.dom);
    assert!(page.dom.contains("secure.example.com"), "{}", page.dom);
    assert!(page.dom.contains("service_not_found"), "{}", page.dom);
    assert!(
        page.dom.contains("generation "),
        "the status line: {}",
        page.dom
    );
    assert!(
        page.console_errors.is_empty(),
        "console errors: {:?}",
        page.console_errors
    );
}

struct Page {
    dom: String,
    console_errors: Vec<String>,
}

/// Load the debug page in headless Chromium; the DOM after its scripts ran, and every
/// console message. With `shot`, also write a screenshot there.
fn chromium(addr: SocketAddr, shot: Option<std::ffi::OsString>) -> Page {
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[String]| {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=5000",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("http://{addr}/"))
            .output()
            .expect("chromium (apt-get install chromium)")
    };
    let out = run(&["--dump-dom".to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The page logs nothing, so any console message (an error, an uncaught exception, a
    // failed load) counts: Chromium prints them all at INFO level.
    let console_errors = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .map(str::to_string)
        .collect();
    if let Some(path) = shot {
        let _ = run(&[format!("--screenshot={}", path.to_string_lossy())]);
    }
    Page {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console_errors,
    }
}

#[test]
fn explain_against_a_manifests_directory() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (files, _, _) = rt.block_on(manifests());
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let run = |args: &[&str]| {
        let dir = dir.path().as_os_str();
        pingress_ok(
            ["explain".as_ref(), "--manifests".as_ref(), dir]
                .into_iter()
                .chain(args.iter().map(|a| a.as_ref())),
        )
    };
    let text = run(&["--host", "shop.example.com", "--path", "/cart"]);
    assert!(text.contains("host shop.example.com has rules"), "{text}");
    assert!(text.contains("matches the Exact rule /cart"), "{text}");
    assert!(
        text.contains("backend: Service shop/web port 80 (1 ready endpoints)"),
        "{text}"
    );
    // "Why is my Ingress answering 404": no rule for the host.
    let text = run(&["--host", "nope.example.com"]);
    assert!(
        text.contains("no Ingress rule has host nope.example.com"),
        "{text}"
    );
    assert!(text.contains("answer: respond 404"), "{text}");
    // ... or 503: the rule's Service is missing, and the diagnostic says so.
    let text = run(&["--host", "broken.example.com"]);
    assert!(
        text.contains("answer: respond 503 (Ingress shop/broken)"),
        "{text}"
    );
    assert!(text.contains("its backend cannot be used"), "{text}");
    assert!(
        text.contains("diagnostic (service_not_found): ingress shop/broken"),
        "{text}"
    );
    // JSON, and a header condition.
    let json = run(&[
        "--host",
        "shop.example.com",
        "--header",
        "X-A=1",
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["request"]["headers"][0][0], "x-a");
    assert_eq!(v["rule"]["kind"], "Prefix");
}
