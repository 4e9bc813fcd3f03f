//! The real client address: the socket peer (or the address a PROXY protocol header
//! carried), unless that peer is a configured trusted proxy, in which case the right-most
//! untrusted entry of its forwarded header. Every policy, the access log and the headers
//! sent upstream use this one address.
//!
//! The rules, as ingress-nginx applies them with `use-forwarded-headers`,
//! `compute-full-forwarded-for` and `proxy-real-ip-cidr` (nginx's realip module with
//! `real_ip_recursive on`):
//!
//! * A peer outside `trusted_proxies` (the default: nothing is trusted) is the client. Its
//!   X-Forwarded-* headers are replaced: the pod sees `X-Forwarded-For: <peer>`.
//! * From a trusted peer, the header (`forwarded_for_header`, X-Forwarded-For by default)
//!   is read from the right, skipping trusted addresses; the first untrusted one is the
//!   client. When every entry is trusted, the left-most is. An entry that is not an
//!   address ends the walk at the last address believed. The pod sees the incoming
//!   X-Forwarded-For with the peer appended, and the peer's X-Forwarded-Proto, -Host and
//!   -Port are kept.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// Who is believed about the client address.
#[derive(Debug, Clone)]
pub struct Trust {
    nets: Vec<IpNet>,
    header: HeaderName,
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            nets: Vec::new(),
            header: HeaderName::from_static("x-forwarded-for"),
        }
    }
}

/// Parse a CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a bare address (a /32 or /128).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<IpAddr>()
        .map(|ip| IpNet::from(canonical(ip)))
        .map_err(|_| format!("`{s}` is not an IP address or CIDR"))
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are their IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl Trust {
    /// `nets`: CIDRs or addresses of trusted proxies; `header`: where they put the client.
    pub fn new(nets: &[String], header: &str) -> Result<Trust, String> {
        let nets = nets
            .iter()
            .enumerate()
            .map(|(i, n)| parse_net(n).map_err(|e| format!("[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let header = HeaderName::try_from(header.trim())
            .map_err(|_| format!("`{header}` is not a valid header name"))?;
        Ok(Trust { nets, header })
    }

    /// Whether any proxy is trusted at all.
    pub fn any(&self) -> bool {
        !self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client behind a trusted `peer`, from the forwarded header in `headers`.
    pub fn client_behind(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        let values = headers.get_all(&self.header).iter().rev();
        for value in values {
            let Ok(text) = value.to_str() else {
                return client;
            };
            for entry in text.rsplit(',') {
                if !self.trusts(client) {
                    return client;
                }
                let entry = entry.trim();
                if entry.is_empty() {
                    continue;
                }
                match entry.parse::<IpAddr>() {
                    Ok(ip) => client = canonical(ip),
                    Err(_) => return client,
                }
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::try_from(name).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_and_bare_addresses_parse_and_bad_ones_name_the_entry() {
        let t = Trust::new(
            &["10.0.0.0/8".into(), "192.0.2.7".into()],
            "x-forwarded-for",
        )
        .unwrap();
        assert!(t.trusts(ip("10.1.2.3")));
        assert!(t.trusts(ip("192.0.2.7")));
        assert!(!t.trusts(ip("192.0.2.8")));
        assert!(t.trusts(ip("::ffff:10.9.9.9")), "v4-mapped v6 is its v4");
        let e = Trust::new(&["10.0.0.0/8".into(), "10.0.0.0/33".into()], "x").unwrap_err();
        assert!(e.contains("[1]") && e.contains("10.0.0.0/33"), "{e}");
        assert!(Trust::new(&[], "bad header").is_err());
        // Host bits are dropped: 10.1.2.3/8 is 10.0.0.0/8.
        assert!(Trust::new(&["10.1.2.3/8".into()], "x")
            .unwrap()
            .trusts(ip("10.200.0.1")));
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client() {
        let t = Trust::new(&["10.0.0.0/8".into()], "x-forwarded-for").unwrap();
        let cases: &[(&[&str], &str)] = &[
            // No header: the trusted peer itself.
            (&[], "10.0.0.1"),
            (&["203.0.113.9"], "203.0.113.9"),
            // A planted left-most entry is not believed.
            (&["6.6.6.6, 203.0.113.9"], "203.0.113.9"),
            // Trusted hops on the right are skipped.
            (&["6.6.6.6, 203.0.113.9, 10.2.3.4"], "203.0.113.9"),
            // Several header lines read as one list.
            (&["6.6.6.6", "203.0.113.9, 10.2.3.4"], "203.0.113.9"),
            // Every entry trusted: the left-most.
            (&["10.9.9.9, 10.2.3.4"], "10.9.9.9"),
            // Garbage ends the walk at the last believed address.
            (&["203.0.113.9, garbage, 10.2.3.4"], "10.2.3.4"),
            (&["garbage"], "10.0.0.1"),
            (&["2001:db8::1"], "2001:db8::1"),
            (&[" 203.0.113.9 ,, 10.2.3.4"], "203.0.113.9"),
        ];
        for (values, want) in cases {
            let h = headers("x-forwarded-for", values);
            assert_eq!(
                t.client_behind(ip("10.0.0.1"), &h),
                ip(want),
                "X-Forwarded-For {values:?}"
            );
        }
    }

    #[test]
    fn a_configured_header_replaces_x_forwarded_for() {
        let t = Trust::new(&["10.0.0.0/8".into()], "CF-Connecting-IP").unwrap();
        let mut h = headers("cf-connecting-ip", &["198.51.100.4"]);
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        assert_eq!(t.client_behind(ip("10.0.0.1"), &h), ip("198.51.100.4"));
    }
}
