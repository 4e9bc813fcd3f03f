//! Error annotations: custom-http-errors and default-backend.

use super::{values, Outcome, Reader};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors {
    /// Upstream statuses answered from the error backend.
    pub codes: Vec<u16>,
    /// A Service of the Ingress's namespace (first port): serves the Ingress's paths while
    /// their backend has no ready endpoint, and answers `codes`.
    pub default_backend: Option<String>,
}

/// `^(?:[4,5]\d{2},?)*$`, as ingress-nginx validates it (a stray comma is allowed).
fn codes(v: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for part in v.split(',') {
        if part.is_empty() {
            continue;
        }
        let ok = part.len() == 3
            && matches!(part.as_bytes()[0], b'4' | b'5')
            && part.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(format!(
                "`{part}` is not a 4xx or 5xx status (a comma-separated list such as 404,503)"
            ));
        }
        let code: u16 = part
            .parse()
            .map_err(|_| format!("`{part}` is not a status"))?;
        if !out.contains(&code) {
            out.push(code);
        }
    }
    Ok(out)
}

pub fn read(r: &mut Reader) -> Errors {
    let mut out = Errors::default();
    if let Some(v) = r.get("custom-http-errors") {
        match codes(v) {
            Ok(c) => out.codes = c,
            Err(e) => r.invalid("custom-http-errors", e, Outcome::Refuse),
        }
    }
    if let Some(v) = r.get("default-backend") {
        match values::dns_label(v) {
            Ok(()) => out.default_backend = Some(v.to_string()),
            Err(e) => r.invalid("default-backend", e, Outcome::Refuse),
        }
    }
    if r.bool("disable-proxy-intercept-errors", false) == Some(true) {
        out.codes.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    #[test]
    fn status_lists_as_ingress_nginx_validates_them() {
        let cases: &[(&str, Option<Vec<u16>>)] = &[
            ("404", Some(vec![404])),
            ("404,503", Some(vec![404, 503])),
            ("404,503,", Some(vec![404, 503])),
            ("404,404", Some(vec![404])),
            ("", Some(vec![])),
            ("200", None),
            ("404, 503", None),
            ("4044", None),
            ("40x", None),
        ];
        for (v, want) in cases {
            assert_eq!(codes(v).ok(), *want, "{v}");
        }
    }

    #[test]
    fn bad_values_refuse_the_ingress() {
        for (k, v) in [
            ("custom-http-errors", "200"),
            ("default-backend", "Errors_Svc"),
        ] {
            let (_, verdicts, refusal) = with(&[(k, v)], read);
            assert_eq!(status(&verdicts, k), Some(Status::Invalid), "{k}");
            assert!(refusal.is_some(), "{k}");
        }
        let (e, _, refusal) = with(
            &[
                ("custom-http-errors", "404,503"),
                ("default-backend", "errors"),
            ],
            read,
        );
        assert_eq!(e.codes, vec![404, 503]);
        assert_eq!(e.default_backend.as_deref(), Some("errors"));
        assert!(refusal.is_none());
        let (e, _, _) = with(
            &[
                ("custom-http-errors", "404"),
                ("disable-proxy-intercept-errors", "true"),
            ],
            read,
        );
        assert!(e.codes.is_empty());
    }
}
