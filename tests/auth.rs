//! Basic auth end to end: real htpasswd hashes (made by openssl and glibc's crypt), 401
//! challenges, credentials kept from the pod, fail-closed Secrets, and, in-cluster, a watch
//! on exactly the Secrets the Ingresses name.

use crate::support;

use std::fmt::Write as _;
use std::net::SocketAddr;

use base64::Engine as _;
use support::fake_api::FakeApi;
use support::*;

// `openssl passwd -apr1 -salt lZL6V/ci password`, glibc crypt(3) bcrypt, and
// `printf password | openssl dgst -sha1 -binary | base64`.
const APR1: &str = "$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00";
const BCRYPT: &str = "$2y$05$abcdefghijklmnopqrstuulXbhLU5N9MDcFlG1r2Raysvz.c5v0j2"; // s3cret!
const SHA: &str = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// An Opaque Secret with `data` (key -> text).
fn opaque(ns: &str, name: &str, data: &[(&str, &str)]) -> String {
    let mut s = format!("---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\ntype: Opaque\ndata:\n");
    for (k, v) in data {
        writeln!(s, "  {k}: {}", b64(v)).unwrap();
    }
    s
}

fn ing(ns: &str, name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    let mut s = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations:\n"
    );
    for (k, v) in annotations {
        writeln!(s, "    nginx.ingress.kubernetes.io/{k}: {v:?}").unwrap();
    }
    if annotations.is_empty() {
        s.push_str("    {}\n");
    }
    writeln!(
        s,
        "spec:\n  ingressClassName: pingress\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service: {{name: web, port: {{name: http}}}}"
    )
    .unwrap();
    s
}

fn web(ns: &str, pods: &[SocketAddr]) -> String {
    format!(
        "{}{}",
        service(ns, "web", &[("http", 80)]),
        slices(ns, "web", "http", pods)
    )
}

async fn get_as(
    gw: &Gateway,
    host: &str,
    cred: Option<(&str, &str)>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut rb = gw
        .client
        .get(format!("http://{}/", gw.http))
        .header("host", host);
    if let Some((u, p)) = cred {
        rb = rb.basic_auth(u, Some(p));
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_users_get_in_others_get_401_and_the_pod_never_sees_credentials() {
    let pod_addr = pod("web").await;
    let file =
        format!("alice:{APR1}\nbob:{BCRYPT}\n# a comment\ncarol:{SHA}\nmallory:md5-unknown\n");
    let m = format!(
        "{CLASS}{}{}{}{}{}",
        web("au", &[pod_addr]),
        opaque("au", "users", &[("auth", &file)]),
        opaque("au", "map", &[("dave", "{PLAIN}dave-pw")]),
        ing(
            "au",
            "file",
            "file.example.com",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "users"),
                ("auth-realm", "Staff only")
            ]
        ),
        ing(
            "au",
            "map",
            "map.example.com",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "au/map"),
                ("auth-secret-type", "auth-map")
            ]
        ),
    );
    let gw = Gateway::start(&[("all.yaml", m)]).await;
    eventually("basic auth is in force", || async {
        (get_as(&gw, "file.example.com", None).await.0 == 401).then_some(())
    })
    .await;
    let (_, h, _) = get_as(&gw, "file.example.com", None).await;
    assert_eq!(h["www-authenticate"], "Basic realm=\"Staff only\"");
    // The first use of a bcrypt credential by many requests at once: one check, every
    // request answered by its verdict.
    let gwr = &gw;
    let burst: Vec<_> = (0..20)
        .map(|i| {
            let pw = if i % 4 == 3 { "wrong" } else { "s3cret!" };
            async move {
                (
                    pw,
                    get_as(gwr, "file.example.com", Some(("bob", pw))).await.0,
                )
            }
        })
        .collect();
    for (pw, status) in futures_util::future::join_all(burst).await {
        assert_eq!(status, if pw == "wrong" { 401 } else { 200 }, "bob:{pw}");
    }
    for (user, pw) in [
        ("alice", "password"),
        ("bob", "s3cret!"),
        ("carol", "password"),
    ] {
        // Twice: the second is answered from the verified-credentials cache.
        for _ in 0..2 {
            let (status, _, body) = get_as(&gw, "file.example.com", Some((user, pw))).await;
            assert_eq!(status, 200, "{user}: {body}");
            let e: Echo = serde_json::from_str(&body).unwrap();
            assert!(
                !e.headers.contains_key("authorization"),
                "credentials reached the pod"
            );
        }
    }
    for (user, pw) in [
        ("alice", "Password"),
        ("bob", "password"),
        ("nobody", "password"),
        ("mallory", "md5-unknown"),
    ] {
        let (status, h, _) = get_as(&gw, "file.example.com", Some((user, pw))).await;
        assert_eq!(status, 401, "{user}:{pw}");
        assert!(h.contains_key("www-authenticate"));
    }
    // A malformed Authorization header is a 401 too.
    let r = gw
        .client
        .get(format!("http://{}/", gw.http))
        .header("host", "file.example.com")
        .header("authorization", "Basic !!!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // auth-map, with the default (empty) realm.
    let (status, h, _) = get_as(&gw, "map.example.com", None).await;
    assert_eq!(
        (status, h["www-authenticate"].to_str().unwrap()),
        (401, "Basic realm=\"\"")
    );
    assert_eq!(
        get_as(&gw, "map.example.com", Some(("dave", "dave-pw")))
            .await
            .0,
        200
    );
    // The unusable line is reported, naming the Secret and the user.
    let log = eventually("the bad htpasswd line is reported", || async {
        let e = gw.stderr();
        e.contains("mallory").then_some(e)
    })
    .await;
    assert!(log.contains("au/users"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unusable_auth_secret_closes_the_route_with_503() {
    let pod_addr = pod("web").await;
    let m = format!(
        "{CLASS}{}{}{}{}{}{}",
        web("au", &[pod_addr]),
        opaque("au", "nokey", &[("users", "alice:{PLAIN}x")]),
        ing(
            "au",
            "missing",
            "missing.example.com",
            &[("auth-type", "basic"), ("auth-secret", "nosuch")]
        ),
        ing(
            "au",
            "nokey",
            "nokey.example.com",
            &[("auth-type", "basic"), ("auth-secret", "nokey")]
        ),
        ing(
            "au",
            "digest",
            "digest.example.com",
            &[("auth-type", "digest"), ("auth-secret", "nokey")]
        ),
        ing("au", "open", "open.example.com", &[]),
    );
    let gw = Gateway::start(&[("all.yaml", m)]).await;
    gw.wait_for("open.example.com", "/", "web").await;
    for host in [
        "missing.example.com",
        "nokey.example.com",
        "digest.example.com",
    ] {
        let (status, _, body) = get_as(&gw, host, Some(("alice", "x"))).await;
        assert_eq!(status, 503, "{host}: {body}");
    }
    let log = eventually("each is reported", || async {
        let e = gw.stderr();
        (e.contains("au/nosuch not found") && e.contains("no key `auth`") && e.contains("digest"))
            .then_some(e)
    })
    .await;
    assert!(log.contains("auth_secret"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_only_the_named_auth_secrets_are_watched_and_changes_apply_live() {
    let api = FakeApi::start().await;
    let pod_addr = pod("web").await;
    api.apply_yaml(&format!(
        "{CLASS}{}{}{}{}",
        web("shop", &[pod_addr]),
        opaque("shop", "users", &[("auth", &format!("alice:{APR1}\n"))]),
        opaque("shop", "unrelated", &[("password", "not for us")]),
        ing(
            "shop",
            "admin",
            "admin.example.com",
            &[("auth-type", "basic"), ("auth-secret", "users")]
        ),
    ));
    // A client-certificate CA is watched the same way.
    api.apply_yaml(&ing(
        "shop",
        "mtls",
        "mtls.example.com",
        &[("auth-tls-secret", "shop/client-ca")],
    ));
    // Another controller's Ingress: the Secret it names is none of ours to read.
    api.apply_yaml(
        &ing(
            "shop",
            "theirs",
            "theirs.example.com",
            &[("auth-type", "basic"), ("auth-secret", "unrelated")],
        )
        .replace("ingressClassName: pingress", "ingressClassName: other"),
    );
    let gw = Gateway::start_kube(&api, "t", "").await;
    eventually("alice gets in", || async {
        (get_as(&gw, "admin.example.com", Some(("alice", "password")))
            .await
            .0
            == 200)
            .then_some(())
    })
    .await;
    // Secrets were asked for by TLS type, or by the names; never all of them.
    let secret_reqs: Vec<_> = eventually("the CA Secret is watched by name", || async {
        let reqs: Vec<_> = api
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/secrets"))
            .collect();
        reqs.iter()
            .any(|r| r.query.contains("metadata.name%3Dclient-ca"))
            .then_some(reqs)
    })
    .await;
    assert!(
        secret_reqs
            .iter()
            .any(|r| r.path == "/api/v1/namespaces/shop/secrets"
                && r.query.contains("metadata.name%3Dusers")),
        "{secret_reqs:?}"
    );
    for r in &secret_reqs {
        assert!(
            r.query.contains("type%3Dkubernetes.io")
                || r.query.contains("metadata.name%3Dusers")
                || r.query.contains("metadata.name%3Dclient-ca"),
            "an unfiltered Secret request: {r:?}"
        );
    }
    // A password change applies without a restart.
    api.apply_yaml(&opaque(
        "shop",
        "users",
        &[("auth", "alice:{PLAIN}new-pw\n")],
    ));
    eventually("the new password works", || async {
        (get_as(&gw, "admin.example.com", Some(("alice", "new-pw")))
            .await
            .0
            == 200)
            .then_some(())
    })
    .await;
    assert_eq!(
        get_as(&gw, "admin.example.com", Some(("alice", "password")))
            .await
            .0,
        401
    );
    // The Secret deleted: closed (503), never open.
    api.delete("Secret", "shop", "users");
    eventually("the route closes", || async {
        (get_as(&gw, "admin.example.com", Some(("alice", "new-pw")))
            .await
            .0
            == 503)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_before_auth_and_allowed_origins_get_headers_on_every_answer()
{
    let pod_addr = pod("web").await;
    let m = format!(
        "{CLASS}{}{}{}{}",
        web("co", &[pod_addr]),
        opaque("co", "users", &[("auth", "alice:{PLAIN}pw\n")]),
        ing(
            "co",
            "api",
            "api.example.com",
            &[
                ("enable-cors", "true"),
                (
                    "cors-allow-origin",
                    "https://app.example.com, https://*.example.org"
                ),
                ("cors-expose-headers", "X-Total"),
                ("cors-max-age", "600"),
                ("auth-type", "basic"),
                ("auth-secret", "users"),
            ]
        ),
        ing(
            "co",
            "any",
            "any.example.com",
            &[("enable-cors", "true"), ("cors-allow-credentials", "false")]
        ),
    );
    let gw = Gateway::start(&[("all.yaml", m)]).await;
    let send =
        |host: &'static str, method: reqwest::Method, origin: Option<&'static str>, auth: bool| {
            let gw = &gw;
            async move {
                let mut rb = gw
                    .client
                    .request(method, format!("http://{}/", gw.http))
                    .header("host", host);
                if let Some(o) = origin {
                    rb = rb.header("origin", o);
                }
                if auth {
                    rb = rb.basic_auth("alice", Some("pw"));
                }
                let r = rb.send().await.unwrap();
                let status = r.status().as_u16();
                let h = r.headers().clone();
                (status, h, r.text().await.unwrap_or_default())
            }
        };
    eventually("the route is in force", || async {
        (send("api.example.com", reqwest::Method::GET, None, false)
            .await
            .0
            == 401)
            .then_some(())
    })
    .await;
    // A preflight from an allowed origin: 204 here, no credentials needed.
    let (status, h, _) = send(
        "api.example.com",
        reqwest::Method::OPTIONS,
        Some("https://app.example.com"),
        false,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(
        h["access-control-allow-methods"],
        "GET, PUT, POST, DELETE, PATCH, OPTIONS"
    );
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["content-length"], "0");
    // The actual request still needs credentials; the 401 carries CORS headers so the
    // browser can show it, and so does the pod's answer.
    let (status, h, _) = send(
        "api.example.com",
        reqwest::Method::GET,
        Some("https://a.example.org"),
        false,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(h["access-control-allow-origin"], "https://a.example.org");
    let (status, h, _) = send(
        "api.example.com",
        reqwest::Method::GET,
        Some("https://a.example.org"),
        true,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["access-control-expose-headers"], "X-Total");
    // Another origin: no CORS headers, and its OPTIONS is not a preflight (auth applies).
    let (status, h, _) = send(
        "api.example.com",
        reqwest::Method::OPTIONS,
        Some("https://evil.test"),
        false,
    )
    .await;
    assert_eq!(status, 401);
    assert!(!h.contains_key("access-control-allow-origin"));
    let (status, h, _) = send(
        "api.example.com",
        reqwest::Method::GET,
        Some("https://app.example.com.evil.test"),
        true,
    )
    .await;
    assert_eq!(status, 200);
    assert!(!h.contains_key("access-control-allow-origin"));
    // `*` (the default): every request, without credentials when told so.
    let (status, h, _) = send("any.example.com", reqwest::Method::OPTIONS, None, false).await;
    assert_eq!(status, 204);
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(!h.contains_key("access-control-allow-credentials"));
}

/// What the test's auth service received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: http::HeaderMap,
    body_len: usize,
}

/// An auth service that records every request and answers by its `x-token` header:
/// `good` 200 (with X-Auth-User and a cookie), `anon` 200 without X-Auth-User, `forbid`
/// 403, `broken` 502, `slow` after 30 s; anything else 401 with a Bearer challenge.
async fn auth_service() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes().len())
                            .unwrap_or(0);
                        log.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            uri: parts.uri.to_string(),
                            headers: parts.headers.clone(),
                            body_len: body,
                        });
                        let token = parts
                            .headers
                            .get("x-token")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        let mut r = hyper::Response::builder();
                        r = match token {
                            "good" => r
                                .status(200)
                                .header("x-auth-user", "alice")
                                .header("set-cookie", "session=1; Path=/"),
                            "anon" => r.status(200),
                            "forbid" => r.status(403),
                            "broken" => r.status(502),
                            "slow" => {
                                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                                r.status(200)
                            }
                            _ => r
                                .status(401)
                                .header("www-authenticate", "Bearer realm=\"test\""),
                        };
                        Ok::<_, std::convert::Infallible>(
                            r.body(Full::new(bytes::Bytes::from_static(b"auth")))
                                .unwrap(),
                        )
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    (addr, seen)
}

async fn call(
    gw: &Gateway,
    method: reqwest::Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut rb = gw
        .client
        .request(method, format!("http://{}{path}", gw.http))
        .header("host", host)
        .body("client body");
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    let h = r.headers().clone();
    (s, h, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_auth_sends_ingress_nginx_sub_requests_and_follows_the_answer() {
    let pod_addr = pod("web").await;
    let (auth, seen) = auth_service().await;
    let url = format!("http://{auth}/check?x=1");
    let m = format!(
        "{CLASS}{}{}{}{}{}{}",
        web("ex", &[pod_addr]),
        ing(
            "ex",
            "ext",
            "ext.example.com",
            &[
                ("auth-url", &url),
                ("auth-response-headers", "X-Auth-User"),
                ("proxy-read-timeout", "2")
            ]
        ),
        ing(
            "ex",
            "signin",
            "signin.example.com",
            &[
                ("auth-url", &url),
                ("auth-signin", "https://login.example.com/start")
            ]
        ),
        ing(
            "ex",
            "cached",
            "cached.example.com",
            &[
                ("auth-url", &url),
                ("auth-cache-key", "$http_x_token"),
                ("auth-cache-duration", "200 10m"),
                ("auth-method", "POST")
            ]
        ),
        ing(
            "ex",
            "down",
            "down.example.com",
            &[("auth-url", "http://127.0.0.1:1/check")]
        ),
        ing(
            "ex",
            "badurl",
            "badurl.example.com",
            &[("auth-url", "/check")]
        ),
    );
    let gw = Gateway::start(&[("all.yaml", m)]).await;
    eventually("external auth is in force", || async {
        (call(&gw, reqwest::Method::GET, "ext.example.com", "/", &[])
            .await
            .0
            == 401)
            .then_some(())
    })
    .await;
    seen.lock().unwrap().clear();

    // A pass: the pod gets the request with the auth service's X-Auth-User (the client's
    // own is replaced), the client gets the auth cookie.
    let (status, h, body) = call(
        &gw,
        reqwest::Method::POST,
        "ext.example.com",
        "/some/path?q=1",
        &[
            ("x-token", "good"),
            ("x-auth-user", "mallory"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "rid-7"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let e: Echo = serde_json::from_str(&body).unwrap();
    assert_eq!(e.headers["x-auth-user"], "alice");
    assert_eq!(e.method, "POST");
    assert_eq!(e.body_len, "client body".len());
    assert_eq!(h["set-cookie"], "session=1; Path=/");
    // What the auth service received.
    let s = seen.lock().unwrap().pop().expect("a sub-request");
    assert_eq!(s.method, "GET");
    assert_eq!(s.uri, "/check?x=1");
    assert_eq!(s.body_len, 0);
    let hv = |n: &str| s.headers.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(hv("host"), Some(auth.to_string()));
    assert_eq!(
        hv("x-original-url").as_deref(),
        Some("http://ext.example.com/some/path?q=1")
    );
    assert_eq!(hv("x-original-method").as_deref(), Some("POST"));
    assert_eq!(
        hv("x-sent-from").as_deref(),
        Some("nginx-ingress-controller")
    );
    assert_eq!(hv("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(hv("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        hv("x-auth-request-redirect").as_deref(),
        Some("/some/path?q=1")
    );
    assert_eq!(hv("x-request-id").as_deref(), Some("rid-7"));
    assert_eq!(
        hv("x-token").as_deref(),
        Some("good"),
        "client headers are passed"
    );
    assert_eq!(hv("x-forwarded-proto"), None);
    assert_eq!(hv("content-length"), None);
    assert_eq!(hv("x-original-uri"), None, "only with auth-method");

    // A pass without the header: the client's spoofed one does not reach the pod.
    let (_, _, body) = call(
        &gw,
        reqwest::Method::GET,
        "ext.example.com",
        "/",
        &[("x-token", "anon"), ("x-auth-user", "mallory")],
    )
    .await;
    let e: Echo = serde_json::from_str(&body).unwrap();
    assert!(!e.headers.contains_key("x-auth-user"), "{:?}", e.headers);

    // 401 with the service's challenge, 403, anything else 500, a timeout 500.
    let (status, h, _) = call(&gw, reqwest::Method::GET, "ext.example.com", "/", &[]).await;
    assert_eq!(
        (status, h["www-authenticate"].to_str().unwrap()),
        (401, "Bearer realm=\"test\"")
    );
    assert_eq!(
        call(
            &gw,
            reqwest::Method::GET,
            "ext.example.com",
            "/",
            &[("x-token", "forbid")]
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(
            &gw,
            reqwest::Method::GET,
            "ext.example.com",
            "/",
            &[("x-token", "broken")]
        )
        .await
        .0,
        500
    );
    assert_eq!(
        call(
            &gw,
            reqwest::Method::GET,
            "ext.example.com",
            "/",
            &[("x-token", "slow")]
        )
        .await
        .0,
        500
    );
    assert_eq!(
        call(&gw, reqwest::Method::GET, "down.example.com", "/", &[])
            .await
            .0,
        500
    );
    // No scheme and host: closed.
    assert_eq!(
        call(&gw, reqwest::Method::GET, "badurl.example.com", "/", &[])
            .await
            .0,
        503
    );

    // auth-signin: a 401 becomes a redirect with the way back.
    let (status, h, _) = call(
        &gw,
        reqwest::Method::GET,
        "signin.example.com",
        "/app?x=1",
        &[],
    )
    .await;
    assert_eq!(status, 302);
    assert_eq!(
        h["location"],
        "https://login.example.com/start?rd=http://signin.example.com%2Fapp%3Fx%3D1"
    );

    // auth-cache-key: the second request with the same key is not asked again; with
    // auth-method the extra headers are sent.
    seen.lock().unwrap().clear();
    for _ in 0..3 {
        assert_eq!(
            call(
                &gw,
                reqwest::Method::GET,
                "cached.example.com",
                "/",
                &[("x-token", "good")]
            )
            .await
            .0,
            200
        );
    }
    let asked = seen.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].method, "POST");
    assert_eq!(asked[0].headers["x-original-uri"], "/");
    assert_eq!(asked[0].headers["x-scheme"], "http");
    // A refusal is not cached (only 200 was listed).
    for _ in 0..2 {
        assert_eq!(
            call(
                &gw,
                reqwest::Method::GET,
                "cached.example.com",
                "/",
                &[("x-token", "nope")]
            )
            .await
            .0,
            401
        );
    }
    assert_eq!(seen.lock().unwrap().len(), 3);
}
