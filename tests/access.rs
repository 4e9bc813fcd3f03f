//! Access-control annotations end to end: allow and deny lists, rate and connection limits,
//! fail-closed settings. Clients bind distinct loopback addresses (127.0.0.x), so each test
//! can be an allowed, a refused and a spoofing client at once.

use crate::support;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use support::*;

/// An Ingress `name` in namespace `acc` for `host` with annotations (short keys), `/` to
/// Service `svc`.
fn ing(name: &str, host: &str, svc: &str, annotations: &[(&str, &str)]) -> String {
    let mut s = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: acc\n"
    );
    if !annotations.is_empty() {
        s.push_str("  annotations:\n");
        for (k, v) in annotations {
            writeln!(s, "    nginx.ingress.kubernetes.io/{k}: {v:?}").unwrap();
        }
    }
    writeln!(
        s,
        "spec:\n  ingressClassName: pingress\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service: {{name: {svc}, port: {{name: http}}}}"
    )
    .unwrap();
    s
}

fn svc(name: &str, pods: &[SocketAddr]) -> String {
    format!(
        "{}{}",
        service("acc", name, &[("http", 80)]),
        slices("acc", name, "http", pods)
    )
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn status(
    c: &reqwest::Client,
    gw: &Gateway,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut rb = c
        .get(format!("http://{}{path}", gw.http))
        .header("host", host);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_lists_answer_403_and_a_spoofed_forwarded_for_does_not_get_past() {
    let web = pod("web").await;
    let m = format!(
        "{CLASS}{}{}{}{}",
        svc("web", &[web]),
        ing(
            "allow",
            "allow.example.com",
            "web",
            &[("whitelist-source-range", "127.0.0.2/32, 10.0.0.0/8")]
        ),
        ing(
            "deny",
            "deny.example.com",
            "web",
            &[("denylist-source-range", "127.0.0.3")]
        ),
        ing("open", "open.example.com", "web", &[]),
    );
    let gw = Gateway::start_with(&[("all.yaml", m)], "  trusted_proxies: [\"127.0.0.4\"]\n").await;
    let (allowed, other, proxy) = (
        client_from("127.0.0.2"),
        client_from("127.0.0.3"),
        client_from("127.0.0.4"),
    );
    eventually("the allow list is in force", || async {
        (status(&allowed, &gw, "allow.example.com", "/", &[]).await.0 == 200).then_some(())
    })
    .await;
    let (code, body) = status(&other, &gw, "allow.example.com", "/", &[]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("not allowed"), "{body}");
    // A client cannot claim an allowed address.
    for xff in ["127.0.0.2", "10.1.1.1", "127.0.0.2, 127.0.0.2"] {
        let (code, _) = status(
            &other,
            &gw,
            "allow.example.com",
            "/",
            &[("x-forwarded-for", xff), ("x-real-ip", xff)],
        )
        .await;
        assert_eq!(code, 403, "spoofed {xff}");
    }
    // Behind the trusted proxy, the client it names is checked: an allowed one passes, a
    // planted left-most entry does not.
    let (code, _) = status(
        &proxy,
        &gw,
        "allow.example.com",
        "/",
        &[("x-forwarded-for", "10.1.1.1")],
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = status(
        &proxy,
        &gw,
        "allow.example.com",
        "/",
        &[("x-forwarded-for", "10.1.1.1, 198.51.100.7")],
    )
    .await;
    assert_eq!(code, 403);
    // The proxy itself is not in the list.
    let (code, _) = status(&proxy, &gw, "allow.example.com", "/", &[]).await;
    assert_eq!(code, 403);

    // Deny list: that client only.
    let (code, _) = status(&other, &gw, "deny.example.com", "/", &[]).await;
    assert_eq!(code, 403);
    let (code, _) = status(&allowed, &gw, "deny.example.com", "/", &[]).await;
    assert_eq!(code, 200);
    // Other Ingresses are open to everyone.
    let (code, _) = status(&other, &gw, "open.example.com", "/", &[]).await;
    assert_eq!(code, 200);
    let refused = gw
        .metric("pingress_policy_refusals_total{ingress=\"acc/allow\",policy=\"access\"}")
        .await;
    assert!(refused.unwrap_or(0.0) >= 5.0, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cidr_closes_its_ingress_with_503_while_other_routes_serve() {
    let web = pod("web").await;
    let m = format!(
        "{CLASS}{}{}{}",
        svc("web", &[web]),
        ing(
            "broken",
            "broken.example.com",
            "web",
            &[("whitelist-source-range", "10.0.0.0/8, 10.0.0.300")]
        ),
        ing("open", "open.example.com", "web", &[]),
    );
    let gw = Gateway::start(&[("all.yaml", m)]).await;
    gw.wait_for("open.example.com", "/", "web").await;
    // Everyone is refused, inside the good part of the list or not.
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let (code, body) = status(&client_from(ip), &gw, "broken.example.com", "/", &[]).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("access control"), "{body}");
    }
    let log = eventually("the diagnostic names the key and value", || async {
        let e = gw.stderr();
        (e.contains("whitelist-source-range") && e.contains("10.0.0.300")).then_some(e)
    })
    .await;
    assert!(log.contains("acc/broken"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_against_a_rate_limit_gets_503s_while_another_ingress_is_unaffected() {
    let web = pod("web").await;
    let m = format!(
        "{CLASS}{}{}{}",
        svc("web", &[web]),
        // 1 request/s with the default multiplier: 5 excess, so 6 at once.
        ing(
            "limited",
            "limited.example.com",
            "web",
            &[("limit-rps", "1"), ("limit-whitelist", "127.0.0.9")]
        ),
        ing("free", "free.example.com", "web", &[]),
    );
    let gw = Gateway::start(&[("all.yaml", m)]).await;
    let burst = client_from("127.0.0.3");
    gw.wait_for("free.example.com", "/", "web").await;
    let started = Instant::now();
    let mut passed = 0;
    let mut refused = 0;
    for i in 0..30 {
        // A different spoofed address on each request changes nothing.
        let xff = format!("198.51.100.{i}");
        match status(
            &burst,
            &gw,
            "limited.example.com",
            "/",
            &[("x-forwarded-for", &xff)],
        )
        .await
        .0
        {
            200 => passed += 1,
            503 => refused += 1,
            other => panic!("status {other}"),
        }
    }
    let secs = started.elapsed().as_secs() as usize;
    assert!(refused > 0, "no request was refused");
    assert!(passed >= 6, "the burst of 6 must pass: {passed}");
    assert!(passed <= 6 + secs + 1, "{passed} passed in {secs} s");
    // Another Ingress, another client, and an allow-listed client are not limited.
    for _ in 0..10 {
        assert_eq!(
            status(&burst, &gw, "free.example.com", "/", &[]).await.0,
            200
        );
    }
    let fresh = client_from("127.0.0.5");
    assert_eq!(
        status(&fresh, &gw, "limited.example.com", "/", &[]).await.0,
        200
    );
    let exempt = client_from("127.0.0.9");
    for _ in 0..20 {
        assert_eq!(
            status(&exempt, &gw, "limited.example.com", "/", &[])
                .await
                .0,
            200
        );
    }
    let counted = gw
        .metric("pingress_policy_refusals_total{ingress=\"acc/limited\",policy=\"rate\"}")
        .await;
    assert_eq!(counted, Some(refused as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_connections_refuses_a_second_request_in_flight_with_the_configured_status() {
    let held = HeldPod::start().await;
    let m = format!(
        "{CLASS}{}{}",
        svc("slow", &[held.addr]),
        ing(
            "conns",
            "conns.example.com",
            "slow",
            &[("limit-connections", "1")]
        ),
    );
    let gw = std::sync::Arc::new(
        Gateway::start_with(&[("all.yaml", m)], "  limits: {conn_status_code: 429}\n").await,
    );
    let c = client_from("127.0.0.3");
    eventually("the route serves", || async {
        (status(&c, &gw, "conns.example.com", "/", &[]).await.0 == 200).then_some(())
    })
    .await;
    let first = {
        let (c, gw) = (c.clone(), gw.clone());
        tokio::spawn(async move { status(&c, &gw, "conns.example.com", "/hold", &[]).await.0 })
    };
    held.wait_arrived(1).await;
    let (code, body) = status(&c, &gw, "conns.example.com", "/", &[]).await;
    assert_eq!(code, 429, "{body}");
    // Another client has its own count.
    assert_eq!(
        status(
            &client_from("127.0.0.4"),
            &gw,
            "conns.example.com",
            "/",
            &[]
        )
        .await
        .0,
        200
    );
    held.release();
    assert_eq!(first.await.unwrap(), 200);
    // Once the first has finished, the client may send again.
    assert_eq!(status(&c, &gw, "conns.example.com", "/", &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_limit_refuses_the_ingress_and_an_update_keeps_the_last_good_limit() {
    let web = pod("web").await;
    let base = format!("{CLASS}{}", svc("web", &[web]));
    let good = ing(
        "lim",
        "lim.example.com",
        "web",
        &[("limit-rps", "1"), ("limit-burst-multiplier", "1")],
    );
    let gw = Gateway::start(&[("base.yaml", base), ("lim.yaml", good)]).await;
    let c = client_from("127.0.0.3");
    // In force: 2 at once, then refused.
    eventually("the limit is in force", || async {
        (status(&c, &gw, "lim.example.com", "/", &[]).await.0 == 503).then_some(())
    })
    .await;
    // An update with a bad value is refused: the last good version, limit included, serves.
    gw.write(
        "lim.yaml",
        &ing("lim", "lim.example.com", "web", &[("limit-rps", "lots")]),
    );
    eventually("the refusal is reported", || async {
        gw.stderr().contains("limit-rps").then_some(())
    })
    .await;
    let refused = (0..10).map(|_| status(&c, &gw, "lim.example.com", "/", &[]));
    let mut codes = Vec::new();
    for f in refused {
        codes.push(f.await.0);
    }
    assert!(codes.contains(&503), "the limit stays: {codes:?}");
}
