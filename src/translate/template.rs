//! Text with a closed set of nginx variables, for the annotations that take them (auth-url,
//! auth-signin, auth-request-redirect, auth-cache-key, snippet header values). A variable
//! outside the set is an error at translation, never text passed on.
//!
//! | variable | value |
//! |---|---|
//! | `$host` | the request's host, without port, lowercase |
//! | `$http_host` | the Host header as sent |
//! | `$scheme`, `$pass_access_scheme` | `http` or `https` (as the client reached us, or a trusted proxy says) |
//! | `$request_uri` | path and query as sent |
//! | `$escaped_request_uri` | the same, percent-encoded as one URL component |
//! | `$uri` | the path |
//! | `$args`, `$query_string` | the query |
//! | `$remote_addr` | the client address ([`crate::client`]) |
//! | `$request_id` | the request id |
//! | `$request_method` | the method |
//! | `$server_port` | the local port |
//! | `$http_NAME` | request header NAME (`_` for `-`) |
//! | `$cookie_NAME`, `$arg_NAME` | a cookie, a query parameter |
//!
//! `${name}` delimits a name (`${host}x`).

use http::HeaderMap;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Var {
    Host,
    HttpHost,
    Scheme,
    RequestUri,
    EscapedRequestUri,
    Uri,
    Args,
    RemoteAddr,
    RequestId,
    Method,
    ServerPort,
    Header(http::HeaderName),
    Cookie(String),
    Arg(String),
}

impl Var {
    fn name(&self) -> String {
        match self {
            Var::Host => "host".into(),
            Var::HttpHost => "http_host".into(),
            Var::Scheme => "scheme".into(),
            Var::RequestUri => "request_uri".into(),
            Var::EscapedRequestUri => "escaped_request_uri".into(),
            Var::Uri => "uri".into(),
            Var::Args => "args".into(),
            Var::RemoteAddr => "remote_addr".into(),
            Var::RequestId => "request_id".into(),
            Var::Method => "request_method".into(),
            Var::ServerPort => "server_port".into(),
            Var::Header(h) => format!("http_{}", h.as_str().replace('-', "_")),
            Var::Cookie(c) => format!("cookie_{c}"),
            Var::Arg(a) => format!("arg_{a}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    Lit(String),
    Var(Var),
}

/// Parsed text with variables.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Template(Vec<Part>);

/// What the variables of one request are.
pub struct Vars<'a> {
    pub host: &'a str,
    pub scheme: &'a str,
    pub method: &'a str,
    /// Path and query as sent.
    pub request_uri: &'a str,
    pub headers: &'a HeaderMap,
    pub remote_addr: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub server_port: Option<u16>,
}

fn var(name: &str) -> Result<Var, String> {
    Ok(match name {
        "host" => Var::Host,
        "http_host" => Var::HttpHost,
        "scheme" | "pass_access_scheme" => Var::Scheme,
        "request_uri" => Var::RequestUri,
        "escaped_request_uri" => Var::EscapedRequestUri,
        "uri" => Var::Uri,
        "args" | "query_string" => Var::Args,
        "remote_addr" => Var::RemoteAddr,
        "request_id" | "req_id" => Var::RequestId,
        "request_method" => Var::Method,
        "server_port" => Var::ServerPort,
        _ => {
            if let Some(h) = name.strip_prefix("http_") {
                let h = h.replace('_', "-");
                Var::Header(
                    http::HeaderName::try_from(h.as_str())
                        .map_err(|_| format!("`${name}`: not a header name"))?,
                )
            } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                Var::Cookie(c.to_string())
            } else if let Some(a) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                Var::Arg(a.to_string())
            } else {
                return Err(format!("`${name}` is not a supported variable"));
            }
        }
    })
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            let (name, after) = if let Some(r) = rest.strip_prefix('{') {
                let end = r.find('}').ok_or("an unclosed `${`")?;
                (&r[..end], &r[end + 1..])
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            if name.is_empty() {
                return Err("a `$` without a variable name".into());
            }
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Var(var(name)?));
            rest = after;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template(parts))
    }

    /// Literal text only.
    pub fn literal(s: &str) -> Template {
        Template(vec![Part::Lit(s.to_string())])
    }

    /// The text form again, each variable as `${name}`.
    pub fn source(&self) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => {
                    out.push_str("${");
                    out.push_str(&v.name());
                    out.push('}');
                }
            }
        }
        out
    }

    pub fn is_literal(&self) -> bool {
        self.0.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    pub fn render(&self, v: &Vars) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(x) => push_var(&mut out, x, v),
            }
        }
        out
    }
}

/// `example.com` of `example.com:8080`; IPv6 literals keep their brackets.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn push_var(out: &mut String, x: &Var, v: &Vars) {
    let query = || v.request_uri.split_once('?').map(|(_, q)| q);
    match x {
        Var::Host => out.push_str(&host_without_port(v.host).to_ascii_lowercase()),
        Var::HttpHost => out.push_str(v.host),
        Var::Scheme => out.push_str(v.scheme),
        Var::RequestUri => out.push_str(v.request_uri),
        Var::EscapedRequestUri => out.extend(percent_encoding::utf8_percent_encode(
            v.request_uri,
            COMPONENT,
        )),
        Var::Uri => out.push_str(v.request_uri.split('?').next().unwrap_or("")),
        Var::Args => out.push_str(query().unwrap_or("")),
        Var::RemoteAddr => out.push_str(v.remote_addr.unwrap_or("")),
        Var::RequestId => out.push_str(v.request_id.unwrap_or("")),
        Var::Method => out.push_str(v.method),
        Var::ServerPort => {
            if let Some(p) = v.server_port {
                out.push_str(&p.to_string());
            }
        }
        Var::Header(h) => {
            if let Some(s) = v.headers.get(h).and_then(|x| x.to_str().ok()) {
                out.push_str(s);
            }
        }
        Var::Cookie(c) => {
            if let Some(s) = crate::routing::conditions::cookie(Some(v.headers), c) {
                out.push_str(s);
            }
        }
        Var::Arg(a) => {
            if let Some(s) = crate::routing::conditions::query_param(query(), a) {
                out.push_str(s);
            }
        }
    }
}

/// Everything but unreserved characters is escaped (nginx's component escaping).
pub(crate) const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_render_from_the_request_and_unknown_ones_are_errors() {
        let mut h = HeaderMap::new();
        h.insert("x-user", "ann".parse().unwrap());
        h.insert("cookie", "a=1; sid=xyz".parse().unwrap());
        let v = Vars {
            host: "App.Example.com:8080",
            scheme: "https",
            method: "GET",
            request_uri: "/p/q?x=1&next=/a b",
            headers: &h,
            remote_addr: Some("203.0.113.9"),
            request_id: Some("rid"),
            server_port: Some(443),
        };
        let cases = [
            (
                "https://$host/oauth2/auth",
                "https://app.example.com/oauth2/auth",
            ),
            (
                "$scheme://$http_host$request_uri",
                "https://App.Example.com:8080/p/q?x=1&next=/a b",
            ),
            (
                "/start?rd=$escaped_request_uri",
                "/start?rd=%2Fp%2Fq%3Fx%3D1%26next%3D%2Fa%20b",
            ),
            ("${host}x", "app.example.comx"),
            (
                "$remote_addr$http_x_user$cookie_sid$arg_x",
                "203.0.113.9annxyz1",
            ),
            (
                "$uri|$args|$request_id|$request_method|$server_port",
                "/p/q|x=1&next=/a b|rid|GET|443",
            ),
            ("plain", "plain"),
        ];
        for (t, want) in cases {
            assert_eq!(Template::parse(t).unwrap().render(&v), want, "{t}");
        }
        for bad in ["$nope", "$", "${host", "a$ b", "$http_"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        assert!(Template::parse("x").unwrap().is_literal());
        assert!(!Template::parse("$host").unwrap().is_literal());
    }
}
