use super::*;
use crate::source::files::parse_manifests;

fn snap(yaml: &str) -> Snapshot {
    let mut s = Snapshot::default();
    for o in parse_manifests(yaml, "test").unwrap().objects {
        assert!(s.insert(o));
    }
    s
}

pub(super) fn conf() -> TranslateConf {
    TranslateConf {
        ingress_class: "pingress".into(),
        controller_name: "pingress.dev/ingress-controller".into(),
        watch_ingress_without_class: false,
        ssl_redirect: true,
        default_backend: None,
        gateway_controller: "pingress.dev/gateway-controller".into(),
        http_ports: vec![80],
        https_ports: vec![443],
    }
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: admin, port: 9000}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  ports:
  - {port: 8080}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: pingress}
spec: {controller: pingress.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: other}
spec: {controller: example.com/other}
"#;

fn ingress(name: &str, extra_meta: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: shop\n{extra_meta}spec:\n{spec}"
    )
}

fn lookup<'a>(t: &'a Translation, host: &str, path: &str) -> Option<&'a RouteSpec> {
    t.routes.lookup(host, path)
}

fn service_of(r: Option<&RouteSpec>) -> Option<String> {
    match &r?.backend {
        BackendSpec::Service(k) => Some(format!("{}:{}", k.service, k.port)),
        BackendSpec::Unavailable { service, .. } => Some(format!("{service}:unavailable")),
        BackendSpec::NotFound => Some("404".into()),
        BackendSpec::Invalid { service, .. } => Some(format!("{service}:invalid")),
    }
}

const WEB_RULE: &str = "  ingressClassName: pingress\n  rules:\n  - host: shop.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n";

#[test]
fn class_by_spec_name_annotation_and_default() {
    let y = format!(
        "{SERVICES}{}{}{}{}{}",
        ingress("a", "", WEB_RULE),
        ingress(
            "b",
            "",
            &WEB_RULE
                .replace("pingress\n", "other\n")
                .replace("shop.", "b.")
        ),
        ingress(
            "c",
            "  annotations: {kubernetes.io/ingress.class: pingress}\n",
            &WEB_RULE
                .replace("  ingressClassName: pingress\n", "")
                .replace("shop.", "c.")
        ),
        ingress(
            "d",
            "  annotations: {kubernetes.io/ingress.class: nginx}\n",
            &WEB_RULE
                .replace("  ingressClassName: pingress\n", "")
                .replace("shop.", "d.")
        ),
        ingress(
            "e",
            "",
            &WEB_RULE
                .replace("  ingressClassName: pingress\n", "")
                .replace("shop.", "e.")
        ),
    );
    let t = translate(&snap(&y), &conf());
    assert!(lookup(&t, "shop.example.com", "/").is_some());
    assert!(
        lookup(&t, "b.example.com", "/").is_none(),
        "other controller"
    );
    assert!(
        lookup(&t, "c.example.com", "/").is_some(),
        "legacy annotation"
    );
    assert!(
        lookup(&t, "d.example.com", "/").is_none(),
        "other annotation"
    );
    assert!(
        lookup(&t, "e.example.com", "/").is_none(),
        "no class, no default"
    );

    // Marking our IngressClass default claims class-less Ingresses.
    let y2 = y.replace(
        "metadata: {name: pingress}",
        "metadata: {name: pingress, annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}}",
    );
    let t = translate(&snap(&y2), &conf());
    assert!(lookup(&t, "e.example.com", "/").is_some());
    assert!(lookup(&t, "d.example.com", "/").is_none());
    assert_eq!(t.ingresses.len(), 3);
}

#[test]
fn class_name_without_ingressclass_object_matches_configured_name() {
    let y = format!(
        "{}{}",
        SERVICES.replace("name: pingress}", "name: unused}"),
        ingress("a", "", WEB_RULE)
    );
    let t = translate(&snap(&y), &conf());
    assert!(lookup(&t, "shop.example.com", "/").is_some());
}

#[test]
fn ingressclass_of_our_name_but_other_controller_is_not_ours() {
    let y = format!(
        "{}{}",
        SERVICES.replace(
            "spec: {controller: pingress.dev/ingress-controller}",
            "spec: {controller: x/y}"
        ),
        ingress("a", "", WEB_RULE)
    );
    assert!(translate(&snap(&y), &conf()).routes.is_empty());
}

#[test]
fn port_by_number_and_by_name_resolve_to_the_same_pool() {
    let spec = "  ingressClassName: pingress\n  rules:\n  - host: a.com\n    http:\n      paths:\n      - {path: /n, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n      - {path: /s, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}\n      - {path: /adm, pathType: Exact, backend: {service: {name: web, port: {name: admin}}}}\n";
    let t = translate(
        &snap(&format!("{SERVICES}{}", ingress("a", "", spec))),
        &conf(),
    );
    let n = lookup(&t, "a.com", "/n").unwrap();
    let s = lookup(&t, "a.com", "/s").unwrap();
    assert_eq!(n.backend, s.backend);
    match &n.backend {
        BackendSpec::Service(k) => {
            assert_eq!((k.port_name.as_str(), k.port), ("http", 80));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(service_of(lookup(&t, "a.com", "/adm")).unwrap(), "web:9000");
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
}

#[test]
fn missing_service_or_port_answers_unavailable_with_diagnostic() {
    let spec = "  ingressClassName: pingress\n  rules:\n  - host: a.com\n    http:\n      paths:\n      - {path: /x, pathType: Prefix, backend: {service: {name: nope, port: {number: 80}}}}\n      - {path: /y, pathType: Prefix, backend: {service: {name: web, port: {number: 81}}}}\n      - {path: /z, pathType: Prefix, backend: {service: {name: web, port: {name: grpc}}}}\n";
    let t = translate(
        &snap(&format!("{SERVICES}{}", ingress("a", "", spec))),
        &conf(),
    );
    assert_eq!(
        service_of(lookup(&t, "a.com", "/x")).unwrap(),
        "nope:unavailable"
    );
    assert_eq!(
        service_of(lookup(&t, "a.com", "/y")).unwrap(),
        "web:unavailable"
    );
    let kinds: Vec<_> = t.diagnostics.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        vec![
            DiagKind::ServiceNotFound,
            DiagKind::PortNotFound,
            DiagKind::PortNotFound
        ]
    );
    assert!(t.diagnostics[0].to_string().contains("ingress shop/a"));
    assert!(t.diagnostics[0]
        .message
        .contains("service shop/nope not found"));
}

#[test]
fn resource_backend_is_rejected() {
    let spec = "  ingressClassName: pingress\n  rules:\n  - host: a.com\n    http:\n      paths:\n      - path: /static\n        pathType: Prefix\n        backend:\n          resource: {apiGroup: k8s.example.com, kind: StorageBucket, name: assets}\n";
    let t = translate(
        &snap(&format!("{SERVICES}{}", ingress("a", "", spec))),
        &conf(),
    );
    assert!(lookup(&t, "a.com", "/static").is_none());
    assert_eq!(t.diagnostics[0].kind, DiagKind::ResourceBackend);
}

#[test]
fn ingress_default_backend_catches_its_hosts_and_without_rules_everything() {
    let with_rules = "  ingressClassName: pingress\n  defaultBackend: {service: {name: api, port: {number: 8080}}}\n  rules:\n  - host: a.com\n    http:\n      paths:\n      - {path: /web, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n";
    let no_rules = "  ingressClassName: pingress\n  defaultBackend: {service: {name: web, port: {name: admin}}}\n";
    let y = format!(
        "{SERVICES}{}{}",
        ingress("a", "", with_rules),
        ingress("b", "", no_rules)
    );
    let t = translate(&snap(&y), &conf());
    assert_eq!(service_of(lookup(&t, "a.com", "/web")).unwrap(), "web:80");
    assert_eq!(
        service_of(lookup(&t, "a.com", "/other")).unwrap(),
        "api:8080"
    );
    assert_eq!(
        service_of(lookup(&t, "b.com", "/other")).unwrap(),
        "web:9000"
    );
    assert_eq!(
        lookup(&t, "b.com", "/").unwrap().ingress,
        Some(ObjKey::new("shop", "b"))
    );
}

#[test]
fn global_default_backend_is_404_or_the_configured_service() {
    let t = translate(&snap(SERVICES), &conf());
    assert_eq!(t.default_route.backend, BackendSpec::NotFound);
    let mut c = conf();
    c.default_backend = Some((ObjKey::new("shop", "web"), PortRef::Name("http".into())));
    let t = translate(&snap(SERVICES), &c);
    assert!(matches!(&t.default_route.backend, BackendSpec::Service(k) if k.service == "web"));
    c.default_backend = Some((ObjKey::new("shop", "gone"), PortRef::Number(80)));
    let t = translate(&snap(SERVICES), &c);
    assert!(matches!(
        t.default_route.backend,
        BackendSpec::Unavailable { .. }
    ));
    assert_eq!(t.diagnostics[0].kind, DiagKind::ServiceNotFound);
    assert!(t.diagnostics[0].ingress.is_none());
}

#[test]
fn same_host_merges_paths_and_oldest_wins_conflicts() {
    let a = "  ingressClassName: pingress\n  rules:\n  - host: a.com\n    http:\n      paths:\n      - {path: /shared, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n      - {path: /a, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n";
    let b = "  ingressClassName: pingress\n  rules:\n  - host: A.com\n    http:\n      paths:\n      - {path: /shared/, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}\n      - {path: /b, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}\n";
    // "zz-old" is older by timestamp although it sorts last by name.
    let y = format!(
        "{SERVICES}{}{}",
        ingress(
            "zz-old",
            "  creationTimestamp: \"2020-01-01T00:00:00Z\"\n",
            b
        ),
        ingress(
            "aa-new",
            "  creationTimestamp: \"2024-01-01T00:00:00Z\"\n",
            a
        ),
    );
    let t = translate(&snap(&y), &conf());
    assert_eq!(service_of(lookup(&t, "a.com", "/a")).unwrap(), "web:80");
    assert_eq!(service_of(lookup(&t, "a.com", "/b")).unwrap(), "api:8080");
    assert_eq!(
        service_of(lookup(&t, "a.com", "/shared/x")).unwrap(),
        "api:8080"
    );
    assert_eq!(t.diagnostics.len(), 1);
    let d = &t.diagnostics[0];
    assert_eq!(d.kind, DiagKind::Conflict);
    assert_eq!(d.ingress, Some(ObjKey::new("shop", "aa-new")));
    assert!(d.message.contains("shop/zz-old"), "{}", d.message);
    assert_eq!(t.ingresses[0], ObjKey::new("shop", "zz-old"));
}

#[test]
fn conflict_without_timestamps_is_won_by_namespace_then_name() {
    let y = format!(
        "{SERVICES}{}{}",
        ingress("b", "", WEB_RULE),
        ingress(
            "a",
            "",
            &WEB_RULE.replace(
                "name: web, port: {number: 80}",
                "name: api, port: {number: 8080}"
            )
        ),
    );
    let t = translate(&snap(&y), &conf());
    assert_eq!(
        service_of(lookup(&t, "shop.example.com", "/")).unwrap(),
        "api:8080"
    );
    assert_eq!(t.diagnostics[0].ingress, Some(ObjKey::new("shop", "b")));
}

#[test]
fn bad_hosts_paths_and_types_are_diagnosed_and_skipped() {
    let spec = "  ingressClassName: pingress\n  rules:\n  - host: 10.1.2.3\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n  - host: ok.com\n    http:\n      paths:\n      - {path: nope, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n      - {path: /x, pathType: Regexish, backend: {service: {name: web, port: {number: 80}}}}\n      - {path: /good, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}\n";
    let t = translate(
        &snap(&format!("{SERVICES}{}", ingress("a", "", spec))),
        &conf(),
    );
    let kinds: Vec<_> = t.diagnostics.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        vec![
            DiagKind::InvalidHost,
            DiagKind::InvalidPath,
            DiagKind::InvalidPath
        ]
    );
    assert!(t.diagnostics[0].message.contains("rules[0]"));
    assert!(t.diagnostics[1].message.contains("rules[1].http.paths[0]"));
    assert!(
        lookup(&t, "ok.com", "/good/more").is_some(),
        "ImplementationSpecific is a prefix"
    );
    assert_eq!(t.routes.len(), 1);
}

#[test]
fn unknown_controller_annotations_are_reported() {
    let y = format!(
        "{SERVICES}{}",
        ingress(
            "a",
            "  annotations:\n    nginx.ingress.kubernetes.io/configuration-snippet: \"evil\"\n    example.com/unrelated: x\n",
            WEB_RULE
        )
    );
    let t = translate(&snap(&y), &conf());
    assert_eq!(t.diagnostics.len(), 1);
    assert_eq!(t.diagnostics[0].kind, DiagKind::UnsupportedAnnotation);
    assert!(t.diagnostics[0].message.contains("configuration-snippet"));
    assert!(
        lookup(&t, "shop.example.com", "/").is_some(),
        "route still served"
    );
}

#[test]
fn translation_is_deterministic() {
    let y = format!("{SERVICES}{}", ingress("a", "", WEB_RULE));
    let s = snap(&y);
    let a = translate(&s, &conf());
    let b = translate(&s, &conf());
    assert_eq!(a.diagnostics, b.diagnostics);
    assert_eq!(a.ingresses, b.ingresses);
    assert_eq!(
        lookup(&a, "shop.example.com", "/"),
        lookup(&b, "shop.example.com", "/")
    );
}

const TLS_SPEC: &str = "  ingressClassName: pingress\n  tls:\n  - hosts: [secure.example.com, \"*.wild.example.com\"]\n    secretName: cert\n  rules:\n  - host: secure.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n  - host: a.wild.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n  - host: plain.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n";

#[test]
fn tls_entries_become_bindings_and_redirect_their_hosts() {
    let y = format!("{SERVICES}{}", ingress("a", "", TLS_SPEC));
    let t = translate(&snap(&y), &conf());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert_eq!(t.tls.len(), 1);
    assert_eq!(t.tls[0].secret, Some(ObjKey::new("shop", "cert")));
    assert_eq!(
        t.tls[0].hosts,
        vec!["secure.example.com", "*.wild.example.com"]
    );
    let secure = lookup(&t, "secure.example.com", "/").unwrap();
    assert!(secure.tls_host && secure.https_redirect);
    let wild = lookup(&t, "a.wild.example.com", "/").unwrap();
    assert!(
        wild.tls_host && wild.https_redirect,
        "wildcard TLS host covers it"
    );
    let plain = lookup(&t, "plain.example.com", "/").unwrap();
    assert!(!plain.tls_host && !plain.https_redirect);

    let mut c = conf();
    c.ssl_redirect = false;
    let t = translate(&snap(&y), &c);
    let secure = lookup(&t, "secure.example.com", "/").unwrap();
    assert!(secure.tls_host && !secure.https_redirect);
}

#[test]
fn redirect_annotations() {
    let cases = [
        // (annotations, redirect on the TLS host, redirect on the plain host)
        ("", true, false),
        ("    nginx.ingress.kubernetes.io/ssl-redirect: \"false\"\n", false, false),
        ("    nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"\n", true, true),
        (
            "    nginx.ingress.kubernetes.io/ssl-redirect: \"false\"\n    nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"\n",
            true,
            true,
        ),
    ];
    for (annotations, tls_redirect, plain_redirect) in cases {
        let meta = if annotations.is_empty() {
            String::new()
        } else {
            format!("  annotations:\n{annotations}")
        };
        let y = format!("{SERVICES}{}", ingress("a", &meta, TLS_SPEC));
        let t = translate(&snap(&y), &conf());
        assert!(
            t.diagnostics.is_empty(),
            "{annotations}: {:?}",
            t.diagnostics
        );
        let r = |h: &str| lookup(&t, h, "/").unwrap().https_redirect;
        assert_eq!(r("secure.example.com"), tls_redirect, "{annotations}");
        assert_eq!(r("plain.example.com"), plain_redirect, "{annotations}");
    }
    let y = format!(
        "{SERVICES}{}",
        ingress(
            "a",
            "  annotations:\n    nginx.ingress.kubernetes.io/ssl-redirect: \"yes\"\n",
            TLS_SPEC
        )
    );
    let t = translate(&snap(&y), &conf());
    assert_eq!(t.diagnostics.len(), 1);
    assert_eq!(t.diagnostics[0].kind, DiagKind::InvalidAnnotation);
    assert!(t.diagnostics[0].message.contains("ssl-redirect"));
    assert!(
        lookup(&t, "secure.example.com", "/")
            .unwrap()
            .https_redirect
    );
}

#[test]
fn backend_protocol_from_annotation_and_app_protocol() {
    let svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: grpc, namespace: shop}\nspec:\n  ports:\n  - {name: h2, port: 50051, appProtocol: kubernetes.io/h2c}\n";
    let rule = |svc: &str, port: i32| {
        format!("  ingressClassName: pingress\n  rules:\n  - host: p.example.com\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: {port}}}}}}}}}\n")
    };
    let proto = |annotation: &str, svc_name: &str, port: i32| {
        let meta = if annotation.is_empty() {
            String::new()
        } else {
            format!("  annotations:\n    nginx.ingress.kubernetes.io/backend-protocol: \"{annotation}\"\n")
        };
        let y = format!(
            "{SERVICES}{svc}{}",
            ingress("a", &meta, &rule(svc_name, port))
        );
        let t = translate(&snap(&y), &conf());
        (
            lookup(&t, "p.example.com", "/").unwrap().protocol,
            t.diagnostics,
        )
    };
    assert_eq!(proto("", "web", 80).0, Protocol::Http1);
    assert_eq!(proto("HTTPS", "web", 80).0, Protocol::Https);
    assert_eq!(proto("GRPC", "web", 80).0, Protocol::H2c);
    assert_eq!(proto("h2c", "web", 80).0, Protocol::H2c);
    assert_eq!(proto("GRPCS", "web", 80).0, Protocol::H2Tls);
    assert_eq!(proto("", "grpc", 50051).0, Protocol::H2c, "appProtocol");
    assert_eq!(
        proto("HTTP", "grpc", 50051).0,
        Protocol::Http1,
        "annotation wins"
    );
    let (p, diags) = proto("FCGI", "web", 80);
    assert_eq!(p, Protocol::Http1);
    assert_eq!(diags[0].kind, DiagKind::InvalidAnnotation);
    assert!(diags[0].message.contains("FCGI"));
}

#[test]
fn tls_without_hosts_covers_the_rule_hosts() {
    let spec = "  ingressClassName: pingress\n  tls:\n  - secretName: cert\n  rules:\n  - host: secure.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n";
    let y = format!("{SERVICES}{}", ingress("a", "", spec));
    let t = translate(&snap(&y), &conf());
    assert_eq!(t.tls[0].hosts, vec!["secure.example.com"]);
    assert!(
        lookup(&t, "secure.example.com", "/")
            .unwrap()
            .https_redirect
    );
}

#[test]
fn default_backend_of_many_hosts_is_resolved_and_diagnosed_once() {
    let spec = "  ingressClassName: pingress\n  tls:\n  - hosts: [a.example.com]\n    secretName: cert\n  defaultBackend: {service: {name: gone, port: {number: 80}}}\n  rules:\n  - host: a.example.com\n    http:\n      paths:\n      - {path: /x, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n  - host: b.example.com\n    http:\n      paths:\n      - {path: /x, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n";
    let y = format!("{SERVICES}{}", ingress("a", "", spec));
    let t = translate(&snap(&y), &conf());
    let missing: Vec<_> = t
        .diagnostics
        .iter()
        .filter(|d| d.kind == DiagKind::ServiceNotFound)
        .collect();
    assert_eq!(missing.len(), 1, "{:?}", t.diagnostics);
    // Each host's default still carries that host's TLS settings.
    let a = lookup(&t, "a.example.com", "/other").unwrap();
    let b = lookup(&t, "b.example.com", "/other").unwrap();
    assert!(matches!(a.backend, BackendSpec::Unavailable { .. }));
    assert!(a.tls_host && a.https_redirect);
    assert!(!b.tls_host && !b.https_redirect);
}

// ---- ingress-nginx annotations: translation ----

fn annotated(name: &str, annotations: &[(&str, &str)], rules: &str) -> String {
    let mut meta = String::from("  annotations:\n");
    for (k, v) in annotations {
        meta.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: \"{v}\"\n"));
    }
    if annotations.is_empty() {
        meta.clear();
    }
    ingress(
        name,
        &meta,
        &format!("  ingressClassName: pingress\n  rules:\n{rules}"),
    )
}

fn rule(host: &str, paths: &[(&str, &str)]) -> String {
    let mut s = format!("  - host: {host}\n    http:\n      paths:\n");
    for (kind, p) in paths {
        s.push_str(&format!(
            "      - {{path: \"{p}\", pathType: {kind}, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
        ));
    }
    s
}

fn policy(r: Option<&RouteSpec>) -> &Policy<RouteSpec> {
    r.and_then(|r| r.policy.as_deref())
        .expect("a route with a policy")
}

#[test]
fn one_regex_ingress_puts_every_path_of_its_host_in_regex_mode() {
    let y = format!(
        "{SERVICES}{}{}",
        annotated(
            "plain",
            &[],
            &rule("r.example.com", &[("Exact", "/exact"), ("Prefix", "/p")])
        ),
        annotated(
            "regex",
            &[("use-regex", "true")],
            &rule(
                "r.example.com",
                &[("ImplementationSpecific", "/api/v[0-9]+")]
            )
        ),
    );
    let t = translate(&snap(&y), &conf());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    // Exact and Prefix became case-insensitive, start-anchored regexes, not end-anchored.
    for (path, found) in [
        ("/exact", true),
        ("/EXACT/more", true),
        ("/pq", true),
        ("/API/v2/x", true),
        ("/api/vx", false),
        ("/other", false),
    ] {
        assert_eq!(lookup(&t, "r.example.com", path).is_some(), found, "{path}");
    }
    // Other hosts keep exact and element-wise matching.
    let y2 = format!(
        "{y}{}",
        annotated("other", &[], &rule("o.example.com", &[("Prefix", "/p")]))
    );
    let t = translate(&snap(&y2), &conf());
    assert!(lookup(&t, "o.example.com", "/pq").is_none());
}

#[test]
fn regex_mode_orders_paths_by_length_and_reports_invalid_ones() {
    let y = format!(
        "{SERVICES}{}",
        annotated(
            "regex",
            &[("use-regex", "true")],
            &rule(
                "r.example.com",
                &[
                    ("Prefix", "/"),
                    ("Prefix", "/a(/|$)(.*)"),
                    ("Prefix", "/b(?=x)")
                ]
            )
        ),
    );
    let t = translate(&snap(&y), &conf());
    let bad: Vec<_> = t
        .diagnostics
        .iter()
        .filter(|d| d.kind == DiagKind::InvalidPath)
        .collect();
    assert_eq!(bad.len(), 1, "{:?}", t.diagnostics);
    assert!(bad[0].message.contains("/b(?=x)"), "{}", bad[0].message);
    let hosts = t.routes.hosts();
    let rules = hosts[0].1.rules();
    let order: Vec<&str> = rules.iter().map(|r| r.1).collect();
    assert_eq!(order, ["(?i)^/a(/|$)(.*)", "(?i)^/"]);
}

#[test]
fn rewrite_target_with_captures_and_forwarded_prefix() {
    let y = format!(
        "{SERVICES}{}",
        annotated(
            "rw",
            &[
                ("rewrite-target", "/$2"),
                ("x-forwarded-prefix", "/something"),
                ("upstream-vhost", "internal.svc")
            ],
            &rule("rw.example.com", &[("Prefix", "/something(/|$)(.*)")])
        ),
    );
    let t = translate(&snap(&y), &conf());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let p = policy(lookup(&t, "rw.example.com", "/something/new"));
    let rw = p.rewrite.as_ref().unwrap();
    assert_eq!(rw.apply("/something/new").as_deref(), Some("/new"));
    assert_eq!(rw.apply("/something").as_deref(), Some("/"));
    assert_eq!(rw.apply("/SOMETHING/x/y").as_deref(), Some("/x/y"));
    let set: Vec<_> = p
        .request_headers
        .set
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(
        set,
        [
            ("host", "internal.svc"),
            ("x-forwarded-prefix", "/something")
        ]
    );
}

#[test]
fn redirects_app_root_alias_and_www() {
    let y = format!(
        "{SERVICES}{}{}{}",
        annotated(
            "moved",
            &[("permanent-redirect", "https://new.example.com/landing")],
            &rule("old.example.com", &[("Prefix", "/")])
        ),
        annotated(
            "site",
            &[
                ("app-root", "/app"),
                ("server-alias", "alias.example.com"),
                ("from-to-www-redirect", "true")
            ],
            &rule("site.example.com", &[("Prefix", "/")])
        ),
        annotated(
            "z-late",
            &[("app-root", "/other")],
            &rule("site.example.com", &[("Prefix", "/late")])
        ),
    );
    let t = translate(&snap(&y), &conf());
    let r = policy(lookup(&t, "old.example.com", "/x"))
        .redirect
        .clone()
        .unwrap();
    assert_eq!(
        (r.code, r.to),
        (
            301,
            RedirectTo::Url("https://new.example.com/landing".into())
        )
    );
    let root = policy(lookup(&t, "site.example.com", "/"))
        .redirect
        .clone()
        .unwrap();
    assert_eq!((root.code, root.to), (302, RedirectTo::Path("/app".into())));
    assert!(lookup(&t, "site.example.com", "/x")
        .unwrap()
        .policy
        .is_none());
    // The alias serves the same rules.
    assert_eq!(
        service_of(lookup(&t, "alias.example.com", "/x")).as_deref(),
        Some("web:80")
    );
    let www = policy(lookup(&t, "www.site.example.com", "/any"))
        .redirect
        .clone()
        .unwrap();
    assert_eq!(
        (www.code, www.to),
        (308, RedirectTo::Host("site.example.com".into()))
    );
    // The younger Ingress's app-root loses, with a conflict naming the older.
    assert!(
        t.diagnostics.iter().any(|d| d.kind == DiagKind::Conflict
            && d.message.contains("app-root")
            && d.message.contains("shop/site")),
        "{:?}",
        t.diagnostics
    );
}

#[test]
fn canary_attaches_to_the_main_rule_of_the_same_host_path_and_kind() {
    let canary = |name: &str, path: &str| {
        annotated(
            name,
            &[
                ("canary", "true"),
                ("canary-by-header", "X-Canary"),
                ("canary-weight", "10"),
            ],
            &rule("c.example.com", &[("Prefix", path)])
                .replace("name: web", "name: api")
                .replace("number: 80", "number: 8080"),
        )
    };
    let y = format!(
        "{SERVICES}{}{}{}{}",
        annotated("main", &[], &rule("c.example.com", &[("Prefix", "/")])),
        canary("canary", "/"),
        canary("lost", "/nomain"),
        canary("second", "/"),
    );
    let t = translate(&snap(&y), &conf());
    let main = lookup(&t, "c.example.com", "/x").unwrap();
    assert_eq!(main.ingress, Some(ObjKey::new("shop", "main")));
    let (rule, c) = policy(Some(main)).canary.clone().unwrap();
    assert_eq!(rule.weight, 10);
    assert_eq!(service_of(Some(&c)).as_deref(), Some("api:8080"));
    assert_eq!(c.ingress, Some(ObjKey::new("shop", "canary")));
    // The canary adds no routes of its own.
    assert!(
        lookup(&t, "c.example.com", "/nomain").unwrap().ingress
            == Some(ObjKey::new("shop", "main"))
    );
    let msgs: Vec<_> = t.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("shop/lost") && m.contains("no main Ingress")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("shop/second") && m.contains("already its canary")),
        "{msgs:?}"
    );
}

#[test]
fn a_refused_update_keeps_the_last_good_version() {
    let good = annotated(
        "web",
        &[("proxy-body-size", "1k")],
        &rule("g.example.com", &[("Prefix", "/")]),
    );
    let t1 = translate(&snap(&format!("{SERVICES}{good}")), &conf());
    assert!(t1.refused.is_empty());
    assert_eq!(
        policy(lookup(&t1, "g.example.com", "/")).body_limit,
        Some(1024)
    );
    // The update has a redirect URL ingress-nginx refuses: the old version keeps serving.
    let bad = annotated(
        "web",
        &[("permanent-redirect", "https://x.com/$request_uri")],
        &rule("g.example.com", &[("Prefix", "/")]),
    );
    let t2 = translate_with(&snap(&format!("{SERVICES}{bad}")), &conf(), &t1.accepted);
    assert_eq!(
        policy(lookup(&t2, "g.example.com", "/")).body_limit,
        Some(1024)
    );
    let d = t2
        .diagnostics
        .iter()
        .find(|d| d.kind == DiagKind::InvalidAnnotation && d.message.contains("last good"))
        .expect("a diagnostic");
    assert!(d.message.contains("permanent-redirect"), "{d}");
    // Without a last good version it is refused outright.
    let t3 = translate(&snap(&format!("{SERVICES}{bad}")), &conf());
    assert!(lookup(&t3, "g.example.com", "/").is_none());
    assert!(t3.refused.contains_key(&ObjKey::new("shop", "web")));
}

#[test]
fn balancing_belongs_to_the_pool_and_the_oldest_ingress_sets_it() {
    let y = format!(
        "{SERVICES}{}{}",
        annotated(
            "a",
            &[("affinity", "cookie"), ("session-cookie-name", "sticky")],
            &rule("a.example.com", &[("Prefix", "/shop")])
        ),
        annotated(
            "b",
            &[("load-balance", "ewma")],
            &rule("b.example.com", &[("Prefix", "/")])
        ),
    );
    let t = translate(&snap(&y), &conf());
    for (host, rule_path) in [("a.example.com", "/shop"), ("b.example.com", "/")] {
        match &policy(lookup(&t, host, "/shop")).balance {
            Balance::Cookie(a) => {
                assert_eq!(a.name, "sticky");
                assert_eq!(
                    a.path.as_deref(),
                    Some(rule_path),
                    "the rule's path by default"
                );
            }
            other => panic!("{host}: {other:?}"),
        }
    }
    assert!(t
        .diagnostics
        .iter()
        .any(|d| d.kind == DiagKind::Conflict && d.message.contains("balancing")));
}

#[test]
fn every_annotation_gets_a_verdict_and_snippets_are_never_applied() {
    let y = format!(
        "{SERVICES}{}",
        annotated(
            "v",
            &[
                ("proxy-read-timeout", "30"),
                ("proxy-buffering", "off"),
                ("configuration-snippet", "more_set_headers X: y;"),
                ("enable-opentracing", "true"),
                ("proxy-connect-timeout", "5s"),
            ],
            &rule("v.example.com", &[("Prefix", "/")])
        ),
    );
    let t = translate(&snap(&y), &conf());
    let v = &t.annotations[&ObjKey::new("shop", "v")];
    let st = |k: &str| v.iter().find(|x| x.key.ends_with(k)).map(|x| x.status);
    assert_eq!(st("/proxy-read-timeout"), Some(Status::Applied));
    assert_eq!(st("/proxy-buffering"), Some(Status::Differs));
    assert_eq!(st("/configuration-snippet"), Some(Status::Ignored));
    assert_eq!(st("/enable-opentracing"), Some(Status::Ignored));
    assert_eq!(st("/proxy-connect-timeout"), Some(Status::Invalid));
    let kinds: Vec<_> = t.diagnostics.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == DiagKind::UnsupportedAnnotation)
            .count(),
        2,
        "{:?}",
        t.diagnostics
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == DiagKind::InvalidAnnotation)
            .count(),
        1
    );
    assert!(t
        .diagnostics
        .iter()
        .any(|d| d.message.contains("never executed")));
}

#[test]
fn cookie_affinity_on_a_regex_host_needs_an_explicit_cookie_path() {
    let y = format!(
        "{SERVICES}{}",
        annotated(
            "rx",
            &[("use-regex", "true"), ("affinity", "cookie")],
            &rule("rx.example.com", &[("Prefix", "/api/v[0-9]+")])
        ),
    );
    let t = translate(&snap(&y), &conf());
    match &policy(lookup(&t, "rx.example.com", "/api/v1")).balance {
        Balance::Cookie(a) => assert_eq!(a.path.as_deref(), Some("/")),
        other => panic!("{other:?}"),
    }
    assert!(
        t.diagnostics
            .iter()
            .any(|d| d.message.contains("session-cookie-path must be set")),
        "{:?}",
        t.diagnostics
    );
    let y = y.replace(
        "affinity: \"cookie\"",
        "affinity: \"cookie\"\n    nginx.ingress.kubernetes.io/session-cookie-path: \"/api\"",
    );
    let t = translate(&snap(&y), &conf());
    match &policy(lookup(&t, "rx.example.com", "/api/v1")).balance {
        Balance::Cookie(a) => assert_eq!(a.path.as_deref(), Some("/api")),
        other => panic!("{other:?}"),
    }
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
}
