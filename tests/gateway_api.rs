//! Gateway API end to end: the real gateway on a manifests directory holding a GatewayClass,
//! Gateways and HTTPRoutes, echo pods on 127.0.0.1, and a real HTTP client. These restate
//! the expectations of the upstream GATEWAY-HTTP conformance tests (named in each test's
//! doc) as our own cases: what the client gets (status, pod, Location, headers) and what
//! the pod sees (path, Host, headers). A self-check, not a conformance report.

use crate::support;

use std::fmt::Write as _;
use std::net::SocketAddr;

use support::*;

const GATEWAY_CLASS: &str = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: pingress}\nspec: {controllerName: pingress.dev/gateway-controller}\n";

/// A Gateway `gw` in namespace `gw-ns` with an HTTP listener `http` on port 80 (routes from
/// all namespaces) plus `extra` listener YAML lines.
fn gateway(extra: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: gw-ns}}\nspec:\n  gatewayClassName: pingress\n  listeners:\n  - name: http\n    protocol: HTTP\n    port: 80\n    allowedRoutes: {{namespaces: {{from: All}}}}\n{extra}"
    )
}

/// An HTTPRoute `name` in `ns` attached to gw-ns/gw, with `spec` lines after parentRefs.
fn route(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: gw, namespace: gw-ns}}]\n{spec}"
    )
}

/// Services (port 8080 named `http`) with their pods, in `ns`.
fn backends(ns: &str, list: &[(&str, SocketAddr)]) -> String {
    let mut s = String::new();
    for (svc, pod) in list {
        s.push_str(&service(ns, svc, &[("http", 8080)]));
        s.push_str(&slices(ns, svc, "http", &[*pod]));
    }
    s
}

/// The admin listener's `/gateway-api/status` (None while it does not answer).
async fn gateway_status(gw: &Gateway) -> Option<String> {
    let url = format!("http://{}/gateway-api/status", gw.admin);
    reqwest::get(url).await.ok()?.text().await.ok()
}

/// A gateway serving one HTTPRoute `app/name` with `spec`, the pods as Services in `app`.
async fn serve_one_route(name: &str, spec: &str, pods: &[(&str, SocketAddr)]) -> Gateway {
    Gateway::start(&[(
        "gw.yaml",
        format!(
            "{GATEWAY_CLASS}{}{}{}",
            gateway(""),
            backends("app", pods),
            route("app", name, spec)
        ),
    )])
    .await
}

async fn send(
    gw: &Gateway,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut rb = gw
        .client
        .request(
            method.parse().unwrap(),
            format!("http://{}{}", gw.http, path),
        )
        .header("host", host);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

/// The pod that answered, or the status when not 200.
async fn who(
    gw: &Gateway,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let r = send(gw, method, host, path, headers).await;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    if status != 200 {
        return status.to_string();
    }
    serde_json::from_str::<Echo>(&body)
        .map(|e| e.pod)
        .unwrap_or(body)
}

async fn echo(gw: &Gateway, host: &str, path: &str, headers: &[(&str, &str)]) -> Echo {
    let r = send(gw, "GET", host, path, headers).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{host}{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// HTTPRouteSimpleSameNamespace, HTTPRouteExactPathMatching, HTTPRouteHeaderMatching,
/// HTTPRouteMatching, HTTPRouteMatchingAcrossRoutes, HTTPRouteQueryParamMatching,
/// HTTPRouteMethodMatching, HTTPRoutePathMatchOrder: matches and their precedence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_follow_the_gateway_api_precedence() {
    let (v1, v2, v3, v4) = (
        pod("v1").await,
        pod("v2").await,
        pod("v3").await,
        pod("v4").await,
    );
    let b = |s: &str| format!("    backendRefs: [{{name: {s}, port: 8080}}]\n");
    let m1 = route(
        "app",
        "matching",
        &format!(
            "  hostnames: [example.com]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n{}  - matches: [{{path: {{type: Exact, value: /exact}}}}]\n{}  - matches: [{{path: {{type: PathPrefix, value: /v2}}}}, {{headers: [{{name: version, value: two}}]}}]\n{}  - matches: [{{path: {{type: PathPrefix, value: /q}}, queryParams: [{{name: animal, value: whale}}]}}]\n{}",
            b("v1"), b("v2"), b("v2"), b("v3")
        ),
    );
    // A second route on the same host: a header-only match implies PathPrefix / and
    // beats the bare `/` of the older route; a method match beats a header count.
    let m2 = route(
        "app",
        "across",
        &format!(
            "  hostnames: [example.com]\n  rules:\n  - matches: [{{headers: [{{name: color, value: red}}]}}]\n{}  - matches: [{{path: {{value: /m}}, method: POST}}]\n{}  - matches: [{{path: {{value: /m}}, headers: [{{name: a, value: \"1\"}}, {{name: b, value: \"2\"}}]}}]\n{}  - matches: [{{path: {{type: RegularExpression, value: \"/re/[0-9]+\"}}}}]\n{}",
            b("v4"), b("v3"), b("v2"), b("v3")
        ),
    );
    let gw = Gateway::start(&[(
        "gw.yaml",
        format!(
            "{GATEWAY_CLASS}{}{}{m1}{m2}",
            gateway(""),
            backends("app", &[("v1", v1), ("v2", v2), ("v3", v3), ("v4", v4)])
        ),
    )])
    .await;
    eventually("the routes are served", || async {
        (who(&gw, "GET", "example.com", "/", &[]).await == "v1").then_some(())
    })
    .await;
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("GET", "/", &[], "v1"),
        ("GET", "/exact", &[], "v2"),
        // Exact is exact: a trailing slash falls back to the prefix.
        ("GET", "/exact/", &[], "v1"),
        ("GET", "/v2", &[], "v2"),
        ("GET", "/v2/deeper", &[], "v2"),
        // Whole elements only.
        ("GET", "/v2example", &[], "v1"),
        ("GET", "/anything", &[("version", "two")], "v2"),
        ("GET", "/q?animal=whale", &[], "v3"),
        ("GET", "/q?animal=dolphin", &[], "v1"),
        ("GET", "/q/x?x=1&animal=whale", &[], "v3"),
        ("GET", "/", &[("color", "red")], "v4"),
        ("GET", "/other", &[("Color", "red")], "v4"),
        ("GET", "/", &[("color", "blue")], "v1"),
        ("POST", "/m", &[("a", "1"), ("b", "2")], "v3"),
        ("GET", "/m", &[("a", "1"), ("b", "2")], "v2"),
        ("GET", "/m", &[("a", "1")], "v1"),
        ("GET", "/re/123", &[], "v3"),
        ("GET", "/re/12a", &[], "v1"),
        // Host header with a port still matches its hostname.
    ];
    for (method, path, headers, want) in cases {
        assert_eq!(
            who(&gw, method, "example.com", path, headers).await,
            *want,
            "{method} {path} {headers:?}"
        );
    }
    assert_eq!(
        who(&gw, "GET", "example.com:1234", "/exact", &[]).await,
        "v2"
    );
    // No route for another host: 404.
    assert_eq!(who(&gw, "GET", "other.com", "/", &[]).await, "404");
}

/// HTTPRouteHostnameIntersection and HTTPRouteListenerHostnameMatching: listener ∩ route
/// hostnames, wildcards spanning several labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostnames_are_the_intersection_of_listener_and_route() {
    let (a, b, c) = (pod("a").await, pod("b").await, pod("c").await);
    let extra = "  - name: specific\n    protocol: HTTP\n    port: 80\n    hostname: very.specific.com\n    allowedRoutes: {namespaces: {from: All}}\n  - name: wild\n    protocol: HTTP\n    port: 80\n    hostname: \"*.wildcard.io\"\n    allowedRoutes: {namespaces: {from: All}}\n";
    let at = |name: &str, section: &str, hosts: &str, svc: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: app}}\nspec:\n  parentRefs: [{{name: gw, namespace: gw-ns, sectionName: {section}}}]\n  hostnames: {hosts}\n  rules:\n  - backendRefs: [{{name: {svc}, port: 8080}}]\n"
        )
    };
    let files = format!(
        "{GATEWAY_CLASS}{}{}{}{}{}",
        gateway(extra),
        backends("app", &[("a", a), ("b", b), ("c", c)]),
        at("narrow", "specific", "[\"*.specific.com\"]", "a"),
        at(
            "deep",
            "wild",
            "[\"foo.bar.wildcard.io\", \"wildcard.io\", \"nomatch.com\"]",
            "b"
        ),
        at("none", "specific", "[\"nomatch.org\"]", "c"),
    );
    let gw = Gateway::start(&[("gw.yaml", files)]).await;
    eventually("the routes are served", || async {
        (who(&gw, "GET", "very.specific.com", "/", &[]).await == "a").then_some(())
    })
    .await;
    assert_eq!(who(&gw, "GET", "foo.specific.com", "/", &[]).await, "404");
    assert_eq!(who(&gw, "GET", "foo.bar.wildcard.io", "/", &[]).await, "b");
    assert_eq!(who(&gw, "GET", "wildcard.io", "/", &[]).await, "404");
    assert_eq!(who(&gw, "GET", "nomatch.com", "/", &[]).await, "404");
    assert_eq!(who(&gw, "GET", "nomatch.org", "/", &[]).await, "404");
    // The status says why the last route is not served.
    let check = pingress_ok(["check", "--manifests", gw.manifests().to_str().unwrap()]);
    assert!(
        check.contains("HTTPRoute app/none parent gw-ns/gw/specific: Accepted=False (NoMatchingListenerHostname)"),
        "{check}"
    );
    assert!(
        check.contains("HTTPRoute app/deep parent gw-ns/gw/wild: Accepted=True (Accepted)"),
        "{check}"
    );
}

/// HTTPRouteRequestHeaderModifier, HTTPRouteResponseHeaderModifier, HTTPRouteRewriteHost,
/// HTTPRouteRewritePath.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_modifiers_and_url_rewrites_reach_the_pod() {
    let a = pod("a").await;
    let b = |p: &str, filters: &str| {
        format!("  - matches: [{{path: {{type: PathPrefix, value: {p}}}}}]\n    filters:\n{filters}    backendRefs: [{{name: a, port: 8080}}]\n")
    };
    let spec = format!(
        "  hostnames: [mod.example]\n  rules:\n{}{}{}{}{}",
        b("/set", "    - type: RequestHeaderModifier\n      requestHeaderModifier:\n        set: [{name: X-Header-Set, value: set-overwrites-values}]\n        add: [{name: X-Header-Add, value: add-appends-values}]\n        remove: [X-Header-Remove]\n"),
        b("/resp", "    - type: ResponseHeaderModifier\n      responseHeaderModifier:\n        set: [{name: X-Header-Set, value: set-value}]\n        add: [{name: X-Header-Add, value: add-value}]\n        remove: [content-type]\n"),
        b("/prefix/one", "    - type: URLRewrite\n      urlRewrite:\n        hostname: rewritten.example\n        path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}\n"),
        b("/strip", "    - type: URLRewrite\n      urlRewrite:\n        path: {type: ReplacePrefixMatch, replacePrefixMatch: /}\n"),
        b("/full", "    - type: URLRewrite\n      urlRewrite:\n        path: {type: ReplaceFullPath, replaceFullPath: /one}\n"),
    );
    let gw = serve_one_route("mod", &spec, &[("a", a)]).await;
    eventually("the route is served", || async {
        (who(&gw, "GET", "mod.example", "/set", &[]).await == "a").then_some(())
    })
    .await;
    let e = echo(
        &gw,
        "mod.example",
        "/set",
        &[
            ("X-Header-Set", "some-other-value"),
            ("X-Header-Add", "some-other-value"),
            ("X-Header-Remove", "gone"),
        ],
    )
    .await;
    assert_eq!(
        e.headers.get("x-header-set").map(String::as_str),
        Some("set-overwrites-values")
    );
    assert_eq!(
        e.headers.get("x-header-add").map(String::as_str),
        Some("some-other-value, add-appends-values")
    );
    assert!(
        !e.headers.contains_key("x-header-remove"),
        "{:?}",
        e.headers
    );

    let r = send(&gw, "GET", "mod.example", "/resp", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("x-header-set").unwrap(), "set-value");
    assert_eq!(r.headers().get("x-header-add").unwrap(), "add-value");
    assert!(
        r.headers().get("content-type").is_none(),
        "{:?}",
        r.headers()
    );

    let e = echo(&gw, "mod.example", "/prefix/one/two?k=v", &[]).await;
    assert_eq!(e.path, "/one/two");
    assert_eq!(e.query, "k=v");
    assert_eq!(
        e.headers.get("host").map(String::as_str),
        Some("rewritten.example")
    );
    assert_eq!(
        echo(&gw, "mod.example", "/strip/x/y", &[]).await.path,
        "/x/y"
    );
    assert_eq!(echo(&gw, "mod.example", "/strip", &[]).await.path, "/");
    assert_eq!(
        echo(&gw, "mod.example", "/full/any/thing", &[]).await.path,
        "/one"
    );
}

/// HTTPRouteRedirectHostAndStatus, HTTPRouteRedirectScheme, HTTPRouteRedirectPort,
/// HTTPRouteRedirectPath, HTTPRoute303/307/308Redirect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_build_their_location_from_the_parts_given() {
    let r = |p: &str, redirect: &str| {
        format!("  - matches: [{{path: {{type: PathPrefix, value: {p}}}}}]\n    filters:\n    - type: RequestRedirect\n      requestRedirect: {redirect}\n")
    };
    let spec = format!(
        "  hostnames: [redir.example]\n  rules:\n{}{}{}{}{}{}",
        r("/host", "{hostname: example.org}"),
        r("/moved", "{hostname: example.org, statusCode: 301}"),
        r("/scheme", "{scheme: https}"),
        r("/port", "{port: 8083}"),
        r("/path", "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement}, statusCode: 308}"),
        r("/full", "{scheme: https, hostname: example.org, port: 8443, path: {type: ReplaceFullPath, replaceFullPath: /one}, statusCode: 307}"),
    );
    let gw = Gateway::start(&[(
        "gw.yaml",
        format!(
            "{GATEWAY_CLASS}{}{}",
            gateway(""),
            route("app", "redir", &spec)
        ),
    )])
    .await;
    let location = |path: &'static str| {
        let gw = &gw;
        async move {
            let r = send(gw, "GET", "redir.example", path, &[]).await;
            let loc = r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), loc.unwrap_or_default())
        }
    };
    eventually("the route is served", || async {
        (location("/host").await.0 == 302).then_some(())
    })
    .await;
    // The listener is port 80: the Location leaves the port out.
    assert_eq!(
        location("/host/a?x=1").await,
        (302, "http://example.org/host/a?x=1".into())
    );
    assert_eq!(
        location("/moved").await,
        (301, "http://example.org/moved".into())
    );
    assert_eq!(
        location("/scheme/s").await,
        (302, "https://redir.example/scheme/s".into())
    );
    assert_eq!(
        location("/port").await,
        (302, "http://redir.example:8083/port".into())
    );
    assert_eq!(
        location("/path/x").await,
        (308, "http://redir.example/replacement/x".into())
    );
    assert_eq!(
        location("/full/x").await,
        (307, "https://example.org:8443/one".into())
    );
}

/// HTTPRouteWeight, HTTPRouteNoBackendRefs, HTTPRouteInvalidNonExistentBackendRef,
/// HTTPRouteInvalidBackendRefUnknownKind, HTTPRouteInvalidCrossNamespaceBackendRef,
/// HTTPRouteReferenceGrant, HTTPRoutePartiallyInvalidViaInvalidReferenceGrant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic_and_invalid_refs_answer_500() {
    let (a, b, c, other) = (
        pod("a").await,
        pod("b").await,
        pod("c").await,
        pod("other").await,
    );
    let mut spec = String::from("  hostnames: [w.example]\n  rules:\n");
    let rule = |p: &str, refs: &str| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {p}}}}}]\n    backendRefs: {refs}\n"
        )
    };
    spec.push_str(&rule("/split", "[{name: a, port: 8080, weight: 70}, {name: b, port: 8080, weight: 30}, {name: c, port: 8080, weight: 0}]"));
    spec.push_str(&rule(
        "/half-invalid",
        "[{name: a, port: 8080}, {name: missing, port: 8080}]",
    ));
    spec.push_str(&rule(
        "/unknown-kind",
        "[{group: example.com, kind: Thing, name: a, port: 8080}]",
    ));
    spec.push_str(&rule(
        "/no-grant",
        "[{name: other, namespace: elsewhere, port: 8080}]",
    ));
    spec.push_str(&rule(
        "/granted",
        "[{name: other, namespace: granting, port: 8080}]",
    ));
    spec.push_str("  - matches: [{path: {type: PathPrefix, value: /none}}]\n");
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: granting}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: app}]\n  to: [{group: \"\", kind: Service}]\n";
    let files = format!(
        "{GATEWAY_CLASS}{}{}{}{}{grant}{}",
        gateway(""),
        backends("app", &[("a", a), ("b", b), ("c", c)]),
        backends("elsewhere", &[("other", other)]),
        backends("granting", &[("other", other)]),
        route("app", "weights", &spec),
    );
    let gw = Gateway::start(&[("gw.yaml", files)]).await;
    eventually("the route is served", || async {
        (who(&gw, "GET", "w.example", "/granted", &[]).await == "other").then_some(())
    })
    .await;
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..500 {
        *counts
            .entry(who(&gw, "GET", "w.example", "/split", &[]).await)
            .or_default() += 1;
    }
    let (na, nb) = (
        counts.get("a").copied().unwrap_or(0),
        counts.get("b").copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 500, "{counts:?}");
    // 70/30 within ±5 % of 500 requests, as the conformance test allows.
    assert!((325..=375).contains(&na), "{counts:?}");
    assert!(
        !counts.contains_key("c"),
        "weight 0 got traffic: {counts:?}"
    );
    let mut half = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..200 {
        *half
            .entry(who(&gw, "GET", "w.example", "/half-invalid", &[]).await)
            .or_default() += 1;
    }
    assert_eq!(
        half.keys().cloned().collect::<Vec<_>>(),
        ["500", "a"],
        "{half:?}"
    );
    for path in ["/unknown-kind", "/no-grant", "/none"] {
        assert_eq!(
            who(&gw, "GET", "w.example", path, &[]).await,
            "500",
            "{path}"
        );
    }
    let check = pingress_ok(["check", "--manifests", gw.manifests().to_str().unwrap()]);
    assert!(
        check.contains("HTTPRoute app/weights parent gw-ns/gw: ResolvedRefs=False"),
        "{check}"
    );
    // Revoking the grant cuts the access off.
    let files = std::fs::read_to_string(gw.manifests().join("gw.yaml")).unwrap();
    gw.write("gw.yaml", &files.replace(grant, ""));
    eventually("the revoked grant answers 500", || async {
        (who(&gw, "GET", "w.example", "/granted", &[]).await == "500").then_some(())
    })
    .await;
}

/// Listeners are edge ports: a route attached only to the HTTPS listener is not served on
/// plain HTTP, and one attached to the HTTP listener not on HTTPS (HTTPRouteHTTPSListener,
/// GatewayHTTPListenerIsolation's spirit); a listener on a port pingress does not bind is
/// PortUnavailable. An Ingress on the same host and path wins over an HTTPRoute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_bound_to_their_listeners_and_ingress_wins_a_shared_path() {
    let (plain, secure, ing) = (pod("plain").await, pod("secure").await, pod("ing").await);
    let ca = support::tls::Ca::new();
    let pem = ca.issue(&["secure.example"], "gw");
    let extra = "  - name: https\n    protocol: HTTPS\n    port: 443\n    hostname: secure.example\n    tls: {certificateRefs: [{name: cert}]}\n    allowedRoutes: {namespaces: {from: All}}\n  - name: odd\n    protocol: HTTP\n    port: 9999\n";
    let attach = |name: &str, section: &str, svc: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: app}}\nspec:\n  parentRefs: [{{name: gw, namespace: gw-ns, sectionName: {section}}}]\n  hostnames: [secure.example]\n  rules:\n  - backendRefs: [{{name: {svc}, port: 8080}}]\n"
        )
    };
    let mut files = format!(
        "{GATEWAY_CLASS}{}{}{}{}{}",
        gateway(extra),
        support::tls::tls_secret("gw-ns", "cert", &pem),
        backends("app", &[("plain", plain), ("secure", secure), ("ing", ing)]),
        attach("on-http", "http", "plain"),
        attach("on-https", "https", "secure"),
    );
    // An Ingress claims shared.example/ ; an HTTPRoute on the same host and path loses.
    files.push_str("---\n");
    files.push_str(CLASS);
    files.push_str(&ingress(
        "app",
        "ing",
        &[("shared.example", "Prefix", "/", "ing", "http")],
        None,
    ));
    files.push_str(&route(
        "app",
        "loser",
        "  hostnames: [shared.example]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: plain, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /only-route}}]\n    backendRefs: [{name: plain, port: 8080}]\n",
    ));
    let gw = Gateway::start(&[("gw.yaml", files)]).await;
    eventually("the plain route is served", || async {
        (who(&gw, "GET", "secure.example", "/", &[]).await == "plain").then_some(())
    })
    .await;
    eventually("the TLS route is served", || async {
        (gw.who_https("secure.example", "/").await == "secure").then_some(())
    })
    .await;
    let subject = support::tls::served_subject(gw.https, Some("secure.example"));
    assert!(
        subject.contains("gw"),
        "the listener's certificate is served: {subject}"
    );
    assert_eq!(who(&gw, "GET", "shared.example", "/", &[]).await, "ing");
    assert_eq!(
        who(&gw, "GET", "shared.example", "/only-route/x", &[]).await,
        "plain"
    );
    let check = pingress_ok(["check", "--manifests", gw.manifests().to_str().unwrap()]);
    for want in [
        "Gateway gw-ns/gw listener odd: Accepted=False (PortUnavailable)",
        "Gateway gw-ns/gw listener https: Programmed=True (Programmed)",
        "Gateway gw-ns/gw: Accepted=True (ListenersNotValid)",
        "HTTPRoute app/loser parent gw-ns/gw: PartiallyInvalid=True",
        "is served by an Ingress, which wins",
        "Gateway gw-ns/gw listener http: attachedRoutes=2",
    ] {
        assert!(check.contains(want), "missing {want:?} in:\n{check}");
    }
}

/// Directory mode checks what the API server's CEL rules would: a route that breaks them
/// is not served, its status names the field, and the other routes are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_breaking_the_crd_rules_is_refused_alone() {
    let a = pod("a").await;
    let bad = route(
        "app",
        "bad",
        "  hostnames: [bad.example]\n  rules:\n  - filters:\n    - {type: RequestRedirect, requestRedirect: {hostname: x.example}}\n    - {type: URLRewrite, urlRewrite: {hostname: y.example}}\n",
    );
    let good = route(
        "app",
        "good",
        "  hostnames: [good.example]\n  rules:\n  - backendRefs: [{name: a, port: 8080}]\n",
    );
    let gw = Gateway::start(&[(
        "gw.yaml",
        format!(
            "{GATEWAY_CLASS}{}{}{bad}{good}",
            gateway(""),
            backends("app", &[("a", a)])
        ),
    )])
    .await;
    eventually("the good route is served", || async {
        (who(&gw, "GET", "good.example", "/", &[]).await == "a").then_some(())
    })
    .await;
    assert_eq!(who(&gw, "GET", "bad.example", "/", &[]).await, "404");
    let check = pingress_ok(["check", "--manifests", gw.manifests().to_str().unwrap()]);
    assert!(
        check.contains("HTTPRoute app/bad parent gw-ns/gw: Accepted=False (UnsupportedValue): spec.rules[0].filters: RequestRedirect and URLRewrite cannot be combined"),
        "{check}"
    );
    let mut s = String::new();
    writeln!(s, "{check}").unwrap();
    assert!(s.contains("GatewayClass pingress: Accepted=True"), "{s}");
    // The same conditions on the running gateway's admin listener.
    let admin = gateway_status(&gw).await.unwrap();
    assert!(
        admin.contains("HTTPRoute app/bad parent gw-ns/gw: Accepted=False (UnsupportedValue): spec.rules[0].filters: RequestRedirect and URLRewrite cannot be combined")
            && admin.contains("HTTPRoute app/good parent gw-ns/gw: Accepted=True")
            && admin.contains("GatewayClass pingress: Accepted=True"),
        "{admin}"
    );
    // An edit shows there once it is served.
    gw.remove("gw.yaml");
    gw.write(
        "gw.yaml",
        &format!(
            "{GATEWAY_CLASS}{}{}{good}",
            gateway(""),
            backends("app", &[("a", a)])
        ),
    );
    eventually("the admin status drops the removed route", || async {
        let admin = gateway_status(&gw).await?;
        (!admin.contains("app/bad") && admin.contains("app/good")).then_some(())
    })
    .await;
    // A serving route edited into one that breaks the rules keeps its last good version.
    let broken = good.replace(
        "  - backendRefs:",
        "  - filters:\n    - {type: RequestRedirect, requestRedirect: {hostname: x.example}}\n    - {type: URLRewrite, urlRewrite: {hostname: y.example}}\n    backendRefs:",
    );
    assert_ne!(broken, good);
    gw.write(
        "gw.yaml",
        &format!(
            "{GATEWAY_CLASS}{}{}{broken}",
            gateway(""),
            backends("app", &[("a", a)])
        ),
    );
    let admin = eventually("the edit is refused", || async {
        let admin = gateway_status(&gw).await?;
        admin
            .contains("HTTPRoute app/good parent gw-ns/gw: Accepted=False (UnsupportedValue)")
            .then_some(admin)
    })
    .await;
    assert!(admin.contains("the last good version"), "{admin}");
    assert_eq!(who(&gw, "GET", "good.example", "/", &[]).await, "a");
}

/// An h2c gRPC "pod" that answers every call with grpc-status 0 and its name in `x-pod`,
/// and echoes the `x-seen` request header it got (to show header filters).
async fn grpc_named_pod(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((io, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(io).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let seen = req
                        .headers()
                        .get("x-seen")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let resp = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc")
                        .header("x-pod", name)
                        .header("x-seen", seen)
                        .header("x-path", req.uri().path())
                        .body(())
                        .unwrap();
                    if let Ok(mut send) = respond.send_response(resp, false) {
                        let mut t = http::HeaderMap::new();
                        t.insert("grpc-status", "0".parse().unwrap());
                        let _ = send.send_trailers(t);
                    }
                }
            });
        }
    });
    addr
}

/// One gRPC call over h2c (prior knowledge) to the gateway: (HTTP status, x-pod, x-seen).
async fn grpc_call(
    gw: &Gateway,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let io = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut rb = http::Request::builder()
        .method("POST")
        .uri(format!("http://{host}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let (resp, mut send) = client.send_request(rb.body(()).unwrap(), false).unwrap();
    // The gateway may answer (a 404, say) and end the stream before the message is sent.
    let _ = send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true);
    let resp = resp.await.unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    (resp.status().as_u16(), h("x-pod"), h("x-seen"))
}

/// GRPCExactMethodMatching, GRPCRouteHeaderMatching, GRPCRouteListenerHostnameMatching (in
/// part): service/method matches, header matches, a header filter, h2c to the pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_match_service_method_and_headers() {
    let (exact, svc, hdr, any) = (
        grpc_named_pod("exact").await,
        grpc_named_pod("svc").await,
        grpc_named_pod("hdr").await,
        grpc_named_pod("any").await,
    );
    let b = |s: &str| format!("    backendRefs: [{{name: {s}, port: 8080}}]\n");
    let spec = format!(
        "  hostnames: [grpc.example]\n  rules:\n  - matches: [{{method: {{service: test.Echo, method: Hello}}}}]\n    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-seen, value: filtered}}]}}}}]\n{}  - matches: [{{method: {{service: test.Other}}}}]\n{}  - matches: [{{headers: [{{name: x-pick, value: hdr}}]}}]\n{}  - {}",
        b("exact"), b("svc"), b("hdr"), b("any").trim_start()
    );
    let grpc_route = format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: grpc, namespace: app}}\nspec:\n  parentRefs: [{{name: gw, namespace: gw-ns}}]\n{spec}"
    );
    let gw = Gateway::start_with(
        &[(
            "gw.yaml",
            format!(
                "{GATEWAY_CLASS}{}{}{grpc_route}",
                gateway(""),
                backends(
                    "app",
                    &[("exact", exact), ("svc", svc), ("hdr", hdr), ("any", any)]
                )
            ),
        )],
        "  h2c: true\n",
    )
    .await;
    eventually("the GRPCRoute is served", || async {
        (grpc_call(&gw, "grpc.example", "/test.Echo/Hello", &[])
            .await
            .1
            == "exact")
            .then_some(())
    })
    .await;
    assert_eq!(
        grpc_call(&gw, "grpc.example", "/test.Echo/Hello", &[]).await,
        (200, "exact".into(), "filtered".into())
    );
    assert_eq!(
        grpc_call(&gw, "grpc.example", "/test.Other/Any", &[])
            .await
            .1,
        "svc"
    );
    assert_eq!(
        grpc_call(&gw, "grpc.example", "/test.Echo/Bye", &[("x-pick", "hdr")])
            .await
            .1,
        "hdr"
    );
    assert_eq!(
        grpc_call(&gw, "grpc.example", "/test.Echo/Bye", &[])
            .await
            .1,
        "any"
    );
    assert_eq!(
        grpc_call(
            &gw,
            "grpc.example",
            "/test.Echo/Hello",
            &[("x-pick", "hdr")]
        )
        .await
        .1,
        "exact"
    );
    let check = pingress_ok(["check", "--manifests", gw.manifests().to_str().unwrap()]);
    assert!(
        check.contains("GRPCRoute app/grpc parent gw-ns/gw: Accepted=True (Accepted)"),
        "{check}"
    );
    assert!(
        check.contains("supportedKinds=[GRPCRoute,HTTPRoute]"),
        "{check}"
    );
}

/// GRPCRouteWeight and GRPCRouteListenerHostnameMatching: weights 70/30/0 over 500 calls
/// (within 10 points: the upstream test allows 5 with retries), and routes attached to
/// listeners by sectionName get only the hostnames of their listener (Gateway API wildcards
/// span several labels).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_weights_and_listener_hostnames() {
    let pods = [
        grpc_named_pod("v1").await,
        grpc_named_pod("v2").await,
        grpc_named_pod("v3").await,
    ];
    let listeners = "  - {name: listener-1, protocol: HTTP, port: 80, hostname: bar.com, allowedRoutes: {namespaces: {from: All}}}\n  - {name: listener-2, protocol: HTTP, port: 80, hostname: foo.bar.com, allowedRoutes: {namespaces: {from: All}}}\n  - {name: listener-3, protocol: HTTP, port: 80, hostname: '*.bar.com', allowedRoutes: {namespaces: {from: All}}}\n  - {name: listener-4, protocol: HTTP, port: 80, hostname: '*.foo.com', allowedRoutes: {namespaces: {from: All}}}\n";
    let grpc = |name: &str, parents: &str, spec: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: app}}\nspec:\n  parentRefs: [{parents}]\n{spec}"
        )
    };
    let routes = [
        grpc(
            "weighted",
            "{name: gw, namespace: gw-ns, sectionName: http}",
            "  hostnames: [weights.example]\n  rules:\n  - backendRefs: [{name: v1, port: 8080, weight: 70}, {name: v2, port: 8080, weight: 30}, {name: v3, port: 8080, weight: 0}]\n",
        ),
        grpc(
            "backend-v1",
            "{name: gw, namespace: gw-ns, sectionName: listener-1}",
            "  rules:\n  - backendRefs: [{name: v1, port: 8080}]\n",
        ),
        grpc(
            "backend-v2",
            "{name: gw, namespace: gw-ns, sectionName: listener-2}",
            "  rules:\n  - backendRefs: [{name: v2, port: 8080}]\n",
        ),
        grpc(
            "backend-v3",
            "{name: gw, namespace: gw-ns, sectionName: listener-3}, {name: gw, namespace: gw-ns, sectionName: listener-4}",
            "  rules:\n  - backendRefs: [{name: v3, port: 8080}]\n",
        ),
    ]
    .concat();
    let gw = Gateway::start_with(
        &[(
            "gw.yaml",
            format!(
                "{GATEWAY_CLASS}{}{}{routes}",
                gateway(listeners),
                backends("app", &[("v1", pods[0]), ("v2", pods[1]), ("v3", pods[2])])
            ),
        )],
        "  h2c: true\n",
    )
    .await;
    eventually("the GRPCRoutes are served", || async {
        (grpc_call(&gw, "bar.com", "/test.Echo/Hello", &[]).await.1 == "v1").then_some(())
    })
    .await;
    for (host, want) in [
        ("bar.com", "v1"),
        ("foo.bar.com", "v2"),
        ("baz.bar.com", "v3"),
        ("boo.bar.com", "v3"),
        ("multiple.prefixes.bar.com", "v3"),
        ("multiple.prefixes.foo.com", "v3"),
    ] {
        let (status, pod, _) = grpc_call(&gw, host, "/test.Echo/Hello", &[]).await;
        assert_eq!((status, pod.as_str()), (200, want), "{host}");
    }
    for host in ["foo.com", "no.matching.host"] {
        let (status, pod, _) = grpc_call(&gw, host, "/test.Echo/Hello", &[]).await;
        assert_eq!(status, 404, "{host}: {pod}");
    }
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..500 {
        let (_, pod, _) = grpc_call(&gw, "weights.example", "/test.Echo/Hello", &[]).await;
        *counts.entry(pod).or_insert(0u32) += 1;
    }
    let share = |p: &str| f64::from(counts.get(p).copied().unwrap_or(0)) / 500.0;
    assert!((share("v1") - 0.7).abs() < 0.1, "{counts:?}");
    assert!((share("v2") - 0.3).abs() < 0.1, "{counts:?}");
    assert_eq!(counts.get("v3"), None, "{counts:?}");
    assert_eq!(counts.values().sum::<u32>(), 500, "{counts:?}");
}

/// The backend protocol of an HTTPRoute backend comes from the Service port's appProtocol:
/// `kubernetes.io/h2c` reaches an HTTP/2-only pod from an HTTP/1.1 client, and
/// `kubernetes.io/ws` passes a WebSocket upgrade through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_protocol_picks_h2c_and_websocket_backends() {
    use futures_util::{SinkExt, StreamExt};
    let (h2_pod, ws_pod) = (grpc_named_pod("h2-pod").await, pod("ws-pod").await);
    let svc = |name: &str, app: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: app}}\nspec:\n  ports:\n  - {{name: http, port: 8080, appProtocol: {app}}}\n"
        )
    };
    let manifests = format!(
        "{GATEWAY_CLASS}{}{}{}{}{}{}{}",
        gateway(""),
        svc("h2", "kubernetes.io/h2c"),
        slices("app", "h2", "http", &[h2_pod]),
        svc("ws", "kubernetes.io/ws"),
        slices("app", "ws", "http", &[ws_pod]),
        route(
            "app",
            "h2",
            "  hostnames: [h2.example]\n  rules:\n  - backendRefs: [{name: h2, port: 8080}]\n"
        ),
        route(
            "app",
            "ws",
            "  hostnames: [ws.example]\n  rules:\n  - backendRefs: [{name: ws, port: 8080}]\n"
        ),
    );
    let gw = Gateway::start(&[("gw.yaml", manifests)]).await;
    let h2_answer = || async {
        let r = gw
            .client
            .get(format!("http://{}/any", gw.http))
            .header("host", "h2.example")
            .send()
            .await
            .ok()?;
        let pod = r.headers().get("x-pod")?.to_str().ok()?.to_string();
        Some((r.status().as_u16(), pod))
    };
    let got = eventually("the h2c route is served", || async { h2_answer().await }).await;
    assert_eq!(got, (200, "h2-pod".to_string()));

    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/chat", gw.http),
    )
    .unwrap();
    req.headers_mut()
        .insert("host", "ws.example".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        "hello".into(),
    ))
    .await
    .unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap(), "ws-pod: hello");
    ws.close(None).await.unwrap();
}

/// GatewaySecretReferenceGrantSpecific, GatewaySecretMissingReferenceGrant,
/// GatewaySecretInvalidReferenceGrant: an HTTPS listener's Secret in another namespace is
/// used only while a ReferenceGrant there names it (or all Secrets); without one the
/// listener is `ResolvedRefs=False/RefNotPermitted` and its certificate is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_secret_in_another_namespace_needs_a_reference_grant() {
    let a = pod("a").await;
    let ca = tls::Ca::new();
    let pem = ca.issue(&["secure.example"], "CrossNamespace");
    let listener = "  - name: https\n    protocol: HTTPS\n    port: 443\n    hostname: secure.example\n    allowedRoutes: {namespaces: {from: All}}\n    tls: {mode: Terminate, certificateRefs: [{name: cert, namespace: certs}]}\n";
    let grant = |to: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: certs}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: gw-ns}}]\n  to: [{to}]\n"
        )
    };
    let objects = format!(
        "{GATEWAY_CLASS}{}{}{}{}",
        gateway(listener),
        backends("app", &[("a", a)]),
        tls::tls_secret("certs", "cert", &pem),
        route(
            "app",
            "secure",
            "  hostnames: [secure.example]\n  rules:\n  - backendRefs: [{name: a, port: 8080}]\n"
        ),
    );
    let gw = Gateway::start(&[
        ("gw.yaml", objects.clone()),
        (
            "grant.yaml",
            grant("{group: \"\", kind: Secret, name: cert}"),
        ),
    ])
    .await;
    eventually("served over HTTPS", || async {
        (gw.who_https("secure.example", "/").await == "a").then_some(())
    })
    .await;
    let subject = tls::served_subject(gw.https, Some("secure.example"));
    assert!(subject.contains("O=CrossNamespace"), "{subject}");
    let s = gateway_status(&gw).await.unwrap();
    assert!(
        s.contains("Gateway gw-ns/gw listener https: ResolvedRefs=True"),
        "{s}"
    );
    // A grant for another Secret, then none at all: not permitted.
    for (what, text) in [
        (
            "a grant naming another Secret",
            Some("{group: \"\", kind: Secret, name: other}"),
        ),
        ("no grant", None),
    ] {
        match text {
            Some(t) => gw.write("grant.yaml", &grant(t)),
            None => gw.remove("grant.yaml"),
        }
        eventually(what, || async {
            gateway_status(&gw)
                .await?
                .contains("Gateway gw-ns/gw listener https: ResolvedRefs=False (RefNotPermitted)")
                .then_some(())
        })
        .await;
        eventually("the certificate is no longer served", || async {
            (!tls::served_subject(gw.https, Some("secure.example")).contains("O=CrossNamespace"))
                .then_some(())
        })
        .await;
    }
    // A grant for every Secret of the namespace.
    gw.write("grant.yaml", &grant("{group: \"\", kind: Secret}"));
    eventually("served again", || async {
        tls::served_subject(gw.https, Some("secure.example"))
            .contains("O=CrossNamespace")
            .then_some(())
    })
    .await;
}

/// ExtensionRef: pingress has no extension filters, so a rule using one is never served
/// without it: it answers 500, its route's status says why, and the other rules serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_ref_filter_answers_500_and_says_why() {
    let a = pod("a").await;
    let spec = "  hostnames: [ext.example]\n  rules:\n  - matches: [{path: {value: /ext}}]\n    filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Foo, name: x}}]\n    backendRefs: [{name: a, port: 8080}]\n  - backendRefs: [{name: a, port: 8080}]\n";
    let gw = serve_one_route("ext", spec, &[("a", a)]).await;
    eventually("the plain rule is served", || async {
        (who(&gw, "GET", "ext.example", "/", &[]).await == "a").then_some(())
    })
    .await;
    assert_eq!(who(&gw, "GET", "ext.example", "/ext/x", &[]).await, "500");
    let status = gateway_status(&gw).await.unwrap();
    assert!(
        status.contains("HTTPRoute app/ext parent gw-ns/gw:")
            && status.contains("ExtensionRef example.com/Foo x: pingress has no extension filters"),
        "{status}"
    );
}

/// The status-only core tests, read from `pingress check` (what the leader would write):
/// GatewayListenerUnsupportedProtocol, GatewayInvalidRouteKind, GatewayInvalidTLSConfiguration,
/// GatewayInvalidParametersRef, GatewayWithAttachedRoutes, HTTPRouteMultipleGateways,
/// HTTPRouteInvalidCrossNamespaceParentRef, HTTPRouteInvalidParentRefNotMatchingSectionName,
/// HTTPRouteInvalidReferenceGrant, HTTPRouteInvalidBackendRefUnknownKind.
#[test]
fn status_only_core_cases_get_the_reasons_the_spec_names() {
    let listeners = "  - {name: udp, protocol: UDP, port: 9999}\n  - {name: kinds, protocol: HTTP, port: 80, hostname: kinds.example, allowedRoutes: {kinds: [{kind: FooRoute}]}}\n  - {name: badtls, protocol: HTTPS, port: 443, hostname: tls.example, tls: {mode: Terminate, certificateRefs: [{name: missing}]}}\n  - {name: same, protocol: HTTP, port: 80, hostname: same.example}\n";
    let other_gw = |name: &str, extra: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: gw-ns}}\nspec:\n  gatewayClassName: pingress\n{extra}  listeners:\n  - {{name: http, protocol: HTTP, port: 80, allowedRoutes: {{namespaces: {{from: All}}}}}}\n"
        )
    };
    let routed = |name: &str, parents: &str, backend: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: app}}\nspec:\n  parentRefs: [{parents}]\n  rules:\n  - backendRefs: [{backend}]\n"
        )
    };
    let a = "{name: a, port: 8080}";
    let objects = [
        GATEWAY_CLASS.to_string(),
        gateway(listeners),
        other_gw("gw2", ""),
        other_gw(
            "params",
            "  infrastructure: {parametersRef: {group: \"\", kind: ConfigMap, name: nope}}\n",
        ),
        service("app", "a", &[("http", 8080)]),
        service("other", "b", &[("http", 8080)]),
        // A grant in `other`, but for routes of another namespace.
        "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: other}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: elsewhere}]\n  to: [{group: \"\", kind: Service}]\n".to_string(),
        routed("cross", "{name: gw, namespace: gw-ns, sectionName: same}", a),
        routed("nosection", "{name: gw, namespace: gw-ns, sectionName: nope}", a),
        routed(
            "both",
            "{name: gw, namespace: gw-ns, sectionName: http}, {name: gw2, namespace: gw-ns}",
            a,
        ),
        routed(
            "badgrant",
            "{name: gw, namespace: gw-ns, sectionName: http}",
            "{name: b, namespace: other, port: 8080}",
        ),
        routed(
            "unknownkind",
            "{name: gw, namespace: gw-ns, sectionName: http}",
            "{group: example.com, kind: Foo, name: a, port: 8080}",
        ),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), objects).unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "--manifests"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for want in [
        "Gateway gw-ns/gw listener udp: Accepted=False (UnsupportedProtocol)",
        "Gateway gw-ns/gw listener kinds: ResolvedRefs=False (InvalidRouteKinds)",
        "Gateway gw-ns/gw listener kinds: attachedRoutes=0 supportedKinds=[]",
        "Gateway gw-ns/gw listener badtls: ResolvedRefs=False (InvalidCertificateRef)",
        "Gateway gw-ns/gw listener badtls: Programmed=False",
        // Some listeners are invalid: the Gateway stays Accepted, with that reason.
        "Gateway gw-ns/gw: Accepted=True (ListenersNotValid)",
        "Gateway gw-ns/params: Accepted=False (InvalidParameters)",
        "Gateway gw-ns/params: Programmed=False",
        // both, badgrant and unknownkind are Accepted on `http`; cross and nosection are not.
        "Gateway gw-ns/gw listener http: attachedRoutes=3",
        "Gateway gw-ns/gw2 listener http: attachedRoutes=1",
        "HTTPRoute app/both parent gw-ns/gw/http: Accepted=True",
        "HTTPRoute app/both parent gw-ns/gw2: Accepted=True",
        "HTTPRoute app/cross parent gw-ns/gw/same: Accepted=False (NotAllowedByListeners)",
        "HTTPRoute app/nosection parent gw-ns/gw/nope: Accepted=False (NoMatchingParent)",
        "HTTPRoute app/badgrant parent gw-ns/gw/http: ResolvedRefs=False (RefNotPermitted)",
        "HTTPRoute app/badgrant parent gw-ns/gw/http: Accepted=True",
        "HTTPRoute app/unknownkind parent gw-ns/gw/http: ResolvedRefs=False (InvalidKind)",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}

/// HTTPRouteRequestTimeout, HTTPRouteBackendTimeout: a pod slower than the rule's timeout
/// gets the client a 504; a quick one answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_timeouts_answer_504_for_a_slow_pod() {
    let a = pod("a").await;
    let spec = "  hostnames: [slow.example]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /request}}]\n    timeouts: {request: 1s}\n    backendRefs: [{name: a, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /backend}}]\n    timeouts: {request: 10s, backendRequest: 1s}\n    backendRefs: [{name: a, port: 8080}]\n";
    let gw = serve_one_route("slow", spec, &[("a", a)]).await;
    eventually("the route is served", || async {
        (who(&gw, "GET", "slow.example", "/request", &[]).await == "a").then_some(())
    })
    .await;
    for path in ["/request?delay_ms=4000", "/backend?delay_ms=4000"] {
        let started = std::time::Instant::now();
        assert_eq!(
            who(&gw, "GET", "slow.example", path, &[]).await,
            "504",
            "{path}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_millis(3900),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        who(&gw, "GET", "slow.example", "/backend?delay_ms=10", &[]).await,
        "a"
    );
}

/// HTTPRouteRequestMirror, HTTPRouteRequestMultipleMirrors: every request also reaches each
/// mirror backend, and the client's answer comes from the real backend without waiting for
/// the mirrors (here they hold their answers until the end of the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_get_a_copy_and_never_delay_the_answer() {
    let a = pod("a").await;
    let (m1, m2) = (HeldPod::start().await, HeldPod::start().await);
    let spec = "  hostnames: [mirror.example]\n  rules:\n  - filters:\n    - {type: RequestMirror, requestMirror: {backendRef: {name: m1, port: 8080}}}\n    - {type: RequestMirror, requestMirror: {backendRef: {name: m2, port: 8080}, percent: 100}}\n    backendRefs: [{name: a, port: 8080}]\n";
    let gw = serve_one_route(
        "mirror",
        spec,
        &[("a", a), ("m1", m1.addr), ("m2", m2.addr)],
    )
    .await;
    eventually("the route is served", || async {
        (who(&gw, "GET", "mirror.example", "/hold/x", &[]).await == "a").then_some(())
    })
    .await;
    // Answered while both mirrors still hold their copies.
    assert_eq!(
        who(&gw, "GET", "mirror.example", "/hold/y?q=1", &[]).await,
        "a"
    );
    m1.wait_arrived(2).await;
    m2.wait_arrived(2).await;
    m1.release();
    m2.release();
}

/// An Ingress of class pingress in `shop` with `annotations` (YAML lines at 4 spaces) and
/// `rules` (YAML lines of `spec.rules`).
fn annotated(name: &str, annotations: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: shop\n  annotations:\n{annotations}spec:\n  ingressClassName: pingress\n  rules:\n{rules}"
    )
}

fn one_path(host: &str, path: &str, kind: &str, svc: &str) -> String {
    format!(
        "  - host: {host}\n    http:\n      paths:\n      - path: {path}\n        pathType: {kind}\n        backend:\n          service: {{name: {svc}, port: {{number: 8080}}}}\n"
    )
}

/// `pingress convert --to gateway-api` on Ingresses carrying the annotations the route model
/// converts (canary by header and weight, upstream-vhost, rewrite-target in regex mode,
/// permanent-redirect, app-root) and one it cannot (an allow list): served side by side, the
/// converted objects answer as the Ingresses do, and the guarded path fails closed (500,
/// never the pod).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converted_ingress_annotations_answer_as_the_ingresses_do() {
    let (web, canary, api) = (pod("web").await, pod("canary").await, pod("api").await);
    let backends = backends("shop", &[("web", web), ("canary", canary), ("api", api)]);
    let ingresses = [
        annotated(
            "web",
            "    nginx.ingress.kubernetes.io/upstream-vhost: internal.shop\n",
            &one_path("shop.example", "/", "Prefix", "web"),
        ),
        annotated(
            "web-canary",
            "    nginx.ingress.kubernetes.io/canary: \"true\"\n    nginx.ingress.kubernetes.io/canary-by-header: x-canary\n",
            &one_path("shop.example", "/", "Prefix", "canary"),
        ),
        annotated(
            "admin",
            "    nginx.ingress.kubernetes.io/whitelist-source-range: 10.0.0.0/8\n",
            &one_path("shop.example", "/admin", "Prefix", "web"),
        ),
        annotated(
            "api",
            "    nginx.ingress.kubernetes.io/rewrite-target: /v2\n",
            &one_path("api.example", "/api", "Prefix", "api"),
        ),
        annotated(
            "moved",
            "    nginx.ingress.kubernetes.io/permanent-redirect: https://new.example/landing\n",
            &one_path("old.example", "/", "Prefix", "web"),
        ),
        annotated(
            "app",
            "    nginx.ingress.kubernetes.io/app-root: /app\n",
            &one_path("app.example", "/", "Prefix", "web"),
        ),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ingresses.yaml"), &ingresses).unwrap();
    let out = std::process::Command::new(bin())
        .args(["convert", "--to", "gateway-api"])
        .arg(dir.path().join("ingresses.yaml"))
        .output()
        .unwrap();
    let (yaml, report) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    // The allow list has no Gateway API form: reported, exit status 1.
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("Ingress shop/admin: closed: Prefix /admin: whitelist-source-range"),
        "{report}"
    );
    assert!(report.contains("Ingress shop/moved: differs"), "{report}");
    assert!(!yaml.contains("kind: Ingress"), "{yaml}");

    let ingress_gw = Gateway::start(&[("all.yaml", format!("{backends}{ingresses}"))]).await;
    let gateway_gw = Gateway::start(&[("all.yaml", format!("{backends}---\n{yaml}"))]).await;
    let log = gateway_gw.stderr();
    assert!(!log.contains("invalid"), "{log}");
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, &str, Headers); 9] = [
        ("shop.example", "/cart", &[]),
        ("shop.example", "/cart", &[("x-canary", "always")]),
        ("shop.example", "/cart", &[("x-canary", "never")]),
        ("shop.example", "/cart", &[("x-canary", "other")]),
        ("api.example", "/API/users?id=1", &[]),
        ("api.example", "/other", &[]),
        ("old.example", "/any/path", &[]),
        ("app.example", "/", &[]),
        ("app.example", "/app/page", &[]),
    ];
    for (host, path, headers) in cases {
        let want = ingress_gw.seen(false, host, path, headers).await;
        let got = gateway_gw.seen(false, host, path, headers).await;
        assert_eq!(got, want, "{host}{path} {headers:?}");
    }
    // What those answers are.
    let s = gateway_gw.seen(false, "shop.example", "/cart", &[]).await;
    assert_eq!((s.pod.as_str(), s.host.as_str()), ("web", "internal.shop"));
    let s = gateway_gw
        .seen(false, "shop.example", "/cart", &[("x-canary", "always")])
        .await;
    assert_eq!(s.pod, "canary");
    let s = gateway_gw
        .seen(false, "api.example", "/API/users?id=1", &[])
        .await;
    assert_eq!((s.pod.as_str(), s.path.as_str()), ("api", "/v2"));
    let s = gateway_gw
        .seen(false, "old.example", "/any/path", &[])
        .await;
    assert_eq!(
        (s.status.as_str(), s.location.as_str()),
        ("301", "https://new.example/landing")
    );
    let s = gateway_gw.seen(false, "app.example", "/", &[]).await;
    assert_eq!(
        (s.status.as_str(), s.location.as_str()),
        ("302", "http://app.example/app")
    );
    // The guarded path: the Ingress denies this client (403); the conversion fails closed.
    assert_eq!(
        ingress_gw
            .seen(false, "shop.example", "/admin", &[])
            .await
            .status,
        "403"
    );
    let s = gateway_gw
        .seen(false, "shop.example", "/admin/x", &[])
        .await;
    assert_eq!(s.status, "500", "{s:?}");
}
