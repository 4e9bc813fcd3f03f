//! Backend annotations: backend-protocol, load-balance, upstream-hash-by and
//! service-upstream.

use super::{Outcome, Reader};
use crate::translate::model::{Balance, HashPart};
use crate::translate::Protocol;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSettings {
    pub protocol: Option<Protocol>,
    /// From `upstream-hash-by` if set, else `load-balance` (cookie affinity, read by its own
    /// family, takes precedence over both).
    pub balance: Option<Balance>,
    pub service_upstream: bool,
}

/// Parse an `upstream-hash-by` value: text and nginx variables (`$name` or `${name}`).
pub fn hash_key(v: &str) -> Result<Vec<HashPart>, String> {
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_${}".contains(c))
    {
        return Err("may contain only letters, digits, `-`, `_` and `$`/`${}` variables".into());
    }
    let mut parts = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        let Some(i) = rest.find('$') else {
            parts.push(HashPart::Literal(rest.to_string()));
            break;
        };
        if i > 0 {
            parts.push(HashPart::Literal(rest[..i].to_string()));
        }
        let after = &rest[i + 1..];
        let (name, next) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or("unclosed `${`")?;
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        parts.push(variable(name)?);
        rest = next;
    }
    if parts.is_empty() {
        return Err("is empty".into());
    }
    Ok(parts)
}

fn variable(name: &str) -> Result<HashPart, String> {
    Ok(match name {
        "request_uri" => HashPart::RequestUri,
        "remote_addr" | "binary_remote_addr" => HashPart::RemoteAddr,
        "host" | "http_host" => HashPart::Host,
        _ => {
            if let Some(h) = name.strip_prefix("http_") {
                let h = h.replace('_', "-").to_ascii_lowercase();
                HashPart::Header(
                    http::HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("`${name}` names no valid header"))?,
                )
            } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                HashPart::Cookie(c.to_string())
            } else if let Some(a) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                HashPart::Arg(a.to_string())
            } else {
                return Err(format!(
                    "variable `${name}` is not supported (use $request_uri, $remote_addr, $host, $http_NAME, $cookie_NAME or $arg_NAME)"
                ));
            }
        }
    })
}

pub fn read(r: &mut Reader) -> BackendSettings {
    let protocol = r
        .get("backend-protocol")
        .and_then(|v| match Protocol::from_annotation(v) {
            Ok(p) => Some(p),
            Err(e) => {
                r.invalid("backend-protocol", e, Outcome::Default);
                None
            }
        });
    let mut balance = r.get("load-balance").and_then(|v| match v {
        "round_robin" => Some(Balance::RoundRobin),
        "ewma" => Some(Balance::Ewma),
        "chash" | "chashsubset" | "sticky_balanced" | "sticky_persistent" => {
            r.differs(
                "load-balance",
                format!(
                    "`{v}` is set by upstream-hash-by or affinity in pingress; round robin here"
                ),
            );
            Some(Balance::RoundRobin)
        }
        _ => {
            r.invalid("load-balance", "not round_robin or ewma", Outcome::Default);
            None
        }
    });
    if let Some(v) = r.get("upstream-hash-by") {
        match hash_key(v) {
            Ok(parts) => balance = Some(Balance::Hash(parts)),
            Err(e) => r.invalid("upstream-hash-by", e, Outcome::Refuse),
        }
    }
    for key in ["upstream-hash-by-subset", "upstream-hash-by-subset-size"] {
        if r.get(key).is_some() {
            r.differs(
                key,
                "subsets are not supported: the key hashes over all endpoints",
            );
        }
    }
    let service_upstream = r.bool("service-upstream", false).unwrap_or(false);
    BackendSettings {
        protocol,
        balance,
        service_upstream,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    #[test]
    fn hash_keys_parse_variables_and_text() {
        let h = |s: &str| HashPart::Header(http::HeaderName::from_bytes(s.as_bytes()).unwrap());
        let cases: &[(&str, Option<Vec<HashPart>>)] = &[
            ("$request_uri", Some(vec![HashPart::RequestUri])),
            ("$remote_addr", Some(vec![HashPart::RemoteAddr])),
            ("$binary_remote_addr", Some(vec![HashPart::RemoteAddr])),
            ("$host", Some(vec![HashPart::Host])),
            ("$http_x_user_id", Some(vec![h("x-user-id")])),
            (
                "$cookie_session",
                Some(vec![HashPart::Cookie("session".into())]),
            ),
            (
                "${arg_id}-x",
                Some(vec![
                    HashPart::Arg("id".into()),
                    HashPart::Literal("-x".into()),
                ]),
            ),
            (
                "$host$request_uri",
                Some(vec![HashPart::Host, HashPart::RequestUri]),
            ),
            ("fixed", Some(vec![HashPart::Literal("fixed".into())])),
            ("$request_uri.x", None),
            ("$uri:x", None),
            ("$nope", None),
            ("${arg_id", None),
            ("$cookie_", None),
            ("", None),
        ];
        for (v, want) in cases {
            assert_eq!(hash_key(v).ok(), *want, "{v}");
        }
    }

    #[test]
    fn a_bad_hash_key_refuses_the_ingress() {
        let (b, v, refusal) = with(&[("upstream-hash-by", "$uri.x")], read);
        assert_eq!(b.balance, None);
        assert_eq!(status(&v, "upstream-hash-by"), Some(Status::Invalid));
        assert!(refusal.unwrap().contains("upstream-hash-by"));
    }

    #[test]
    fn load_balance_protocol_and_service_upstream() {
        let cases: &[(&str, Option<Balance>, Status)] = &[
            ("round_robin", Some(Balance::RoundRobin), Status::Applied),
            ("ewma", Some(Balance::Ewma), Status::Applied),
            ("chash", Some(Balance::RoundRobin), Status::Differs),
            ("least_conn", None, Status::Invalid),
        ];
        for (v, want, st) in cases {
            let (b, verdicts, _) = with(&[("load-balance", v)], read);
            assert_eq!(b.balance, *want, "{v}");
            assert_eq!(status(&verdicts, "load-balance"), Some(*st), "{v}");
        }
        let (b, _, _) = with(
            &[("load-balance", "ewma"), ("upstream-hash-by", "$host")],
            read,
        );
        assert_eq!(b.balance, Some(Balance::Hash(vec![HashPart::Host])));
        for (v, want) in [
            ("GRPC", Some(Protocol::H2c)),
            ("https", Some(Protocol::Https)),
            ("FCGI", None),
        ] {
            assert_eq!(
                with(&[("backend-protocol", v)], read).0.protocol,
                want,
                "{v}"
            );
        }
        assert!(
            with(&[("service-upstream", "true")], read)
                .0
                .service_upstream
        );
    }
}
