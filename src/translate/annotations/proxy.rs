//! Upstream behaviour annotations: proxy-connect/read/send-timeout,
//! proxy-next-upstream(-tries, -timeout), proxy-body-size, and the buffering keys that
//! Pingora's streaming makes moot (accepted and reported as differing).

use std::time::Duration;

use super::{values, Outcome, Reader};
use crate::translate::model::{Retry, Timeouts};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    pub timeouts: Timeouts,
    pub retry: Option<Retry>,
    /// Bytes; Some(0) = unlimited.
    pub body_limit: Option<u64>,
}

fn seconds(r: &mut Reader, key: &'static str) -> Option<Duration> {
    let v = r.get(key)?;
    match values::parse_uint(v) {
        Ok(n) => Some(Duration::from_secs(n)),
        Err(e) => {
            r.invalid(
                key,
                format!("{e} (whole seconds, no unit)"),
                Outcome::Default,
            );
            None
        }
    }
}

const BUFFERING: &[&str] = &["on", "off"];

pub fn read(r: &mut Reader) -> ProxySettings {
    let timeouts = Timeouts {
        connect: seconds(r, "proxy-connect-timeout"),
        read: seconds(r, "proxy-read-timeout"),
        send: seconds(r, "proxy-send-timeout"),
    };
    let mut retry = None;
    if let Some(v) = r.get("proxy-next-upstream") {
        let mut rt = Retry {
            on_error: false,
            on_timeout: false,
            ..Retry::default()
        };
        let mut unsupported = Vec::new();
        let mut unknown = Vec::new();
        for tok in v.split_whitespace() {
            match tok {
                "error" => rt.on_error = true,
                "timeout" => rt.on_timeout = true,
                "non_idempotent" => rt.non_idempotent = true,
                "off" => rt.tries = 1,
                "invalid_header" => unsupported.push(tok),
                _ if tok.starts_with("http_") => {
                    let code = tok[5..].parse::<u16>().ok();
                    match Retry::STATUSES.iter().position(|s| Some(*s) == code) {
                        Some(i) => rt.statuses |= 1 << i,
                        None => unknown.push(tok),
                    }
                }
                _ => unknown.push(tok),
            }
        }
        if !unknown.is_empty() {
            r.invalid(
                "proxy-next-upstream",
                format!("unknown condition(s) {}", unknown.join(", ")),
                Outcome::Default,
            );
        } else {
            if !unsupported.is_empty() {
                r.partly(
                    "proxy-next-upstream",
                    format!(
                        "{} not retried: a malformed answer from a pod is an error, not retried on another",
                        unsupported.join(", ")
                    ),
                );
            }
            retry = Some(rt);
        }
    }
    if let Some(v) = r.get("proxy-next-upstream-tries") {
        match values::parse_uint(v) {
            Ok(n) => retry.get_or_insert_with(Retry::default).tries = n.min(u32::MAX as u64) as u32,
            Err(e) => r.invalid("proxy-next-upstream-tries", e, Outcome::Default),
        }
    }
    if let Some(t) = seconds(r, "proxy-next-upstream-timeout") {
        retry.get_or_insert_with(Retry::default).timeout = (!t.is_zero()).then_some(t);
    }
    let body_limit = r
        .get("proxy-body-size")
        .and_then(|v| match values::parse_size(v) {
            Ok(n) => Some(n),
            Err(e) => {
                r.invalid("proxy-body-size", e, Outcome::Default);
                None
            }
        });
    for key in ["proxy-buffering", "proxy-request-buffering"] {
        if let Some(v) = r.get(key) {
            if BUFFERING.contains(&v) {
                r.differs(key, "accepted; pingress always streams bodies in both directions (Pingora), as with `off`");
            } else {
                r.invalid(key, format!("`{v}` is not `on` or `off`"), Outcome::Default);
            }
        }
    }
    for key in [
        "proxy-buffer-size",
        "proxy-buffers-number",
        "proxy-max-temp-file-size",
        "client-body-buffer-size",
    ] {
        if r.get(key).is_some() {
            r.differs(
                key,
                "accepted with no effect: pingress streams bodies (Pingora)",
            );
        }
    }
    ProxySettings {
        timeouts,
        retry,
        body_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    #[test]
    fn timeouts_are_whole_seconds() {
        let cases: &[(&str, Option<u64>, Status)] = &[
            ("5", Some(5), Status::Applied),
            ("0", Some(0), Status::Applied),
            ("60s", None, Status::Invalid),
            ("-1", None, Status::Invalid),
            ("1.5", None, Status::Invalid),
        ];
        for (v, want, st) in cases {
            for key in [
                "proxy-connect-timeout",
                "proxy-read-timeout",
                "proxy-send-timeout",
            ] {
                let (p, verdicts, refusal) = with(&[(key, v)], read);
                let got = match key {
                    "proxy-connect-timeout" => p.timeouts.connect,
                    "proxy-read-timeout" => p.timeouts.read,
                    _ => p.timeouts.send,
                };
                assert_eq!(got, want.map(Duration::from_secs), "{key}: {v}");
                assert_eq!(status(&verdicts, key), Some(*st), "{key}: {v}");
                assert!(refusal.is_none());
            }
        }
    }

    #[test]
    fn body_size_units_and_unlimited() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1m", Some(1 << 20)),
            ("8k", Some(8192)),
            ("0", Some(0)),
            ("100", Some(100)),
            ("1g", Some(1 << 30)),
            ("10b", None),
            ("1 m", None),
            ("big", None),
        ];
        for (v, want) in cases {
            let (p, verdicts, _) = with(&[("proxy-body-size", v)], read);
            assert_eq!(p.body_limit, *want, "{v}");
            assert_eq!(
                status(&verdicts, "proxy-body-size") == Some(Status::Invalid),
                want.is_none()
            );
        }
    }

    #[test]
    fn next_upstream_conditions_tries_and_timeout() {
        let (p, v, _) = with(
            &[("proxy-next-upstream", "error timeout non_idempotent")],
            read,
        );
        let r = p.retry.unwrap();
        assert!(r.on_error && r.on_timeout && r.non_idempotent);
        assert_eq!(r.tries, 3);
        assert_eq!(status(&v, "proxy-next-upstream"), Some(Status::Applied));

        let (p, v, _) = with(&[("proxy-next-upstream", "error http_502 http_429")], read);
        let r = p.retry.unwrap();
        assert!(r.on_error && r.on_status(502) && r.on_status(429) && !r.on_status(503));
        assert_eq!(status(&v, "proxy-next-upstream"), Some(Status::Applied));
        let (_, v, _) = with(&[("proxy-next-upstream", "error invalid_header")], read);
        assert_eq!(status(&v, "proxy-next-upstream"), Some(Status::Differs));
        let (p, v, _) = with(&[("proxy-next-upstream", "http_418")], read);
        assert_eq!(p.retry, None);
        assert_eq!(status(&v, "proxy-next-upstream"), Some(Status::Invalid));

        let (p, v, _) = with(&[("proxy-next-upstream", "error bogus")], read);
        assert_eq!(p.retry, None);
        assert_eq!(status(&v, "proxy-next-upstream"), Some(Status::Invalid));

        let (p, _, _) = with(&[("proxy-next-upstream", "off")], read);
        assert_eq!(p.retry.unwrap().tries, 1);

        let (p, _, _) = with(
            &[
                ("proxy-next-upstream-tries", "5"),
                ("proxy-next-upstream-timeout", "2"),
            ],
            read,
        );
        let r = p.retry.unwrap();
        assert_eq!((r.tries, r.timeout), (5, Some(Duration::from_secs(2))));
        let (p, v, _) = with(&[("proxy-next-upstream-tries", "x")], read);
        assert_eq!(p.retry, None);
        assert_eq!(
            status(&v, "proxy-next-upstream-tries"),
            Some(Status::Invalid)
        );
    }

    #[test]
    fn buffering_is_accepted_and_reported_as_differing() {
        for key in ["proxy-buffering", "proxy-request-buffering"] {
            let (_, v, _) = with(&[(key, "on")], read);
            assert_eq!(status(&v, key), Some(Status::Differs));
            let (_, v, _) = with(&[(key, "maybe")], read);
            assert_eq!(status(&v, key), Some(Status::Invalid));
        }
        let (_, v, _) = with(&[("proxy-buffer-size", "16k")], read);
        assert_eq!(status(&v, "proxy-buffer-size"), Some(Status::Differs));
    }
}
