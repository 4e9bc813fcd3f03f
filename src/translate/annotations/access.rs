//! Access annotations: allowlist-source-range (alias whitelist-source-range),
//! denylist-source-range, and the limits limit-rps, limit-rpm, limit-connections,
//! limit-burst-multiplier and limit-allowlist (alias limit-whitelist).
//!
//! Every invalid value fails closed. A bad CIDR in an allow or deny list makes the
//! Ingress's paths answer 503, as ingress-nginx denies the location. A bad limit value
//! refuses the Ingress, as ingress-nginx drops it (one that was serving keeps its last good
//! version), so a route is never left without the limit it asked for.

use ipnet::IpNet;

use super::{values, Outcome, Reader};
use crate::client::parse_net;

/// What the access annotations of one Ingress ask for (limits without their zone, which
/// translation adds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    pub rps: Option<u32>,
    pub rpm: Option<u32>,
    pub connections: Option<u32>,
    pub burst_multiplier: u32,
    pub limit_allow: Vec<IpNet>,
}

impl Access {
    pub fn has_limits(&self) -> bool {
        self.rps.is_some() || self.rpm.is_some() || self.connections.is_some()
    }
}

/// ingress-nginx's burst multiplier default.
pub const BURST_MULTIPLIER: u32 = 5;

/// A comma list of CIDRs or bare addresses, spaces trimmed; empty entries skipped.
pub fn cidr_list(v: &str) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for part in v.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let net = parse_net(part)?;
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

/// A limit: a non-negative integer (0: no limit, as ingress-nginx emits none).
fn limit(v: &str) -> Result<Option<u32>, String> {
    let n = values::parse_uint(v)?;
    let n = u32::try_from(n).map_err(|_| format!("`{v}` is too large"))?;
    Ok((n > 0).then_some(n))
}

/// A list key under its name or its older alias: the new name wins when both are set.
fn aliased<'a>(
    r: &mut Reader<'a>,
    name: &'static str,
    alias: &'static str,
) -> Option<(&'static str, &'a str)> {
    match (r.has(name), r.has(alias)) {
        (true, true) => {
            r.ignored(alias, format!("{name} is set too and is used instead"));
            r.get(name).map(|v| (name, v))
        }
        (true, false) => r.get(name).map(|v| (name, v)),
        (false, true) => r.get(alias).map(|v| (alias, v)),
        (false, false) => None,
    }
}

pub fn read(r: &mut Reader) -> Access {
    let mut out = Access {
        burst_multiplier: BURST_MULTIPLIER,
        ..Default::default()
    };
    if let Some((key, v)) = aliased(r, "allowlist-source-range", "whitelist-source-range") {
        match cidr_list(v) {
            Ok(list) => out.allow = list,
            Err(e) => r.invalid(key, e, Outcome::Deny),
        }
    }
    if let Some(v) = r.get("denylist-source-range") {
        match cidr_list(v) {
            Ok(list) => out.deny = list,
            Err(e) => r.invalid("denylist-source-range", e, Outcome::Deny),
        }
    }
    for key in ["limit-rps", "limit-rpm", "limit-connections"] {
        let Some(v) = r.get(key) else {
            continue;
        };
        match limit(v) {
            Ok(n) => match key {
                "limit-rps" => out.rps = n,
                "limit-rpm" => out.rpm = n,
                _ => out.connections = n,
            },
            Err(e) => r.invalid(key, e, Outcome::Refuse),
        }
    }
    if !out.has_limits() {
        for key in [
            "limit-burst-multiplier",
            "limit-allowlist",
            "limit-whitelist",
        ] {
            if r.has(key) {
                r.ignored(key, "no limit-rps, limit-rpm or limit-connections is set");
            }
        }
        return out;
    }
    if let Some(v) = r.get("limit-burst-multiplier") {
        match values::parse_uint(v) {
            Ok(n) if (1..=1000).contains(&n) => out.burst_multiplier = n as u32,
            Ok(_) => r.invalid(
                "limit-burst-multiplier",
                "must be between 1 and 1000",
                Outcome::Refuse,
            ),
            Err(e) => r.invalid("limit-burst-multiplier", e, Outcome::Refuse),
        }
    }
    if let Some((key, v)) = aliased(r, "limit-allowlist", "limit-whitelist") {
        match cidr_list(v) {
            Ok(list) => out.limit_allow = list,
            Err(e) => r.invalid(key, e, Outcome::Refuse),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    #[test]
    fn cidr_lists_as_ingress_nginx_reads_them() {
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("10.0.0.0/8", Some(&["10.0.0.0/8"])),
            (
                "10.0.0.0/8, 192.168.1.7",
                Some(&["10.0.0.0/8", "192.168.1.7/32"]),
            ),
            (" 2001:db8::/32 ,,", Some(&["2001:db8::/32"])),
            ("10.0.0.0/8,10.0.0.0/8", Some(&["10.0.0.0/8"])),
            ("", Some(&[])),
            ("10.0.0.0/33", None),
            ("10.0.0.256", None),
            ("example.com", None),
            ("10.0.0.0/8 192.168.0.0/16", None),
            ("10.0.0.0/8;", None),
        ];
        for (v, want) in cases {
            let got = cidr_list(v)
                .ok()
                .map(|l| l.iter().map(|n| n.to_string()).collect::<Vec<_>>());
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{v:?}");
        }
    }

    #[test]
    fn a_bad_cidr_fails_closed_with_503_and_a_good_list_applies() {
        for key in [
            "whitelist-source-range",
            "allowlist-source-range",
            "denylist-source-range",
        ] {
            let (a, v, refusal) = with(&[(key, "10.0.0.0/8, bogus")], |r| (read(r), r.denied()));
            assert!(a.1, "{key}: denied");
            assert_eq!(status(&v, key), Some(Status::Invalid));
            assert!(refusal.is_none(), "{key}: the Ingress itself is kept");
            let note = &v[0].note;
            assert!(note.contains("bogus") && note.contains("503"), "{note}");

            let (a, v, _) = with(&[(key, "10.0.0.0/8")], |r| (read(r), r.denied()));
            assert!(!a.1);
            assert_eq!(status(&v, key), Some(Status::Applied));
            let list = if key.starts_with("deny") {
                &a.0.deny
            } else {
                &a.0.allow
            };
            assert_eq!(list.len(), 1, "{key}");
        }
        // Both names: the new one wins.
        let (a, v, _) = with(
            &[
                ("allowlist-source-range", "10.0.0.0/8"),
                ("whitelist-source-range", "192.0.2.0/24"),
            ],
            read,
        );
        assert_eq!(a.allow, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!(status(&v, "whitelist-source-range"), Some(Status::Ignored));
    }

    #[test]
    fn limits_take_integers_and_a_bad_one_refuses_the_ingress() {
        let (a, v, refusal) = with(
            &[
                ("limit-rps", "5"),
                ("limit-rpm", "300"),
                ("limit-connections", "2"),
                ("limit-burst-multiplier", "3"),
                ("limit-whitelist", "10.0.0.0/8"),
            ],
            read,
        );
        assert!(refusal.is_none());
        assert!(v.iter().all(|x| x.status == Status::Applied), "{v:?}");
        assert_eq!(
            (a.rps, a.rpm, a.connections, a.burst_multiplier),
            (Some(5), Some(300), Some(2), 3)
        );
        assert_eq!(a.limit_allow.len(), 1);
        // 0 is "no limit", as ingress-nginx emits no zone for it.
        let (a, _, refusal) = with(&[("limit-rps", "0")], read);
        assert!(refusal.is_none() && !a.has_limits());
        for (key, bad) in [
            ("limit-rps", "ten"),
            ("limit-rps", "-1"),
            ("limit-rps", "5r/s"),
            ("limit-rpm", "1.5"),
            ("limit-connections", "99999999999"),
            ("limit-burst-multiplier", "0"),
            ("limit-burst-multiplier", "x"),
            ("limit-whitelist", "10.0.0.0/40"),
            ("limit-allowlist", "nope"),
        ] {
            let (_, v, refusal) = with(&[("limit-rps", "5"), (key, bad)], read);
            assert_eq!(status(&v, key), Some(Status::Invalid), "{key}={bad}");
            let why = refusal.unwrap_or_else(|| panic!("{key}={bad}: not refused"));
            assert!(why.contains(key), "{why}");
        }
        // Burst and allowlist without a limit do nothing, and say so.
        let (_, v, _) = with(&[("limit-burst-multiplier", "2")], read);
        assert_eq!(status(&v, "limit-burst-multiplier"), Some(Status::Ignored));
    }
}
