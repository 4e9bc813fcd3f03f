//! Client certificates (ingress-nginx's `auth-tls-*`), per host, on the shared HTTPS
//! listener.
//!
//! Pingora's rustls listener has one `ServerConfig`, and so one client-certificate verifier,
//! for every SNI; rustls's verifier interface is not told the SNI, and Pingora's
//! `certificate_callback` (where OpenSSL builds switch verification per SNI) is not called
//! with rustls. What this module does instead:
//!
//! * [`ClientAuth`] is the listener's verifier. It asks for a certificate (optionally: a
//!   client may send none) only in handshakes whose SNI is a host with client
//!   certificates on, so that browsers are not shown a certificate picker on other hosts.
//!   The SNI comes from the certificate resolver ([`super::CertStore`]), which rustls
//!   calls in the same synchronous step, on the same thread, just before it decides on the
//!   CertificateRequest: the resolver leaves its decision in a thread-local and the
//!   verifier takes it. Outside that step (rustls also asks when a connection is created,
//!   to know whether to keep the transcript for TLS 1.2) the answer is "some host wants
//!   certificates", which only keeps a buffer. The handshake checks that the client owns
//!   the key of the certificate it sends, nothing more: no CA is known yet.
//! * [`ClientAuth`] is also the listener's `handshake_complete_callback`: it keeps the
//!   client's chain and the SNI with the connection ([`ConnCert`]).
//! * The request phase ([`check`]) verifies the chain against the CA of the host the
//!   request is routed to, with its depth, once per connection and CA (HTTP/2 streams and
//!   keep-alive requests share the verdict), and answers as nginx does: 400 without a
//!   required certificate or with a bad one, 403 when `auth-tls-match-cn` does not match.
//!   A request on a connection whose handshake was not asked for a certificate (HTTP/2
//!   coalescing, or a Host other than the SNI) gets 421 Misdirected Request, which makes
//!   browsers open a connection for the right host.
//!
//! Not done, because rustls's verifier interface has no per-handshake context: the
//! CertificateRequest carries no CA names (clients choose among all their certificates).

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::HeaderValue;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::translate::model::{ClientTls, VerifyClient};

/// The hosts whose handshakes ask for a client certificate.
#[derive(Debug, Default)]
pub struct ClientAuthHosts {
    exact: HashSet<String>,
    /// Parent domains of `*.parent` hosts.
    wildcard: HashSet<String>,
    /// A rule without host (the catch-all) wants certificates: every handshake asks.
    any: bool,
}

impl ClientAuthHosts {
    /// From host patterns as Ingress rules write them (`a.example.com`, `*.example.com`,
    /// `*` for the catch-all).
    pub fn new<'a>(hosts: impl IntoIterator<Item = &'a str>) -> ClientAuthHosts {
        let mut t = ClientAuthHosts::default();
        for h in hosts {
            let h = h.to_ascii_lowercase();
            if h == "*" {
                t.any = true;
            } else if let Some(parent) = h.strip_prefix("*.") {
                t.wildcard.insert(parent.to_string());
            } else {
                t.exact.insert(h);
            }
        }
        t
    }

    fn is_empty(&self) -> bool {
        !self.any && self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// Whether a handshake with this SNI asks for a certificate.
    pub fn wants(&self, sni: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let Some(name) = sni else { return false };
        self.exact.contains(name)
            || name
                .split_once('.')
                .is_some_and(|(_, parent)| self.wildcard.contains(parent))
    }
}

thread_local! {
    /// The resolver's decision for the handshake being processed on this thread.
    static ASK: Cell<Option<bool>> = const { Cell::new(None) };
}

/// The listener's client-certificate verifier and post-handshake callback.
#[derive(Debug)]
pub struct ClientAuth {
    hosts: ArcSwap<ClientAuthHosts>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientAuth {
    pub fn new() -> Arc<ClientAuth> {
        Arc::new(ClientAuth {
            hosts: ArcSwap::from_pointee(ClientAuthHosts::default()),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }

    /// Replace the hosts that ask for certificates (the next handshakes see them).
    pub fn set_hosts(&self, hosts: ClientAuthHosts) {
        self.hosts.store(Arc::new(hosts));
    }

    /// Called by the certificate resolver with the handshake's SNI.
    pub(super) fn note_sni(&self, sni: Option<&str>) {
        let hosts = self.hosts.load();
        if hosts.is_empty() {
            return;
        }
        ASK.with(|a| a.set(Some(hosts.wants(sni))));
    }

    /// Forget a decision whose handshake will not reach the CertificateRequest.
    pub(super) fn forget(&self) {
        ASK.with(|a| a.set(None));
    }
}

impl ClientCertVerifier for ClientAuth {
    fn offer_client_auth(&self) -> bool {
        match ASK.with(|a| a.take()) {
            Some(ask) => ask,
            None => !self.hosts.load().is_empty(),
        }
    }

    fn client_auth_mandatory(&self) -> bool {
        // A missing certificate is answered per request (400, or passed on as NONE).
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The chain is checked per request, against the CA of the request's host.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What a TLS connection keeps for client-certificate checks.
#[derive(Debug)]
pub struct ConnCert {
    /// The handshake asked for a certificate.
    asked: bool,
    /// Leaf first; empty when the client sent none.
    chain: Vec<CertificateDer<'static>>,
    /// The last verdict, with the setting it was reached under.
    verdict: Mutex<Option<(Arc<ClientTls>, Arc<CertInfo>)>>,
}

/// The post-handshake callback: keep the chain and whether it was asked for.
pub struct KeepChain(pub Arc<ClientAuth>);

#[async_trait]
impl TlsAccept for KeepChain {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let chain = tls.peer_cert_chain_der().map(<[_]>::to_vec);
        let hosts = self.0.hosts.load();
        if chain.is_none() && hosts.is_empty() {
            return None;
        }
        Some(Arc::new(ConnCert {
            asked: hosts.wants(tls.server_name()),
            chain: chain.unwrap_or_default(),
            verdict: Mutex::new(None),
        }))
    }
}

/// A verified (or not) client certificate, as the upstream headers carry it.
#[derive(Debug)]
pub struct CertInfo {
    /// The certificate chains to the CA within the depth.
    pub ok: bool,
    /// `SUCCESS`, `FAILED:reason` or `NONE`, as nginx's `$ssl_client_verify`.
    pub verify: HeaderValue,
    /// RFC 2253 subject and issuer, as nginx's `$ssl_client_s_dn` / `$ssl_client_i_dn`.
    pub subject: String,
    pub subject_header: Option<HeaderValue>,
    pub issuer_header: Option<HeaderValue>,
    /// The leaf as URL-escaped PEM (nginx's `$ssl_client_escaped_cert`).
    pub escaped_pem: Option<HeaderValue>,
}

impl CertInfo {
    fn none() -> CertInfo {
        CertInfo {
            ok: false,
            verify: HeaderValue::from_static("NONE"),
            subject: String::new(),
            subject_header: None,
            issuer_header: None,
            escaped_pem: None,
        }
    }
}

/// The request phase's decision.
#[derive(Debug)]
pub enum Check {
    /// Go on; the upstream headers to set.
    Pass(Arc<CertInfo>),
    /// 400: a certificate is required and there is none.
    Missing,
    /// 400: the certificate does not verify.
    Invalid,
    /// 403: auth-tls-match-cn does not match the subject.
    CnMismatch,
    /// 421: this connection's handshake did not ask for a certificate.
    Misdirected,
}

/// Decide a request of a route with client certificates, on a connection with this
/// state (`None`: not TLS, or the connection has no client-certificate state).
pub fn check(conn: Option<&ConnCert>, tls: bool, ct: &Arc<ClientTls>) -> Check {
    if ct.verify == VerifyClient::Off {
        return Check::Pass(Arc::new(CertInfo::none()));
    }
    let chain = conn.map_or(&[][..], |c| &c.chain[..]);
    if chain.is_empty() {
        if tls && !conn.is_some_and(|c| c.asked) {
            return Check::Misdirected;
        }
        return match ct.verify {
            VerifyClient::On => Check::Missing,
            _ => cn_check(ct, Arc::new(CertInfo::none())),
        };
    }
    let conn = conn.expect("a chain comes from a connection");
    let cached = {
        let v = conn.verdict.lock().unwrap_or_else(|e| e.into_inner());
        v.as_ref()
            .filter(|(s, _)| Arc::ptr_eq(s, ct))
            .map(|(_, i)| i.clone())
    };
    let info = match cached {
        Some(i) => i,
        None => {
            let i = Arc::new(verify(chain, ct));
            *conn.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some((ct.clone(), i.clone()));
            i
        }
    };
    if !info.ok && ct.verify != VerifyClient::OptionalNoCa {
        return Check::Invalid;
    }
    cn_check(ct, info)
}

fn cn_check(ct: &ClientTls, info: Arc<CertInfo>) -> Check {
    match &ct.match_cn {
        Some(re) if !re.is_match(&info.subject) => Check::CnMismatch,
        _ => Check::Pass(info),
    }
}

/// Verify `chain` (leaf first) against the setting's CA: at most `depth` intermediates
/// (OpenSSL's verify depth), as they come after the leaf.
fn verify(chain: &[CertificateDer<'static>], ct: &ClientTls) -> CertInfo {
    let leaf = &chain[0];
    let intermediates = &chain[1..chain.len().min(1 + ct.depth as usize)];
    let verdict = ct
        .verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now());
    let verify = match &verdict {
        Ok(_) => "SUCCESS".to_string(),
        Err(e) => format!("FAILED:{}", failure_reason(e)),
    };
    let (subject, issuer) = match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, c)) => (rfc2253(c.subject()), rfc2253(c.issuer())),
        Err(_) => (String::new(), String::new()),
    };
    let header = |s: &str| {
        (!s.is_empty())
            .then(|| HeaderValue::from_str(s).ok())
            .flatten()
    };
    CertInfo {
        ok: verdict.is_ok(),
        verify: HeaderValue::from_str(&verify).unwrap_or(HeaderValue::from_static("FAILED")),
        subject_header: header(&subject),
        issuer_header: header(&issuer),
        subject,
        escaped_pem: header(&escaped_pem(leaf)),
    }
}

/// OpenSSL's words for the common failures, as nginx puts them in `$ssl_client_verify`.
fn failure_reason(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate is not yet valid".into(),
            C::UnknownIssuer => "unable to get local issuer certificate".into(),
            C::BadSignature => "certificate signature failure".into(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "unsupported certificate purpose".into()
            }
            C::Revoked => "certificate revoked".into(),
            C::BadEncoding => "certificate is not valid DER".into(),
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

/// OpenSSL's short names for the attributes of a distinguished name.
fn attribute_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.5" => "serialNumber",
        "2.5.4.4" => "SN",
        "2.5.4.42" => "GN",
        "2.5.4.12" => "title",
        "2.5.4.17" => "postalCode",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// A name as OpenSSL prints it with `XN_FLAG_RFC2253` (nginx's `$ssl_client_s_dn`): the
/// last RDN first, RDNs joined by `,`, attributes of one RDN by `+`; `,+"\<>;` escaped with
/// a backslash, as are a leading `#` or space and a trailing space; control and non-ASCII
/// bytes as `\XX`; attributes without a short name, and values that are not strings, as
/// `oid=#hex` of their DER.
pub fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            let short = attribute_name(&oid);
            let text = match (short, string_value(atv.attr_value())) {
                (Some(_), Some(s)) => Some(s),
                _ => None,
            };
            out.push_str(short.unwrap_or(&oid));
            out.push('=');
            match text {
                Some(s) => escape_value(&s, &mut out),
                None => {
                    out.push('#');
                    let v = atv.attr_value();
                    let mut der = vec![v.header.raw_tag().map_or(0, |t| t[0])];
                    der_length(v.data.len(), &mut der);
                    der.extend_from_slice(v.data);
                    for b in der {
                        out.push_str(&format!("{b:02X}"));
                    }
                }
            }
        }
    }
    out
}

fn der_length(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
        return;
    }
    let bytes: Vec<u8> = n
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    out.push(0x80 | bytes.len() as u8);
    out.extend(bytes);
}

/// The text of a string-typed attribute value.
fn string_value(v: &x509_parser::der_parser::asn1_rs::Any<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    match v.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString => {
            std::str::from_utf8(v.data).ok().map(str::to_string)
        }
        // Latin-1 in practice.
        Tag::T61String | Tag::VisibleString => Some(v.data.iter().map(|b| *b as char).collect()),
        Tag::BmpString => {
            let units: Vec<u16> = v
                .data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

fn escape_value(s: &str, out: &mut String) {
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let edge_space = b == b' ' && (i == 0 || i == bytes.len() - 1);
        if b",+\"\\<>;".contains(&b) || (i == 0 && b == b'#') || edge_space {
            out.push('\\');
            out.push(b as char);
        } else if !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
}

/// The certificate as PEM, URL-escaped as nginx's `$ssl_client_escaped_cert`.
fn escaped_pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    percent_encoding::utf8_percent_encode(&pem, crate::translate::template::COMPONENT).to_string()
}

#[cfg(test)]
mod tests;
