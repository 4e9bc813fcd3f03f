//! Path annotations: use-regex, rewrite-target, x-forwarded-prefix, app-root and
//! upstream-vhost. A host with any Ingress using `use-regex: "true"` or a `rewrite-target`
//! is in regex mode (see `translate`).

use super::{values, Outcome, Reader};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrites {
    pub use_regex: bool,
    /// `rewrite-target`, checked (`$1`..`$9` are the captures of the rule's path).
    pub target: Option<String>,
    pub x_forwarded_prefix: Option<String>,
    pub app_root: Option<String>,
    pub upstream_vhost: Option<http::HeaderValue>,
}

fn path_value(r: &mut Reader, key: &'static str) -> Option<String> {
    let v = r.get(key)?;
    match values::path_with_captures(v) {
        Ok(()) => Some(v.to_string()),
        Err(e) => {
            r.invalid(key, e, Outcome::Ignored);
            None
        }
    }
}

pub fn read(r: &mut Reader) -> Rewrites {
    let use_regex = r.bool("use-regex", false).unwrap_or(false);
    let target = path_value(r, "rewrite-target");
    let x_forwarded_prefix = path_value(r, "x-forwarded-prefix");
    let mut app_root = path_value(r, "app-root");
    if let Some(root) = &app_root {
        if !root.starts_with('/') || root.contains("://") {
            r.invalid(
                "app-root",
                "must be a path starting with `/`",
                Outcome::Ignored,
            );
            app_root = None;
        }
    }
    let upstream_vhost = r.get("upstream-vhost").and_then(|v| {
        let parsed = values::regex_chars(v).and_then(|()| {
            http::HeaderValue::from_str(v).map_err(|_| format!("`{v}` is not a valid Host value"))
        });
        match parsed {
            Ok(h) if !v.is_empty() => Some(h),
            Ok(_) => None,
            Err(e) => {
                r.invalid("upstream-vhost", e, Outcome::Ignored);
                None
            }
        }
    });
    if x_forwarded_prefix.is_some() && target.is_none() {
        r.differs(
            "x-forwarded-prefix",
            "has no effect without rewrite-target, as in ingress-nginx",
        );
    }
    Rewrites {
        use_regex,
        target,
        x_forwarded_prefix,
        app_root,
        upstream_vhost,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    #[test]
    fn accepted_and_refused_values() {
        // (key, value, accepted)
        let cases: &[(&str, &str, bool)] = &[
            ("rewrite-target", "/", true),
            ("rewrite-target", "/$2", true),
            ("rewrite-target", "/api/$1/$2", true),
            ("rewrite-target", "$1", true),
            ("rewrite-target", "/a?b=c", false),
            ("rewrite-target", "/a b", false),
            ("rewrite-target", "/a\r\nX: y", false),
            ("x-forwarded-prefix", "/shop", true),
            ("x-forwarded-prefix", "/sh op", false),
            ("app-root", "/app1", true),
            ("app-root", "https://e.com/app", false),
            ("app-root", "app1", false),
            ("upstream-vhost", "internal.example.com", true),
            ("upstream-vhost", "a;b", false),
        ];
        for (key, value, ok) in cases {
            let (r, v, refusal) = with(&[(key, value)], read);
            let got = match *key {
                "rewrite-target" => r.target.is_some(),
                "x-forwarded-prefix" => r.x_forwarded_prefix.is_some(),
                "app-root" => r.app_root.is_some(),
                _ => r.upstream_vhost.is_some(),
            };
            assert_eq!(got, *ok, "{key}: {value}");
            let st = status(&v, key).unwrap();
            assert_eq!(st == Status::Invalid, !ok, "{key}: {value}: {v:?}");
            assert!(refusal.is_none(), "path values never refuse the Ingress");
        }
    }

    #[test]
    fn use_regex_is_a_boolean_defaulting_to_false() {
        assert!(with(&[("use-regex", "true")], read).0.use_regex);
        let (r, v, _) = with(&[("use-regex", "maybe")], read);
        assert!(!r.use_regex);
        assert_eq!(status(&v, "use-regex"), Some(Status::Invalid));
        let (_, v, _) = with(&[("x-forwarded-prefix", "/p")], read);
        assert_eq!(status(&v, "x-forwarded-prefix"), Some(Status::Differs));
    }
}
