use super::*;

fn table(rules: &[(&str, PathKind, &str)]) -> RouteTable<String> {
    let mut t = RouteTable::default();
    for (i, (host, kind, path)) in rules.iter().enumerate() {
        let host = HostMatch::parse(Some(host)).unwrap();
        t.insert_path(&host, *kind, path, format!("r{i}:{path}"))
            .unwrap();
    }
    t
}

use PathKind::{Exact, Prefix};

/// (rules, request path, expected rule index or None).
type Case<'a> = (&'a [(PathKind, &'a str)], &'a str, Option<usize>);

/// Every example of the Kubernetes Ingress documentation's path-matching table.
#[test]
fn kubernetes_docs_path_matching_table() {
    let cases: &[Case] = &[
        (&[(Prefix, "/")], "/", Some(0)),
        (&[(Prefix, "/")], "/anything/at/all", Some(0)),
        (&[(Exact, "/foo")], "/foo", Some(0)),
        (&[(Exact, "/foo")], "/bar", None),
        (&[(Exact, "/foo")], "/foo/", None),
        (&[(Exact, "/foo/")], "/foo", None),
        (&[(Prefix, "/foo")], "/foo", Some(0)),
        (&[(Prefix, "/foo")], "/foo/", Some(0)),
        (&[(Prefix, "/foo/")], "/foo", Some(0)),
        (&[(Prefix, "/foo/")], "/foo/", Some(0)),
        (&[(Prefix, "/aaa/bb")], "/aaa/bbb", None),
        (&[(Prefix, "/aaa/bbb")], "/aaa/bbb", Some(0)),
        (&[(Prefix, "/aaa/bbb/")], "/aaa/bbb", Some(0)),
        (&[(Prefix, "/aaa/bbb")], "/aaa/bbb/", Some(0)),
        (&[(Prefix, "/aaa/bbb")], "/aaa/bbb/ccc", Some(0)),
        (&[(Prefix, "/aaa/bbb")], "/aaa/bbbxyz", None),
        (&[(Prefix, "/"), (Prefix, "/aaa")], "/aaa/ccc", Some(1)),
        (
            &[(Prefix, "/"), (Prefix, "/aaa"), (Prefix, "/aaa/bbb")],
            "/aaa/bbb",
            Some(2),
        ),
        (
            &[(Prefix, "/"), (Prefix, "/aaa"), (Prefix, "/aaa/bbb")],
            "/ccc",
            Some(0),
        ),
        (&[(Prefix, "/aaa")], "/ccc", None),
        (&[(Prefix, "/foo"), (Exact, "/foo")], "/foo", Some(1)),
    ];
    for (rules, path, want) in cases {
        let mut t = RouteTable::default();
        for (i, (kind, p)) in rules.iter().enumerate() {
            t.insert_path(&HostMatch::Any, *kind, p, i).unwrap();
        }
        assert_eq!(
            t.lookup("example.com", path).copied(),
            *want,
            "rules {rules:?} path {path}"
        );
    }
}

#[test]
fn prefix_does_not_match_partial_segment() {
    let t = table(&[("a.com", Prefix, "/foo")]);
    assert!(t.lookup("a.com", "/foobar").is_none());
    assert!(t.lookup("a.com", "/foo/bar").is_some());
}

#[test]
fn exact_is_case_sensitive() {
    let t = table(&[("a.com", Exact, "/Foo")]);
    assert!(t.lookup("a.com", "/Foo").is_some());
    assert!(t.lookup("a.com", "/foo").is_none());
}

#[test]
fn longest_prefix_wins_over_exact_of_a_shorter_path() {
    let t = table(&[("a.com", Exact, "/a"), ("a.com", Prefix, "/a/b")]);
    assert_eq!(t.lookup("a.com", "/a/b/c").unwrap(), "r1:/a/b");
    assert_eq!(t.lookup("a.com", "/a").unwrap(), "r0:/a");
}

#[test]
fn wildcard_matches_exactly_one_label() {
    let t = table(&[("*.example.com", Prefix, "/")]);
    assert!(t.lookup("a.example.com", "/").is_some());
    assert!(t.lookup("A.Example.COM", "/").is_some());
    assert!(t.lookup("a.b.example.com", "/").is_none());
    assert!(t.lookup("example.com", "/").is_none());
    assert!(t.lookup(".example.com", "/").is_none());
}

#[test]
fn exact_host_beats_wildcard_and_does_not_fall_through() {
    let t = table(&[
        ("*.example.com", Prefix, "/"),
        ("api.example.com", Prefix, "/v1"),
    ]);
    assert_eq!(t.lookup("api.example.com", "/v1/x").unwrap(), "r1:/v1");
    assert!(t.lookup("api.example.com", "/other").is_none());
    assert_eq!(t.lookup("www.example.com", "/other").unwrap(), "r0:/");
}

#[test]
fn rule_without_host_matches_any_other_host() {
    let t = table(&[("", Prefix, "/"), ("a.com", Exact, "/x")]);
    assert_eq!(t.lookup("anything.net", "/y").unwrap(), "r0:/");
    assert_eq!(t.lookup("", "/y").unwrap(), "r0:/");
    assert!(t.lookup("a.com", "/y").is_none());
}

#[test]
fn host_match_ignores_case_port_and_trailing_dot() {
    let t = table(&[("foo.bar.com", Prefix, "/")]);
    for h in [
        "foo.bar.com",
        "FOO.bar.Com",
        "foo.bar.com:8080",
        "foo.bar.com.",
        " foo.bar.com ",
    ] {
        assert!(t.lookup(h, "/").is_some(), "{h}");
    }
    assert!(t.lookup("foo.bar.co", "/").is_none());
}

#[test]
fn host_default_then_table_fallback() {
    let mut t = table(&[("a.com", Prefix, "/api")]);
    t.insert_host_default(&HostMatch::Exact("a.com".into()), "a-default".into())
        .unwrap();
    assert_eq!(t.lookup("a.com", "/web").unwrap(), "a-default");
    assert!(t.lookup("b.com", "/web").is_none());
    t.insert_fallback("fallback".into()).unwrap();
    assert_eq!(t.lookup("b.com", "/web").unwrap(), "fallback");
    assert_eq!(t.lookup("a.com", "/api/x").unwrap(), "r0:/api");
    assert!(t.insert_fallback("again".into()).is_err());
}

#[test]
fn same_host_path_and_kind_is_occupied_once() {
    let mut t = table(&[("a.com", Prefix, "/x/")]);
    let h = HostMatch::Exact("a.com".into());
    assert_eq!(t.insert_path(&h, Prefix, "/x", "b".into()), Err(Occupied));
    assert!(t.insert_path(&h, Exact, "/x", "c".into()).is_ok());
}

#[test]
fn host_parse_rejects_ips_and_bad_wildcards() {
    assert_eq!(HostMatch::parse(None).unwrap(), HostMatch::Any);
    assert_eq!(
        HostMatch::parse(Some("*.Example.com")).unwrap(),
        HostMatch::Wildcard("example.com".into())
    );
    assert!(matches!(
        HostMatch::parse(Some("10.0.0.1")),
        Err(HostError::IpAddress(_))
    ));
    assert!(matches!(
        HostMatch::parse(Some("a.com:80")),
        Err(HostError::IpAddress(_))
    ));
    assert!(matches!(
        HostMatch::parse(Some("a.*.com")),
        Err(HostError::BadWildcard(_))
    ));
    assert!(matches!(
        HostMatch::parse(Some("bad host")),
        Err(HostError::Invalid(_))
    ));
}

#[test]
fn normalize_host_handles_ipv6_literals() {
    let mut b = [0u8; 256];
    assert_eq!(normalize_host("[::1]:8080", &mut b), Some("[::1]"));
    assert_eq!(normalize_host("", &mut b), None);
}

#[test]
fn normalize_host_drops_port_dot_and_case_and_copies_only_when_it_must() {
    let cases = [
        ("example.com", Some("example.com")),
        (" Example.COM.:8443 ", Some("example.com")),
        ("a.b:80", Some("a.b")),
        ("[::1]", Some("[::1]")),
        ("[::1", Some("[::1")),
        (":80", None),
        (".", None),
    ];
    for (raw, want) in cases {
        let mut b = [0u8; 256];
        assert_eq!(normalize_host(raw, &mut b), want, "{raw:?}");
    }
    let raw = "web.example";
    let mut b = [0u8; 256];
    let got = normalize_host(raw, &mut b).unwrap();
    assert!(
        std::ptr::eq(got, raw),
        "an already normal host is not copied"
    );
    let long = "a".repeat(257);
    assert_eq!(normalize_host(&long, &mut b), None);
}

#[test]
fn map_keeps_every_route() {
    let t = table(&[
        ("a.com", Prefix, "/"),
        ("*.b.com", Exact, "/x"),
        ("", Prefix, "/"),
    ]);
    let m = t.map(|s| s.len());
    assert_eq!(m.len(), 3);
    assert_eq!(m.lookup("q.b.com", "/x"), Some(&"r1:/x".len()));
}

fn regex_table(patterns: &[&str]) -> RouteTable<usize> {
    let mut t = RouteTable::default();
    let h = HostMatch::Exact("r.com".into());
    for (i, p) in patterns.iter().enumerate() {
        t.insert_path(&h, PathKind::Regex, p, i).unwrap();
    }
    t.finish().unwrap();
    t
}

#[test]
fn hosts_with_the_same_regex_patterns_share_one_matcher() {
    let mut t = RouteTable::default();
    let same = ["(?i)^/svc(/|$)(.*)", "(?i)^/api"];
    for (i, host) in ["a.com", "b.com", "c.com"].iter().enumerate() {
        let h = HostMatch::Exact((*host).into());
        let patterns: &[&str] = if i < 2 { &same } else { &same[..1] };
        for (j, p) in patterns.iter().enumerate() {
            t.insert_path(&h, PathKind::Regex, p, i * 10 + j).unwrap();
        }
    }
    t.finish().unwrap();
    let matchers = |host: &str| {
        t.exact
            .get(host)
            .unwrap()
            .regex
            .as_ref()
            .and_then(|r| r.matchers.clone())
            .expect("compiled")
    };
    assert!(Arc::ptr_eq(&matchers("a.com"), &matchers("b.com")));
    assert!(!Arc::ptr_eq(&matchers("a.com"), &matchers("c.com")));
    // Shared, each host still answers with its own targets.
    assert_eq!(t.lookup("a.com", "/SVC/x"), Some(&0));
    assert_eq!(t.lookup("b.com", "/svc/x"), Some(&10));
    assert_eq!(t.lookup("b.com", "/api/x"), Some(&11));
    assert_eq!(t.lookup("c.com", "/svc"), Some(&20));
    assert_eq!(t.lookup("c.com", "/api"), None);
}

#[test]
fn regex_rules_are_tried_in_order_and_the_first_match_wins() {
    // As ingress-nginx orders them: longest path first, case-insensitive, start-anchored.
    let t = regex_table(&["(?i)^/api/v[0-9]+/users", "(?i)^/api", "(?i)^/"]);
    let cases: &[(&str, Option<usize>)] = &[
        ("/api/v2/users/7", Some(0)),
        ("/API/V2/USERS", Some(0)),
        ("/api/vx/users", Some(1)),
        ("/apiary", Some(1)),
        ("/other", Some(2)),
        ("/", Some(2)),
    ];
    for (path, want) in cases {
        assert_eq!(t.lookup("r.com", path).copied(), *want, "{path}");
    }
    // Not end-anchored, but start-anchored: a match must begin at the path's start.
    let t = regex_table(&["(?i)^/foo"]);
    assert_eq!(t.lookup("r.com", "/x/foo"), None);
    assert_eq!(t.lookup("r.com", "/foobar").copied(), Some(0));
}

#[test]
fn the_same_regex_twice_is_occupied() {
    let mut t = RouteTable::default();
    let h = HostMatch::Exact("r.com".into());
    t.insert_path(&h, PathKind::Regex, "^/a", 1).unwrap();
    assert_eq!(t.insert_path(&h, PathKind::Regex, "^/a", 2), Err(Occupied));
}

#[test]
fn exact_then_regex_then_prefix_rules() {
    let mut t = RouteTable::default();
    let h = HostMatch::Exact("r.com".into());
    t.insert_path(&h, PathKind::Regex, "^/r/[0-9]+$", "regex")
        .unwrap();
    t.insert_path(&h, PathKind::Prefix, "/", "prefix").unwrap();
    t.insert_path(&h, PathKind::Exact, "/r/1", "exact").unwrap();
    t.finish().unwrap();
    assert_eq!(t.lookup("r.com", "/r/1"), Some(&"exact"));
    assert_eq!(t.lookup("r.com", "/r/22"), Some(&"regex"));
    assert_eq!(t.lookup("r.com", "/r/x"), Some(&"prefix"));
}

#[test]
fn root_rule_answers_only_the_path_slash() {
    let mut t = table(&[("a.com", Prefix, "/")]);
    let h = HostMatch::Exact("a.com".into());
    t.insert_root(&h, "root".into()).unwrap();
    assert_eq!(t.lookup("a.com", "/").unwrap(), "root");
    assert_eq!(t.lookup("a.com", "/x").unwrap(), "r0:/");
    assert!(t.insert_root(&h, "again".into()).is_err());
}

fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

#[test]
fn conditional_rules_match_on_method_headers_query_and_cookies() {
    let h = HostMatch::Exact("c.com".into());
    let mut t = RouteTable::default();
    t.insert_path(&h, Prefix, "/", "plain").unwrap();
    let header = Conditions {
        headers: vec![("x-env".into(), ValueMatch::Exact("canary".into()))],
        ..Default::default()
    };
    t.insert_rule(&h, Prefix, "/", Some(header.clone()), "header")
        .unwrap();
    let both = Conditions {
        method: Some("POST".into()),
        headers: vec![("x-env".into(), ValueMatch::Exact("canary".into()))],
        ..Default::default()
    };
    t.insert_rule(&h, Prefix, "/", Some(both), "post+header")
        .unwrap();
    let query = Conditions {
        query: vec![(
            "v".into(),
            ValueMatch::Regex(regex::Regex::new("^[0-9]+$").unwrap()),
        )],
        ..Default::default()
    };
    t.insert_rule(&h, Prefix, "/q", Some(query), "query")
        .unwrap();
    let cookie = Conditions {
        cookies: vec![("beta".into(), ValueMatch::Exact("1".into()))],
        ..Default::default()
    };
    t.insert_rule(&h, Exact, "/c", Some(cookie), "cookie")
        .unwrap();
    assert_eq!(
        t.insert_rule(&h, Prefix, "/", Some(header), "again"),
        Err(Occupied)
    );

    let env = headers(&[("X-Env", "canary")]);
    let none = headers(&[]);
    let cookies = headers(&[("cookie", "a=b; beta=1")]);
    let req = |path, query, method, headers| Request {
        host: "c.com",
        path,
        query,
        method,
        headers: Some(headers),
        listener: Listener::default(),
    };
    let cases: &[(Request, &str)] = &[
        (req("/x", None, "GET", &none), "plain"),
        (req("/x", None, "GET", &env), "header"),
        (req("/x", None, "POST", &env), "post+header"),
        (req("/x", None, "POST", &none), "plain"),
        (req("/q/1", Some("a=b&v=42"), "GET", &none), "query"),
        // The /q rule's condition fails: the search goes on to the shorter prefix `/`.
        (req("/q/1", Some("v=abc"), "GET", &none), "plain"),
        (req("/q/1", Some("v=abc"), "GET", &env), "header"),
        (req("/c", None, "GET", &cookies), "cookie"),
        (req("/c", None, "GET", &none), "plain"),
    ];
    for (r, want) in cases {
        assert_eq!(t.lookup_request(r), Some(want), "{r:?}");
    }
}

#[test]
fn a_regex_rule_whose_conditions_fail_gives_way_to_the_next_match() {
    let h = HostMatch::Exact("r.com".into());
    let mut t = RouteTable::default();
    let cond = Conditions {
        method: Some("DELETE".into()),
        ..Default::default()
    };
    t.insert_rule(&h, PathKind::Regex, "^/a", Some(cond), "delete-a")
        .unwrap();
    t.insert_path(&h, PathKind::Regex, "^/", "any").unwrap();
    t.finish().unwrap();
    let mut r = Request::new("r.com", "/a/1");
    assert_eq!(t.lookup_request(&r), Some(&"any"));
    r.method = "DELETE";
    assert_eq!(t.lookup_request(&r), Some(&"delete-a"));
}

#[test]
fn an_invalid_regex_is_reported_by_finish() {
    let mut t = RouteTable::default();
    let h = HostMatch::Exact("r.com".into());
    t.insert_path(&h, PathKind::Regex, "^/(unclosed", 1)
        .unwrap();
    let e = t.finish().unwrap_err();
    assert!(e.contains("host r.com"), "{e}");
}

#[test]
fn a_gateway_wildcard_spans_several_labels_and_yields_to_exact_and_one_label_entries() {
    let mut t = RouteTable::default();
    let suffix = HostMatch::Suffix("wildcard.io".into());
    t.insert_path(&suffix, Prefix, "/", "suffix").unwrap();
    t.insert_path(
        &HostMatch::Suffix("b.wildcard.io".into()),
        Prefix,
        "/",
        "longer",
    )
    .unwrap();
    t.insert_path(
        &HostMatch::Wildcard("c.wildcard.io".into()),
        Prefix,
        "/",
        "ingress-wildcard",
    )
    .unwrap();
    t.insert_path(
        &HostMatch::Exact("x.b.wildcard.io".into()),
        Prefix,
        "/",
        "exact",
    )
    .unwrap();
    let cases = [
        ("foo.wildcard.io", Some("suffix")),
        ("foo.bar.wildcard.io", Some("suffix")),
        ("Foo.Bar.Wildcard.IO:8080", Some("suffix")),
        // Not the bare suffix itself.
        ("wildcard.io", None),
        ("a.b.wildcard.io", Some("longer")),
        ("z.a.b.wildcard.io", Some("longer")),
        ("x.b.wildcard.io", Some("exact")),
        ("y.c.wildcard.io", Some("ingress-wildcard")),
        // One-label Ingress wildcards stay one label; the Gateway suffix catches deeper hosts.
        ("z.y.c.wildcard.io", Some("suffix")),
        ("other.io", None),
    ];
    for (host, want) in cases {
        assert_eq!(t.lookup(host, "/p").copied(), want, "{host}");
    }
    let trace = t.trace(&Request::new("a.b.wildcard.io", "/"));
    assert_eq!(trace.host, Some(HostMatch::Suffix("b.wildcard.io".into())));
}

#[test]
fn rules_bound_to_listeners_answer_only_there() {
    let h = HostMatch::Exact("l.com".into());
    let mut t = RouteTable::default();
    let on = |tls, port| Conditions {
        listeners: vec![ListenerMatch { tls, port }],
        ..Default::default()
    };
    t.insert_rule(&h, Prefix, "/", Some(on(false, 0)), "every-plain")
        .unwrap();
    t.insert_rule(&h, Prefix, "/", Some(on(true, 0)), "every-tls")
        .unwrap();
    t.insert_rule(&h, Prefix, "/x", Some(on(false, 8080)), "plain-8080")
        .unwrap();
    let at = |tls, port, path| {
        let mut r = Request::new("l.com", path);
        r.listener = Listener { tls, port };
        t.lookup_request(&r).copied()
    };
    assert_eq!(at(false, 80, "/x"), Some("every-plain"));
    assert_eq!(at(false, 8080, "/x"), Some("plain-8080"));
    assert_eq!(at(false, 8080, "/y"), Some("every-plain"));
    assert_eq!(at(true, 443, "/x"), Some("every-tls"));
    assert_eq!(at(true, 8080, "/x"), Some("every-tls"));
}

#[test]
fn a_copy_with_hosts_replaced_leaves_the_original_and_shares_the_rest() {
    let mut t = RouteTable::default();
    for i in 0..500 {
        let h = HostMatch::Exact(format!("h{i}.example.com"));
        t.insert_path(&h, PathKind::Prefix, "/", i).unwrap();
    }
    t.finish().unwrap();
    let mut part = RouteTable::default();
    part.insert_path(
        &HostMatch::Exact("new.example.com".into()),
        PathKind::Prefix,
        "/",
        1000,
    )
    .unwrap();
    part.insert_path(
        &HostMatch::Exact("h7.example.com".into()),
        PathKind::Exact,
        "/x",
        1007,
    )
    .unwrap();
    let mut copy = t.clone();
    let gone = [
        HostMatch::Exact("h3.example.com".into()),
        HostMatch::Exact("h7.example.com".into()),
    ];
    copy.replace_hosts(&gone, false, part);
    // The copy: h3 gone, h7 replaced, a new host, the others as they were.
    assert_eq!(copy.host_count(), 500);
    assert_eq!(copy.lookup("h3.example.com", "/"), None);
    assert_eq!(copy.lookup("h7.example.com", "/"), None);
    assert_eq!(copy.lookup("h7.example.com", "/x"), Some(&1007));
    assert_eq!(copy.lookup("new.example.com", "/a"), Some(&1000));
    assert_eq!(copy.lookup("h499.example.com", "/a"), Some(&499));
    // The original is untouched.
    assert_eq!(t.host_count(), 500);
    assert_eq!(t.lookup("h3.example.com", "/"), Some(&3));
    assert_eq!(t.lookup("h7.example.com", "/x"), Some(&7));
    assert_eq!(t.lookup("new.example.com", "/"), None);
    // Untouched hosts are the same allocation in both.
    let a = t.exact.get("h100.example.com").unwrap();
    let b = copy.exact.get("h100.example.com").unwrap();
    assert!(Arc::ptr_eq(a, b));
}
