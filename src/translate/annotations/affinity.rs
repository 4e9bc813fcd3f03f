//! Session affinity annotations: affinity, affinity-mode, affinity-canary-behavior and the
//! session-cookie-* keys.

use super::{values, Outcome, Reader};
use crate::translate::model::{Affinity, AffinityMode};

/// `(^0|-?[1-9]\d*$)`: 0 or an integer without leading zeros.
fn seconds(r: &mut Reader, key: &'static str) -> Option<i64> {
    let v = r.get(key)?;
    let plain = v == "0" || {
        let d = v.strip_prefix('-').unwrap_or(v);
        !d.starts_with('0') && !d.is_empty()
    };
    match values::parse_int(v) {
        Ok(n) if plain => Some(n),
        Ok(_) | Err(_) => {
            r.invalid(key, "not a whole number of seconds", Outcome::Ignored);
            None
        }
    }
}

fn text(
    r: &mut Reader,
    key: &'static str,
    check: fn(&str) -> Result<(), String>,
) -> Option<String> {
    let v = r.get(key)?;
    match check(v).and_then(|()| {
        // Cookie attribute values: no `;` or `,` may reach the Set-Cookie header.
        if v.contains([';', ',']) || v.is_empty() {
            Err(format!("`{v}` is not a valid cookie attribute value"))
        } else {
            Ok(())
        }
    }) {
        Ok(()) => Some(v.to_string()),
        Err(e) => {
            r.invalid(key, e, Outcome::Default);
            None
        }
    }
}

pub fn read(r: &mut Reader) -> Option<Affinity> {
    let kind = r.get("affinity");
    let mode = match r.get("affinity-mode") {
        None | Some("balanced") => AffinityMode::Balanced,
        Some("persistent") => AffinityMode::Persistent,
        Some(_) => {
            r.invalid(
                "affinity-mode",
                "not `balanced` or `persistent`",
                Outcome::Default,
            );
            AffinityMode::Balanced
        }
    };
    if let Some(v) = r.get("affinity-canary-behavior") {
        match v {
            "sticky" => {}
            "legacy" => r.differs(
                "affinity-canary-behavior",
                "`legacy` is not supported: canary clients stay on the canary (sticky)",
            ),
            _ => r.invalid(
                "affinity-canary-behavior",
                "not `sticky` or `legacy`",
                Outcome::Default,
            ),
        }
    }
    let name = text(r, "session-cookie-name", values::basic_chars)
        .unwrap_or_else(|| "INGRESSCOOKIE".to_string());
    let path = text(r, "session-cookie-path", values::url_chars);
    let domain = text(r, "session-cookie-domain", values::basic_chars);
    let expires = seconds(r, "session-cookie-expires");
    let max_age = seconds(r, "session-cookie-max-age");
    let samesite = r.get("session-cookie-samesite").and_then(|v| {
        if ["none", "lax", "strict"].contains(&v.to_ascii_lowercase().as_str()) {
            Some(v.to_string())
        } else {
            r.invalid(
                "session-cookie-samesite",
                "not None, Lax or Strict",
                Outcome::Ignored,
            );
            None
        }
    });
    let secure = r.bool("session-cookie-secure", false).unwrap_or(false);
    let conditional_samesite_none = r
        .bool("session-cookie-conditional-samesite-none", false)
        .unwrap_or(false);
    let change_on_failure = r
        .bool("session-cookie-change-on-failure", false)
        .unwrap_or(false);
    match kind {
        None => {
            for key in [
                "affinity-mode",
                "session-cookie-name",
                "session-cookie-path",
                "session-cookie-expires",
                "session-cookie-max-age",
            ] {
                if r.has(key) {
                    r.ignored(key, "has no effect without `affinity: cookie`");
                }
            }
            None
        }
        Some("cookie") => {
            r.differs(
                "affinity",
                "the cookie's value is pingress's own (not ingress-nginx's), so clients re-pin once on migration",
            );
            Some(Affinity {
                mode,
                name,
                path,
                domain,
                expires,
                max_age,
                samesite,
                secure,
                conditional_samesite_none,
                change_on_failure,
            })
        }
        Some(_) => {
            r.invalid("affinity", "only `cookie` is supported", Outcome::Ignored);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    #[test]
    fn cookie_affinity_with_every_attribute() {
        let (a, v, _) = with(
            &[
                ("affinity", "cookie"),
                ("affinity-mode", "persistent"),
                ("session-cookie-name", "route"),
                ("session-cookie-path", "/shop"),
                ("session-cookie-domain", "example.com"),
                ("session-cookie-expires", "172800"),
                ("session-cookie-max-age", "0"),
                ("session-cookie-samesite", "lax"),
                ("session-cookie-secure", "true"),
                ("session-cookie-conditional-samesite-none", "true"),
                ("session-cookie-change-on-failure", "true"),
            ],
            read,
        );
        let a = a.unwrap();
        assert_eq!(a.mode, AffinityMode::Persistent);
        assert_eq!(a.name, "route");
        assert_eq!(a.path.as_deref(), Some("/shop"));
        assert_eq!(a.domain.as_deref(), Some("example.com"));
        assert_eq!((a.expires, a.max_age), (Some(172800), Some(0)));
        assert_eq!(a.samesite.as_deref(), Some("lax"));
        assert!(a.secure && a.conditional_samesite_none && a.change_on_failure);
        assert!(v.iter().all(|x| x.status != Status::Invalid), "{v:?}");
    }

    #[test]
    fn defaults_and_bad_values() {
        let (a, _, _) = with(&[("affinity", "cookie")], read);
        let a = a.unwrap();
        assert_eq!(
            (a.mode, a.name.as_str()),
            (AffinityMode::Balanced, "INGRESSCOOKIE")
        );
        let cases: &[(&str, &str)] = &[
            ("session-cookie-expires", "01"),
            ("session-cookie-expires", "1h"),
            ("session-cookie-max-age", "-0"),
            ("session-cookie-samesite", "Sometimes"),
            ("session-cookie-name", "a;b"),
            ("session-cookie-path", "/a;Secure"),
            ("affinity-mode", "random"),
        ];
        for (k, val) in cases {
            let (a, v, refusal) = with(&[("affinity", "cookie"), (k, val)], read);
            assert!(a.is_some(), "{k}");
            assert_eq!(status(&v, k), Some(Status::Invalid), "{k}: {val}");
            assert!(refusal.is_none());
        }
        let (a, v, _) = with(&[("affinity", "ip")], read);
        assert!(a.is_none());
        assert_eq!(status(&v, "affinity"), Some(Status::Invalid));
        let (a, v, _) = with(&[("session-cookie-name", "x")], read);
        assert!(a.is_none());
        assert_eq!(status(&v, "session-cookie-name"), Some(Status::Ignored));
    }
}
