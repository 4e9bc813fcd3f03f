use super::*;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

struct Issuer {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Issuer {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Issuer { cert, key }
}

fn intermediate(name: &str, by: &Issuer) -> Issuer {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &by.cert, &by.key).unwrap();
    Issuer { cert, key }
}

fn leaf(cn: &str, by: &Issuer) -> CertificateDer<'static> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CountryName, "NL");
    p.distinguished_name
        .push(DnType::OrganizationName, "Acme, Inc");
    p.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    p.signed_by(&key, &by.cert, &by.key).unwrap().der().clone()
}

fn setting(root: &Issuer, verify: VerifyClient, depth: u32, cn: Option<&str>) -> Arc<ClientTls> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.cert.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    Arc::new(ClientTls {
        secret: "default/ca".into(),
        roots: vec![root.cert.der().clone()],
        verifier,
        verify,
        depth,
        pass_certificate: true,
        match_cn: cn.map(|c| regex::Regex::new(c).unwrap()),
        error_page: None,
    })
}

fn conn(chain: Vec<CertificateDer<'static>>, asked: bool) -> ConnCert {
    ConnCert {
        asked,
        chain,
        verdict: Mutex::new(None),
    }
}

fn passed(c: Check) -> Arc<CertInfo> {
    match c {
        Check::Pass(i) => i,
        other => panic!("expected a pass, got {other:?}"),
    }
}

#[test]
fn hosts_ask_exactly_and_by_one_label_wildcards() {
    let h = ClientAuthHosts::new(["a.example.com", "*.wild.example.com"]);
    assert!(h.wants(Some("a.example.com")));
    assert!(h.wants(Some("x.wild.example.com")));
    assert!(!h.wants(Some("x.y.wild.example.com")));
    assert!(!h.wants(Some("b.example.com")));
    assert!(!h.wants(None));
    assert!(ClientAuthHosts::new(["*"]).wants(None));
    assert!(ClientAuthHosts::default().is_empty());
}

#[test]
fn the_resolvers_decision_is_taken_once_then_the_global_answer() {
    let auth = ClientAuth::new();
    // Nothing configured: never ask.
    auth.note_sni(Some("a.example.com"));
    assert!(!auth.offer_client_auth());
    auth.set_hosts(ClientAuthHosts::new(["a.example.com"]));
    auth.note_sni(Some("b.example.com"));
    assert!(!auth.offer_client_auth(), "b does not ask");
    // Outside the resolver's step: "some host asks" (rustls keeps the transcript).
    assert!(auth.offer_client_auth());
    auth.note_sni(Some("a.example.com"));
    assert!(auth.offer_client_auth());
    auth.note_sni(Some("b.example.com"));
    auth.forget();
    assert!(auth.offer_client_auth(), "a forgotten decision is not used");
}

#[test]
fn a_certificate_from_the_ca_passes_with_nginx_s_header_values() {
    let root = ca("Test Root");
    let ct = setting(&root, VerifyClient::On, 1, None);
    let c = conn(vec![leaf("alice", &root)], true);
    let info = passed(check(Some(&c), true, &ct));
    assert!(info.ok);
    assert_eq!(info.verify, "SUCCESS");
    // The order of the attributes is rcgen's; the e2e test checks the whole name
    // against `openssl x509 -nameopt RFC2253`.
    let mut parts: Vec<&str> = info.subject.split(',').collect();
    parts.sort();
    assert_eq!(parts, [" Inc", "C=NL", "CN=alice", "O=Acme\\"]);
    assert_eq!(info.subject_header.as_ref().unwrap(), info.subject.as_str());
    assert_eq!(info.issuer_header.as_ref().unwrap(), "CN=Test Root");
    let pem = info.escaped_pem.as_ref().unwrap().to_str().unwrap();
    assert!(
        pem.starts_with("-----BEGIN%20CERTIFICATE-----%0AMII"),
        "{pem}"
    );
    assert!(pem.ends_with("-----END%20CERTIFICATE-----%0A"), "{pem}");
    assert!(!pem.contains('/') && !pem.contains('+') && !pem.contains('='));
    // The verdict is kept for the connection and this setting.
    assert!(c.verdict.lock().unwrap().is_some());
    let again = passed(check(Some(&c), true, &ct));
    assert!(Arc::ptr_eq(&info, &again));
}

#[test]
fn modes_decide_missing_and_bad_certificates() {
    let root = ca("Test Root");
    let other = ca("Other Root");
    let stranger = leaf("mallory", &other);
    for (mode, missing, bad) in [
        (VerifyClient::On, "Missing", "Invalid"),
        (VerifyClient::Optional, "Pass", "Invalid"),
        (VerifyClient::OptionalNoCa, "Pass", "Pass"),
        (VerifyClient::Off, "Pass", "Pass"),
    ] {
        let ct = setting(&root, mode, 1, None);
        let name = |c: &Check| format!("{c:?}").split('(').next().unwrap().to_string();
        assert_eq!(
            name(&check(Some(&conn(vec![], true)), true, &ct)),
            missing,
            "{mode:?}"
        );
        let r = check(Some(&conn(vec![stranger.clone()], true)), true, &ct);
        assert_eq!(name(&r), bad, "{mode:?}");
        if let (VerifyClient::OptionalNoCa, Check::Pass(i)) = (mode, r) {
            assert_eq!(i.verify, "FAILED:unable to get local issuer certificate");
            assert!(i.subject.contains("CN=mallory"), "{}", i.subject);
        }
    }
    // Plain HTTP has no certificate; a TLS handshake that was not asked gets 421.
    let ct = setting(&root, VerifyClient::On, 1, None);
    assert!(matches!(check(None, false, &ct), Check::Missing));
    assert!(matches!(check(None, true, &ct), Check::Misdirected));
    assert!(matches!(
        check(Some(&conn(vec![], false)), true, &ct),
        Check::Misdirected
    ));
    let opt = setting(&root, VerifyClient::Optional, 1, None);
    assert_eq!(passed(check(None, false, &opt)).verify, "NONE");
}

#[test]
fn depth_counts_intermediates() {
    let root = ca("Test Root");
    let mid = intermediate("Mid 1", &root);
    let mid2 = intermediate("Mid 2", &mid);
    let two = vec![
        leaf("deep", &mid2),
        mid2.cert.der().clone(),
        mid.cert.der().clone(),
    ];
    for (depth, ok) in [(1, false), (2, true), (3, true)] {
        let ct = setting(&root, VerifyClient::On, depth, None);
        let r = check(Some(&conn(two.clone(), true)), true, &ct);
        assert_eq!(matches!(r, Check::Pass(_)), ok, "depth {depth}: {r:?}");
    }
    let one = vec![leaf("one", &mid), mid.cert.der().clone()];
    let ct = setting(&root, VerifyClient::On, 1, None);
    assert!(matches!(
        check(Some(&conn(one, true)), true, &ct),
        Check::Pass(_)
    ));
}

#[test]
fn match_cn_is_a_search_over_the_subject() {
    let root = ca("Test Root");
    let ct = setting(&root, VerifyClient::On, 1, Some("^CN=(alice|bob)$"));
    assert!(
        matches!(
            check(Some(&conn(vec![leaf("alice", &root)], true)), true, &ct),
            Check::CnMismatch
        ),
        "the subject has more than the CN, so the anchored pattern does not match"
    );
    let ct = setting(&root, VerifyClient::On, 1, Some("CN=(alice|bob)"));
    assert!(matches!(
        check(Some(&conn(vec![leaf("alice", &root)], true)), true, &ct),
        Check::Pass(_)
    ));
    assert!(matches!(
        check(Some(&conn(vec![leaf("carol", &root)], true)), true, &ct),
        Check::CnMismatch
    ));
    // No certificate under optional: an empty subject, which does not match.
    let ct = setting(&root, VerifyClient::Optional, 1, Some("CN=alice"));
    assert!(matches!(check(None, false, &ct), Check::CnMismatch));
}

#[test]
fn names_escape_as_rfc_2253() {
    let mut out = String::new();
    escape_value("#a,b+c\"d\\e<f>g;h ", &mut out);
    assert_eq!(out, "\\#a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h\\ ");
    let mut out = String::new();
    escape_value(" é\n", &mut out);
    assert_eq!(out, "\\ \\C3\\A9\\0A");
}
