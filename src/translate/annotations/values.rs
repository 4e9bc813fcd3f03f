//! Value parsers and character-class validators shared by the annotation families, with
//! ingress-nginx's exact rules (`parser/validators.go`): Go's `strconv.ParseBool` and
//! `Atoi`, sizes with k/m/g units, and the allowed characters of each value kind. Every
//! validator also refuses CR and LF.

/// `-._~a-zA-Z0-9/:`
fn alphanumeric(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~/:".contains(c)
}

/// No CR or LF anywhere (`MaliciousRegex`).
fn clean(v: &str) -> bool {
    !v.contains(['\r', '\n'])
}

/// Go `strconv.ParseBool`: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("`{v}` is not a boolean (true or false)")),
    }
}

/// Go `strconv.Atoi`: optional sign, decimal digits, no spaces or units.
pub fn parse_int(v: &str) -> Result<i64, String> {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{v}` is not an integer"));
    }
    v.parse::<i64>()
        .map_err(|_| format!("`{v}` is out of range for an integer"))
}

/// A non-negative integer.
pub fn parse_uint(v: &str) -> Result<u64, String> {
    let n = parse_int(v)?;
    u64::try_from(n).map_err(|_| format!("`{v}` must not be negative"))
}

/// nginx size: digits with an optional k, m or g (any case), multiples of 1024.
/// (ingress-nginx's validator also admits a `b` suffix, but then emits nothing, so the
/// default applies; that value is refused here with the same outcome.)
pub fn parse_size(v: &str) -> Result<u64, String> {
    let (digits, mult) = match v.as_bytes().last() {
        Some(b'k' | b'K') => (&v[..v.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&v[..v.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{v}` is not a size (digits with an optional k, m or g)"
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{v}` is too large"))
}

/// `RegexPathWithCapture`: an optional leading `/`, then alphanumerics, `/` and `$`.
pub fn path_with_captures(v: &str) -> Result<(), String> {
    if clean(v) && !v.is_empty() && v.chars().all(|c| alphanumeric(c) || c == '$') {
        Ok(())
    } else {
        Err(format!(
            "`{v}` may contain only letters, digits, `-._~/:` and `$` captures"
        ))
    }
}

/// `IsValidRegex` characters: alphanumerics and `^$[](){}*+?|&=\`.
pub fn regex_chars(v: &str) -> Result<(), String> {
    if clean(v)
        && v.chars()
            .all(|c| alphanumeric(c) || "^$[](){}*+?|&=\\".contains(c))
    {
        Ok(())
    } else {
        Err(format!("`{v}` has characters not allowed in this value"))
    }
}

/// `URLIsValidRegex`: alphanumerics and `,:?&=` (so no `$`, `%`, `#`, `+` or space).
pub fn url_chars(v: &str) -> Result<(), String> {
    if clean(v) && !v.is_empty() && v.chars().all(|c| alphanumeric(c) || ",:?&=".contains(c)) {
        Ok(())
    } else {
        Err(format!(
            "`{v}` may contain only letters, digits and `-._~/:,?&=` (no `$`, `%`, `#`, `+` or spaces)"
        ))
    }
}

/// `BasicCharsRegex`: alphanumerics (with `/`).
pub fn basic_chars(v: &str) -> Result<(), String> {
    if clean(v) && !v.is_empty() && v.chars().all(alphanumeric) {
        Ok(())
    } else {
        Err(format!(
            "`{v}` may contain only letters, digits and `-._~/:`"
        ))
    }
}

/// A DNS-1035 label (Service names).
pub fn dns_label(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && !v.ends_with('-')
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{v}` is not a valid Service name (DNS-1035 label)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_follow_go_parse_bool() {
        for v in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(v), Ok(true), "{v}");
        }
        for v in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(v), Ok(false), "{v}");
        }
        for v in ["yes", "on", "", " true", "tRUE"] {
            assert!(parse_bool(v).is_err(), "{v}");
        }
    }

    #[test]
    fn integers_follow_go_atoi() {
        assert_eq!(parse_int("60"), Ok(60));
        assert_eq!(parse_int("-5"), Ok(-5));
        assert_eq!(parse_int("+7"), Ok(7));
        for v in ["60s", "", " 1", "1.5", "-", "99999999999999999999"] {
            assert!(parse_int(v).is_err(), "{v}");
        }
        assert!(parse_uint("-1").is_err());
    }

    #[test]
    fn sizes_take_k_m_g_units_of_1024() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("100", Some(100)),
            ("8k", Some(8 << 10)),
            ("8K", Some(8 << 10)),
            ("1m", Some(1 << 20)),
            ("2G", Some(2 << 30)),
            ("10b", None),
            ("1.5m", None),
            ("m", None),
            ("1 m", None),
            ("-1m", None),
            ("99999999999999999999g", None),
        ];
        for (v, want) in cases {
            assert_eq!(parse_size(v).ok(), *want, "{v}");
        }
    }

    #[test]
    fn character_classes_match_ingress_nginx() {
        assert!(path_with_captures("/$1/$2").is_ok());
        assert!(path_with_captures("/a?b").is_err());
        assert!(path_with_captures("/a\nb").is_err());
        assert!(url_chars("https://example.com/x?a=b&c=d").is_ok());
        for bad in [
            "https://e.com/$request_uri",
            "https://e.com/%20",
            "a b",
            "x#y",
            "",
        ] {
            assert!(url_chars(bad).is_err(), "{bad}");
        }
        assert!(regex_chars("^/api/(v1|v2)$").is_ok());
        assert!(regex_chars("a;b").is_err());
        assert!(basic_chars("INGRESSCOOKIE").is_ok());
        assert!(basic_chars("a=b").is_err());
        assert!(dns_label("errors-1").is_ok());
        for bad in ["Errors", "-a", "a-", "1a", "a.b", ""] {
            assert!(dns_label(bad).is_err(), "{bad}");
        }
    }
}
