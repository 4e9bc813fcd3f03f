//! Authentication annotations: auth-type basic with auth-secret, auth-secret-type and
//! auth-realm.
//!
//! Fail closed: `auth-type: digest` (not supported), a missing or malformed auth-secret
//! reference and (at translation) a missing or unusable Secret make the Ingress's paths
//! answer 503; an invalid auth-type, auth-secret-type or auth-realm refuses the Ingress,
//! as ingress-nginx drops it.

use super::{values, Outcome, Reader};

/// Where a basic-auth Ingress's users are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecretType {
    /// An htpasswd file under the Secret's key `auth`.
    #[default]
    File,
    /// Each key of the Secret a user, its value the hash.
    Map,
}

/// auth-type basic and its Secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Basic {
    /// The Secret's namespace when written as `namespace/name`.
    pub namespace: Option<String>,
    pub name: String,
    pub kind: SecretType,
    pub realm: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub basic: Option<Basic>,
}

/// `name` or `namespace/name`, each a DNS label / subdomain.
pub fn secret_ref(v: &str) -> Result<(Option<String>, String), String> {
    let (ns, name) = match v.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, v),
    };
    if let Some(ns) = ns {
        values::dns_label(ns).map_err(|e| format!("namespace: {e}"))?;
    }
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        return Err(format!(
            "`{v}` is not a Secret name (`name` or `namespace/name`)"
        ));
    }
    Ok((ns.map(str::to_string), name.to_string()))
}

/// ingress-nginx's realm characters: letters, digits, space and `-._~/:,`.
fn realm(v: &str) -> Result<(), String> {
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" -._~/:,".contains(&b))
    {
        Ok(())
    } else {
        Err("may hold letters, digits, spaces and -._~/:, only".into())
    }
}

pub fn read(r: &mut Reader) -> Auth {
    let mut out = Auth::default();
    let Some(kind) = r.get("auth-type") else {
        for key in ["auth-secret", "auth-secret-type", "auth-realm"] {
            if r.has(key) {
                r.ignored(key, "no auth-type is set");
            }
        }
        return out;
    };
    match kind {
        "basic" => {}
        "digest" => {
            r.invalid(
                "auth-type",
                "digest authentication is not supported by pingress",
                Outcome::Deny,
            );
            return out;
        }
        _ => {
            r.invalid("auth-type", "must be basic or digest", Outcome::Refuse);
            return out;
        }
    }
    let secret_kind = match r.get("auth-secret-type") {
        None | Some("auth-file") => SecretType::File,
        Some("auth-map") => SecretType::Map,
        Some(_) => {
            r.invalid(
                "auth-secret-type",
                "must be auth-file or auth-map",
                Outcome::Refuse,
            );
            return out;
        }
    };
    let realm_text = match r.get("auth-realm") {
        None => String::new(),
        Some(v) => match realm(v) {
            Ok(()) => v.to_string(),
            Err(e) => {
                r.invalid("auth-realm", e, Outcome::Refuse);
                return out;
            }
        },
    };
    let Some(v) = r.get("auth-secret") else {
        r.invalid(
            "auth-type",
            "auth-type basic needs auth-secret",
            Outcome::Deny,
        );
        return out;
    };
    match secret_ref(v) {
        Ok((namespace, name)) => {
            out.basic = Some(Basic {
                namespace,
                name,
                kind: secret_kind,
                realm: realm_text,
            })
        }
        Err(e) => r.invalid("auth-secret", e, Outcome::Deny),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{status, with};
    use super::super::Status;
    use super::*;

    #[test]
    fn basic_auth_reads_its_secret_type_and_realm() {
        let (a, v, refusal) = with(
            &[
                ("auth-type", "basic"),
                ("auth-secret", "other/users"),
                ("auth-secret-type", "auth-map"),
                ("auth-realm", "Authentication Required - foo"),
            ],
            read,
        );
        assert!(refusal.is_none());
        assert!(v.iter().all(|x| x.status == Status::Applied), "{v:?}");
        let b = a.basic.unwrap();
        assert_eq!(b.namespace.as_deref(), Some("other"));
        assert_eq!(b.name, "users");
        assert_eq!(b.kind, SecretType::Map);
        assert_eq!(b.realm, "Authentication Required - foo");
    }

    #[test]
    fn every_bad_form_fails_closed() {
        // (annotations, key reported, denied (503) or refused)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, bool);
        let cases: &[Case] = &[
            (
                &[("auth-type", "digest"), ("auth-secret", "s")],
                "auth-type",
                true,
            ),
            (&[("auth-type", "basic")], "auth-type", true),
            (
                &[("auth-type", "basic"), ("auth-secret", "Bad_Name")],
                "auth-secret",
                true,
            ),
            (
                &[("auth-type", "basic"), ("auth-secret", "a/b/c")],
                "auth-secret",
                true,
            ),
            (
                &[("auth-type", "Basic"), ("auth-secret", "s")],
                "auth-type",
                false,
            ),
            (
                &[
                    ("auth-type", "basic"),
                    ("auth-secret", "s"),
                    ("auth-secret-type", "file"),
                ],
                "auth-secret-type",
                false,
            ),
            (
                &[
                    ("auth-type", "basic"),
                    ("auth-secret", "s"),
                    ("auth-realm", "a\"b"),
                ],
                "auth-realm",
                false,
            ),
        ];
        for (pairs, key, denied) in cases {
            let ((a, d), v, refusal) = with(pairs, |r| (read(r), r.denied()));
            assert!(a.basic.is_none(), "{pairs:?}");
            assert_eq!(status(&v, key), Some(Status::Invalid), "{pairs:?}");
            assert_eq!(d, *denied, "{pairs:?}: denied");
            assert_eq!(refusal.is_some(), !denied, "{pairs:?}: refused");
        }
        // Without auth-type the rest does nothing, and says so.
        let (a, v, _) = with(&[("auth-secret", "s")], read);
        assert!(a.basic.is_none());
        assert_eq!(status(&v, "auth-secret"), Some(Status::Ignored));
    }
}
