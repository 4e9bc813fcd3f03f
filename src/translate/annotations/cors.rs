//! CORS annotations: enable-cors and cors-allow-origin, -methods, -headers,
//! -expose-headers, -credentials, -max-age (scope: the whole Ingress).
//!
//! As ingress-nginx: a bad methods, headers, expose-headers, credentials or max-age value
//! falls back to the default, and bad entries of the origin list are skipped. Two
//! differences, both closing what ingress-nginx leaves open: an origin list with no valid
//! entry allows no origin (ingress-nginx falls back to `*`), and an Origin must match an
//! entry whole (ingress-nginx's regex is anchored at the end only).

use http::HeaderValue;

use super::{values, Outcome, Reader};
use crate::translate::model::{Cors, OriginPattern, Origins};

const METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
const MAX_AGE: u64 = 1_728_000;

/// One origin entry: `scheme://host[:port]`, `scheme://*.host[:port]` (one label), `null`.
fn origin(entry: &str) -> Result<OriginPattern, String> {
    let e = entry.to_ascii_lowercase();
    if e == "null" {
        return Ok(OriginPattern::Exact(e));
    }
    let (scheme, rest) = e
        .split_once("://")
        .ok_or_else(|| format!("`{entry}` is not scheme://host[:port]"))?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b))
    {
        return Err(format!("`{entry}`: bad scheme"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        Some(_) => return Err(format!("`{entry}`: bad port")),
        None => (rest, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let (wild, host) = match host.strip_prefix("*.") {
        Some(h) => (true, h),
        None => (false, host),
    };
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err(format!("`{entry}`: bad host"));
    }
    let tail = match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Ok(if wild {
        OriginPattern::Subdomain {
            prefix: format!("{scheme}://"),
            suffix: format!(".{tail}"),
        }
    } else {
        OriginPattern::Exact(format!("{scheme}://{tail}"))
    })
}

/// A comma list of names for a header value, checked by `ok` per byte.
fn list_value(r: &mut Reader, key: &'static str, default: &str, ok: fn(u8) -> bool) -> HeaderValue {
    let fallback = HeaderValue::from_str(default).expect("static header value");
    match r.get(key) {
        None => fallback,
        Some(v) if !v.is_empty() && v.bytes().all(ok) => {
            HeaderValue::from_str(v).unwrap_or(fallback)
        }
        Some(_) => {
            r.invalid(
                key,
                "has characters outside the allowed set",
                Outcome::Default,
            );
            fallback
        }
    }
}

pub fn read(r: &mut Reader) -> Option<Cors> {
    let keys = [
        "cors-allow-origin",
        "cors-allow-methods",
        "cors-allow-headers",
        "cors-expose-headers",
        "cors-allow-credentials",
        "cors-max-age",
    ];
    if r.bool("enable-cors", false) != Some(true) {
        for key in keys {
            if r.has(key) {
                r.ignored(key, "enable-cors is not true");
            }
        }
        return None;
    }
    let origins = match r.get("cors-allow-origin") {
        None => Origins::Any,
        Some(v) => {
            let mut list = Vec::new();
            let mut any = false;
            let mut bad = Vec::new();
            for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                if entry == "*" {
                    any = true;
                    continue;
                }
                match origin(entry) {
                    Ok(p) => list.push(p),
                    Err(e) => bad.push(e),
                }
            }
            if any {
                Origins::Any
            } else {
                if list.is_empty() {
                    r.invalid(
                        "cors-allow-origin",
                        format!("no valid origin ({}); no origin is allowed (ingress-nginx would allow `*`)", bad.join("; ")),
                        Outcome::Ignored,
                    );
                } else if !bad.is_empty() {
                    r.partly(
                        "cors-allow-origin",
                        format!("entries skipped: {}", bad.join("; ")),
                    );
                }
                Origins::List(list)
            }
        }
    };
    let methods = list_value(r, "cors-allow-methods", METHODS, |b| {
        b.is_ascii_alphabetic() || b == b',' || b == b' '
    });
    let headers = list_value(r, "cors-allow-headers", HEADERS, |b| {
        b.is_ascii_alphanumeric() || b"-_, *".contains(&b)
    });
    let expose = r.get("cors-expose-headers").and_then(|v| {
        if !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_, *".contains(&b))
        {
            HeaderValue::from_str(v).ok()
        } else {
            r.invalid(
                "cors-expose-headers",
                "has characters outside the allowed set",
                Outcome::Default,
            );
            None
        }
    });
    let credentials = r.bool("cors-allow-credentials", true).unwrap_or(true);
    let max_age = match r.get("cors-max-age") {
        None => MAX_AGE,
        Some(v) => match values::parse_uint(v) {
            Ok(n) => n,
            Err(e) => {
                r.invalid("cors-max-age", e, Outcome::Default);
                MAX_AGE
            }
        },
    };
    Some(Cors {
        origins,
        credentials,
        methods,
        headers,
        expose,
        max_age: HeaderValue::from(max_age),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    fn allowed(c: &Cors, origin: Option<&str>) -> Option<String> {
        let o = origin.map(|o| HeaderValue::from_str(o).unwrap());
        c.allow(o.as_ref()).map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn defaults_allow_any_origin_with_ingress_nginx_lists() {
        let (c, v, _) = with(&[("enable-cors", "true")], read);
        let c = c.unwrap();
        assert!(v.iter().all(|x| x.status == Status::Applied));
        assert_eq!(allowed(&c, None).as_deref(), Some("*"));
        assert_eq!(allowed(&c, Some("https://x.test")).as_deref(), Some("*"));
        assert_eq!(c.methods, METHODS);
        assert_eq!(c.headers, HEADERS);
        assert!(c.credentials && c.expose.is_none());
        assert_eq!(c.max_age, "1728000");
    }

    #[test]
    fn origin_lists_match_whole_origins_and_one_label_wildcards() {
        let (c, v, _) = with(
            &[
                ("enable-cors", "true"),
                (
                    "cors-allow-origin",
                    "https://app.example.com, https://*.example.org:8443, null, ftp//bad",
                ),
            ],
            read,
        );
        let c = c.unwrap();
        assert_eq!(
            status(&v, "cors-allow-origin"),
            Some(Status::Differs),
            "bad entry skipped"
        );
        for (origin, ok) in [
            ("https://app.example.com", true),
            ("HTTPS://APP.example.com", true),
            ("http://app.example.com", false),
            ("https://app.example.com.evil.test", false),
            ("https://evilhttps://app.example.com", false),
            ("https://a.example.org:8443", true),
            ("https://a.b.example.org:8443", false),
            ("https://example.org:8443", false),
            ("https://a.example.org", false),
            ("null", true),
        ] {
            assert_eq!(allowed(&c, Some(origin)).is_some(), ok, "{origin}");
        }
        // Echoed as sent.
        assert_eq!(
            allowed(&c, Some("https://app.example.com")).as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(allowed(&c, None), None);
        // A `*` entry makes the list `*`.
        let (c, _, _) = with(
            &[
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://a.test, *"),
            ],
            read,
        );
        assert_eq!(
            allowed(&c.unwrap(), Some("https://b.test")).as_deref(),
            Some("*")
        );
        // Nothing valid: nothing allowed (closed), reported.
        let (c, v, _) = with(
            &[("enable-cors", "true"), ("cors-allow-origin", "nonsense")],
            read,
        );
        assert_eq!(allowed(&c.unwrap(), Some("https://b.test")), None);
        assert_eq!(status(&v, "cors-allow-origin"), Some(Status::Invalid));
    }

    #[test]
    fn bad_values_fall_back_to_the_defaults() {
        let (c, v, refusal) = with(
            &[
                ("enable-cors", "true"),
                ("cors-allow-methods", "GET;rm"),
                ("cors-allow-headers", "X-A\"b"),
                ("cors-expose-headers", "X-Total, X-Page"),
                ("cors-allow-credentials", "maybe"),
                ("cors-max-age", "-5"),
            ],
            read,
        );
        assert!(refusal.is_none());
        let c = c.unwrap();
        assert_eq!(c.methods, METHODS);
        assert_eq!(c.headers, HEADERS);
        assert_eq!(c.expose.as_ref().unwrap(), "X-Total, X-Page");
        assert!(c.credentials);
        assert_eq!(c.max_age, "1728000");
        for key in [
            "cors-allow-methods",
            "cors-allow-headers",
            "cors-allow-credentials",
            "cors-max-age",
        ] {
            assert_eq!(status(&v, key), Some(Status::Invalid), "{key}");
        }
        // Without enable-cors nothing applies.
        let (c, v, _) = with(&[("cors-allow-origin", "https://a.test")], read);
        assert!(c.is_none());
        assert_eq!(status(&v, "cors-allow-origin"), Some(Status::Ignored));
    }
}
