//! Property tests of every parser of outside input: request heads and authorities (the
//! edge), annotation values and header snippets, manifests, the config file, certificate
//! DER, and host normalisation. Each takes arbitrary input and must return a value or an
//! error, never panic, and keep the invariants stated with it. Case counts are bounded
//! (`PROPTEST_CASES`, 256 by default) so CI runs them in seconds; a failure proptest finds
//! is kept as a plain regression test beside the parser.

use proptest::prelude::*;

use crate::edge::{check_h1, valid_authority, HeadLimits};

const LIMITS: HeadLimits = HeadLimits {
    request_line: 8192,
    field_line: 16384,
    head: 61440,
    fields: 100,
};

/// Header-ish text: names and values from the bytes that matter to HTTP parsers.
fn field_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9 \t:;,=\"\\-_./+\\[\\]@%]{0,40}").unwrap()
}

proptest! {
    #[test]
    fn request_heads_are_checked_without_panicking(
        method in "[A-Z]{1,8}",
        target in "[ -~]{0,64}",
        fields in proptest::collection::vec((field_text(), field_text()), 0..12),
        raw in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let Ok(mut req) = pingora::http::RequestHeader::build(method.as_str(), target.as_bytes(), None) else {
            return Ok(());
        };
        for (k, v) in &fields {
            let _ = req.append_header(k.clone(), v.as_str());
        }
        if let Err(r) = check_h1(&req, &raw, &LIMITS) {
            prop_assert!(matches!(r.status, 400 | 414 | 431), "{r:?}");
        }
    }

    /// The Host rule is never looser than the http crate's authority parser.
    #[test]
    fn a_valid_host_is_an_authority(v in "[ -~]{1,40}") {
        if valid_authority(v.as_bytes()) {
            prop_assert!(http::uri::Authority::try_from(v.as_str()).is_ok(), "{v:?}");
        }
    }

    #[test]
    fn ordinary_hosts_are_valid(host in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,3}", port in proptest::option::of(0u16..)) {
        let v = match port { Some(p) => format!("{host}:{p}"), None => host };
        prop_assert!(valid_authority(v.as_bytes()), "{v:?}");
    }

    #[test]
    fn annotation_values_parse_or_refuse(v in "\\PC{0,24}") {
        use crate::translate::annotations::values::*;
        let _ = parse_bool(&v);
        let _ = parse_int(&v);
        let _ = parse_uint(&v);
        let _ = path_with_captures(&v);
        let _ = regex_chars(&v);
        let _ = url_chars(&v);
        let _ = basic_chars(&v);
        let _ = dns_label(&v);
        if let Ok(n) = parse_size(&v) {
            // A size is digits times its unit, whatever the case of the unit.
            let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
            let base: u64 = digits.parse().unwrap();
            prop_assert!(n == base || n == base << 10 || n == base << 20 || n == base << 30);
        }
    }

    #[test]
    fn sizes_round_trip(n in 0u64..1_000_000, unit in prop_oneof![Just(""), Just("k"), Just("M"), Just("g")]) {
        let mult = match unit { "" => 1, "k" => 1 << 10, "M" => 1 << 20, _ => 1 << 30 };
        prop_assert_eq!(crate::translate::annotations::values::parse_size(&format!("{n}{unit}")), Ok(n * mult));
    }

    #[test]
    fn header_snippets_parse_or_refuse(text in "(more_set_headers|more_clear_headers|add_header|proxy_set_header|[a-z_]{1,12})[ \"';:{}A-Za-z0-9$-]{0,60}") {
        let _ = crate::translate::annotations::snippet::parse(&text);
    }

    #[test]
    fn manifests_parse_or_refuse(text in "(apiVersion: [a-z0-9./]{0,20}\nkind: [A-Za-z]{0,12}\nmetadata: \\{name: [a-z]{0,5}, namespace: [a-z]{0,5}\\}\n)?[ -~\n]{0,200}") {
        let _ = crate::source::files::parse_manifests(&text, "prop.yaml");
    }

    #[test]
    fn config_files_parse_or_refuse(text in "(pingress:\n  )?[ -~\n]{0,160}") {
        let _ = crate::config::Config::from_yaml(&text, "prop.yaml");
    }

    #[test]
    fn certificate_der_is_read_or_refused(der in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = crate::tls::not_after_unix(&der);
    }

    #[test]
    fn hosts_normalise_to_lowercase_without_port(raw in "[ -~]{0,300}") {
        let mut buf = [0u8; 256];
        if let Some(h) = crate::routing::normalize_host(&raw, &mut buf) {
            prop_assert!(!h.is_empty() && h.len() <= 256);
            prop_assert!(!h.bytes().any(|b| b.is_ascii_uppercase()), "{h:?}");
        }
    }
}
