//! Authentication annotations: auth-type basic with auth-secret, auth-secret-type and
//! auth-realm; external auth with auth-url, auth-method, auth-signin (+
//! auth-signin-redirect-param), auth-response-headers, auth-request-redirect,
//! auth-cache-key + auth-cache-duration and auth-always-set-cookie.
//!
//! External auth fails closed too: an auth-url without scheme or host, and any bad value
//! of its companions (which ingress-nginx answers by dropping the whole external-auth
//! setting, leaving the route open), make the paths answer 503; bad characters in a URL,
//! a bad auth-method or a bad header list refuse the Ingress, as ingress-nginx drops it.
//!
//! Fail closed: `auth-type: digest` (not supported), a missing or malformed auth-secret
//! reference and (at translation) a missing or unusable Secret make the Ingress's paths
//! answer 503; an invalid auth-type, auth-secret-type or auth-realm refuses the Ingress,
//! as ingress-nginx drops it.

use super::{values, Outcome, Reader};
use crate::translate::template::Template;

/// Where a basic-auth Ingress's users are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecretType {
    /// An htpasswd file under the Secret's key `auth`.
    #[default]
    File,
    /// Each key of the Secret a user, its value the hash.
    Map,
}

/// auth-type basic and its Secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Basic {
    /// The Secret's namespace when written as `namespace/name`.
    pub namespace: Option<String>,
    pub name: String,
    pub kind: SecretType,
    pub realm: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub basic: Option<Basic>,
    pub external: Option<std::sync::Arc<crate::translate::model::ExternalAuth>>,
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

/// ingress-nginx's URL-with-variables characters: letters, digits, `-._~/:,?&=` and `$`.
fn url_with_vars(v: &str) -> Result<Template, String> {
    if v.is_empty()
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/:,?&=$".contains(&b))
    {
        return Err("may hold letters, digits, -._~/:,?&= and $variables only".into());
    }
    Template::parse(v)
}

/// `http(s)://host...` with a host (literal or a variable).
fn has_scheme_and_host(v: &str) -> bool {
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?']).next().unwrap_or("");
        !host.is_empty() && !host.starts_with(':') && !r.contains("..")
    })
}

/// nginx time: a number with s, m, h or d (seconds without a unit).
fn duration(v: &str) -> Result<std::time::Duration, String> {
    let (digits, mult) = match v.as_bytes().last() {
        Some(b's') => (&v[..v.len() - 1], 1),
        Some(b'm') => (&v[..v.len() - 1], 60),
        Some(b'h') => (&v[..v.len() - 1], 3600),
        Some(b'd') => (&v[..v.len() - 1], 86400),
        _ => (v, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{v}` is not a duration (such as 30s, 5m, 1h)"))?;
    Ok(std::time::Duration::from_secs(n * mult))
}

/// auth-cache-duration: status codes, then one duration: `200 202 401 5m`.
pub fn cache_duration(v: &str) -> Result<(Vec<u16>, std::time::Duration), String> {
    let mut parts: Vec<&str> = v.split_whitespace().collect();
    let last = parts.pop().ok_or("is empty")?;
    let d = duration(last)?;
    let mut codes = Vec::new();
    for p in parts {
        match p.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => codes.push(c),
            _ => return Err(format!("`{p}` is not a status code")),
        }
    }
    if codes.is_empty() {
        codes = vec![200, 202, 401];
    }
    Ok((codes, d))
}

fn read_external(r: &mut Reader, url: &str) -> Option<crate::translate::model::ExternalAuth> {
    use crate::translate::model::ExternalAuth;
    let template = match url_with_vars(url) {
        Ok(t) => t,
        Err(e) => {
            r.invalid("auth-url", e, Outcome::Refuse);
            return None;
        }
    };
    if !has_scheme_and_host(url) {
        r.invalid(
            "auth-url",
            "needs an http:// or https:// URL with a host",
            Outcome::Deny,
        );
        return None;
    }
    let (method, method_set) = match r.get("auth-method") {
        None => (http::Method::GET, false),
        Some(m) if METHODS.contains(&m) => (http::Method::from_bytes(m.as_bytes()).ok()?, true),
        Some(_) => {
            r.invalid(
                "auth-method",
                format!("must be one of {}", METHODS.join(", ")),
                Outcome::Refuse,
            );
            return None;
        }
    };
    let signin = match r.get("auth-signin") {
        None => None,
        Some(v) => match url_with_vars(v) {
            Ok(t) if has_scheme_and_host(v) || v.starts_with('/') => Some(t),
            Ok(_) => {
                r.invalid(
                    "auth-signin",
                    "needs an http(s) URL with a host, or a path",
                    Outcome::Deny,
                );
                return None;
            }
            Err(e) => {
                r.invalid("auth-signin", e, Outcome::Refuse);
                return None;
            }
        },
    };
    let signin_param = match r.get("auth-signin-redirect-param") {
        None => "rd".to_string(),
        Some(p)
            if !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            p.to_string()
        }
        Some(_) => {
            r.invalid(
                "auth-signin-redirect-param",
                "must be a query parameter name",
                Outcome::Refuse,
            );
            return None;
        }
    };
    let mut response_headers = Vec::new();
    if let Some(v) = r.get("auth-response-headers") {
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let ok = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            match http::HeaderName::try_from(name) {
                Ok(h) if ok => response_headers.push(h),
                _ => {
                    r.invalid(
                        "auth-response-headers",
                        format!("`{name}` is not a header name"),
                        Outcome::Refuse,
                    );
                    return None;
                }
            }
        }
    }
    let request_redirect = match r.get("auth-request-redirect") {
        None => None,
        Some(v) => match url_with_vars(v) {
            Ok(t) => Some(t),
            Err(e) => {
                r.invalid("auth-request-redirect", e, Outcome::Deny);
                return None;
            }
        },
    };
    let cache = match r.get("auth-cache-key") {
        None => {
            if r.has("auth-cache-duration") {
                r.ignored("auth-cache-duration", "no auth-cache-key is set");
            }
            None
        }
        Some(k) => {
            let key = match Template::parse(k) {
                Ok(t) if !k.is_empty() => t,
                Ok(_) => {
                    r.invalid("auth-cache-key", "is empty", Outcome::Deny);
                    return None;
                }
                Err(e) => {
                    r.invalid("auth-cache-key", e, Outcome::Deny);
                    return None;
                }
            };
            let (codes, ttl) = match r.get("auth-cache-duration") {
                None => (vec![200, 202, 401], std::time::Duration::from_secs(300)),
                Some(d) => match cache_duration(d) {
                    Ok(c) => c,
                    Err(e) => {
                        r.invalid("auth-cache-duration", e, Outcome::Deny);
                        return None;
                    }
                },
            };
            Some((key, codes, ttl))
        }
    };
    let always_set_cookie = match r.get("auth-always-set-cookie") {
        None => false,
        Some(v) => match values::parse_bool(v) {
            Ok(b) => b,
            Err(e) => {
                r.invalid("auth-always-set-cookie", e, Outcome::Deny);
                return None;
            }
        },
    };
    Some(ExternalAuth {
        url: template,
        method,
        method_set,
        signin,
        signin_param,
        response_headers,
        request_redirect,
        cache,
        always_set_cookie,
    })
}

/// `name` or `namespace/name`, each a DNS label / subdomain.
pub fn secret_ref(v: &str) -> Result<(Option<String>, String), String> {
    let (ns, name) = match v.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, v),
    };
    if let Some(ns) = ns {
        values::dns_label(ns).map_err(|e| format!("namespace: {e}"))?;
    }
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        return Err(format!(
            "`{v}` is not a Secret name (`name` or `namespace/name`)"
        ));
    }
    Ok((ns.map(str::to_string), name.to_string()))
}

/// ingress-nginx's realm characters: letters, digits, space and `-._~/:,`.
fn realm(v: &str) -> Result<(), String> {
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" -._~/:,".contains(&b))
    {
        Ok(())
    } else {
        Err("may hold letters, digits, spaces and -._~/:, only".into())
    }
}

pub fn read(r: &mut Reader) -> Auth {
    let mut out = Auth::default();
    let external_keys = [
        "auth-method",
        "auth-signin",
        "auth-signin-redirect-param",
        "auth-response-headers",
        "auth-request-redirect",
        "auth-cache-key",
        "auth-cache-duration",
        "auth-always-set-cookie",
    ];
    match r.get("auth-url") {
        Some(url) => out.external = read_external(r, url).map(std::sync::Arc::new),
        None => {
            for key in external_keys {
                if r.has(key) {
                    r.ignored(key, "no auth-url is set");
                }
            }
        }
    }
    let Some(kind) = r.get("auth-type") else {
        for key in ["auth-secret", "auth-secret-type", "auth-realm"] {
            if r.has(key) {
                r.ignored(key, "no auth-type is set");
            }
        }
        return out;
    };
    match kind {
        "basic" => {}
        "digest" => {
            r.invalid(
                "auth-type",
                "digest authentication is not supported by pingress",
                Outcome::Deny,
            );
            return out;
        }
        _ => {
            r.invalid("auth-type", "must be basic or digest", Outcome::Refuse);
            return out;
        }
    }
    let secret_kind = match r.get("auth-secret-type") {
        None | Some("auth-file") => SecretType::File,
        Some("auth-map") => SecretType::Map,
        Some(_) => {
            r.invalid(
                "auth-secret-type",
                "must be auth-file or auth-map",
                Outcome::Refuse,
            );
            return out;
        }
    };
    let realm_text = match r.get("auth-realm") {
        None => String::new(),
        Some(v) => match realm(v) {
            Ok(()) => v.to_string(),
            Err(e) => {
                r.invalid("auth-realm", e, Outcome::Refuse);
                return out;
            }
        },
    };
    let Some(v) = r.get("auth-secret") else {
        r.invalid(
            "auth-type",
            "auth-type basic needs auth-secret",
            Outcome::Deny,
        );
        return out;
    };
    match secret_ref(v) {
        Ok((namespace, name)) => {
            out.basic = Some(Basic {
                namespace,
                name,
                kind: secret_kind,
                realm: realm_text,
            })
        }
        Err(e) => r.invalid("auth-secret", e, Outcome::Deny),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    #[test]
    fn basic_auth_reads_its_secret_type_and_realm() {
        let (a, v, refusal) = with(
            &[
                ("auth-type", "basic"),
                ("auth-secret", "other/users"),
                ("auth-secret-type", "auth-map"),
                ("auth-realm", "Authentication Required - foo"),
            ],
            read,
        );
        assert!(refusal.is_none());
        assert!(v.iter().all(|x| x.status == Status::Applied), "{v:?}");
        let b = a.basic.unwrap();
        assert_eq!(b.namespace.as_deref(), Some("other"));
        assert_eq!(b.name, "users");
        assert_eq!(b.kind, SecretType::Map);
        assert_eq!(b.realm, "Authentication Required - foo");
    }

    #[test]
    fn every_bad_form_fails_closed() {
        // (annotations, key reported, denied (503) or refused)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, bool);
        let cases: &[Case] = &[
            (
                &[("auth-type", "digest"), ("auth-secret", "s")],
                "auth-type",
                true,
            ),
            (&[("auth-type", "basic")], "auth-type", true),
            (
                &[("auth-type", "basic"), ("auth-secret", "Bad_Name")],
                "auth-secret",
                true,
            ),
            (
                &[("auth-type", "basic"), ("auth-secret", "a/b/c")],
                "auth-secret",
                true,
            ),
            (
                &[("auth-type", "Basic"), ("auth-secret", "s")],
                "auth-type",
                false,
            ),
            (
                &[
                    ("auth-type", "basic"),
                    ("auth-secret", "s"),
                    ("auth-secret-type", "file"),
                ],
                "auth-secret-type",
                false,
            ),
            (
                &[
                    ("auth-type", "basic"),
                    ("auth-secret", "s"),
                    ("auth-realm", "a\"b"),
                ],
                "auth-realm",
                false,
            ),
        ];
        for (pairs, key, denied) in cases {
            let ((a, d), v, refusal) = with(pairs, |r| (read(r), r.denied()));
            assert!(a.basic.is_none(), "{pairs:?}");
            assert_eq!(status(&v, key), Some(Status::Invalid), "{pairs:?}");
            assert_eq!(d, *denied, "{pairs:?}: denied");
            assert_eq!(refusal.is_some(), !denied, "{pairs:?}: refused");
        }
        // Without auth-type the rest does nothing, and says so.
        let (a, v, _) = with(&[("auth-secret", "s")], read);
        assert!(a.basic.is_none());
        assert_eq!(status(&v, "auth-secret"), Some(Status::Ignored));
    }

    #[test]
    fn external_auth_reads_its_companions_and_fails_closed_on_bad_forms() {
        let (a, v, refusal) = with(
            &[
                ("auth-url", "https://$host/oauth2/auth"),
                (
                    "auth-signin",
                    "https://$host/oauth2/start?rd=$escaped_request_uri",
                ),
                (
                    "auth-response-headers",
                    "X-Auth-Request-User, X-Auth-Request-Email",
                ),
                ("auth-method", "POST"),
                ("auth-cache-key", "$cookie__oauth2_proxy"),
                ("auth-cache-duration", "200 202 30m"),
                ("auth-always-set-cookie", "true"),
                ("auth-signin-redirect-param", "next"),
            ],
            read,
        );
        assert!(refusal.is_none(), "{refusal:?}");
        assert!(v.iter().all(|x| x.status == Status::Applied), "{v:?}");
        let e = a.external.unwrap();
        assert_eq!(e.method, http::Method::POST);
        assert!(e.method_set && e.always_set_cookie);
        assert_eq!(e.response_headers.len(), 2);
        assert_eq!(e.signin_param, "next");
        let (_, codes, ttl) = e.cache.clone().unwrap();
        assert_eq!((codes, ttl.as_secs()), (vec![200, 202], 1800));

        // (annotations, key reported, denied (503) or refused)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, bool);
        let url = ("auth-url", "http://auth.test/check");
        let cases: &[Case] = &[
            (&[("auth-url", "/check")], "auth-url", true),
            (&[("auth-url", "ftp://auth.test/")], "auth-url", true),
            (&[("auth-url", "http://")], "auth-url", true),
            (&[("auth-url", "http://a/../x")], "auth-url", true),
            (&[("auth-url", "http://auth.test/$nope")], "auth-url", false),
            (&[("auth-url", "http://auth.test/ x")], "auth-url", false),
            (&[("auth-url", "http://auth.test/#frag")], "auth-url", false),
            (&[url, ("auth-method", "get")], "auth-method", false),
            (&[url, ("auth-method", "GET\r\nX: y")], "auth-method", false),
            (
                &[url, ("auth-signin", "http://a.test/ x")],
                "auth-signin",
                false,
            ),
            (&[url, ("auth-signin", "login")], "auth-signin", true),
            (
                &[url, ("auth-signin-redirect-param", "r d")],
                "auth-signin-redirect-param",
                false,
            ),
            (
                &[url, ("auth-response-headers", "X-Ok, X Bad")],
                "auth-response-headers",
                false,
            ),
            (
                &[url, ("auth-request-redirect", "http://a.test/ x")],
                "auth-request-redirect",
                true,
            ),
            (&[url, ("auth-cache-key", "$nope")], "auth-cache-key", true),
            (
                &[
                    url,
                    ("auth-cache-key", "$http_x"),
                    ("auth-cache-duration", "200 five"),
                ],
                "auth-cache-duration",
                true,
            ),
            (
                &[
                    url,
                    ("auth-cache-key", "$http_x"),
                    ("auth-cache-duration", "99 5m"),
                ],
                "auth-cache-duration",
                true,
            ),
            (
                &[url, ("auth-always-set-cookie", "yes")],
                "auth-always-set-cookie",
                true,
            ),
        ];
        for (pairs, key, denied) in cases {
            let ((a, d), v, refusal) = with(pairs, |r| (read(r), r.denied()));
            assert!(a.external.is_none(), "{pairs:?}");
            assert_eq!(status(&v, key), Some(Status::Invalid), "{pairs:?}");
            assert_eq!(d, *denied, "{pairs:?}: denied");
            assert_eq!(refusal.is_some(), !denied, "{pairs:?}: refused");
        }
        // Companions without auth-url do nothing, and say so.
        let (_, v, _) = with(&[("auth-signin", "https://a.test/")], read);
        assert_eq!(status(&v, "auth-signin"), Some(Status::Ignored));
    }
}
