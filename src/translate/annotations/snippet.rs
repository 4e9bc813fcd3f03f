//! configuration-snippet and server-snippet: never executed. The closed, declarative subset
//! users rely on is parsed strictly into typed header operations:
//!
//! | directive | becomes |
//! |---|---|
//! | `more_set_headers "Name: value" ...;` | response header set (replaced), any status |
//! | `more_clear_headers Name ...;` | response header removed |
//! | `add_header Name value [always];` | response header added, on 2xx/3xx unless `always` |
//! | `proxy_set_header Name value;` | request header set upstream (`""` removes it) |
//!
//! Values are literal text with the variables of [`Template`] (`$host`, `$remote_addr`,
//! `$request_id`, `$scheme`, ...). Tokens follow nginx: whitespace-separated, `"..."` or
//! `'...'` quoting with `\` escapes, `;` ending a directive, `#` comments. Anything else (an
//! other directive, a block, an option such as `-s`, a wildcard, an unknown variable) makes
//! the whole snippet ignored, with a diagnostic quoting the directive.

use http::HeaderName;

use super::Reader;
use crate::translate::template::Template;

/// One header operation from a snippet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Replace (or set) the header.
    Set(HeaderName, Template),
    /// Append the header; `always`: on every status, else on 2xx and 3xx only.
    Add(HeaderName, Template, bool),
    /// Remove the header.
    Clear(HeaderName),
}

/// The header operations of a snippet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnippetOps {
    /// proxy_set_header, on the request sent upstream.
    pub request: Vec<HeaderOp>,
    /// more_set_headers, more_clear_headers and add_header, on the response.
    pub response: Vec<HeaderOp>,
}

impl SnippetOps {
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

/// Split into directives (each a list of tokens); Err on unbalanced quotes or a block.
fn directives(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            ';' => {
                if cur.is_empty() {
                    return Err("an empty directive (`;` alone)".into());
                }
                out.push(std::mem::take(&mut cur));
            }
            '{' | '}' => {
                let at = cur.first().cloned().unwrap_or_default();
                return Err(format!("a block (`{at} {c}`) is not supported"));
            }
            '"' | '\'' => {
                let quote = c;
                let mut tok = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some(n) => tok.push(n),
                            None => break,
                        },
                        c if c == quote => {
                            closed = true;
                            break;
                        }
                        c => tok.push(c),
                    }
                }
                if !closed {
                    return Err("an unclosed quote".into());
                }
                cur.push(tok);
            }
            c => {
                let mut tok = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, ';' | '{' | '}' | '"' | '\'' | '#') {
                        break;
                    }
                    tok.push(n);
                    chars.next();
                }
                cur.push(tok);
            }
        }
    }
    if !cur.is_empty() {
        return Err(format!("`{}` is not ended with `;`", cur.join(" ")));
    }
    Ok(out)
}

fn header_name(s: &str) -> Result<HeaderName, String> {
    if s.contains('*') {
        return Err(format!("the wildcard header name `{s}` is not supported"));
    }
    HeaderName::try_from(s).map_err(|_| format!("`{s}` is not a header name"))
}

fn value(s: &str) -> Result<Template, String> {
    if s.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err("a value with control characters".into());
    }
    Template::parse(s)
}

/// Parse a snippet into header operations; Err quotes the directive that is not supported.
pub fn parse(text: &str) -> Result<SnippetOps, String> {
    let mut ops = SnippetOps::default();
    for d in directives(text)? {
        let quoted = || format!("`{};`", d.join(" "));
        let unsupported = |why: &str| format!("{}: {why}", quoted());
        let args = &d[1..];
        match d[0].as_str() {
            "more_set_headers" | "more_clear_headers"
                if args.iter().any(|a| a.starts_with('-')) =>
            {
                return Err(unsupported("options (-s, -t) are not supported"));
            }
            "more_set_headers" if !args.is_empty() => {
                for a in args {
                    let (name, v) = a
                        .split_once(':')
                        .ok_or_else(|| unsupported("each argument is `Name: value`"))?;
                    let name = header_name(name.trim()).map_err(|e| unsupported(&e))?;
                    let v = v.trim();
                    if v.is_empty() {
                        ops.response.push(HeaderOp::Clear(name));
                    } else {
                        let t = value(v).map_err(|e| unsupported(&e))?;
                        ops.response.push(HeaderOp::Set(name, t));
                    }
                }
            }
            "more_clear_headers" if !args.is_empty() => {
                for a in args {
                    let name = header_name(a.trim()).map_err(|e| unsupported(&e))?;
                    ops.response.push(HeaderOp::Clear(name));
                }
            }
            "add_header" if args.len() == 2 || (args.len() == 3 && args[2] == "always") => {
                let name = header_name(&args[0]).map_err(|e| unsupported(&e))?;
                let t = value(&args[1]).map_err(|e| unsupported(&e))?;
                ops.response.push(HeaderOp::Add(name, t, args.len() == 3));
            }
            "proxy_set_header" if args.len() == 2 => {
                let name = header_name(&args[0]).map_err(|e| unsupported(&e))?;
                if args[1].is_empty() {
                    ops.request.push(HeaderOp::Clear(name));
                } else {
                    let t = value(&args[1]).map_err(|e| unsupported(&e))?;
                    ops.request.push(HeaderOp::Set(name, t));
                }
            }
            "more_set_headers" | "more_clear_headers" | "add_header" | "proxy_set_header" => {
                return Err(unsupported("wrong number of arguments"));
            }
            _ => return Err(format!("unsupported directive {}", quoted())),
        }
    }
    Ok(ops)
}

/// Read both snippet keys. The configuration-snippet's operations come first; the
/// server-snippet's apply to this Ingress's paths (ingress-nginx: the whole host).
pub fn read(r: &mut Reader) -> SnippetOps {
    let mut out = SnippetOps::default();
    for key in ["configuration-snippet", "server-snippet"] {
        let Some(text) = r.get(key) else {
            continue;
        };
        match parse(text) {
            Ok(ops) if ops.is_empty() => r.ignored(key, "holds no directive"),
            Ok(ops) => {
                if key == "server-snippet" {
                    r.differs(
                        key,
                        "parsed into header operations (never executed); they apply to this Ingress's paths, not to every Ingress of the host",
                    );
                } else {
                    r.differs(
                        key,
                        "parsed into header operations; the snippet is never executed",
                    );
                }
                out.request.extend(ops.request);
                out.response.extend(ops.response);
            }
            Err(e) => r.ignored(
                key,
                format!("snippets are never executed, and this one is ignored as a whole: {e}"),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    fn h(s: &str) -> HeaderName {
        HeaderName::try_from(s).unwrap()
    }

    #[test]
    fn the_declarative_subset_becomes_header_operations() {
        let text = r#"
            # response headers
            more_set_headers "X-Frame-Options: DENY" 'X-Served-By: $host';
            more_clear_headers Server X-Powered-By;
            add_header Cache-Control "no-store" always;
            add_header X-Request-Id $request_id;
            more_set_headers "X-Empty:";
            proxy_set_header X-Client $remote_addr;
            proxy_set_header X-Drop "";
            proxy_set_header X-Quoted "a \"b\" c";
        "#;
        let ops = parse(text).unwrap();
        assert_eq!(
            ops.response,
            vec![
                HeaderOp::Set(h("x-frame-options"), t("DENY")),
                HeaderOp::Set(h("x-served-by"), t("$host")),
                HeaderOp::Clear(h("server")),
                HeaderOp::Clear(h("x-powered-by")),
                HeaderOp::Add(h("cache-control"), t("no-store"), true),
                HeaderOp::Add(h("x-request-id"), t("$request_id"), false),
                HeaderOp::Clear(h("x-empty")),
            ]
        );
        assert_eq!(
            ops.request,
            vec![
                HeaderOp::Set(h("x-client"), t("$remote_addr")),
                HeaderOp::Clear(h("x-drop")),
                HeaderOp::Set(h("x-quoted"), Template::literal("a \"b\" c")),
            ]
        );
    }

    #[test]
    fn anything_else_is_refused_quoting_the_directive() {
        let cases = [
            (
                "rewrite ^/(.*)$ /x/$1 break;",
                "unsupported directive `rewrite",
            ),
            ("more_set_headers \"X-A: 1\"; return 200;", "`return 200;`"),
            ("if ($host) { return 403; }", "block"),
            ("location / { }", "block"),
            ("more_set_headers -s 404 \"X-A: 1\";", "options"),
            ("more_clear_headers X-Hidden-*;", "wildcard"),
            ("add_header X-A;", "wrong number"),
            ("add_header X-A 1 sometimes;", "wrong number"),
            ("proxy_set_header X-A 1 2;", "wrong number"),
            ("more_set_headers \"X-A 1\";", "Name: value"),
            ("add_header \"Bad Name\" 1;", "not a header name"),
            ("add_header X-A $secret_var;", "not a supported variable"),
            ("add_header X-A \"line\nbreak\";", "control characters"),
            ("add_header X-A 1", "not ended"),
            ("add_header X-A \"open;", "unclosed quote"),
            (";", "empty directive"),
            ("lua_code_cache off;", "unsupported directive"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn snippet_keys_are_differs_when_parsed_and_ignored_otherwise() {
        let (ops, v, _) = with(
            &[("configuration-snippet", "more_set_headers \"X-A: 1\";")],
            read,
        );
        assert_eq!(ops.response.len(), 1);
        assert_eq!(status(&v, "configuration-snippet"), Some(Status::Differs));
        let (ops, v, _) = with(
            &[(
                "configuration-snippet",
                "more_set_headers \"X-A: 1\"; deny all;",
            )],
            read,
        );
        assert!(ops.is_empty(), "ignored as a whole");
        assert_eq!(status(&v, "configuration-snippet"), Some(Status::Ignored));
        assert!(v[0].note.contains("`deny all;`"), "{}", v[0].note);
        let (ops, v, _) = with(&[("server-snippet", "add_header X-S 1 always;")], read);
        assert_eq!(ops.response.len(), 1);
        assert_eq!(status(&v, "server-snippet"), Some(Status::Differs));
    }

    /// Fuzzing in the test suite, deterministic (fixed seed): snippets generated from the
    /// grammar's pieces and from random bytes. The parser never panics, anything it
    /// accepts holds valid names and no control characters, and what it accepts it
    /// accepts again, unchanged, when written back.
    #[test]
    fn generated_snippets_never_panic_and_accepted_ones_round_trip() {
        const PIECES: &[&str] = &[
            "more_set_headers",
            "more_clear_headers",
            "add_header",
            "proxy_set_header",
            "always",
            "X-A",
            "X-B:",
            "\"X-C: v\"",
            "'X-D: $host'",
            "$remote_addr",
            "$request_id",
            "$scheme",
            "$nope",
            "${host}",
            "$",
            ";",
            " ",
            "\n",
            "\t",
            "{",
            "}",
            "\"",
            "'",
            "\\",
            "#c\n",
            "-s",
            "*",
            ":",
            "é",
            "\u{0}",
            "\r",
            "return",
            "200",
            "\"\"",
            "x",
        ];
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let mut accepted = 0;
        for _ in 0..100_000 {
            let n = rng.usize(1..16);
            let text: String = (0..n).map(|_| PIECES[rng.usize(..PIECES.len())]).collect();
            let Ok(ops) = parse(&text) else { continue };
            accepted += 1;
            // Write the operations back as a snippet and parse again: the same ops.
            let mut back = String::new();
            for op in ops.response.iter() {
                match op {
                    HeaderOp::Set(n, v) => back.push_str(&format!(
                        "more_set_headers \"{n}: {}\";\n",
                        v.source().replace('\\', "\\\\").replace('"', "\\\"")
                    )),
                    HeaderOp::Clear(n) => back.push_str(&format!("more_clear_headers {n};\n")),
                    HeaderOp::Add(n, v, a) => back.push_str(&format!(
                        "add_header {n} \"{}\"{};\n",
                        v.source().replace('\\', "\\\\").replace('"', "\\\""),
                        if *a { " always" } else { "" }
                    )),
                }
            }
            for op in ops.request.iter() {
                match op {
                    HeaderOp::Set(n, v) => back.push_str(&format!(
                        "proxy_set_header {n} \"{}\";\n",
                        v.source().replace('\\', "\\\\").replace('"', "\\\"")
                    )),
                    HeaderOp::Clear(n) => back.push_str(&format!("proxy_set_header {n} \"\";\n")),
                    HeaderOp::Add(..) => unreachable!("no request adds"),
                }
            }
            let again = parse(&back).unwrap_or_else(|e| panic!("{text:?} -> {back:?}: {e}"));
            assert_eq!(again, ops, "{text:?}");
        }
        assert!(
            accepted > 100,
            "the generator reaches accepted snippets: {accepted}"
        );
        // And arbitrary bytes (as text): no panic, and nothing accepted holds a control
        // character in a value.
        for _ in 0..50_000 {
            let n = rng.usize(0..64);
            let bytes: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(ops) = parse(&text) {
                for op in ops.response.iter().chain(&ops.request) {
                    if let HeaderOp::Set(_, v) | HeaderOp::Add(_, v, _) = op {
                        assert!(
                            !v.source().bytes().any(|b| b < 0x20 && b != b'\t'),
                            "{text:?}"
                        );
                    }
                }
            }
        }
    }
}
