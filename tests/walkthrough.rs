//! The classic walkthrough's own manifests (tests/fixtures/walkthrough, copied verbatim):
//! served as they are (extensions/v1beta1 Ingresses with class annotation "nginx"), and
//! converted to v1 with `pingress convert`.

use crate::support;

use std::process::Command;

use support::tls;
use support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/walkthrough");

fn fixture_files() -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// What the walkthrough's files need to be served here: the pods' endpoints (no kubelet
/// here, so they are listed by hand) and the Secret of step 7.
async fn extras() -> Vec<(String, String)> {
    let myapp: Vec<_> =
        futures_util::future::join_all((1..=3).map(|i| pod_named(format!("myapp-{i}")))).await;
    let tomcat = pod("tomcat-1").await;
    let mut files = vec![(
        "endpoints.yaml".to_string(),
        format!(
            "{}{}",
            slices("default", "myapp", "http", &myapp),
            slices("default", "tomcat", "http", &[tomcat])
        ),
    )];
    // Step 7: the certificate made with the walkthrough's own openssl commands, stored as
    // `kubectl create secret tls tomcat-ingress-secret` would.
    let keys = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(keys.path())
            .output()
            .expect("openssl")
            .status
            .success();
        assert!(ok, "openssl {args:?}");
    };
    run(&["genrsa", "-out", "tls.key", "2048"]);
    run(&[
        "req",
        "-new",
        "-x509",
        "-key",
        "tls.key",
        "-out",
        "tls.crt",
        "-days",
        "30",
        "-subj",
        "/C=CN/ST=Beijing/L=Beijing/O=DevOps/CN=tomcat.lucky.com",
    ]);
    let pem = tls::Pem {
        cert: std::fs::read_to_string(keys.path().join("tls.crt")).unwrap(),
        key: std::fs::read_to_string(keys.path().join("tls.key")).unwrap(),
    };
    files.push((
        "secret.yaml".into(),
        tls::tls_secret("default", "tomcat-ingress-secret", &pem),
    ));
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_manifests_are_served_as_written() {
    let mut files: Vec<(String, String)> = fixture_files();
    files.extend(extras().await);
    let files: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    // The walkthrough's class annotation is "nginx": run as a drop-in for that class.
    let gw = Gateway::start_with(&files, "  ingress_class: nginx\n").await;

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(gw.who_https("tomcat.lucky.com", "/").await);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["myapp-1", "myapp-2", "myapp-3"]
    );
    let subject = tls::served_subject(gw.https, Some("tomcat.lucky.com"));
    assert!(
        subject.contains("O=DevOps") && subject.contains("CN=tomcat.lucky.com"),
        "{subject}"
    );
    // Step 8: with TLS set, plain HTTP is redirected...
    assert_eq!(gw.who("tomcat.lucky.com", "/").await, "308");
    assert_eq!(gw.who("tomcat.lucky6.com", "/index.jsp").await, "tomcat-1");
    // single-service.yaml names no class at all and no default class exists: not ours.
    assert_eq!(gw.who("other.example", "/").await, "404");
    let log = gw.stderr();
    assert!(log.contains("extensions/v1beta1 is deprecated"), "{log}");
    // ingress-tomcat-tls claims tomcat.lucky.com / as well: the older one keeps it.
    assert!(
        log.contains("already served by ingress default/ingress-myapp"),
        "{log}"
    );
    // ...unless the annotation of step 8 turns it off.
    let tls_ingress = std::fs::read_to_string(format!("{FIXTURES}/ingress-tomcat-tls.yaml"))
        .unwrap()
        .replace(
            "    kubernetes.io/ingress.class: \"nginx\"\n",
            "    kubernetes.io/ingress.class: \"nginx\"\n    nginx.ingress.kubernetes.io/ssl-redirect: 'false'\n",
        );
    let myapp = std::fs::read_to_string(format!("{FIXTURES}/ingress-myapp.yaml"))
        .unwrap()
        .replace(
            "    kubernetes.io/ingress.class: \"nginx\"\n",
            "    kubernetes.io/ingress.class: \"nginx\"\n    nginx.ingress.kubernetes.io/ssl-redirect: 'false'\n",
        );
    assert!(tls_ingress.contains("ssl-redirect") && myapp.contains("ssl-redirect"));
    gw.write("ingress-tomcat-tls.yaml", &tls_ingress);
    gw.write("ingress-myapp.yaml", &myapp);
    eventually("plain HTTP served again", || async {
        gw.who("tomcat.lucky.com", "/")
            .await
            .starts_with("myapp-")
            .then_some(())
    })
    .await;
}

async fn pod_named(name: String) -> std::net::SocketAddr {
    pod(&name).await
}

#[test]
fn convert_prints_v1_manifests_for_every_walkthrough_file() {
    let files: Vec<String> = fixture_files()
        .into_iter()
        .map(|(n, _)| format!("{FIXTURES}/{n}"))
        .collect();
    let args = ["convert"]
        .into_iter()
        .chain(files.iter().map(String::as_str));
    let text = pingress_ok(args.chain(["--ingress-class", "pingress"]));
    assert!(!text.contains("v1beta1"), "{text}");
    assert!(!text.contains("serviceName"), "{text}");
    let parsed = pingress::source::files::parse_manifests(&text, "converted").unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let ingresses: Vec<_> = parsed
        .objects
        .iter()
        .filter_map(|o| match o {
            pingress::source::Object::Ingress(i) => Some(i.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ingresses.len(), 4);
    for i in &ingresses {
        let spec = i.spec.as_ref().unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("pingress"));
    }
    // And the converted Ingresses route like the originals.
    let mut snap = pingress::source::Snapshot::default();
    for o in parsed.objects {
        snap.insert(o);
    }
    let t = pingress::translate::translate(
        &snap,
        &pingress::translate::TranslateConf::from(&pingress::config::PingressConf::default()),
    );
    assert_eq!(t.ingresses.len(), 4);
    assert!(t.routes.lookup("tomcat.lucky6.com", "/").is_some());

    let bad = Command::new(bin())
        .args(["convert", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.yaml"));
}

fn as_refs(v: &[(String, String)]) -> Vec<(&str, String)> {
    v.iter().map(|(n, t)| (n.as_str(), t.clone())).collect()
}

/// One answer (status, pod, Location, HSTS); which myapp pod answers depends on the
/// round robin's history, so it is `myapp-*`.
async fn answer(gw: &Gateway, https: bool, host: &str, path: &str) -> [String; 4] {
    let s = gw.seen(https, host, path, &[]).await;
    let who = if s.pod.starts_with("myapp-") {
        "myapp-*".into()
    } else {
        s.pod
    };
    [s.status, who, s.location, s.hsts]
}

/// `pingress convert --to gateway-api` on the walkthrough's manifests, served next to the
/// Ingresses themselves: every request gets the same answer from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_converted_to_gateway_api_answers_as_the_ingresses_do() {
    let conf = tempfile::tempdir().unwrap();
    let conf_file = conf.path().join("pingress.yaml");
    std::fs::write(&conf_file, "pingress:\n  ingress_class: nginx\n").unwrap();
    let out = Command::new(bin())
        .arg("-c")
        .arg(&conf_file)
        .args(["convert", "--to", "gateway-api", FIXTURES])
        .output()
        .unwrap();
    let (yaml, report) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    // The one note: ingress-tomcat-tls's path loses to the older ingress-myapp, as it does
    // when the Ingresses are served. Nothing is lost in the conversion: exit status 0.
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("Ingress default/ingress-tomcat-tls: as served by pingress")
            && report.contains("already served by ingress default/ingress-myapp"),
        "{report}"
    );
    assert!(report.contains("converted 3 ingresses"), "{report}");
    let parsed = pingress::source::files::parse_manifests(&yaml, "converted").unwrap();
    let kinds: Vec<String> = parsed.objects.iter().map(|o| o.describe()).collect();
    for want in [
        "GatewayClass pingress",
        "Gateway default/pingress",
        "HTTPRoute default/tomcat.lucky.com",
        "HTTPRoute default/tomcat.lucky.com-http",
        "HTTPRoute default/tomcat.lucky6.com",
        // Not ours (no class): kept as it is.
        "Ingress my-ingress",
    ] {
        assert!(kinds.iter().any(|k| k == want), "{want} not in {kinds:?}");
    }
    assert_eq!(
        kinds.iter().filter(|k| k.starts_with("Ingress ")).count(),
        1,
        "{kinds:?}"
    );

    let extras = extras().await;
    let mut ingress_files = fixture_files();
    ingress_files.extend(extras.clone());
    let mut gateway_files = vec![("converted.yaml".to_string(), yaml)];
    gateway_files.extend(extras);
    let extra = "  ingress_class: nginx\n";
    let ingresses = Gateway::start_with(&as_refs(&ingress_files), extra).await;
    let gateway = Gateway::start_with(&as_refs(&gateway_files), extra).await;
    // The Gateway API objects are taken, and they are what serves.
    let log = gateway.stderr();
    assert!(!log.contains("invalid"), "{log}");

    let cases = [
        (true, "tomcat.lucky.com", "/"),
        (true, "tomcat.lucky.com", "/index.html?q=1"),
        (false, "tomcat.lucky.com", "/"),
        (false, "tomcat.lucky.com", "/a/b?x=y"),
        (false, "TOMCAT.lucky6.com", "/index.jsp"),
        (true, "tomcat.lucky6.com", "/index.jsp"),
        (false, "other.example", "/"),
        (false, "lucky.com", "/"),
    ];
    for (https, host, path) in cases {
        let want = answer(&ingresses, https, host, path).await;
        let got = answer(&gateway, https, host, path).await;
        assert_eq!(got, want, "https={https} {host}{path}");
    }
    // What the answers are, so the comparison cannot pass on two broken gateways.
    assert_eq!(
        answer(&gateway, true, "tomcat.lucky.com", "/").await[..2],
        ["200".to_string(), "myapp-*".to_string()]
    );
    let redirect = answer(&gateway, false, "tomcat.lucky.com", "/a/b?x=y").await;
    assert_eq!(redirect[0], "308");
    assert_eq!(redirect[2], "https://tomcat.lucky.com/a/b?x=y");
    assert!(answer(&gateway, true, "tomcat.lucky.com", "/").await[3].contains("max-age="));
    assert_eq!(
        answer(&gateway, false, "tomcat.lucky6.com", "/").await[1],
        "tomcat-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_examples_route_as_documented() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    let mut files: Vec<(&str, String)> = ["myapp.yaml", "tomcat.yaml", "tomcat-tls.yaml"]
        .iter()
        .map(|f| (*f, std::fs::read_to_string(format!("{dir}/{f}")).unwrap()))
        .collect();
    let myapp = pod("myapp-pod").await;
    let tomcat = pod("tomcat-pod").await;
    files.push((
        "endpoints.yaml",
        format!(
            "{CLASS}{}{}",
            slices("default", "myapp", "http", &[myapp]),
            slices("default", "tomcat", "http", &[tomcat])
        ),
    ));
    let gw = Gateway::start(&files).await;
    // tomcat.lucky.com has TLS (Secret tomcat-ingress-secret, not created here: the default
    // certificate is served and a diagnostic says so); plain HTTP is redirected.
    assert_eq!(gw.who("tomcat.lucky.com", "/").await, "308");
    assert_eq!(gw.who_https("tomcat.lucky.com", "/").await, "myapp-pod");
    assert_eq!(
        gw.who_https("tomcat.lucky.com", "/tomcat/x").await,
        "tomcat-pod"
    );
    assert_eq!(gw.who("tomcat.lucky6.com", "/").await, "tomcat-pod");
    assert_eq!(
        gw.metric("pingress_diagnostics{kind=\"tls_secret\"}").await,
        Some(1.0)
    );
    assert_eq!(
        gw.metric("pingress_diagnostics{kind=\"conflict\"}").await,
        Some(0.0)
    );
}

/// deploy/examples/gateway-api serves the walkthrough's apps as the Ingresses do: the same
/// statuses and pods for the same requests (the Ingresses themselves left out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_examples_as_gateway_api_answer_as_the_ingresses_do() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
    let without_ingresses = |text: String| {
        text.split("\n---\n")
            .filter(|doc| !doc.contains("kind: Ingress"))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
    let myapp = pod("myapp-pod").await;
    let tomcat = pod("tomcat-pod").await;
    let ca = support::tls::Ca::new();
    let pem = ca.issue(&["tomcat.lucky.com"], "walkthrough");
    let files = vec![
        ("myapp.yaml", without_ingresses(read("examples/myapp.yaml"))),
        (
            "tomcat.yaml",
            without_ingresses(read("examples/tomcat.yaml")),
        ),
        ("class.yaml", read("gateway-api/gatewayclass.yaml")),
        ("gateway.yaml", read("examples/gateway-api/gateway.yaml")),
        ("routes.yaml", read("examples/gateway-api/routes.yaml")),
        (
            "endpoints.yaml",
            format!(
                "{}{}{}",
                slices("default", "myapp", "http", &[myapp]),
                slices("default", "tomcat", "http", &[tomcat]),
                support::tls::tls_secret("default", "tomcat-ingress-secret", &pem)
            ),
        ),
    ];
    assert!(!files[0].1.contains("kind: Ingress") && files[0].1.contains("kind: Service"));
    let gw = Gateway::start(&files).await;
    eventually("the Gateway API routes are served", || async {
        (gw.who("tomcat.lucky6.com", "/").await == "tomcat-pod").then_some(())
    })
    .await;
    // The same answers as deploy_examples_route_as_documented.
    assert_eq!(gw.who("tomcat.lucky.com", "/").await, "308");
    assert_eq!(gw.who_https("tomcat.lucky.com", "/").await, "myapp-pod");
    assert_eq!(
        gw.who_https("tomcat.lucky.com", "/tomcat/x").await,
        "tomcat-pod"
    );
    assert_eq!(gw.who("tomcat.lucky6.com", "/").await, "tomcat-pod");
    let served = support::tls::served_subject(gw.https, Some("tomcat.lucky.com"));
    assert!(served.contains("walkthrough"), "{served}");
}

/// The README's quickstart, as a new user runs it: `.ci/quickstart` (with the binary this
/// suite built, instead of building one), then every `curl` line of the README's try-it
/// block, word for word, with what its comment promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_quickstart_commands_answer_as_their_comments_say() {
    use std::os::unix::process::CommandExt;
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let curls: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Quickstart"))
        .take_while(|l| !l.starts_with("## ") || l.starts_with("## Quickstart"))
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert_eq!(
        curls.len(),
        6,
        "the README's quickstart block changed: {curls:?}"
    );
    let mut script = Command::new(format!("{root}/.ci/quickstart"));
    script
        .env("PINGRESS_BIN", bin())
        .current_dir(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut child = script.spawn().unwrap();
    struct Group(u32);
    impl Drop for Group {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-s", "TERM", "--", &format!("-{}", self.0)])
                .status();
        }
    }
    let group = Group(child.id());
    let curl = |line: &'static str| async move {
        tokio::task::spawn_blocking(move || {
            let out = Command::new("sh").args(["-c", line]).output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
        .await
        .unwrap()
    };
    let lines: Vec<&'static str> = curls
        .iter()
        .map(|l| &*Box::leak(l.to_string().into_boxed_str()))
        .collect();
    // Round robin over myapp-1..3: every pod answers within a few requests.
    let seen = eventually(
        "the quickstart gateway serving all three myapp pods",
        || async {
            let mut names = std::collections::BTreeSet::new();
            for _ in 0..9 {
                let (ok, out) = curl(lines[0]).await;
                for i in 1..=3 {
                    if ok && out.contains(&format!("\"pod\":\"myapp-{i}\"")) {
                        names.insert(i);
                    }
                }
            }
            (names.len() == 3).then_some(names)
        },
    )
    .await;
    assert_eq!(seen.len(), 3);
    let (_, out) = curl(lines[1]).await;
    assert!(out.contains(r#""pod":"tomcat-1""#), "{}: {out}", lines[1]);
    let (_, out) = curl(lines[2]).await;
    assert!(out.contains("404"), "{}: {out}", lines[2]);
    let (ok, out) = curl(lines[3]).await;
    assert!(
        ok && out.contains(r#""pod":"myapp-"#),
        "{}: {out}",
        lines[3]
    );
    let (_, out) = curl(lines[4]).await;
    assert!(
        out.starts_with("HTTP/1.1 308") && out.contains("location: https://secure.lucky.com:8443/"),
        "{}: {out}",
        lines[4]
    );
    let (_, out) = curl(lines[5]).await;
    assert!(
        out.contains("pingress_requests_total"),
        "{}: {out}",
        lines[5]
    );
    drop(group);
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}
