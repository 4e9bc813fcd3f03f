//! ingress-nginx annotations end to end: the real gateway on a manifests directory, echo
//! pods on 127.0.0.1, and a real HTTP client. Each test asserts what the client got (status,
//! Location, cookies) and what the pod saw (path, query, Host, headers).

use crate::support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use support::*;

/// An Ingress `name` in namespace `ann` with annotations (short keys) and one path per
/// (host, pathType, path, service) to port `http`.
fn annotated(
    name: &str,
    annotations: &[(&str, &str)],
    paths: &[(&str, &str, &str, &str)],
) -> String {
    let mut s = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: ann\n"
    );
    if !annotations.is_empty() {
        s.push_str("  annotations:\n");
        for (k, v) in annotations {
            writeln!(s, "    nginx.ingress.kubernetes.io/{k}: {v:?}").unwrap();
        }
    }
    s.push_str("spec:\n  ingressClassName: pingress\n  rules:\n");
    for (host, kind, path, svc) in paths {
        writeln!(
            s,
            "  - host: {host}\n    http:\n      paths:\n      - path: {path:?}\n        pathType: {kind}\n        backend:\n          service: {{name: {svc}, port: {{name: http}}}}"
        )
        .unwrap();
    }
    s
}

/// IngressClass, and for each (service, pods) a Service with port `http` and its slices.
fn services(list: &[(&str, &[SocketAddr])]) -> String {
    let mut s = CLASS.to_string();
    for (svc, pods) in list {
        s.push_str(&service("ann", svc, &[("http", 80)]));
        s.push_str(&slices("ann", svc, "http", pods));
    }
    s
}

async fn send(gw: &Gateway, host: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = gw
        .client
        .get(format!("http://{}{}", gw.http, path))
        .header("host", host);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

async fn echo_of(r: reqwest::Response) -> Echo {
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not an echo: {e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_target_captures_keep_the_query_and_set_prefix_and_vhost() {
    let a = pod("a").await;
    let gw = Gateway::start(&[(
        "site.yaml",
        format!(
            "{}{}",
            services(&[("web", &[a])]),
            annotated(
                "rw",
                &[
                    ("rewrite-target", "/$2"),
                    ("x-forwarded-prefix", "/something"),
                    ("upstream-vhost", "internal.example"),
                ],
                &[(
                    "rw.example.com",
                    "ImplementationSpecific",
                    "/something(/|$)(.*)",
                    "web"
                )],
            )
        ),
    )])
    .await;
    let cases = [
        ("/something", "/", ""),
        ("/something/", "/", ""),
        ("/something/new?x=1&y=2", "/new", "x=1&y=2"),
        ("/SOMETHING/a/b", "/a/b", ""),
    ];
    for (path, want_path, want_query) in cases {
        let e = echo_of(send(&gw, "rw.example.com", path, &[]).await).await;
        assert_eq!(
            (e.path.as_str(), e.query.as_str()),
            (want_path, want_query),
            "{path}"
        );
        assert_eq!(e.headers["x-forwarded-prefix"], "/something");
        assert_eq!(e.headers["host"], "internal.example");
    }
    // Regex mode: not matching the start of the path is not this rule's.
    assert_eq!(
        send(&gw, "rw.example.com", "/x/something", &[])
            .await
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_annotations_answer_with_their_status_and_location() {
    let a = pod("a").await;
    let gw = Gateway::start(&[(
        "site.yaml",
        format!(
            "{}{}{}{}",
            services(&[("web", &[a])]),
            annotated(
                "moved",
                &[
                    ("permanent-redirect", "https://new.example.com/landing"),
                    ("permanent-redirect-code", "308")
                ],
                &[("old.example.com", "Prefix", "/", "web")],
            ),
            annotated(
                "temp",
                &[("temporal-redirect", "http://t.example.com/x")],
                &[("temp.example.com", "Prefix", "/", "web")],
            ),
            annotated(
                "app",
                &[("app-root", "/app1"), ("from-to-www-redirect", "true")],
                &[("app.example.com", "Prefix", "/", "web")],
            ),
        ),
    )])
    .await;
    let loc = |r: &reqwest::Response| {
        r.headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let r = send(&gw, "old.example.com", "/a?b=c", &[]).await;
    assert_eq!(
        (r.status().as_u16(), loc(&r).as_deref()),
        (308, Some("https://new.example.com/landing"))
    );
    let r = send(&gw, "temp.example.com", "/", &[]).await;
    assert_eq!(
        (r.status().as_u16(), loc(&r).as_deref()),
        (302, Some("http://t.example.com/x"))
    );
    let r = send(&gw, "app.example.com", "/", &[]).await;
    assert_eq!(
        (r.status().as_u16(), loc(&r).as_deref()),
        (302, Some("http://app.example.com/app1"))
    );
    // Other paths of the app-root host are proxied.
    assert_eq!(
        echo_of(send(&gw, "app.example.com", "/app1", &[]).await)
            .await
            .path,
        "/app1"
    );
    // www. redirects to the Ingress's host, with the port and without one trailing slash.
    let r = send(&gw, "www.app.example.com", "/p/?q=1", &[]).await;
    let port = gw.http.port();
    assert_eq!(r.status(), 308);
    assert_eq!(
        loc(&r),
        Some(format!("http://app.example.com:{port}/p/?q=1"))
    );
    let r = send(&gw, "www.app.example.com", "/p/", &[]).await;
    assert_eq!(loc(&r), Some(format!("http://app.example.com:{port}/p")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_by_header_cookie_and_weight() {
    let main = pod("main").await;
    let canary = pod("canary").await;
    let gw = Gateway::start(&[(
        "site.yaml",
        format!(
            "{}{}{}",
            services(&[("main", &[main]), ("canary", &[canary])]),
            annotated("main", &[], &[("c.example.com", "Prefix", "/", "main")]),
            annotated(
                "canary",
                &[
                    ("canary", "true"),
                    ("canary-by-header", "X-Canary"),
                    ("canary-by-cookie", "use_canary"),
                    ("canary-weight", "30"),
                ],
                &[("c.example.com", "Prefix", "/", "canary")],
            ),
        ),
    )])
    .await;
    let who = |r: Echo| r.pod;
    // Header `always` / `never` decide before the cookie and the weight.
    for _ in 0..20 {
        assert_eq!(
            who(echo_of(send(&gw, "c.example.com", "/", &[("x-canary", "always")]).await).await),
            "canary"
        );
        assert_eq!(
            who(echo_of(
                send(
                    &gw,
                    "c.example.com",
                    "/",
                    &[("x-canary", "never"), ("cookie", "use_canary=always")]
                )
                .await
            )
            .await),
            "main"
        );
        assert_eq!(
            who(echo_of(
                send(
                    &gw,
                    "c.example.com",
                    "/",
                    &[("cookie", "use_canary=always")]
                )
                .await
            )
            .await),
            "canary"
        );
        assert_eq!(
            who(
                echo_of(send(&gw, "c.example.com", "/", &[("cookie", "use_canary=never")]).await)
                    .await
            ),
            "main"
        );
    }
    // Weight 30 of 100: 400 requests land on the canary 120 ± 46 times (5 standard deviations).
    let mut n = 0;
    for _ in 0..400 {
        if who(echo_of(send(&gw, "c.example.com", "/", &[]).await).await) == "canary" {
            n += 1;
        }
    }
    assert!(
        (74..=166).contains(&n),
        "{n} of 400 requests went to the canary at weight 30"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_affinity_sticks_across_fifty_route_changes() {
    let pods = [pod("p1").await, pod("p2").await, pod("p3").await];
    let base = format!(
        "{}{}",
        services(&[("web", &pods), ("other", &pods[..1])]),
        annotated(
            "sticky",
            &[
                ("affinity", "cookie"),
                ("session-cookie-name", "route"),
                ("session-cookie-max-age", "3600")
            ],
            &[("s.example.com", "Prefix", "/", "web")],
        ),
    );
    let gw = Gateway::start(&[("site.yaml", base)]).await;
    let r = send(&gw, "s.example.com", "/", &[]).await;
    let set = r
        .headers()
        .get("set-cookie")
        .expect("a new client gets the cookie")
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set.starts_with("route=")
            && set.contains("Path=/")
            && set.contains("Max-Age=3600")
            && set.contains("HttpOnly"),
        "{set}"
    );
    let first = echo_of(r).await.pod;
    let cookie = set.split(';').next().unwrap().to_string();
    for i in 0..50 {
        // An unrelated route changes; each change is seen before the next request.
        let host = format!("other{i}.example.com");
        gw.write(
            "other.yaml",
            &annotated("other", &[], &[(&host, "Prefix", "/", "other")]),
        );
        gw.wait_for(&host, "/", "p1").await;
        let r = send(&gw, "s.example.com", "/", &[("cookie", &cookie)]).await;
        assert!(
            r.headers().get("set-cookie").is_none(),
            "a pinned client gets no new cookie"
        );
        assert_eq!(echo_of(r).await.pod, first, "change {i}");
    }
    // Without the cookie, clients spread over the pods.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        seen.insert(
            echo_of(send(&gw, "s.example.com", "/", &[]).await)
                .await
                .pod,
        );
    }
    assert!(seen.len() >= 2, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_hash_by_sends_the_same_key_to_the_same_pod() {
    let pods = [pod("h1").await, pod("h2").await, pod("h3").await];
    let gw = Gateway::start(&[(
        "site.yaml",
        format!(
            "{}{}",
            services(&[("web", &pods)]),
            annotated(
                "hash",
                &[("upstream-hash-by", "$arg_user")],
                &[("h.example.com", "Prefix", "/", "web")]
            ),
        ),
    )])
    .await;
    let mut owner: BTreeMap<u32, String> = BTreeMap::new();
    for round in 0..3 {
        for user in 0..30u32 {
            let p = echo_of(send(&gw, "h.example.com", &format!("/x?user={user}"), &[]).await)
                .await
                .pod;
            if round == 0 {
                owner.insert(user, p);
            } else {
                assert_eq!(owner[&user], p, "user {user}");
            }
        }
    }
    let distinct: std::collections::BTreeSet<_> = owner.values().collect();
    assert!(distinct.len() >= 2, "30 keys all on {distinct:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_answer_504_and_body_size_413() {
    let a = pod("a").await;
    let gw = Gateway::start(&[(
        "site.yaml",
        format!(
            "{}{}{}",
            services(&[("web", &[a])]),
            annotated(
                "slow",
                &[("proxy-read-timeout", "1")],
                &[("slow.example.com", "Prefix", "/", "web")]
            ),
            annotated(
                "small",
                &[("proxy-body-size", "1k")],
                &[("small.example.com", "Prefix", "/", "web")]
            ),
        ),
    )])
    .await;
    // The pod answers after 4 s; the route waits 1 s for it.
    let started = std::time::Instant::now();
    let r = send(&gw, "slow.example.com", "/?delay_ms=4000", &[]).await;
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(3900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        echo_of(send(&gw, "slow.example.com", "/?delay_ms=10", &[]).await)
            .await
            .pod,
        "a"
    );
    let post = |n: usize| {
        gw.client
            .post(format!("http://{}/up", gw.http))
            .header("host", "small.example.com")
            .body(vec![b'x'; n])
            .send()
    };
    assert_eq!(post(2048).await.unwrap().status(), 413);
    let ok = post(1024).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(echo_of(ok).await.body_len, 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_backend_serves_while_the_service_has_no_endpoints_and_service_upstream_uses_the_cluster_ip(
) {
    let errors = pod("errors").await;
    let direct = pod("direct").await;
    let svc_ip = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: vip\n  namespace: ann\nspec:\n  clusterIP: 127.0.0.1\n  ports:\n  - name: http\n    port: {}\n",
        direct.port()
    );
    let gw = Gateway::start(&[(
        "site.yaml",
        format!(
            "{}{}{svc_ip}{}{}",
            services(&[("errors", &[errors])]),
            service("ann", "empty", &[("http", 80)]),
            annotated(
                "fb",
                &[("default-backend", "errors")],
                &[("fb.example.com", "Prefix", "/", "empty")]
            ),
            annotated(
                "vip",
                &[("service-upstream", "true")],
                &[("vip.example.com", "Prefix", "/", "vip")]
            ),
        ),
    )])
    .await;
    let e = echo_of(send(&gw, "fb.example.com", "/x?y=1", &[]).await).await;
    assert_eq!(e.pod, "errors");
    assert_eq!(e.headers["x-code"], "503");
    assert_eq!(e.headers["x-original-uri"], "/x?y=1");
    assert_eq!(
        (
            e.headers["x-namespace"].as_str(),
            e.headers["x-ingress-name"].as_str(),
            e.headers["x-service-name"].as_str()
        ),
        ("ann", "fb", "empty")
    );
    // No EndpointSlice for `vip`: the ClusterIP (here 127.0.0.1:<pod port>) is the endpoint.
    assert_eq!(gw.who("vip.example.com", "/").await, "direct");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_update_keeps_the_last_good_version_serving() {
    let a = pod("a").await;
    let b = pod("b").await;
    let gw = Gateway::start(&[
        ("svc.yaml", services(&[("web", &[a]), ("next", &[b])])),
        (
            "ing.yaml",
            annotated(
                "web",
                &[("proxy-body-size", "8k")],
                &[("g.example.com", "Prefix", "/", "web")],
            ),
        ),
    ])
    .await;
    assert_eq!(gw.who("g.example.com", "/").await, "a");
    // The update moves to `next` but carries a redirect URL ingress-nginx refuses.
    gw.write(
        "ing.yaml",
        &annotated(
            "web",
            &[("permanent-redirect", "https://x.example.com/$request_uri")],
            &[("g.example.com", "Prefix", "/", "next")],
        ),
    );
    eventually("the refusal is logged", || async {
        gw.stderr()
            .contains("last good version keeps serving")
            .then_some(())
    })
    .await;
    assert_eq!(gw.who("g.example.com", "/").await, "a");
    assert!(
        gw.stderr().contains("permanent-redirect"),
        "{}",
        gw.stderr()
    );
    // Fixed: the new version serves.
    gw.write(
        "ing.yaml",
        &annotated("web", &[], &[("g.example.com", "Prefix", "/", "next")]),
    );
    gw.wait_for("g.example.com", "/", "b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_http_errors_are_answered_by_the_error_backend() {
    let a = pod("a").await;
    let errors = pod("errors").await;
    let gw = Gateway::start(&[(
        "site.yaml",
        format!(
            "{}{}",
            services(&[("web", &[a]), ("errors", &[errors])]),
            annotated(
                "errs",
                &[
                    ("custom-http-errors", "404,503"),
                    ("default-backend", "errors")
                ],
                &[("e.example.com", "Prefix", "/", "web")],
            ),
        ),
    )])
    .await;
    for code in ["404", "503"] {
        let path = format!("/missing?status={code}");
        let r = send(
            &gw,
            "e.example.com",
            &path,
            &[("accept", "text/html"), ("x-request-id", "req-1")],
        )
        .await;
        assert_eq!(r.headers()["x-request-id"], "req-1");
        let e = echo_of(r).await;
        assert_eq!(e.pod, "errors", "{code}");
        assert_eq!(
            (e.method.as_str(), e.path.as_str(), e.query.as_str()),
            ("GET", "/", "")
        );
        let h = |k: &str| e.headers.get(k).map(String::as_str);
        assert_eq!(h("x-code"), Some(code));
        assert_eq!(h("x-format"), Some("text/html"));
        assert_eq!(h("x-original-uri"), Some(path.as_str()));
        assert_eq!(h("x-namespace"), Some("ann"));
        assert_eq!(h("x-ingress-name"), Some("errs"));
        assert_eq!(h("x-service-name"), Some("web"));
        assert_eq!(h("x-service-port"), Some("80"));
        assert_eq!(h("x-request-id"), Some("req-1"));
    }
    // A status that is not listed is the pod's own answer; and the gateway keeps serving.
    let r = send(&gw, "e.example.com", "/x?status=500", &[]).await;
    assert_eq!(r.status(), 500);
    assert_eq!(echo_of_any(r).await.pod, "a");
    assert_eq!(
        echo_of(send(&gw, "e.example.com", "/ok", &[]).await)
            .await
            .pod,
        "a"
    );
}

async fn echo_of_any(r: reqwest::Response) -> Echo {
    let body = r.text().await.unwrap();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not an echo: {e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_upstream_tries_bound_the_retries_on_a_dead_endpoint() {
    let a = pod("a").await;
    // An endpoint that refuses connections: a port that was free a moment ago.
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::start(&[(
        "site.yaml",
        format!(
            "{}{}{}",
            services(&[("web", &[a, dead])]),
            annotated("retry", &[], &[("r.example.com", "Prefix", "/", "web")]),
            annotated(
                "once",
                &[("proxy-next-upstream-tries", "1")],
                &[("once.example.com", "Prefix", "/", "web")],
            ),
        ),
    )])
    .await;
    // Default (error timeout, 3 tries): the dead endpoint is retried on the live one.
    for _ in 0..12 {
        assert_eq!(gw.who("r.example.com", "/").await, "a");
    }
    // One try: round robin sends some requests to the dead endpoint, which fail (502).
    let mut failed = 0;
    for _ in 0..12 {
        match gw.who("once.example.com", "/").await.as_str() {
            "a" => {}
            "502" => failed += 1,
            other => panic!("unexpected answer {other}"),
        }
    }
    assert!(
        failed > 0,
        "with one try, requests to the dead endpoint fail"
    );
}

/// A pod that answers every request with 503.
async fn failing_pod() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc =
                hyper::service::service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                    let mut r = hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"down"),
                    ));
                    *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                    Ok::<_, std::convert::Infallible>(r)
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_upstream_on_a_status_retries_another_endpoint() {
    let good = pod("good").await;
    let bad = failing_pod().await;
    let gw = Gateway::start(&[(
        "site.yaml",
        format!(
            "{}{}{}",
            services(&[("web", &[good, bad])]),
            annotated(
                "retry503",
                &[("proxy-next-upstream", "error timeout http_503")],
                &[("s.example.com", "Prefix", "/", "web")],
            ),
            annotated("plain", &[], &[("p.example.com", "Prefix", "/", "web")]),
        ),
    )])
    .await;
    for _ in 0..12 {
        assert_eq!(gw.who("s.example.com", "/").await, "good");
    }
    // Not retried by default: the 503 of the failing pod reaches the client.
    let mut seen_503 = 0;
    for _ in 0..12 {
        if gw.who("p.example.com", "/").await == "503" {
            seen_503 += 1;
        }
    }
    assert!(seen_503 > 0);
    // A POST is not retried unless non_idempotent is listed.
    let post = gw
        .client
        .post(format!("http://{}/", gw.http))
        .header("host", "s.example.com");
    let mut codes = std::collections::BTreeSet::new();
    for _ in 0..12 {
        codes.insert(
            post.try_clone()
                .unwrap()
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(codes.contains(&503), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_affinity_cookie_keeps_a_client_on_the_canary_or_the_main_backend() {
    let main = [pod("main-1").await, pod("main-2").await];
    let canary = [pod("canary-1").await, pod("canary-2").await];
    let gw = Gateway::start(&[(
        "site.yaml",
        format!(
            "{}{}{}",
            services(&[("main", &main), ("canary", &canary)]),
            annotated(
                "main",
                &[("affinity", "cookie")],
                &[("k.example.com", "Prefix", "/", "main")]
            ),
            annotated(
                "canary",
                &[("canary", "true"), ("canary-weight", "50")],
                &[("k.example.com", "Prefix", "/", "canary")],
            ),
        ),
    )])
    .await;
    let mut sides = std::collections::BTreeSet::new();
    // 20 new clients: all on one side at weight 50 has probability 2 in a million.
    for _ in 0..20 {
        let r = send(&gw, "k.example.com", "/", &[]).await;
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        let first = echo_of(r).await.pod;
        assert_eq!(
            first.starts_with("canary"),
            cookie.ends_with("~c"),
            "{first}: {cookie}"
        );
        sides.insert(first.starts_with("canary"));
        for _ in 0..10 {
            assert_eq!(
                echo_of(send(&gw, "k.example.com", "/", &[("cookie", &cookie)]).await)
                    .await
                    .pod,
                first
            );
        }
    }
    assert_eq!(
        sides.len(),
        2,
        "at weight 50, 12 new clients land on both sides"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_http_errors_use_the_global_default_backend_without_the_annotation() {
    let a = pod("a").await;
    let errors = pod("global-errors").await;
    let gw = Gateway::start_with(
        &[(
            "site.yaml",
            format!(
                "{}{}",
                services(&[("web", &[a]), ("errors", &[errors])]),
                annotated(
                    "errs",
                    &[("custom-http-errors", "404")],
                    &[("g.example.com", "Prefix", "/", "web")]
                ),
            ),
        )],
        "  default_backend: {service: ann/errors, port: 80}\n",
    )
    .await;
    let e = echo_of(send(&gw, "g.example.com", "/nope?status=404", &[]).await).await;
    assert_eq!(e.pod, "global-errors");
    assert_eq!(e.headers["x-code"], "404");
    assert_eq!(e.headers["x-ingress-name"], "errs");
    // Unmatched hosts still go to the global default backend as before.
    assert_eq!(gw.who("other.example.com", "/").await, "global-errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_error_backend_leaves_the_pods_status() {
    let a = pod("a").await;
    let gw = Gateway::start(&[(
        "site.yaml",
        format!(
            "{}{}{}",
            services(&[("web", &[a])]),
            service("ann", "errors", &[("http", 80)]),
            annotated(
                "errs",
                &[("custom-http-errors", "404"), ("default-backend", "errors")],
                &[("u.example.com", "Prefix", "/", "web")],
            ),
        ),
    )])
    .await;
    // The error backend has no endpoints: the client gets the pod's status from pingress,
    // on a connection it is told not to reuse; the next request is served normally.
    for _ in 0..3 {
        let r = send(&gw, "u.example.com", "/gone?status=404", &[]).await;
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.headers().get("connection").map(|v| v.to_str().unwrap()),
            Some("close")
        );
        assert_eq!(
            echo_of(send(&gw, "u.example.com", "/ok", &[]).await)
                .await
                .pod,
            "a"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippet_header_directives_apply_and_anything_else_ignores_the_snippet() {
    let a = pod("a").await;
    let snippet = "more_set_headers \"X-Frame-Options: DENY\" 'X-Served-Host: $host';\nmore_clear_headers X-Pod;\nadd_header X-Only-Ok yes;\nadd_header X-Always yes always;\nproxy_set_header X-Client $remote_addr;\nproxy_set_header X-Secret \"\";\n";
    let gw = Gateway::start(&[(
        "site.yaml",
        format!(
            "{}{}{}",
            services(&[("web", &[a])]),
            annotated(
                "sn",
                &[("configuration-snippet", snippet)],
                &[("sn.example.com", "Prefix", "/", "web")]
            ),
            annotated(
                "bad",
                &[(
                    "configuration-snippet",
                    "more_set_headers \"X-A: 1\";\nlua_code_cache off;"
                )],
                &[("bad.example.com", "Prefix", "/", "web")]
            ),
        ),
    )])
    .await;
    gw.wait_for("sn.example.com", "/", "a").await;
    let r = send(&gw, "sn.example.com", "/", &[("x-secret", "s3")]).await;
    let h = r.headers().clone();
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-served-host"], "sn.example.com");
    assert_eq!(h["x-only-ok"], "yes");
    assert_eq!(h["x-always"], "yes");
    assert!(!h.contains_key("x-pod"), "more_clear_headers");
    let e = echo_of(r).await;
    assert_eq!(e.headers["x-client"], "127.0.0.1");
    assert!(
        !e.headers.contains_key("x-secret"),
        "proxy_set_header \"\" removes it"
    );
    // add_header without `always` is for 2xx/3xx only.
    let r = send(&gw, "sn.example.com", "/?status=404", &[]).await;
    assert_eq!(r.status(), 404);
    assert!(!r.headers().contains_key("x-only-ok"));
    assert_eq!(r.headers()["x-always"], "yes");
    // A snippet with an unsupported directive is ignored as a whole, with a diagnostic
    // quoting it.
    let r = send(&gw, "bad.example.com", "/", &[]).await;
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("x-a"));
    let log = eventually("the diagnostic quotes the directive", || async {
        let e = gw.stderr();
        e.contains("`lua_code_cache off;`").then_some(e)
    })
    .await;
    assert!(log.contains("configuration-snippet"), "{log}");
}
