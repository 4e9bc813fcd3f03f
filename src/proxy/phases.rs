//! The policy phases of a request, each a small function over the route's typed
//! [`Policy`]; the proxy calls them in this fixed order (docs/annotations.md):
//!
//! 1. route lookup (in `request_filter`);
//! 2. redirects: app-root and permanent/temporal redirects, then HTTP to HTTPS;
//! 3. backend choice: canary (header, then cookie, then weight), then body limit, then the
//!    `default-backend` fallback when the pool has no ready endpoint;
//! 4. endpoint choice (`upstream_peer`): round robin, EWMA, consistent hash or cookie
//!    affinity;
//! 5. request rewrite and header changes (`upstream_request_filter`);
//! 6. response header changes and the affinity cookie (`response_filter`).
//!
//! A route without a policy skips every phase after one branch.

use std::net::SocketAddr;

use http::HeaderValue;
use pingora::http::RequestHeader;

use crate::routing::conditions::{cookie, query_param};
use crate::translate::model::{
    Affinity, AffinityMode, CanaryRule, HashPart, HeaderOps, HeaderRule, Redirect, RedirectTo,
};
use crate::upstream::{endpoint_id, Pool};

/// Ends the value of an affinity cookie issued for a canary backend, so that the client
/// stays on the canary (ingress-nginx's "sticky" canary behaviour).
pub const CANARY_MARK: &str = "~c";

/// A request already pinned by its affinity cookie: Some(true) to the canary, Some(false) to
/// the main backend; None when it has no such cookie.
pub fn pinned_to_canary(a: &Affinity, req: &RequestHeader) -> Option<bool> {
    cookie(Some(&req.headers), &a.name)
        .filter(|v| !v.is_empty())
        .map(|v| v.ends_with(CANARY_MARK))
}

/// Whether this request goes to the canary (ingress-nginx's order: header, cookie, weight).
pub fn canary_wanted(rule: &CanaryRule, req: &RequestHeader) -> bool {
    if let Some((name, how)) = &rule.header {
        if let Some(v) = req.headers.get(name).and_then(|v| v.to_str().ok()) {
            match how {
                HeaderRule::Value(want) if v == want => return true,
                HeaderRule::Pattern(p) if p.0.is_match(v) => return true,
                HeaderRule::AlwaysNever if v == "always" => return true,
                HeaderRule::AlwaysNever if v == "never" => return false,
                _ => {}
            }
        }
    }
    if let Some(name) = &rule.cookie {
        match cookie(Some(&req.headers), name) {
            Some("always") => return true,
            Some("never") => return false,
            _ => {}
        }
    }
    rule.weight > 0 && fastrand::u32(1..=rule.total.max(1)) <= rule.weight
}

/// The `Location` of a redirect for this request.
pub fn redirect_location(
    r: &Redirect,
    req: &RequestHeader,
    host: &str,
    tls: bool,
    local_port: Option<u16>,
) -> String {
    let scheme = if tls { "https" } else { "http" };
    match &r.to {
        RedirectTo::Url(u) => u.clone(),
        RedirectTo::Path(p) => format!("{scheme}://{host}{p}"),
        RedirectTo::Host(to) => {
            let uri = req.uri.path_and_query().map_or("/", |p| p.as_str());
            let uri = uri.strip_suffix('/').unwrap_or(uri);
            match local_port {
                Some(port) => format!("{scheme}://{to}:{port}{uri}"),
                None => format!("{scheme}://{to}{uri}"),
            }
        }
        RedirectTo::Parts(p) => {
            let scheme = p.scheme.as_deref().unwrap_or(scheme);
            let to = p
                .host
                .as_deref()
                .unwrap_or_else(|| crate::translate::template::host_without_port(host));
            // A scheme alone means its own well-known port; otherwise the listener's.
            let port = p.port.or(match p.scheme {
                Some(_) => None,
                None => p.listener_port.or(local_port),
            });
            let port = port.filter(|&n| !matches!((scheme, n), ("http", 80) | ("https", 443)));
            let path = req.uri.path();
            let path = p.path.as_ref().map(|c| c.apply(path));
            let path = path.as_deref().unwrap_or(req.uri.path());
            let mut out = match port {
                Some(n) => format!("{scheme}://{to}:{n}{path}"),
                None => format!("{scheme}://{to}{path}"),
            };
            if let Some(q) = req.uri.query() {
                out.push('?');
                out.push_str(q);
            }
            out
        }
    }
}

/// A request body larger than `limit` bytes (0: unlimited), by its Content-Length.
pub fn body_too_large(limit: u64, req: &RequestHeader) -> bool {
    limit > 0
        && req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > limit)
}

/// The hash key of `upstream-hash-by` for this request.
pub fn hash_key(parts: &[HashPart], req: &RequestHeader, client: Option<&str>) -> Vec<u8> {
    let mut key = Vec::with_capacity(64);
    for p in parts {
        match p {
            HashPart::Literal(s) => key.extend_from_slice(s.as_bytes()),
            HashPart::RequestUri => {
                let uri = req.uri.path_and_query().map_or("/", |p| p.as_str());
                key.extend_from_slice(uri.as_bytes());
            }
            HashPart::RemoteAddr => key.extend_from_slice(client.unwrap_or("").as_bytes()),
            HashPart::Host => {
                let h = super::host_without_port(super::request_host(req));
                key.extend_from_slice(h.as_bytes());
            }
            HashPart::Header(h) => {
                if let Some(v) = req.headers.get(h) {
                    key.extend_from_slice(v.as_bytes());
                }
            }
            HashPart::Cookie(c) => {
                if let Some(v) = cookie(Some(&req.headers), c) {
                    key.extend_from_slice(v.as_bytes());
                }
            }
            HashPart::Arg(a) => {
                if let Some(v) = query_param(req.uri.query(), a) {
                    key.extend_from_slice(v.as_bytes());
                }
            }
        }
    }
    key
}

/// Pick an endpoint by cookie affinity. Returns the endpoint and, when a new one was
/// chosen, the cookie value to set.
pub fn affinity_pick(
    a: &Affinity,
    pool: &Pool,
    req: &RequestHeader,
    tried: &[SocketAddr],
) -> Option<(SocketAddr, Option<String>)> {
    let have = cookie(Some(&req.headers), &a.name)
        .map(|v| v.strip_suffix(CANARY_MARK).unwrap_or(v))
        .filter(|v| !v.is_empty());
    // After a failed attempt, re-pick only when asked to (`change-on-failure`); a balanced
    // key otherwise moves to the next endpoint on the ring.
    let keep = tried.is_empty() || !a.change_on_failure;
    match a.mode {
        AffinityMode::Balanced => {
            if let Some(token) = have.filter(|_| keep) {
                return pool.select_hash(token.as_bytes(), tried).map(|e| (e, None));
            }
            let token = format!("{:016x}", fastrand::u64(..));
            let e = pool.select_hash(token.as_bytes(), tried)?;
            Some((e, Some(token)))
        }
        AffinityMode::Persistent => {
            if let Some(e) = have
                .filter(|_| keep)
                .and_then(|id| pool.select_id(id, tried))
            {
                return Some((e, None));
            }
            let e = pool.select(tried)?;
            Some((e, Some(endpoint_id(&e))))
        }
    }
}

/// User agents that mishandle `SameSite=None` (the list ingress-nginx's
/// conditional-samesite-none uses, in substance: Chrome 51-66, iOS 12, macOS 10.14 Safari).
fn rejects_samesite_none(ua: &str) -> bool {
    let chrome_old = ua
        .split("Chrome/")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|v| (51..=66).contains(&v));
    chrome_old
        || ua.contains("CPU iPhone OS 12_")
        || ua.contains("iPad; CPU OS 12_")
        || (ua.contains("Macintosh; Intel Mac OS X 10_14") && ua.contains("Version/"))
}

/// The `Set-Cookie` value of an affinity cookie.
pub fn affinity_cookie(
    a: &Affinity,
    value: &str,
    tls: bool,
    user_agent: Option<&str>,
) -> Option<HeaderValue> {
    let mut c = format!("{}={value}", a.name);
    c.push_str("; Path=");
    c.push_str(a.path.as_deref().unwrap_or("/"));
    if let Some(d) = &a.domain {
        c.push_str("; Domain=");
        c.push_str(d);
    }
    if let Some(secs) = a.expires {
        let at = std::time::SystemTime::now()
            .checked_add(std::time::Duration::from_secs(secs.max(0) as u64))
            .unwrap_or_else(std::time::SystemTime::now);
        c.push_str("; Expires=");
        c.push_str(&httpdate::fmt_http_date(at));
    }
    if let Some(m) = a.max_age {
        c.push_str(&format!("; Max-Age={m}"));
    }
    if let Some(s) = &a.samesite {
        let none = s.eq_ignore_ascii_case("none");
        let skip = none
            && a.conditional_samesite_none
            && s == "None"
            && user_agent.is_some_and(rejects_samesite_none);
        if !skip {
            c.push_str("; SameSite=");
            c.push_str(s);
        }
    }
    if a.secure || tls {
        c.push_str("; Secure");
    }
    c.push_str("; HttpOnly");
    HeaderValue::from_str(&c).ok()
}

/// Apply header changes through Pingora's remove, insert and append (which keep its
/// case-preserving map in step); the same for request and response heads.
macro_rules! header_ops {
    ($name:ident, $ty:ty) => {
        pub fn $name(ops: &HeaderOps, h: &mut $ty) -> pingora::Result<()> {
            for name in &ops.remove {
                h.remove_header(name);
            }
            for (n, v) in &ops.set {
                h.insert_header(n.clone(), v.clone())?;
            }
            for (n, v) in &ops.add {
                h.append_header(n.clone(), v.clone())?;
            }
            Ok(())
        }
    };
}

header_ops!(apply_request_headers, RequestHeader);

macro_rules! snippet_ops {
    ($name:ident, $ty:ty) => {
        /// Snippet header operations; `status`: the response's (None for a request).
        pub fn $name(
            ops: &[crate::translate::annotations::snippet::HeaderOp],
            vars: &crate::translate::template::Vars,
            status: Option<u16>,
            h: &mut $ty,
        ) -> pingora::Result<()> {
            use crate::translate::annotations::snippet::HeaderOp;
            // nginx's add_header without `always`: 200, 201, 204, 206, 301, 302, 303, 304,
            // 307 and 308 only.
            let success = status.is_none_or(|s| {
                matches!(s, 200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308)
            });
            for op in ops {
                match op {
                    HeaderOp::Clear(n) => {
                        h.remove_header(n);
                    }
                    HeaderOp::Set(n, t) => {
                        if let Ok(v) = HeaderValue::try_from(t.render(vars)) {
                            h.insert_header(n.clone(), v)?;
                        }
                    }
                    HeaderOp::Add(n, t, always) => {
                        if *always || success {
                            if let Ok(v) = HeaderValue::try_from(t.render(vars)) {
                                h.append_header(n.clone(), v)?;
                            }
                        }
                    }
                }
            }
            Ok(())
        }
    };
}

snippet_ops!(apply_request_snippet, RequestHeader);
snippet_ops!(apply_response_snippet, pingora::http::ResponseHeader);
header_ops!(apply_response_headers, pingora::http::ResponseHeader);

/// The CORS answer headers for an allowed request (`acao`: its Allow-Origin).
pub fn add_cors(
    c: &crate::translate::model::Cors,
    acao: &HeaderValue,
    resp: &mut pingora::http::ResponseHeader,
) -> pingora::Result<()> {
    resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, acao.clone())?;
    if c.credentials {
        resp.insert_header(
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        )?;
    }
    resp.insert_header(
        http::header::ACCESS_CONTROL_ALLOW_METHODS,
        c.methods.clone(),
    )?;
    resp.insert_header(
        http::header::ACCESS_CONTROL_ALLOW_HEADERS,
        c.headers.clone(),
    )?;
    if let Some(e) = &c.expose {
        resp.insert_header(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone())?;
    }
    resp.insert_header(http::header::ACCESS_CONTROL_MAX_AGE, c.max_age.clone())?;
    Ok(())
}

/// The user and password of an `Authorization: Basic` header.
pub fn basic_credentials(v: &[u8]) -> Option<(String, Vec<u8>)> {
    use base64::Engine as _;
    let (scheme, rest) = v.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = raw.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
    Some((user, raw[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn rule(header: Option<HeaderRule>, cookie: bool, weight: u32) -> CanaryRule {
        CanaryRule {
            header: header.map(|h| (http::HeaderName::from_static("x-canary"), h)),
            cookie: cookie.then(|| "canary".to_string()),
            weight,
            total: 100,
        }
    }

    #[test]
    fn canary_decision_order_header_cookie_weight() {
        let always = rule(Some(HeaderRule::AlwaysNever), true, 100);
        // `never` on the header is final, even with weight 100.
        assert!(!canary_wanted(&always, &req("/", &[("x-canary", "never")])));
        assert!(canary_wanted(&always, &req("/", &[("x-canary", "always")])));
        // Other header values fall through to the cookie, then the weight.
        let none = rule(Some(HeaderRule::AlwaysNever), true, 0);
        assert!(!canary_wanted(&none, &req("/", &[("x-canary", "maybe")])));
        assert!(canary_wanted(
            &none,
            &req("/", &[("cookie", "canary=always")])
        ));
        assert!(!canary_wanted(
            &always,
            &req("/", &[("cookie", "canary=never")])
        ));
        let value = rule(Some(HeaderRule::Value("Yes".into())), false, 0);
        assert!(canary_wanted(&value, &req("/", &[("x-canary", "Yes")])));
        assert!(!canary_wanted(&value, &req("/", &[("x-canary", "yes")])));
        let pat = rule(
            Some(HeaderRule::Pattern(crate::translate::model::Pattern(
                regex::Regex::new("^b").unwrap().into(),
            ))),
            false,
            0,
        );
        assert!(canary_wanted(&pat, &req("/", &[("x-canary", "beta")])));
        assert!(!canary_wanted(&pat, &req("/", &[("x-canary", "alpha")])));
        assert!(canary_wanted(&rule(None, false, 100), &req("/", &[])));
        assert!(!canary_wanted(&rule(None, false, 0), &req("/", &[])));
    }

    #[test]
    fn redirect_locations() {
        let r = req("/a/b/?x=1", &[]);
        let to = |t: RedirectTo| Redirect { code: 308, to: t };
        assert_eq!(
            redirect_location(
                &to(RedirectTo::Url("https://n.com/z".into())),
                &r,
                "h.com",
                false,
                Some(80)
            ),
            "https://n.com/z"
        );
        assert_eq!(
            redirect_location(
                &to(RedirectTo::Path("/app".into())),
                &r,
                "h.com:8080",
                true,
                None
            ),
            "https://h.com:8080/app"
        );
        assert_eq!(
            redirect_location(
                &to(RedirectTo::Host("www.h.com".into())),
                &req("/a/", &[]),
                "h.com",
                false,
                Some(80)
            ),
            "http://www.h.com:80/a"
        );
        let parts = |scheme: Option<&str>, host: Option<&str>, port, listener_port, path| {
            to(RedirectTo::Parts(crate::translate::model::RedirectParts {
                scheme: scheme.map(str::to_string),
                host: host.map(str::to_string),
                port,
                listener_port,
                path,
            }))
        };
        let at = |r: &Redirect, tls| {
            redirect_location(r, &req("/a/b?x=1", &[]), "h.com:8080", tls, Some(8080))
        };
        // Gateway API: hostname only, on a port-80 listener: no port in the Location.
        assert_eq!(
            at(&parts(None, Some("n.com"), None, Some(80), None), false),
            "http://n.com/a/b?x=1"
        );
        // Listener port unknown: the local port.
        assert_eq!(
            at(&parts(None, None, None, None, None), false),
            "http://h.com:8080/a/b?x=1"
        );
        // A scheme alone: its well-known port, left out.
        assert_eq!(
            at(&parts(Some("https"), None, None, Some(80), None), false),
            "https://h.com/a/b?x=1"
        );
        assert_eq!(
            at(&parts(Some("https"), None, Some(8443), None, None), false),
            "https://h.com:8443/a/b?x=1"
        );
        assert_eq!(
            at(&parts(None, None, Some(443), None, None), true),
            "https://h.com/a/b?x=1"
        );
        let prefix = crate::translate::model::PathChange::Prefix {
            matched: "/a".into(),
            with: "/z".into(),
        };
        assert_eq!(
            at(&parts(None, None, None, Some(80), Some(prefix)), false),
            "http://h.com/z/b?x=1"
        );
    }

    #[test]
    fn affinity_cookie_attributes() {
        let a = Affinity {
            mode: AffinityMode::Balanced,
            name: "route".into(),
            path: Some("/shop".into()),
            domain: Some("example.com".into()),
            expires: Some(60),
            max_age: Some(60),
            samesite: Some("None".into()),
            secure: false,
            conditional_samesite_none: true,
            change_on_failure: false,
        };
        let c = affinity_cookie(&a, "abc", false, Some("Mozilla/5.0 Chrome/90.0")).unwrap();
        let c = c.to_str().unwrap();
        assert!(
            c.starts_with("route=abc; Path=/shop; Domain=example.com; Expires="),
            "{c}"
        );
        assert!(c.contains("; Max-Age=60; SameSite=None; HttpOnly"), "{c}");
        assert!(!c.contains("Secure"), "{c}");
        let old = affinity_cookie(&a, "abc", true, Some("Mozilla/5.0 Chrome/60.0.1")).unwrap();
        let old = old.to_str().unwrap();
        assert!(
            !old.contains("SameSite") && old.contains("; Secure"),
            "{old}"
        );
    }

    #[test]
    fn body_limits_by_content_length() {
        assert!(body_too_large(10, &req("/", &[("content-length", "11")])));
        assert!(!body_too_large(10, &req("/", &[("content-length", "10")])));
        assert!(!body_too_large(
            0,
            &req("/", &[("content-length", "999999")])
        ));
        assert!(!body_too_large(10, &req("/", &[])));
    }

    #[test]
    fn hash_keys_from_the_request() {
        let r = req(
            "/p?id=7",
            &[("host", "h.com:80"), ("x-user", "u1"), ("cookie", "s=abc")],
        );
        let parts = vec![
            HashPart::Host,
            HashPart::Literal("|".into()),
            HashPart::RequestUri,
            HashPart::Header(http::HeaderName::from_static("x-user")),
            HashPart::Cookie("s".into()),
            HashPart::Arg("id".into()),
            HashPart::RemoteAddr,
        ];
        assert_eq!(
            hash_key(&parts, &r, Some("10.0.0.1")),
            b"h.com|/p?id=7u1abc710.0.0.1"
        );
    }
}

#[cfg(test)]
mod balance_tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::translate::UpstreamKey;

    fn pool(addrs: &[SocketAddr]) -> Pool {
        let p = Pool::new(
            UpstreamKey {
                namespace: "ns".into(),
                service: "svc".into(),
                port_name: "http".into(),
                port: 80,
                cluster_ip: false,
            },
            None,
        );
        p.set_endpoints(addrs.iter().copied().collect::<BTreeSet<_>>());
        p
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 8080))
    }

    fn persistent() -> Affinity {
        Affinity {
            mode: AffinityMode::Persistent,
            name: "route".into(),
            path: None,
            domain: None,
            expires: None,
            max_age: None,
            samesite: None,
            secure: false,
            conditional_samesite_none: false,
            change_on_failure: true,
        }
    }

    fn with_cookie(v: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("cookie", format!("route={v}")).unwrap();
        r
    }

    #[test]
    fn persistent_affinity_names_the_endpoint_until_it_goes_away() {
        let p = pool(&[addr(1), addr(2), addr(3)]);
        let a = persistent();
        let fresh = RequestHeader::build("GET", b"/", None).unwrap();
        let (e, id) = affinity_pick(&a, &p, &fresh, &[]).unwrap();
        let id = id.expect("a new client gets a cookie");
        assert_eq!(id, endpoint_id(&e));
        for _ in 0..20 {
            assert_eq!(
                affinity_pick(&a, &p, &with_cookie(&id), &[]).unwrap(),
                (e, None)
            );
        }
        // change-on-failure: after a failed attempt at `e`, another endpoint and a new cookie.
        let (e2, id2) = affinity_pick(&a, &p, &with_cookie(&id), &[e]).unwrap();
        assert_ne!(e2, e);
        assert_eq!(id2, Some(endpoint_id(&e2)));
        // The endpoint is gone: a new one, and a new cookie.
        let rest: Vec<_> = [addr(1), addr(2), addr(3)]
            .into_iter()
            .filter(|x| *x != e)
            .collect();
        p.set_endpoints(rest.iter().copied().collect());
        let (e3, id3) = affinity_pick(&a, &p, &with_cookie(&id), &[]).unwrap();
        assert!(rest.contains(&e3));
        assert_eq!(id3, Some(endpoint_id(&e3)));
    }

    #[test]
    fn balanced_affinity_keeps_a_token_on_its_endpoint() {
        let p = pool(&[addr(1), addr(2), addr(3), addr(4)]);
        let a = Affinity {
            mode: AffinityMode::Balanced,
            change_on_failure: false,
            ..persistent()
        };
        let mut seen = BTreeSet::new();
        for i in 0..40 {
            let token = format!("{i:016x}");
            let (e, new) = affinity_pick(&a, &p, &with_cookie(&token), &[]).unwrap();
            assert!(new.is_none());
            assert_eq!(
                affinity_pick(&a, &p, &with_cookie(&token), &[]).unwrap().0,
                e
            );
            seen.insert(e);
        }
        assert!(seen.len() >= 3, "40 tokens on {seen:?}");
    }

    #[test]
    fn ewma_avoids_a_slow_endpoint() {
        let (fast, slow) = (addr(1), addr(2));
        let p = pool(&[fast, slow]);
        let mut late_to_slow = 0;
        for i in 0..100 {
            let e = p.select_ewma(&[]).unwrap();
            let took = if e == fast { 1 } else { 500 };
            p.ewma_done(e, Some(std::time::Duration::from_millis(took)));
            if i >= 20 && e == slow {
                late_to_slow += 1;
            }
        }
        assert_eq!(late_to_slow, 0, "once scored, the slow endpoint is avoided");
        // A failure counts as slow: the other endpoint takes the traffic.
        let p = pool(&[fast, slow]);
        let e = p.select_ewma(&[]).unwrap();
        p.ewma_done(e, None);
        let other = if e == fast { slow } else { fast };
        let e2 = p.select_ewma(&[]).unwrap();
        assert_eq!(e2, other);
        p.ewma_done(e2, Some(std::time::Duration::from_millis(1)));
    }
}
