//! Redirect annotations: ssl-redirect, force-ssl-redirect, permanent-redirect(-code),
//! temporal-redirect(-code), from-to-www-redirect and server-alias.

use super::{values, Outcome, Reader};
use crate::routing::HostMatch;
use crate::translate::model::{Redirect, RedirectTo};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redirects {
    /// None: the server config's `ssl_redirect`.
    pub ssl_redirect: Option<bool>,
    pub force_ssl_redirect: bool,
    /// `temporal-redirect` if set, else `permanent-redirect`.
    pub fixed: Option<Redirect>,
    pub from_to_www: bool,
    pub aliases: Vec<HostMatch>,
}

/// A redirect URL: ingress-nginx's characters, then an absolute http(s) URL with a host.
fn redirect_url(v: &str) -> Result<Result<String, String>, String> {
    values::url_chars(v)?;
    // Character errors drop the Ingress; a URL that is not http(s) only drops the redirect.
    Ok(match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(v.to_string())
        }
        _ => Err(format!("`{v}` is not an absolute http or https URL")),
    })
}

fn code(
    r: &mut Reader,
    key: &'static str,
    range: std::ops::RangeInclusive<u16>,
    default: u16,
) -> u16 {
    let Some(v) = r.get(key) else { return default };
    match values::parse_int(v) {
        Ok(n) if u16::try_from(n).is_ok_and(|n| range.contains(&n)) => n as u16,
        Ok(_) => {
            r.invalid(
                key,
                format!("must be from {} to {}", range.start(), range.end()),
                Outcome::Default,
            );
            default
        }
        Err(e) => {
            r.invalid(key, e, Outcome::Refuse);
            default
        }
    }
}

fn fixed(
    r: &mut Reader,
    key: &'static str,
    code_key: &'static str,
    range: std::ops::RangeInclusive<u16>,
    default: u16,
) -> Option<Redirect> {
    let code = code(r, code_key, range, default);
    let v = r.get(key)?;
    match redirect_url(v) {
        Ok(Ok(url)) => Some(Redirect {
            code,
            to: RedirectTo::Url(url),
        }),
        Ok(Err(e)) => {
            r.invalid(key, e, Outcome::Ignored);
            None
        }
        Err(e) => {
            r.invalid(key, e, Outcome::Refuse);
            None
        }
    }
}

pub fn read(r: &mut Reader) -> Redirects {
    let ssl_redirect = r.bool("ssl-redirect", true);
    let force_ssl_redirect = r.bool("force-ssl-redirect", false).unwrap_or(false);
    let permanent = fixed(
        r,
        "permanent-redirect",
        "permanent-redirect-code",
        300..=308,
        301,
    );
    let temporal = fixed(
        r,
        "temporal-redirect",
        "temporal-redirect-code",
        300..=307,
        302,
    );
    if temporal.is_some() && permanent.is_some() {
        r.differs(
            "permanent-redirect",
            "temporal-redirect is also set and takes precedence, as in ingress-nginx",
        );
    }
    let from_to_www = r.bool("from-to-www-redirect", false).unwrap_or(false);
    let mut aliases = Vec::new();
    if let Some(v) = r.get("server-alias") {
        let mut bad = Vec::new();
        for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match HostMatch::parse(Some(name)) {
                Ok(h @ (HostMatch::Exact(_) | HostMatch::Wildcard(_))) => aliases.push(h),
                _ => bad.push(name),
            }
        }
        if !bad.is_empty() {
            r.invalid(
                "server-alias",
                format!(
                    "{} not a DNS name or `*.` wildcard (nginx regex server names are not supported)",
                    bad.join(", ")
                ),
                if aliases.is_empty() {
                    Outcome::Ignored
                } else {
                    Outcome::Default
                },
            );
        }
    }
    Redirects {
        ssl_redirect,
        force_ssl_redirect,
        fixed: temporal.or(permanent),
        from_to_www,
        aliases,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    fn url(r: &Redirects) -> Option<(u16, &str)> {
        match &r.fixed {
            Some(Redirect {
                code,
                to: RedirectTo::Url(u),
            }) => Some((*code, u.as_str())),
            _ => None,
        }
    }

    #[test]
    fn fixed_redirects_codes_and_precedence() {
        // (annotations, expected (code, url), status of the URL key, refused)
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            Option<(u16, &'a str)>,
            Option<Status>,
            bool,
        );
        let cases: &[Case] = &[
            (
                &[("permanent-redirect", "https://new.example.com/x")],
                Some((301, "https://new.example.com/x")),
                Some(Status::Applied),
                false,
            ),
            (
                &[
                    ("permanent-redirect", "https://e.com"),
                    ("permanent-redirect-code", "308"),
                ],
                Some((308, "https://e.com")),
                Some(Status::Applied),
                false,
            ),
            // Out of range: the default code.
            (
                &[
                    ("permanent-redirect", "https://e.com"),
                    ("permanent-redirect-code", "309"),
                ],
                Some((301, "https://e.com")),
                Some(Status::Applied),
                false,
            ),
            (
                &[
                    ("permanent-redirect", "https://e.com"),
                    ("permanent-redirect-code", "abc"),
                ],
                Some((301, "https://e.com")),
                Some(Status::Applied),
                true,
            ),
            (
                &[("temporal-redirect", "http://e.com/t")],
                Some((302, "http://e.com/t")),
                Some(Status::Applied),
                false,
            ),
            (
                &[
                    ("temporal-redirect", "http://e.com/t"),
                    ("temporal-redirect-code", "307"),
                ],
                Some((307, "http://e.com/t")),
                Some(Status::Applied),
                false,
            ),
            (
                &[
                    ("temporal-redirect", "http://e.com/t"),
                    ("temporal-redirect-code", "308"),
                ],
                Some((302, "http://e.com/t")),
                Some(Status::Applied),
                false,
            ),
            // Temporal wins over permanent.
            (
                &[
                    ("temporal-redirect", "http://t.com"),
                    ("permanent-redirect", "http://p.com"),
                ],
                Some((302, "http://t.com")),
                Some(Status::Differs),
                false,
            ),
            // Characters ingress-nginx refuses: the Ingress is dropped.
            (
                &[("permanent-redirect", "https://e.com/$request_uri")],
                None,
                Some(Status::Invalid),
                true,
            ),
            (
                &[("permanent-redirect", "https://e.com/a%20b")],
                None,
                Some(Status::Invalid),
                true,
            ),
            // Not http(s): the redirect alone is dropped (reported).
            (
                &[("permanent-redirect", "ftp://e.com/x")],
                None,
                Some(Status::Invalid),
                false,
            ),
            (
                &[("permanent-redirect", "/relative")],
                None,
                Some(Status::Invalid),
                false,
            ),
        ];
        for (pairs, want, st, refused) in cases {
            let (r, v, refusal) = with(pairs, read);
            assert_eq!(url(&r), *want, "{pairs:?}");
            let key = if pairs[0].0.starts_with("temporal")
                && pairs.len() == 2
                && pairs[1].0 == "permanent-redirect"
            {
                "permanent-redirect"
            } else {
                pairs[0].0
            };
            assert_eq!(status(&v, key), *st, "{pairs:?}: {v:?}");
            assert_eq!(refusal.is_some(), *refused, "{pairs:?}: {refusal:?}");
        }
    }

    #[test]
    fn ssl_and_www_flags_and_aliases() {
        let (r, v, _) = with(
            &[
                ("ssl-redirect", "false"),
                ("force-ssl-redirect", "true"),
                ("from-to-www-redirect", "True"),
                ("server-alias", "a.example.com, *.b.example.com"),
            ],
            read,
        );
        assert_eq!(r.ssl_redirect, Some(false));
        assert!(r.force_ssl_redirect && r.from_to_www);
        assert_eq!(r.aliases.len(), 2);
        assert!(v.iter().all(|x| x.status == Status::Applied), "{v:?}");

        let (r, v, _) = with(
            &[("ssl-redirect", "yes"), ("server-alias", "~^a.*, ok.com")],
            read,
        );
        assert_eq!(r.ssl_redirect, Some(true), "bad value: the default (true)");
        assert_eq!(status(&v, "ssl-redirect"), Some(Status::Invalid));
        assert_eq!(r.aliases, vec![HostMatch::Exact("ok.com".into())]);
        assert_eq!(status(&v, "server-alias"), Some(Status::Invalid));
        let (r, _, refusal) = with(&[("server-alias", "1.2.3.4")], read);
        assert!(r.aliases.is_empty() && refusal.is_none());
    }
}
