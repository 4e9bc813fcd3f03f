//! Client certificates: auth-tls-secret, auth-tls-verify-client, auth-tls-verify-depth,
//! auth-tls-pass-certificate-to-upstream, auth-tls-match-cn and auth-tls-error-page.
//!
//! They are host settings (the first Ingress of a host that sets them wins, as
//! ingress-nginx's server block); translation applies them to every path of the host.
//! Fail closed: a malformed auth-tls-secret reference or auth-tls-match-cn (and, at
//! translation, a missing or unusable CA Secret) make the host's paths answer 503. Values
//! with a safe fallback take it as ingress-nginx does: a bad auth-tls-verify-client is
//! `on`, a bad or zero auth-tls-verify-depth is 1.

use super::{Outcome, Reader};
use crate::translate::model::VerifyClient;

/// What the annotations ask for; the Secret is read at translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertSpec {
    pub namespace: Option<String>,
    pub name: String,
    pub verify: VerifyClient,
    pub depth: u32,
    pub pass_certificate: bool,
    /// Validated: starts with `CN=` and compiles.
    pub match_cn: Option<String>,
    /// Validated: an http(s) URL with a host.
    pub error_page: Option<String>,
}

/// The companions of auth-tls-secret.
const COMPANIONS: &[&str] = &[
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-match-cn",
    "auth-tls-error-page",
];

/// None: no auth-tls-secret. `Err`: the setting failed closed (reported).
pub fn read(r: &mut Reader) -> Option<Result<ClientCertSpec, ()>> {
    let Some(secret) = r.get("auth-tls-secret") else {
        for k in COMPANIONS {
            if r.has(k) {
                r.ignored(k, "has no effect without auth-tls-secret");
            }
        }
        return None;
    };
    let mut failed = false;
    let (namespace, name) = match super::auth::secret_ref(secret) {
        Ok(v) => v,
        Err(e) => {
            r.invalid("auth-tls-secret", e, Outcome::Deny);
            failed = true;
            (None, String::new())
        }
    };
    let verify = match r.get("auth-tls-verify-client") {
        None | Some("on") => VerifyClient::On,
        Some("off") => VerifyClient::Off,
        Some("optional") => VerifyClient::Optional,
        Some("optional_no_ca") => VerifyClient::OptionalNoCa,
        Some(_) => {
            r.invalid(
                "auth-tls-verify-client",
                "must be on, off, optional or optional_no_ca",
                Outcome::Default,
            );
            VerifyClient::On
        }
    };
    let depth = match r.get("auth-tls-verify-depth") {
        None => 1,
        Some(v) => match v.parse::<u32>() {
            Ok(d @ 1..=100) => d,
            _ => {
                r.invalid(
                    "auth-tls-verify-depth",
                    "must be a number from 1 to 100 (ingress-nginx also reads 0 as 1)",
                    Outcome::Default,
                );
                1
            }
        },
    };
    let pass_certificate = r
        .bool("auth-tls-pass-certificate-to-upstream", false)
        .unwrap_or(false);
    let match_cn = match r.get("auth-tls-match-cn") {
        None => None,
        Some(v) => match check_match_cn(v) {
            Ok(()) => Some(v.to_string()),
            Err(e) => {
                r.invalid("auth-tls-match-cn", e, Outcome::Deny);
                failed = true;
                None
            }
        },
    };
    let error_page = match r.get("auth-tls-error-page") {
        None => None,
        Some(v) if is_plain_url(v) => Some(v.to_string()),
        Some(_) => {
            r.invalid(
                "auth-tls-error-page",
                "must be an http:// or https:// URL with a host, of letters, digits and -._~/:?&=%",
                Outcome::Ignored,
            );
            None
        }
    };
    if verify == VerifyClient::Off {
        for k in ["auth-tls-match-cn", "auth-tls-error-page"] {
            if r.has(k) && !failed {
                r.differs(
                    k,
                    "auth-tls-verify-client is off: no certificate is asked for",
                );
            }
        }
    }
    if failed {
        return Some(Err(()));
    }
    Some(Ok(ClientCertSpec {
        namespace,
        name,
        verify,
        depth,
        pass_certificate,
        match_cn,
        error_page,
    }))
}

/// ingress-nginx (since CVE-2025-1097): `CN=` followed by a regular expression.
fn check_match_cn(v: &str) -> Result<(), String> {
    if !v.starts_with("CN=") {
        return Err("must start with CN= (a regular expression over the subject)".into());
    }
    regex::Regex::new(v)
        .map(|_| ())
        .map_err(|e| format!("is not a regular expression: {e}"))
}

fn is_plain_url(v: &str) -> bool {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    let Some(rest) = rest else { return false };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    !host.is_empty()
        && !host.starts_with(':')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/:?&=%".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    fn spec(
        pairs: &[(&str, &str)],
    ) -> (
        Option<Result<ClientCertSpec, ()>>,
        Vec<super::super::Verdict>,
    ) {
        let (s, v, refusal) = with(pairs, read);
        assert_eq!(refusal, None, "auth-tls values never refuse the Ingress");
        (s, v)
    }

    #[test]
    fn defaults_and_every_value() {
        let (s, v) = spec(&[("auth-tls-secret", "default/ca")]);
        let s = s.unwrap().unwrap();
        assert_eq!(s.namespace.as_deref(), Some("default"));
        assert_eq!(s.name, "ca");
        assert_eq!(
            (s.verify, s.depth, s.pass_certificate),
            (VerifyClient::On, 1, false)
        );
        assert_eq!(status(&v, "auth-tls-secret"), Some(Status::Applied));
        for (value, want) in [
            ("on", VerifyClient::On),
            ("off", VerifyClient::Off),
            ("optional", VerifyClient::Optional),
            ("optional_no_ca", VerifyClient::OptionalNoCa),
        ] {
            let (s, _) = spec(&[("auth-tls-secret", "ca"), ("auth-tls-verify-client", value)]);
            assert_eq!(s.unwrap().unwrap().verify, want, "{value}");
        }
        let (s, _) = spec(&[
            ("auth-tls-secret", "ca"),
            ("auth-tls-verify-depth", "3"),
            ("auth-tls-pass-certificate-to-upstream", "true"),
            ("auth-tls-match-cn", "CN=(alice|bob)"),
            ("auth-tls-error-page", "https://errors.example.com/cert?x=1"),
        ]);
        let s = s.unwrap().unwrap();
        assert_eq!(s.depth, 3);
        assert!(s.pass_certificate);
        assert_eq!(s.match_cn.as_deref(), Some("CN=(alice|bob)"));
        assert_eq!(
            s.error_page.as_deref(),
            Some("https://errors.example.com/cert?x=1")
        );
    }

    #[test]
    fn invalid_values_fail_closed_or_take_the_strict_default() {
        // Fail closed: the setting (and so the host) is denied.
        for pairs in [
            vec![("auth-tls-secret", "a/b/c")],
            vec![("auth-tls-secret", "")],
            vec![("auth-tls-secret", "ca"), ("auth-tls-match-cn", "alice")],
            vec![("auth-tls-secret", "ca"), ("auth-tls-match-cn", "CN=(")],
        ] {
            let (s, v) = spec(&pairs);
            assert_eq!(s, Some(Err(())), "{pairs:?}");
            let key = pairs.last().unwrap().0;
            assert_eq!(status(&v, key), Some(Status::Invalid), "{pairs:?}");
        }
        // Strict defaults, reported.
        for (key, value) in [
            ("auth-tls-verify-client", "maybe"),
            ("auth-tls-verify-depth", "0"),
            ("auth-tls-verify-depth", "-1"),
            ("auth-tls-verify-depth", "deep"),
            ("auth-tls-pass-certificate-to-upstream", "yes please"),
        ] {
            let (s, v) = spec(&[("auth-tls-secret", "ca"), (key, value)]);
            let s = s.unwrap().unwrap();
            assert_eq!(
                (s.verify, s.depth, s.pass_certificate),
                (VerifyClient::On, 1, false)
            );
            assert_eq!(status(&v, key), Some(Status::Invalid), "{key}: {value}");
        }
        // A bad error page is ignored: failures still answer 400.
        for bad in [
            "/local",
            "ftp://x",
            "https://",
            "https://x/$host",
            "https://x/ a",
        ] {
            let (s, v) = spec(&[("auth-tls-secret", "ca"), ("auth-tls-error-page", bad)]);
            assert_eq!(s.unwrap().unwrap().error_page, None, "{bad}");
            assert_eq!(
                status(&v, "auth-tls-error-page"),
                Some(Status::Invalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn companions_without_a_secret_are_ignored() {
        let (s, v) = spec(&[("auth-tls-verify-client", "optional")]);
        assert_eq!(s, None);
        assert_eq!(status(&v, "auth-tls-verify-client"), Some(Status::Ignored));
    }
}
