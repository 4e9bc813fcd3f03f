//! ingress-nginx annotations (`nginx.ingress.kubernetes.io/*`, and the same keys under
//! `pingress.dev/`), parsed into closed types, one module per family. Every annotation of
//! an Ingress is classified, for diagnostics and for `pingress check`:
//!
//! * applied: understood and in effect;
//! * differs: in effect, with a documented difference from ingress-nginx;
//! * ignored: not supported (or a snippet, which is never executed);
//! * invalid: a bad value, with what happens instead (the default, the annotation ignored,
//!   or, where ingress-nginx drops the whole Ingress, the Ingress refused).
//!
//! Semantics follow `shared/reference/ingress-nginx-annotations.md`; docs/annotations.md
//! holds the compatibility table.

pub mod access;
pub mod affinity;
pub mod auth;
pub mod backend;
pub mod canary;
pub mod client_cert;
pub mod cors;
pub mod errors;
pub mod proxy;
pub mod redirect;
pub mod rewrite;
pub mod snippet;
pub mod values;

use std::collections::BTreeMap;

use serde::Serialize;

/// The prefixes whose keys are ours to read; the same key works under either.
pub const PREFIXES: &[&str] = &["nginx.ingress.kubernetes.io/", "pingress.dev/"];

/// How one annotation was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Applied,
    Differs,
    Ignored,
    Invalid,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Applied => "applied",
            Status::Differs => "differs",
            Status::Ignored => "ignored",
            Status::Invalid => "invalid",
        }
    }
}

/// The verdict on one annotation of one Ingress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The full key as written.
    pub key: String,
    pub value: String,
    pub status: Status,
    /// Why (for differs, ignored and invalid); empty when applied.
    pub note: String,
    /// Part of what the value asks for is not done (a diagnostic is raised, as for ignored).
    pub partial: bool,
}

/// The diagnostic text of a verdict that is not (fully) in effect; `pingress check` lists
/// the verdict itself instead.
pub fn verdict_message(v: &Verdict) -> String {
    format!("annotation {}: {}", v.key, v.note)
}

/// What an invalid value leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The annotation's default applies.
    Default,
    /// The annotation is ignored.
    Ignored,
    /// The whole Ingress is refused (as ingress-nginx drops it).
    Refuse,
    /// The Ingress's paths answer 503 (fail closed, as ingress-nginx denies the location).
    Deny,
}

/// Reads one Ingress's annotations, recording a verdict per key.
pub struct Reader<'a> {
    /// Short name (without prefix) -> (full key, value). When a key is set under both
    /// prefixes, `pingress.dev/` wins.
    keys: BTreeMap<&'a str, (&'a str, &'a str)>,
    verdicts: BTreeMap<&'a str, Verdict>,
    /// Why the Ingress is refused, if it is.
    refusals: Vec<String>,
    /// An access-control key could not be built: the paths answer 503.
    denied: bool,
}

impl<'a> Reader<'a> {
    pub fn new(annotations: Option<&'a BTreeMap<String, String>>) -> Reader<'a> {
        let mut keys = BTreeMap::new();
        for (k, v) in annotations.into_iter().flatten() {
            for (i, p) in PREFIXES.iter().enumerate() {
                if let Some(short) = k.strip_prefix(p) {
                    if i == 1 || !keys.contains_key(short) {
                        keys.insert(short, (k.as_str(), v.as_str()));
                    }
                }
            }
        }
        Reader {
            keys,
            verdicts: BTreeMap::new(),
            refusals: Vec::new(),
            denied: false,
        }
    }

    /// The value of a short key (`rewrite-target`), trimmed of surrounding spaces. A key
    /// read is applied unless the family says otherwise.
    pub fn get(&mut self, short: &'static str) -> Option<&'a str> {
        let (key, value) = *self.keys.get(short)?;
        self.verdicts.entry(short).or_insert_with(|| Verdict {
            key: key.to_string(),
            value: value.to_string(),
            status: Status::Applied,
            note: String::new(),
            partial: false,
        });
        Some(value.trim())
    }

    /// Whether a short key is set (without reading it).
    pub fn has(&self, short: &str) -> bool {
        self.keys.contains_key(short)
    }

    fn set(&mut self, short: &'static str, status: Status, note: String) {
        if self.get(short).is_some() {
            let v = self.verdicts.get_mut(short).expect("just read");
            v.status = status;
            v.note = note;
        }
    }

    /// The key is in effect, differently from ingress-nginx in the way `note` says.
    pub fn differs(&mut self, short: &'static str, note: impl Into<String>) {
        self.set(short, Status::Differs, note.into());
    }

    /// The key is in effect, but part of what it asks for is not done (`note` says which).
    pub fn partly(&mut self, short: &'static str, note: impl Into<String>) {
        self.set(short, Status::Differs, note.into());
        if let Some(v) = self.verdicts.get_mut(short) {
            v.partial = true;
        }
    }

    /// The key is not acted on.
    pub fn ignored(&mut self, short: &'static str, note: impl Into<String>) {
        self.set(short, Status::Ignored, note.into());
    }

    /// The key's value is bad: `why`, and what happens instead.
    pub fn invalid(&mut self, short: &'static str, why: impl Into<String>, outcome: Outcome) {
        let why = why.into();
        let then = match outcome {
            Outcome::Default => "using the default",
            Outcome::Ignored => "ignored",
            Outcome::Refuse => "the Ingress is refused, as ingress-nginx drops it",
            Outcome::Deny => {
                "the Ingress's paths answer 503 (fail closed), as ingress-nginx denies them"
            }
        };
        if outcome == Outcome::Deny {
            self.denied = true;
        }
        if outcome == Outcome::Refuse {
            let key = self.keys.get(short).map_or(short, |(k, _)| *k);
            self.refusals.push(format!("annotation {key}: {why}"));
        }
        let why = match self.keys.get(short) {
            Some((_, v)) if !why.contains(v.trim()) => format!("`{}`: {why}", v.trim()),
            _ => why,
        };
        self.set(short, Status::Invalid, format!("{why}; {then}"));
    }

    /// Whether an access-control key failed closed ([`Outcome::Deny`]).
    pub fn denied(&self) -> bool {
        self.denied
    }

    /// A boolean key: None when unset; a bad value falls back to `default` (reported).
    pub fn bool(&mut self, short: &'static str, default: bool) -> Option<bool> {
        let v = self.get(short)?;
        match values::parse_bool(v) {
            Ok(b) => Some(b),
            Err(e) => {
                self.invalid(short, e, Outcome::Default);
                Some(default)
            }
        }
    }

    /// Finish: the verdict on every key under our prefixes (keys no family read are
    /// unsupported), and the refusal, if any.
    pub fn finish(mut self) -> (Vec<Verdict>, Option<String>) {
        let unread: Vec<&'a str> = self
            .keys
            .keys()
            .filter(|k| !self.verdicts.contains_key(*k))
            .copied()
            .collect();
        let mut out: Vec<Verdict> = std::mem::take(&mut self.verdicts).into_values().collect();
        for short in unread {
            let (key, value) = self.keys[short];
            let note = if short.ends_with("-snippet") {
                "snippets are never executed; the configuration text is ignored".to_string()
            } else {
                "not supported by pingress; ignored".to_string()
            };
            out.push(Verdict {
                key: key.to_string(),
                value: value.to_string(),
                status: Status::Ignored,
                note,
                partial: false,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        let refusal = (!self.refusals.is_empty()).then(|| self.refusals.join("; "));
        (out, refusal)
    }
}

/// Everything the annotations of one Ingress ask for.
#[derive(Debug, Clone, Default)]
pub struct IngressAnnotations {
    pub redirect: redirect::Redirects,
    pub rewrite: rewrite::Rewrites,
    pub proxy: proxy::ProxySettings,
    pub backend: backend::BackendSettings,
    pub affinity: Option<crate::translate::model::Affinity>,
    pub canary: Option<canary::Canary>,
    pub errors: errors::Errors,
    pub access: access::Access,
    pub auth: auth::Auth,
    pub cors: Option<std::sync::Arc<crate::translate::model::Cors>>,
    pub snippet: snippet::SnippetOps,
    /// auth-tls-*: None when unset; `Err` when it failed closed.
    pub client_cert: Option<Result<client_cert::ClientCertSpec, ()>>,
    /// An access-control annotation could not be built: the paths answer 503.
    pub denied: bool,
}

/// Parse every family. Returns the typed settings, a verdict per annotation, and the reason
/// the whole Ingress is refused (None when it is not).
pub fn read(
    annotations: Option<&BTreeMap<String, String>>,
) -> (IngressAnnotations, Vec<Verdict>, Option<String>) {
    let mut r = Reader::new(annotations);
    let out = IngressAnnotations {
        redirect: redirect::read(&mut r),
        rewrite: rewrite::read(&mut r),
        proxy: proxy::read(&mut r),
        backend: backend::read(&mut r),
        affinity: affinity::read(&mut r),
        canary: canary::read(&mut r),
        errors: errors::read(&mut r),
        access: access::read(&mut r),
        auth: auth::read(&mut r),
        cors: cors::read(&mut r).map(std::sync::Arc::new),
        snippet: snippet::read(&mut r),
        client_cert: client_cert::read(&mut r),
        denied: false,
    };
    let mut out = out;
    out.denied = r.denied();
    let (verdicts, refusal) = r.finish();
    (out, verdicts, refusal)
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;

    use super::*;

    /// Read one family from `pairs` (short keys); returns its value and the verdicts.
    pub fn with<T>(
        pairs: &[(&str, &str)],
        f: impl FnOnce(&mut Reader) -> T,
    ) -> (T, Vec<Verdict>, Option<String>) {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), v.to_string()))
            .collect();
        let mut r = Reader::new(Some(&map));
        let t = f(&mut r);
        let (v, refusal) = r.finish();
        (t, v, refusal)
    }

    /// The status of one short key among verdicts.
    pub fn status(v: &[Verdict], short: &str) -> Option<Status> {
        v.iter()
            .find(|x| x.key == format!("nginx.ingress.kubernetes.io/{short}"))
            .map(|x| x.status)
    }
}
