use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use super::*;
use crate::config::DefaultCertConf;

fn cert_pem(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    (ck.cert.pem(), ck.key_pair.serialize_pem())
}

fn secret(name: &str, crt: &str, key: &str) -> Arc<Secret> {
    let mut data = BTreeMap::new();
    data.insert("tls.crt".to_string(), ByteString(crt.as_bytes().to_vec()));
    data.insert("tls.key".to_string(), ByteString(key.as_bytes().to_vec()));
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some("ns".into());
    s.type_ = Some("kubernetes.io/tls".into());
    s.data = Some(data);
    Arc::new(s)
}

fn binding(secret: &str, hosts: &[&str]) -> TlsBinding {
    TlsBinding {
        ingress: ObjKey::new("ns", "ing"),
        field: "spec.tls[0]".into(),
        secret: Some(ObjKey::new("ns", secret)),
        hosts: hosts.iter().map(|s| s.to_string()).collect(),
    }
}

fn setup() -> (Arc<CertStore>, Certs) {
    let store = CertStore::new(TlsVersion::Tls12);
    let certs = Certs::new(&TlsConf::default(), store.clone(), Arc::new(Metrics::new())).unwrap();
    (store, certs)
}

fn origin(store: &CertStore, sni: Option<&str>) -> String {
    store.certificate_for(sni).unwrap().origin.clone()
}

#[test]
fn sni_picks_exact_then_wildcard_then_default() {
    let (store, mut certs) = setup();
    let (c1, k1) = cert_pem(&["a.example.com"]);
    let (c2, k2) = cert_pem(&["*.example.com"]);
    let mut snap = Snapshot::default();
    snap.secrets
        .insert(ObjKey::new("ns", "exact"), secret("exact", &c1, &k1));
    snap.secrets
        .insert(ObjKey::new("ns", "wild"), secret("wild", &c2, &k2));
    let diags = certs.update(
        &[
            binding("exact", &["a.example.com"]),
            binding("wild", &["*.example.com"]),
        ],
        &snap,
    );
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(origin(&store, Some("a.example.com")), "ns/exact");
    assert_eq!(origin(&store, Some("A.Example.com.")), "ns/exact");
    assert_eq!(origin(&store, Some("b.example.com")), "ns/wild");
    // A wildcard covers one label only.
    assert_eq!(origin(&store, Some("x.b.example.com")), "self-signed");
    assert_eq!(origin(&store, Some("example.com")), "self-signed");
    assert_eq!(origin(&store, None), "self-signed");
}

#[test]
fn broken_or_missing_secret_keeps_the_last_good_certificate() {
    let (store, mut certs) = setup();
    let (c1, k1) = cert_pem(&["a.example.com"]);
    let mut snap = Snapshot::default();
    snap.secrets
        .insert(ObjKey::new("ns", "s"), secret("s", &c1, &k1));
    let b = [binding("s", &["a.example.com"])];
    assert!(certs.update(&b, &snap).is_empty());
    let good = store.certificate_for(Some("a.example.com")).unwrap();

    // Key of another certificate: rejected, the old one stays.
    let (_, other_key) = cert_pem(&["a.example.com"]);
    snap.secrets
        .insert(ObjKey::new("ns", "s"), secret("s", &c1, &other_key));
    let diags = certs.update(&b, &snap);
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].kind, DiagKind::TlsSecret);
    assert!(
        diags[0].message.contains("does not match"),
        "{}",
        diags[0].message
    );
    assert!(
        diags[0].message.contains("last good"),
        "{}",
        diags[0].message
    );
    let now = store.certificate_for(Some("a.example.com")).unwrap();
    assert!(Arc::ptr_eq(&good, &now));

    // Not PEM at all.
    snap.secrets
        .insert(ObjKey::new("ns", "s"), secret("s", "garbage", "garbage"));
    let diags = certs.update(&b, &snap);
    assert!(
        diags[0].message.contains("no PEM certificate"),
        "{}",
        diags[0].message
    );
    assert!(Arc::ptr_eq(
        &good,
        &store.certificate_for(Some("a.example.com")).unwrap()
    ));

    // Deleted.
    snap.secrets.clear();
    let diags = certs.update(&b, &snap);
    assert!(
        diags[0].message.contains("not found"),
        "{}",
        diags[0].message
    );
    assert!(Arc::ptr_eq(
        &good,
        &store.certificate_for(Some("a.example.com")).unwrap()
    ));

    // A host never served before gets the default certificate.
    let diags = certs.update(&[binding("s", &["new.example.com"])], &snap);
    assert!(
        diags[0].message.contains("default certificate"),
        "{}",
        diags[0].message
    );
    assert_eq!(origin(&store, Some("new.example.com")), "self-signed");
}

#[test]
fn first_binding_of_a_host_wins() {
    let (store, mut certs) = setup();
    let (c1, k1) = cert_pem(&["a.example.com"]);
    let (c2, k2) = cert_pem(&["a.example.com"]);
    let mut snap = Snapshot::default();
    snap.secrets
        .insert(ObjKey::new("ns", "old"), secret("old", &c1, &k1));
    snap.secrets
        .insert(ObjKey::new("ns", "new"), secret("new", &c2, &k2));
    let diags = certs.update(
        &[
            binding("old", &["a.example.com"]),
            binding("new", &["a.example.com"]),
        ],
        &snap,
    );
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].kind, DiagKind::Conflict);
    assert_eq!(origin(&store, Some("a.example.com")), "ns/old");
}

#[test]
fn default_certificate_from_a_secret_and_from_files() {
    let (c, k) = cert_pem(&["default.example"]);
    let store = CertStore::new(TlsVersion::Tls12);
    let conf = TlsConf {
        default_certificate: Some(DefaultCertConf {
            secret: Some("ns/def".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let metrics = Arc::new(Metrics::new());
    let mut certs = Certs::new(&conf, store.clone(), metrics.clone()).unwrap();
    let mut snap = Snapshot::default();
    // Missing: a diagnostic, the generated certificate stays.
    let diags = certs.update(&[], &snap);
    assert_eq!(diags.len(), 1);
    assert_eq!(origin(&store, Some("x")), "self-signed");
    snap.secrets
        .insert(ObjKey::new("ns", "def"), secret("def", &c, &k));
    assert!(certs.update(&[], &snap).is_empty());
    assert_eq!(origin(&store, Some("x")), "ns/def");
    let text = String::from_utf8(metrics.render()).unwrap();
    assert!(
        text.contains("pingress_tls_certificate_expiry_timestamp_seconds{secret=\"ns/def\"}"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.pem"), &c).unwrap();
    std::fs::write(dir.path().join("k.pem"), &k).unwrap();
    let files = TlsConf {
        default_certificate: Some(DefaultCertConf {
            cert_file: Some(dir.path().join("c.pem")),
            key_file: Some(dir.path().join("k.pem")),
            ..Default::default()
        }),
        ..Default::default()
    };
    let store = CertStore::new(TlsVersion::Tls12);
    Certs::new(&files, store.clone(), metrics.clone()).unwrap();
    assert!(origin(&store, None).ends_with("c.pem"));
    let missing = TlsConf {
        default_certificate: Some(DefaultCertConf {
            cert_file: Some(dir.path().join("nope.pem")),
            key_file: Some(dir.path().join("k.pem")),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = Certs::new(&missing, store, metrics).err().unwrap();
    assert!(e.contains("nope.pem"), "{e}");
}

#[test]
fn expiry_is_read_from_the_certificate() {
    let mut params = rcgen::CertificateParams::new(vec!["e.example".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 5, 17);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let loaded = load_pem(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        "t".into(),
    )
    .unwrap();
    // 2031-05-17T00:00:00Z
    assert_eq!(loaded.not_after, 1_936_742_400);
}
