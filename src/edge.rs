//! Strict HTTP at the edge: the checks every HTTP/1 request head passes before anything
//! routes on it or forwards it, so that no two parsers (ours, the pod's, a cache's) can read
//! one request differently, and so that heads stay within the configured sizes.
//!
//! Pingora has already parsed the head when these run. It rejects a good part of what is
//! ambiguous itself (duplicate or differing Content-Length, CR/LF/NUL in fields, a Host
//! that differs from an absolute-form authority, a final coding other than chunked,
//! Transfer-Encoding on HTTP/1.0) with 400. What it lets through, and these checks refuse:
//!
//! * Content-Length that is not `1*DIGIT` or does not fit a signed 64-bit length (nginx's
//!   and haproxy's limit: 2^63 and above is a 400, not a body to forward);
//! * Transfer-Encoding together with Content-Length. Pingora drops the Content-Length
//!   before any hook sees the parsed head, so this reads the raw head, which it keeps;
//! * a Transfer-Encoding other than exactly `chunked` (e.g. `gzip, chunked`, or two fields);
//! * the request-target rules of RFC 9112 §3.2: asterisk-form only with OPTIONS,
//!   origin-form starts with `/`, absolute-form only with http or https;
//! * Host: required on HTTP/1.1 (unless the target is in absolute form), one field, and a
//!   valid `uri-host [ ":" port ]`;
//! * the head limits: request line (414), one field (name and value), the whole head as
//!   received and the number of fields (431).

use http::{Method, Version};
use pingora::http::RequestHeader;

/// A refused request: the status to answer (the connection is closed after it) and why,
/// for the log and the `pingress_requests_refused_total{reason}` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Result<(), Refusal> {
    Err(Refusal { status, reason })
}

/// Head limits, from `pingress.edge` (see [`crate::config::EdgeConf`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    pub request_line: usize,
    pub field_line: usize,
    pub head: usize,
    pub fields: usize,
}

/// Checks one HTTP/1 request. `raw` is the head as received (request line, fields, blank
/// line). Returns the refusal for the first rule broken.
///
/// One pass over the parsed fields does the per-field limits and collects Host,
/// Transfer-Encoding and Content-Length (no map lookups); the raw head is read only for
/// its length, and for a Content-Length hidden behind a Transfer-Encoding.
pub fn check_h1(req: &RequestHeader, raw: &[u8], limits: &HeadLimits) -> Result<(), Refusal> {
    if raw.len() > limits.head {
        return refuse(431, "request head too large");
    }
    // method SP request-target SP HTTP/1.x
    if req.method.as_str().len() + req.raw_path().len() + 10 > limits.request_line {
        return refuse(414, "request line too long");
    }
    if req.headers.len() > limits.fields {
        return refuse(431, "too many header fields");
    }
    let (mut host, mut hosts, mut te, mut tes) = (None, 0, None, 0);
    for (name, value) in req.headers.iter() {
        // name ": " value
        if name.as_str().len() + value.len() + 2 > limits.field_line {
            return refuse(431, "header field too large");
        }
        if name == http::header::HOST {
            hosts += 1;
            host = Some(value);
        } else if name == http::header::TRANSFER_ENCODING {
            tes += 1;
            te = Some(value);
        } else if name == http::header::CONTENT_LENGTH {
            check_content_length(value.as_bytes())?;
        }
    }
    check_target(req)?;
    check_host(req, host, hosts)?;
    check_transfer_encoding(req, raw, te, tes)
}

/// Checks one HTTP/2 request for what the `h2` crate lets through (RFC 9113 §8.3.1): a
/// `*` path is only for OPTIONS, and `:authority` and any Host field must be valid
/// authorities (the `http` crate takes a port that is not a number).
pub fn check_h2(req: &RequestHeader) -> Result<(), Refusal> {
    if req.raw_path() == b"*" && req.method != Method::OPTIONS {
        return refuse(400, "asterisk-form target without OPTIONS");
    }
    if let Some(a) = req.uri.authority() {
        if !valid_authority(a.as_str().as_bytes()) {
            return refuse(400, ":authority is not a valid authority");
        }
    }
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => refuse(400, "more than one Host field"),
        (Some(v), None) if !valid_authority(v.as_bytes()) => {
            refuse(400, "Host is not a valid authority")
        }
        _ => Ok(()),
    }
}

/// RFC 9112 §3.2: the four forms of request-target and which methods may use them.
fn check_target(req: &RequestHeader) -> Result<(), Refusal> {
    let raw = req.raw_path();
    if raw == b"*" {
        return if req.method == Method::OPTIONS {
            Ok(())
        } else {
            refuse(400, "asterisk-form target without OPTIONS")
        };
    }
    if raw.first() == Some(&b'/') {
        return Ok(());
    }
    // absolute-form (authority-form is CONNECT's, which Pingora answers with 405).
    match absolute_authority(raw) {
        Some(a) if !a.is_empty() && valid_authority(a) => Ok(()),
        Some(_) => refuse(400, "absolute-form target without a valid host"),
        None => refuse(400, "request target is not origin-form, absolute-form or *"),
    }
}

/// The authority of an `http://` or `https://` absolute-form target (Pingora keeps it
/// only in the raw target); None for any other form.
pub fn absolute_authority(raw: &[u8]) -> Option<&[u8]> {
    let rest = [&b"http://"[..], b"https://"].iter().find_map(|scheme| {
        (raw.len() >= scheme.len() && raw[..scheme.len()].eq_ignore_ascii_case(scheme))
            .then(|| &raw[scheme.len()..])
    })?;
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Host is required on HTTP/1.1 unless the target carries the authority; one field only;
/// its value is `uri-host [ ":" port ]`.
fn check_host(
    req: &RequestHeader,
    host: Option<&http::HeaderValue>,
    hosts: usize,
) -> Result<(), Refusal> {
    match (host, hosts) {
        (_, 2..) => refuse(400, "more than one Host field"),
        (Some(v), _) if !valid_authority(v.as_bytes()) => {
            refuse(400, "Host is not a valid authority")
        }
        (Some(_), _) => Ok(()),
        (None, _) => {
            if req.version == Version::HTTP_11 && absolute_authority(req.raw_path()).is_none() {
                refuse(400, "HTTP/1.1 request without Host")
            } else {
                Ok(())
            }
        }
    }
}

/// The octets of an RFC 3986 reg-name without pct-encoding: unreserved and sub-delims,
/// one lookup per octet.
static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        i += 1;
    }
    t
};

/// `uri-host [ ":" port ]` of RFC 3986, as a Host field value (which may be empty).
pub fn valid_authority(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        // IP-literal: [IPv6] or [vX.future]
        let Some(end) = v.iter().position(|b| *b == b']') else {
            return false;
        };
        let inner = &v[1..end];
        let ipv6 = std::str::from_utf8(inner)
            .ok()
            .is_some_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
        if !ipv6 {
            return false;
        }
        match &v[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&v[..0], port),
            _ => return false,
        }
    } else {
        match v.iter().rposition(|b| *b == b':') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, &v[..0]),
        }
    };
    // No pct-encoded octets: no DNS name has one, and the http crate's authority parser
    // refuses them (`%`, then `%00`, found by the property test in src/props.rs).
    let reg_name = host.iter().all(|b| REG_NAME[*b as usize]);
    let port_ok = port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && (port.is_empty()
            || std::str::from_utf8(port)
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
                .is_some());
    reg_name && port_ok
}

/// Transfer-Encoding: exactly `chunked`, one field, HTTP/1.1, and no Content-Length.
fn check_transfer_encoding(
    req: &RequestHeader,
    raw: &[u8],
    te: Option<&http::HeaderValue>,
    tes: usize,
) -> Result<(), Refusal> {
    let Some(te) = te else {
        return Ok(());
    };
    if tes > 1 {
        return refuse(400, "more than one Transfer-Encoding field");
    }
    if !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
        return refuse(400, "Transfer-Encoding other than chunked");
    }
    if req.version != Version::HTTP_11 {
        return refuse(400, "Transfer-Encoding before HTTP/1.1");
    }
    // Pingora removed Content-Length from the parsed head; the raw head still has it.
    if raw_has_field(raw, b"content-length") {
        return refuse(400, "Transfer-Encoding together with Content-Length");
    }
    Ok(())
}

/// A Content-Length value: `1*DIGIT` (each of a comma list, which Pingora accepts when
/// the values are equal) that fits a signed 64-bit length.
fn check_content_length(v: &[u8]) -> Result<(), Refusal> {
    for part in v.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return refuse(400, "Content-Length is not a number");
        }
        if content_length(part).is_none() {
            return refuse(400, "Content-Length too large");
        }
    }
    Ok(())
}

/// A decimal Content-Length that fits a signed 64-bit length.
fn content_length(digits: &[u8]) -> Option<u64> {
    std::str::from_utf8(digits)
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= i64::MAX as u64)
}

/// Whether the raw head has a field named `name` (lower case).
fn raw_has_field(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
    })
}

pub mod conn;
pub mod handshake;

#[cfg(test)]
mod tests;
