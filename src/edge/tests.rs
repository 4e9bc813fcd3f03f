use super::*;

const LIMITS: HeadLimits = HeadLimits {
    request_line: 64,
    field_line: 40,
    head: 256,
    fields: 4,
};

/// A parsed head as Pingora would hand it over, and its raw bytes.
fn head(
    method: &str,
    target: &str,
    version: Version,
    fields: &[(&str, &str)],
) -> (RequestHeader, Vec<u8>) {
    let mut req = RequestHeader::build(method, target.as_bytes(), None).unwrap();
    req.set_version(version);
    let v = if version == Version::HTTP_10 {
        "1.0"
    } else {
        "1.1"
    };
    let mut raw = format!("{method} {target} HTTP/{v}\r\n");
    for (k, val) in fields {
        req.append_header(k.to_string(), *val).unwrap();
        raw.push_str(&format!("{k}: {val}\r\n"));
    }
    raw.push_str("\r\n");
    (req, raw.into_bytes())
}

fn verdict(
    method: &str,
    target: &str,
    version: Version,
    fields: &[(&str, &str)],
) -> Result<(), Refusal> {
    let (req, raw) = head(method, target, version, fields);
    check_h1(&req, &raw, &LIMITS)
}

fn status(r: Result<(), Refusal>) -> u16 {
    r.map_or_else(|e| e.status, |_| 200)
}

#[test]
fn plain_requests_pass() {
    for (m, t) in [
        ("GET", "/"),
        ("POST", "/a?b=c"),
        ("OPTIONS", "*"),
        ("GET", "http://a.example/x"),
    ] {
        assert_eq!(
            verdict(m, t, Version::HTTP_11, &[("Host", "a.example")]),
            Ok(()),
            "{m} {t}"
        );
    }
    assert_eq!(verdict("GET", "/", Version::HTTP_10, &[]), Ok(()));
    assert_eq!(
        verdict("GET", "http://a.example/", Version::HTTP_11, &[]),
        Ok(())
    );
}

#[test]
fn targets_follow_rfc_9112() {
    let host = &[("Host", "a.example")][..];
    assert_eq!(status(verdict("GET", "*", Version::HTTP_11, host)), 400);
    assert_eq!(status(verdict("DELETE", "*", Version::HTTP_11, host)), 400);
    assert_eq!(
        status(verdict("GET", "ftp://a.example/", Version::HTTP_11, host)),
        400
    );
    assert_eq!(
        status(verdict("GET", "a.example", Version::HTTP_11, host)),
        400
    );
    assert_eq!(status(verdict("GET", "?a=b", Version::HTTP_11, host)), 400);
    assert_eq!(
        status(verdict("GET", "http:///x", Version::HTTP_11, host)),
        400
    );
    assert_eq!(
        status(verdict(
            "GET",
            "HTTPS://a.example:8443?x",
            Version::HTTP_11,
            host
        )),
        200
    );
    assert_eq!(
        absolute_authority(b"http://a.example:80/p"),
        Some(&b"a.example:80"[..])
    );
    assert_eq!(absolute_authority(b"/p"), None);
}

#[test]
fn host_is_required_once_and_valid() {
    assert_eq!(
        verdict("GET", "/", Version::HTTP_11, &[])
            .unwrap_err()
            .reason,
        "HTTP/1.1 request without Host"
    );
    for bad in [
        "name:abc", "a b", "a:99999", "a:1:2", "[::1", "[zz]:80", "a/b", "a\"b",
    ] {
        assert!(!valid_authority(bad.as_bytes()), "{bad}");
    }
    for good in [
        "",
        "a.example",
        "a.example:8080",
        "127.0.0.1:80",
        "[::1]:443",
        "[2001:db8::1]",
        "xn--bcher-kva.example",
        "a:",
    ] {
        assert!(valid_authority(good.as_bytes()), "{good}");
    }
    let two = &[("Host", "a"), ("Host", "a")][..];
    assert_eq!(status(verdict("GET", "/", Version::HTTP_11, two)), 400);
}

#[test]
fn framing_is_unambiguous() {
    let h = |te: &str| {
        verdict(
            "POST",
            "/",
            Version::HTTP_11,
            &[("Host", "a"), ("Transfer-Encoding", te)],
        )
    };
    assert_eq!(h("chunked"), Ok(()));
    assert_eq!(h("Chunked "), Ok(()));
    assert_eq!(status(h("gzip, chunked")), 400);
    assert_eq!(status(h("identity")), 400);
    let two = &[
        ("Host", "a"),
        ("Transfer-Encoding", "chunked"),
        ("Transfer-Encoding", "chunked"),
    ][..];
    assert_eq!(status(verdict("POST", "/", Version::HTTP_11, two)), 400);
    let te10 = &[("Transfer-Encoding", "chunked")][..];
    assert_eq!(status(verdict("POST", "/", Version::HTTP_10, te10)), 400);

    // Pingora drops Content-Length when Transfer-Encoding is there: the raw head keeps it.
    let (mut req, _) = head(
        "POST",
        "/",
        Version::HTTP_11,
        &[("Host", "a"), ("Transfer-Encoding", "chunked")],
    );
    let raw =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ncontent-LENGTH: 5\r\n\r\n";
    assert_eq!(
        check_h1(&req, raw, &LIMITS).unwrap_err().reason,
        "Transfer-Encoding together with Content-Length"
    );
    req.remove_header("Transfer-Encoding");
    assert_eq!(
        check_h1(&req, raw, &LIMITS),
        Ok(()),
        "no TE in the parsed head: the CL alone frames it"
    );

    let cl = |v: &str| {
        status(verdict(
            "POST",
            "/",
            Version::HTTP_11,
            &[("Host", "a"), ("Content-Length", v)],
        ))
    };
    assert_eq!(cl("0"), 200);
    assert_eq!(cl("5, 5"), 200);
    assert_eq!(cl("9223372036854775807"), 200);
    assert_eq!(cl("9223372036854775808"), 400);
    assert_eq!(cl("+5"), 400);
    assert_eq!(cl("-1"), 400);
    assert_eq!(cl("0x10"), 400);
    assert_eq!(cl("5,"), 400);
    assert_eq!(cl("1e3"), 400);
}

#[test]
fn head_limits_answer_414_and_431() {
    let long = format!("/{}", "a".repeat(70));
    assert_eq!(
        verdict("GET", &long, Version::HTTP_11, &[("Host", "a")])
            .unwrap_err()
            .status,
        414
    );
    let big = "b".repeat(40);
    assert_eq!(
        verdict("GET", "/", Version::HTTP_11, &[("Host", "a"), ("X", &big)])
            .unwrap_err()
            .reason,
        "header field too large"
    );
    let many: Vec<(&str, &str)> = vec![
        ("Host", "a"),
        ("A", "1"),
        ("B", "1"),
        ("C", "1"),
        ("D", "1"),
    ];
    assert_eq!(
        verdict("GET", "/", Version::HTTP_11, &many)
            .unwrap_err()
            .reason,
        "too many header fields"
    );
    assert_eq!(verdict("GET", "/", Version::HTTP_11, &many[..4]), Ok(()));
    let raw = vec![b'x'; 300];
    let (req, _) = head("GET", "/", Version::HTTP_11, &[("Host", "a")]);
    assert_eq!(
        check_h1(&req, &raw, &LIMITS).unwrap_err().reason,
        "request head too large"
    );
}

#[test]
fn http2_targets_and_authorities() {
    // As the h2 crate builds it: the path, and `:authority` parsed as an Authority.
    let h2 = |method: &str, uri: &str, host: &[&str]| {
        let (authority, path) = match uri.strip_prefix("http://") {
            Some(rest) => rest.split_at(rest.find('/').unwrap()),
            None => ("", uri),
        };
        let mut req = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        if !authority.is_empty() {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(http::uri::Authority::try_from(authority).unwrap());
            parts.path_and_query = Some(path.parse().unwrap());
            req.set_uri(http::Uri::from_parts(parts).unwrap());
        }
        req.set_version(Version::HTTP_2);
        for h in host {
            req.append_header("host", *h).unwrap();
        }
        status(check_h2(&req))
    };
    assert_eq!(h2("GET", "http://a.test/x", &[]), 200);
    assert_eq!(h2("GET", "/x", &["a.test"]), 200);
    assert_eq!(h2("OPTIONS", "*", &[]), 200);
    assert_eq!(h2("GET", "*", &[]), 400);
    assert_eq!(h2("GET", "http://a.test:abc/x", &[]), 400);
    assert_eq!(h2("GET", "http://a.test:99999/x", &[]), 400);
    assert_eq!(h2("GET", "/x", &["a.test:abc"]), 400);
    assert_eq!(h2("GET", "/x", &["a.test", "a.test"]), 400);
}
