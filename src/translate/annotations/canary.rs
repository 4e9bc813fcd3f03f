//! Canary annotations: canary, canary-by-header(-value, -pattern), canary-by-cookie,
//! canary-weight(-total). A canary Ingress adds no routes of its own: it attaches to the
//! main Ingress of the same host, path and pathType (see `translate`).

use super::{values, Outcome, Reader};
use crate::translate::model::{CanaryRule, HeaderRule, Pattern};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    pub rule: CanaryRule,
}

pub fn read(r: &mut Reader) -> Option<Canary> {
    let keys = [
        "canary-by-header",
        "canary-by-header-value",
        "canary-by-header-pattern",
        "canary-by-cookie",
        "canary-weight",
        "canary-weight-total",
    ];
    if r.bool("canary", false) != Some(true) {
        for key in keys {
            if r.has(key) {
                r.ignored(
                    key,
                    "has no effect without `canary: \"true\"`, as in ingress-nginx",
                );
            }
        }
        return None;
    }
    let header = r.get("canary-by-header").and_then(|name| {
        match http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                r.invalid(
                    "canary-by-header",
                    format!("`{name}` is not a header name"),
                    Outcome::Ignored,
                );
                None
            }
        }
    });
    let value = r.get("canary-by-header-value").filter(|v| !v.is_empty());
    let pattern =
        r.get("canary-by-header-pattern")
            .filter(|v| !v.is_empty())
            .and_then(|p| {
                match values::regex_chars(p)
                    .and_then(|()| regex::Regex::new(p).map_err(|e| e.to_string()))
                {
                    Ok(re) => Some(Pattern(re.into())),
                    Err(e) => {
                        r.invalid(
                    "canary-by-header-pattern",
                    format!("{e}; requests go to the main backend unless another rule sends them"),
                    Outcome::Ignored,
                );
                        None
                    }
                }
            });
    let header = header.map(|h| {
        let rule = match (value, pattern) {
            (Some(v), _) => HeaderRule::Value(v.to_string()),
            (None, Some(p)) => HeaderRule::Pattern(p),
            (None, None) => HeaderRule::AlwaysNever,
        };
        (h, rule)
    });
    if header.is_none() {
        for key in ["canary-by-header-value", "canary-by-header-pattern"] {
            if r.has(key) {
                r.ignored(key, "has no effect without canary-by-header");
            }
        }
    }
    let cookie = r
        .get("canary-by-cookie")
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let mut int = |key: &'static str| {
        r.get(key).and_then(|v| match values::parse_uint(v) {
            Ok(n) => Some(n.min(u64::from(u32::MAX)) as u32),
            Err(e) => {
                r.invalid(key, e, Outcome::Default);
                None
            }
        })
    };
    let weight = int("canary-weight").unwrap_or(0);
    // ingress-nginx uses the total only when it is above 100.
    let total = int("canary-weight-total")
        .filter(|t| *t > 100)
        .unwrap_or(100);
    Some(Canary {
        rule: CanaryRule {
            header,
            cookie,
            weight: weight.min(total),
            total,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    #[test]
    fn header_value_pattern_cookie_and_weights() {
        let (c, v, _) = with(
            &[
                ("canary", "true"),
                ("canary-by-header", "X-Canary"),
                ("canary-by-header-value", "yes"),
                ("canary-by-header-pattern", "^y"),
                ("canary-by-cookie", "beta"),
                ("canary-weight", "30"),
            ],
            read,
        );
        let rule = c.unwrap().rule;
        let (h, hr) = rule.header.unwrap();
        assert_eq!(h.as_str(), "x-canary");
        assert_eq!(
            hr,
            HeaderRule::Value("yes".into()),
            "value wins over pattern"
        );
        assert_eq!(rule.cookie.as_deref(), Some("beta"));
        assert_eq!((rule.weight, rule.total), (30, 100));
        assert!(v.iter().all(|x| x.status == Status::Applied), "{v:?}");

        let (c, _, _) = with(
            &[
                ("canary", "true"),
                ("canary-by-header", "x"),
                ("canary-by-header-pattern", "^(a|b)$"),
            ],
            read,
        );
        assert!(matches!(
            c.unwrap().rule.header.unwrap().1,
            HeaderRule::Pattern(_)
        ));
        let (c, _, _) = with(&[("canary", "true"), ("canary-by-header", "x")], read);
        assert_eq!(c.unwrap().rule.header.unwrap().1, HeaderRule::AlwaysNever);
    }

    #[test]
    fn weight_total_counts_only_above_100() {
        let cases: &[(&str, &str, (u32, u32))] = &[
            ("5", "1000", (5, 1000)),
            ("5", "50", (5, 100)),
            ("150", "", (100, 100)),
            ("x", "", (0, 100)),
        ];
        for (w, t, want) in cases {
            let mut pairs = vec![("canary", "true"), ("canary-weight", *w)];
            if !t.is_empty() {
                pairs.push(("canary-weight-total", *t));
            }
            let (c, _, _) = with(&pairs, read);
            let r = c.unwrap().rule;
            assert_eq!((r.weight, r.total), *want, "{w}/{t}");
        }
    }

    #[test]
    fn without_canary_true_the_keys_are_ignored() {
        let (c, v, _) = with(&[("canary-weight", "50")], read);
        assert!(c.is_none());
        assert_eq!(status(&v, "canary-weight"), Some(Status::Ignored));
        let (c, v, _) = with(
            &[
                ("canary", "true"),
                ("canary-by-header", "x"),
                ("canary-by-header-pattern", "("),
            ],
            read,
        );
        assert_eq!(c.unwrap().rule.header.unwrap().1, HeaderRule::AlwaysNever);
        assert_eq!(
            status(&v, "canary-by-header-pattern"),
            Some(Status::Invalid)
        );
    }
}
