//! TLS termination: certificates from `kubernetes.io/tls` Secrets, chosen per handshake by
//! SNI.
//!
//! * [`CertStore`] is the rustls `ResolvesServerCert` of the HTTPS listener. A handshake costs
//!   one `ArcSwap` load and at most two hash lookups: the exact host, then the wildcard
//!   certificate for its parent domain, then the default certificate. Swapping the table never
//!   touches established connections; the next handshake sees the new certificates.
//! * [`Certs`] is owned by the controller. From the TLS bindings of a translation and the
//!   Secrets of the snapshot it builds the next table. Parsed Secrets are cached by object
//!   identity, so an unchanged Secret is never parsed twice. A Secret that is missing, does
//!   not parse, or whose key does not match its certificate gives a diagnostic and the hosts
//!   it covers keep the certificate they had (if any): the last good state stays in service.
//! * The default certificate comes from a Secret or files named in the config; without one a
//!   self-signed certificate is generated at start-up (with a warning).
//! * The minimum TLS version is 1.2 (rustls has nothing older); with `min_version: "1.3"` the
//!   resolver refuses a ClientHello that offers no TLS 1.3 cipher suite, which fails the
//!   handshake of every client that cannot speak TLS 1.3.

mod client_auth;
mod der;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Secret;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{ClientHello, CryptoProvider, ResolvesServerCert};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::warn;

use crate::config::{TlsConf, TlsVersion};
use crate::metrics::Metrics;
use crate::source::{ObjKey, Snapshot};
use crate::translate::{DiagKind, Diagnostic, TlsBinding};

pub use client_auth::{
    check as check_client_cert, rfc2253, CertInfo, Check as ClientCertCheck, ClientAuth,
    ClientAuthHosts, ConnCert, KeepChain,
};
pub use der::not_after_unix;

/// A usable certificate: the rustls key pair plus what metrics and messages need.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// Expiry of the leaf certificate, seconds since the Unix epoch.
    pub not_after: i64,
    /// Where it came from: `namespace/name` of the Secret, a file path, or `self-signed`.
    pub origin: String,
}

/// The certificates in force, swapped whole.
#[derive(Debug, Default)]
struct CertTable {
    /// Lowercase host -> certificate.
    exact: HashMap<String, Arc<LoadedCert>>,
    /// Parent domain (`example.com` for `*.example.com`) -> certificate.
    wildcard: HashMap<String, Arc<LoadedCert>>,
    default: Option<Arc<LoadedCert>>,
}

impl CertTable {
    fn get(&self, sni: Option<&str>) -> Option<&Arc<LoadedCert>> {
        if let Some(name) = sni {
            // rustls hands us the SNI already lowercased and without a trailing dot.
            if let Some(c) = self.exact.get(name) {
                return Some(c);
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(c) = self.wildcard.get(parent) {
                    return Some(c);
                }
            }
        }
        self.default.as_ref()
    }

    fn insert(&mut self, host: &str, cert: Arc<LoadedCert>) {
        match host.strip_prefix("*.") {
            Some(parent) => self.wildcard.insert(parent.to_string(), cert),
            None => self.exact.insert(host.to_string(), cert),
        };
    }

    fn lookup_host(&self, host: &str) -> Option<&Arc<LoadedCert>> {
        match host.strip_prefix("*.") {
            Some(parent) => self.wildcard.get(parent),
            None => self.exact.get(host),
        }
    }
}

/// The HTTPS listener's certificate resolver.
#[derive(Debug)]
pub struct CertStore {
    table: ArcSwap<CertTable>,
    require_tls13: bool,
    /// Which handshakes ask for a client certificate (told the SNI here).
    client_auth: Arc<ClientAuth>,
}

impl CertStore {
    pub fn new(min_version: TlsVersion) -> Arc<CertStore> {
        Arc::new(CertStore {
            table: ArcSwap::from_pointee(CertTable::default()),
            require_tls13: min_version == TlsVersion::Tls13,
            client_auth: ClientAuth::new(),
        })
    }

    /// The listener's client-certificate verifier, which this resolver tells the SNI.
    pub fn client_auth(&self) -> Arc<ClientAuth> {
        self.client_auth.clone()
    }

    /// Every certificate in service: (`host`, `*.parent` or `default`, certificate).
    pub fn entries(&self) -> Vec<(String, Arc<LoadedCert>)> {
        let t = self.table.load();
        let mut out: Vec<(String, Arc<LoadedCert>)> = t
            .exact
            .iter()
            .map(|(h, c)| (h.clone(), c.clone()))
            .chain(
                t.wildcard
                    .iter()
                    .map(|(p, c)| (format!("*.{p}"), c.clone())),
            )
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(d) = &t.default {
            out.push(("default".into(), d.clone()));
        }
        out
    }

    /// The certificate a handshake with this SNI gets (for tests and `-t`).
    pub fn certificate_for(&self, sni: Option<&str>) -> Option<Arc<LoadedCert>> {
        let name = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase());
        self.table.load().get(name.as_deref()).cloned()
    }
}

/// TLS 1.3 cipher suites are 0x1301..=0x13ff.
fn offers_tls13(hello: &ClientHello<'_>) -> bool {
    hello
        .cipher_suites()
        .iter()
        .any(|cs| (0x1301..=0x13ff).contains(&u16::from(*cs)))
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.require_tls13 && !offers_tls13(&hello) {
            self.client_auth.forget();
            return None;
        }
        let key = self
            .table
            .load()
            .get(hello.server_name())
            .map(|c| c.key.clone());
        match key {
            Some(_) => self.client_auth.note_sni(hello.server_name()),
            None => self.client_auth.forget(),
        }
        key
    }
}

/// A Secret's certificate, or why it cannot be used.
type Loaded = Result<Arc<LoadedCert>, String>;

/// Builds certificate tables for a [`CertStore`]; owned by the controller.
pub struct Certs {
    store: Arc<CertStore>,
    metrics: Arc<Metrics>,
    /// The default certificate from files or generated; a default Secret overrides it.
    base_default: Arc<LoadedCert>,
    default_secret: Option<ObjKey>,
    /// Parsed Secrets by key, with the object they were parsed from.
    cache: HashMap<ObjKey, (Arc<Secret>, Loaded)>,
}

impl Certs {
    /// Read the configured default certificate (files are read now: an error is a config
    /// error) or generate a self-signed one.
    pub fn new(
        conf: &TlsConf,
        store: Arc<CertStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Certs, String> {
        let d = conf.default_certificate.clone().unwrap_or_default();
        let (base_default, default_secret) = match (&d.secret, &d.cert_file, &d.key_file) {
            (None, Some(cert_file), Some(key_file)) => {
                let cert = std::fs::read(cert_file)
                    .map_err(|e| format!("{}: {e}", cert_file.display()))?;
                let key =
                    std::fs::read(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
                let origin = cert_file.display().to_string();
                let loaded = load_pem(&cert, &key, origin).map_err(|e| {
                    format!(
                        "pingress.tls.default_certificate ({}, {}): {e}",
                        cert_file.display(),
                        key_file.display()
                    )
                })?;
                (loaded, None)
            }
            (Some(secret), _, _) => {
                let (ns, name) = secret.split_once('/').unwrap_or(("default", secret));
                (self_signed()?, Some(ObjKey::new(ns, name)))
            }
            _ => {
                warn!("no default TLS certificate configured: using a self-signed certificate generated at start-up for handshakes that match no Ingress host");
                (self_signed()?, None)
            }
        };
        let certs = Certs {
            store,
            metrics,
            base_default: Arc::new(base_default),
            default_secret,
            cache: HashMap::new(),
        };
        let table = CertTable {
            default: Some(certs.base_default.clone()),
            ..Default::default()
        };
        certs.publish(table);
        Ok(certs)
    }

    /// Parse (or take from the cache) one Secret.
    fn load_secret(&mut self, key: &ObjKey, snap: &Snapshot) -> Loaded {
        let Some(secret) = snap.secrets.get(key) else {
            self.cache.remove(key);
            return Err(format!(
                "secret {key} not found (or not of type kubernetes.io/tls)"
            ));
        };
        if let Some((seen, result)) = self.cache.get(key) {
            if Arc::ptr_eq(seen, secret) || seen == secret {
                return result.clone();
            }
        }
        let result = parse_secret(secret, key.to_string())
            .map(Arc::new)
            .map_err(|e| format!("secret {key}: {e}"));
        self.cache
            .insert(key.clone(), (secret.clone(), result.clone()));
        result
    }

    /// Build and publish the table for these bindings (oldest Ingress first). Returns the
    /// diagnostics: Secrets missing or broken, and hosts claimed by two Secrets.
    /// The hosts whose handshakes ask for a client certificate from now on.
    pub fn set_client_auth_hosts(&self, hosts: &[String]) {
        self.store
            .client_auth
            .set_hosts(ClientAuthHosts::new(hosts.iter().map(String::as_str)));
    }

    pub fn update(&mut self, bindings: &[TlsBinding], snap: &Snapshot) -> Vec<Diagnostic> {
        let previous = self.store.table.load_full();
        let mut diags = Vec::new();
        let mut table = CertTable::default();
        let mut owner: HashMap<String, ObjKey> = HashMap::new();
        for b in bindings {
            let Some(secret) = &b.secret else {
                continue; // hosts served with the default certificate
            };
            let loaded = self.load_secret(secret, snap);
            let mut kept_last_good = false;
            for host in &b.hosts {
                if let Some(other) = owner.get(host) {
                    if other != secret {
                        diags.push(Diagnostic {
                            ingress: Some(b.ingress.clone()),
                            kind: DiagKind::Conflict,
                            message: format!(
                                "{}: host {host} already has the certificate of secret {other} from an older ingress; ignored",
                                b.field
                            ),
                        });
                    }
                    continue;
                }
                owner.insert(host.clone(), secret.clone());
                match &loaded {
                    Ok(cert) => table.insert(host, cert.clone()),
                    Err(_) => {
                        if let Some(last) = previous.lookup_host(host) {
                            table.insert(host, last.clone());
                            kept_last_good = true;
                        }
                    }
                }
            }
            if let Err(e) = loaded {
                let consequence = if kept_last_good {
                    "the last good certificate stays in service"
                } else {
                    "its hosts get the default certificate"
                };
                diags.push(Diagnostic {
                    ingress: Some(b.ingress.clone()),
                    kind: DiagKind::TlsSecret,
                    message: format!("{}: {e}; {consequence}", b.field),
                });
            }
        }
        table.default = Some(match self.default_secret.clone() {
            None => self.base_default.clone(),
            Some(key) => match self.load_secret(&key, snap) {
                Ok(c) => c,
                Err(e) => {
                    diags.push(Diagnostic {
                        ingress: None,
                        kind: DiagKind::TlsSecret,
                        message: format!(
                            "default certificate: {e}; keeping the previous default \
                             certificate"
                        ),
                    });
                    previous
                        .default
                        .clone()
                        .unwrap_or_else(|| self.base_default.clone())
                }
            },
        });
        // Forget parsed Secrets nobody refers to any more.
        let wanted: std::collections::HashSet<&ObjKey> = bindings
            .iter()
            .filter_map(|b| b.secret.as_ref())
            .chain(self.default_secret.as_ref())
            .collect();
        self.cache.retain(|k, _| wanted.contains(k));
        self.publish(table);
        diags
    }

    fn publish(&self, table: CertTable) {
        let gauge = &self.metrics.tls_cert_expiry;
        gauge.reset();
        let all = table
            .exact
            .values()
            .chain(table.wildcard.values())
            .chain(table.default.as_ref());
        for c in all {
            gauge
                .with_label_values(&[c.origin.as_str()])
                .set(c.not_after);
        }
        self.store.table.store(Arc::new(table));
    }
}

/// `tls.crt` / `tls.key` of a Secret (`data`, or `stringData` as written in a manifest).
fn secret_field<'a>(secret: &'a Secret, name: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(name))
        .map(|b| b.0.as_slice())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(name))
                .map(|s| s.as_bytes())
        })
}

/// A certificate from a `kubernetes.io/tls` Secret.
pub fn parse_secret(secret: &Secret, origin: String) -> Result<LoadedCert, String> {
    // Auth Secrets share the snapshot's Secret map; only TLS Secrets hold certificates.
    match secret.type_.as_deref() {
        Some("kubernetes.io/tls") => {}
        other => {
            return Err(format!(
                "is of type {}, not kubernetes.io/tls",
                other.unwrap_or("Opaque")
            ))
        }
    }
    let cert = secret_field(secret, "tls.crt").ok_or("has no tls.crt")?;
    let key = secret_field(secret, "tls.key").ok_or("has no tls.key")?;
    load_pem(cert, key, origin)
}

/// A certificate chain and private key, both PEM; checks that the key matches the leaf.
pub fn load_pem(cert_pem: &[u8], key_pem: &[u8], origin: String) -> Result<LoadedCert, String> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &*cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no PEM certificate".into());
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &*key_pem)
        .map_err(|e| format!("tls.key is not valid PEM: {e}"))?
        .ok_or("tls.key holds no PEM private key")?;
    let not_after = not_after_unix(&chain[0]).ok_or("tls.crt: cannot read the certificate")?;
    pingora_rustls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider")?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "tls.key does not match the certificate in tls.crt".to_string()
        }
        other => format!("tls.crt/tls.key: {other}"),
    })?;
    Ok(LoadedCert {
        key: Arc::new(key),
        not_after,
        origin,
    })
}

/// A self-signed certificate for handshakes that match no host (rcgen's default validity).
fn self_signed() -> Result<LoadedCert, String> {
    let ck = rcgen::generate_simple_self_signed(vec!["pingress.invalid".to_string()])
        .map_err(|e| format!("cannot generate a self-signed certificate: {e}"))?;
    load_pem(
        ck.cert.pem().as_bytes(),
        ck.key_pair.serialize_pem().as_bytes(),
        "self-signed".into(),
    )
}

#[cfg(test)]
mod tests;
