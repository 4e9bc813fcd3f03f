//! The command line: `-t` config checks with clear errors, the shipped configs, `--help`,
//! and flags that override the file.

use crate::support;

use std::process::Command;

use support::*;

fn run(args: &[&str]) -> (bool, String) {
    run_cmd(Command::new(bin()).args(args))
}

/// Run from the repository root: (success, stdout + stderr).
fn run_cmd(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn check_file(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pingress.yaml");
    std::fs::write(&path, text).unwrap();
    let manifests = dir.path().join("m");
    std::fs::create_dir(&manifests).unwrap();
    run(&[
        "-t",
        "-c",
        path.to_str().unwrap(),
        "--manifests",
        manifests.to_str().unwrap(),
    ])
}

#[test]
fn shipped_local_config_and_example_manifests_check_clean() {
    let (ok, out) = run(&["-t", "-c", "conf/local.yaml"]);
    assert!(ok, "{out}");
    assert!(out.contains("3 ingresses of ours"), "{out}");
    assert!(out.contains("0 diagnostics"), "{out}");
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn every_shipped_config_file_is_valid() {
    let conf_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut seen = 0;
    for entry in std::fs::read_dir(conf_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            pingress::config::Config::load(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 2);
}

#[test]
fn check_rejects_bad_configs_naming_the_key() {
    let cases = [
        (
            "pingress:\n  http_listen: [\"nope\"]\n",
            "pingress.http_listen[0]",
        ),
        ("pingress:\n  admin_listn: \"127.0.0.1:1\"\n", "admin_listn"),
        ("threads: 0\n", "threads"),
        ("threds: 2\n", "`threds`"),
        ("pingress: [\n", "line"),
        (
            "pingress:\n  upstream:\n    connect_timeout_ms: -1\n",
            "connect_timeout_ms",
        ),
        (
            "pingress:\n  tls:\n    default_certificate: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}\n",
            "/nonexistent/c.pem",
        ),
    ];
    for (text, needle) in cases {
        let (ok, out) = check_file(text);
        assert!(!ok, "{text:?} should fail");
        assert!(
            out.contains(needle),
            "{text:?}: expected {needle:?} in {out}"
        );
        assert!(out.starts_with("error:"), "{out}");
    }
    let (ok, out) = check_file("threads: 2\npingress:\n  http_listen: [\"127.0.0.1:8080\"]\n");
    assert!(ok, "{out}");
}

#[test]
fn check_fails_on_missing_file_or_broken_manifest() {
    let (ok, out) = run(&["-t", "-c", "/nonexistent/pingress.yaml"]);
    assert!(!ok);
    assert!(out.contains("/nonexistent/pingress.yaml"), "{out}");
    // The cause is said once.
    assert_eq!(out.matches("No such file or directory").count(), 1, "{out}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports: 80\n",
    )
    .unwrap();
    let (ok, out) = run(&["-t", "--manifests", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("bad.yaml:6"), "{out}");
}

#[test]
fn check_reports_diagnostics_as_warnings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ing.yaml"),
        ingress(
            "ns",
            "ing",
            &[("a.example.com", "Prefix", "/", "ghost", "80")],
            None,
        ),
    )
    .unwrap();
    let (ok, out) = run(&["-t", "--manifests", dir.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: ingress ns/ing: rules[0].http.paths[0]: service ns/ghost not found"),
        "{out}"
    );
}

#[test]
fn flags_override_the_file_and_are_documented() {
    let (ok, out) = run(&["--help"]);
    assert!(ok);
    for flag in [
        "--conf",
        "--test",
        "--manifests",
        "--http-listen",
        "--admin-listen",
        "--debug-listen",
        "--check-source",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}: {out}");
    }
    let (ok, out) = run(&[
        "-t",
        "--manifests",
        "conf/examples",
        "--debug-listen",
        "bad",
    ]);
    assert!(!ok);
    assert!(out.contains("debug_listen"), "{out}");
    // The explain command docs/operations.md shows.
    let (ok, out) = run(&[
        "explain",
        "--manifests",
        "conf/examples",
        "--host",
        "tomcat.lucky.com",
        "--path",
        "/",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("answer: proxy (Ingress default/ingress-myapp)"),
        "{out}"
    );
    let (ok, out) = check_file("pingress:\n  http_listen: [\"127.0.0.1:1\"]\n");
    assert!(ok, "{out}");
    let (ok, out) = run(&["-t", "--manifests", "conf/examples", "--http-listen", "bad"]);
    assert!(!ok);
    assert!(out.contains("--http-listen"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_subcommand_serves_its_name() {
    let port = free_port();
    let mut child = Command::new(bin())
        .args([
            "echo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--name",
            "demo",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let body = eventually("echo answers", || async {
        let r = client
            .get(format!("http://127.0.0.1:{port}/x?size=3"))
            .send()
            .await
            .ok()?;
        Some((
            r.headers()["x-pod"].to_str().unwrap().to_string(),
            r.text().await.ok()?,
        ))
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(body, ("demo".to_string(), "xxx".to_string()));
}

/// `-t` with only the environment of a CI job: no kubeconfig, not in a cluster.
fn run_without_cluster(args: &[&str]) -> (bool, String) {
    let home = tempfile::tempdir().unwrap();
    run_cmd(
        Command::new(bin())
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("HOME", home.path()),
    )
}

#[test]
fn check_of_the_in_cluster_config_needs_no_cluster() {
    // The shipped in-cluster config (the ConfigMap's text), on a machine with no
    // credentials: valid, and it says the source was not contacted.
    let (ok, out) = run_without_cluster(&["-t", "-c", "conf/pingress.yaml"]);
    assert!(ok, "{out}");
    assert!(out.contains("source kubernetes: not contacted"), "{out}");
    assert!(out.contains("config ok"), "{out}");
    // Connecting is asked for separately, and fails clearly here.
    let (ok, out) = run_without_cluster(&["-t", "--check-source", "-c", "conf/pingress.yaml"]);
    assert!(!ok, "{out}");
    assert!(out.contains("no Kubernetes configuration found"), "{out}");
}

#[test]
fn check_reads_a_named_kubeconfig_without_contacting_the_api_server() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"http://127.0.0.1:1\"}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: one\n  context: {cluster: c, user: u}\ncurrent-context: one\n",
    )
    .unwrap();
    let (ok, out) = run(&["-t", "--kubeconfig", kc.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("kubeconfig ok; the API server was not contacted"),
        "{out}"
    );
    let (ok, out) = run(&[
        "-t",
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--context",
        "two",
    ]);
    assert!(!ok, "unknown context must fail");
    assert!(out.contains("two"), "{out}");
    let (ok, out) = run(&["-t", "--kubeconfig", "/nonexistent/kubeconfig"]);
    assert!(!ok);
    assert!(out.contains("/nonexistent/kubeconfig"), "{out}");
    // --check-source connects: nothing listens on port 1.
    let (ok, out) = run(&["-t", "--check-source", "--kubeconfig", kc.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("did not answer /version"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_source_connects_to_the_api_server() {
    let api = support::fake_api::FakeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, api.kubeconfig("t")).unwrap();
    let kc = kc.to_str().unwrap().to_string();
    let out =
        tokio::task::spawn_blocking(move || run(&["-t", "--check-source", "--kubeconfig", &kc]))
            .await
            .unwrap();
    assert!(out.0, "{}", out.1);
    assert!(out.1.contains("connected, API server 1.32"), "{}", out.1);
    assert!(api.requests().iter().any(|r| r.path == "/version"));
}

#[test]
fn an_unusable_default_certificate_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("k.pem"), "not a key").unwrap();
    let conf = dir.path().join("pingress.yaml");
    std::fs::write(
        &conf,
        format!(
            "pingress:\n  http_listen: [\"127.0.0.1:1\"]\n  https_listen: [\"127.0.0.1:1\"]\n  tls:\n    default_certificate: {{cert_file: {0}/c.pem, key_file: {0}/k.pem}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (ok, out) = run(&["-c", conf.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("pingress.tls.default_certificate")
            && out.contains(&format!("{}/c.pem", dir.path().display()))
            && out.contains("no PEM certificate"),
        "{out}"
    );
}

#[test]
fn a_taken_listening_address_stops_start_up_naming_key_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("m")).unwrap();
    let conf = dir.path().join("pingress.yaml");
    std::fs::write(
        &conf,
        format!(
            "pid_file: {0}/pid\nupgrade_sock: {0}/sock\npingress:\n  http_listen: [\"127.0.0.1:{1}\"]\n  https_listen: [\"{addr}\"]\n  admin_listen: \"127.0.0.1:{2}\"\n  debug_listen: \"\"\n  source: {{kind: manifests, manifests_dir: {0}/m}}\n",
            dir.path().display(),
            free_port(),
            free_port(),
        ),
    )
    .unwrap();
    let (ok, out) = run(&["-c", conf.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("cannot listen on {addr} (pingress.https_listen)")),
        "{out}"
    );
}

/// The load harness's baseline (`pingress floor`, hidden) proxies every request to its one
/// backend with the same forwarded headers the gateway adds, so the harness compares like
/// with like.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_subcommand_proxies_to_its_backend_with_forwarded_headers() {
    let pod = pod("floor-pod").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("pingress.yaml");
    std::fs::write(
        &conf,
        format!(
            "threads: 1\npid_file: {0}/pid\nupgrade_sock: {0}/sock\npingress:\n  http_listen: [\"127.0.0.1:{port}\"]\n  https_listen: []\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .args(["-c", conf.to_str().unwrap(), "floor", "--backend"])
        .arg(pod.to_string())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let echo = eventually("the floor proxy answers", || async {
        let r = client
            .get(format!("http://127.0.0.1:{port}/any/path?q=1"))
            .header("host", "whatever.example")
            .send()
            .await
            .ok()?;
        serde_json::from_str::<Echo>(&r.text().await.ok()?).ok()
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(echo.pod, "floor-pod");
    assert_eq!(
        (echo.path.as_str(), echo.query.as_str()),
        ("/any/path", "q=1")
    );
    let h = &echo.headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "whatever.example");
    assert_eq!(h["x-forwarded-port"], port.to_string());
    assert_eq!(h["x-request-id"].len(), 32, "{h:?}");

    // An HTTPS listener without a certificate is a clear start-up error.
    let conf2 = dir.path().join("tls.yaml");
    std::fs::write(
        &conf2,
        format!(
            "pingress:\n  https_listen: [\"127.0.0.1:{}\"]\n",
            free_port()
        ),
    )
    .unwrap();
    let (ok, out) = run(&[
        "-c",
        conf2.to_str().unwrap(),
        "floor",
        "--backend",
        "127.0.0.1:1",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("needs --cert and --key"), "{out}");
}

const MIGRATING: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: pingress}
spec: {controller: pingress.dev/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /$2
    nginx.ingress.kubernetes.io/proxy-buffering: "on"
    nginx.ingress.kubernetes.io/configuration-snippet: "more_set_headers X: y;"
    nginx.ingress.kubernetes.io/proxy-read-timeout: 60s
spec:
  ingressClassName: pingress
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: "/shop(/|$)(.*)", pathType: ImplementationSpecific, backend: {service: {name: web, port: {name: http}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: moved
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/permanent-redirect: https://x.example.com/$request_uri
spec:
  ingressClassName: pingress
  rules:
  - host: moved.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
"#;

fn check_out(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn migration_check_classifies_every_annotation_from_a_manifests_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), MIGRATING).unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, text) = check_out(&["check", "--manifests", d]);
    assert_eq!(code, Some(1), "something differs: exit 1\n{text}");
    for want in [
        "ingress shop/web (served)",
        "applied  nginx.ingress.kubernetes.io/rewrite-target: /$2",
        "differs  nginx.ingress.kubernetes.io/proxy-buffering: on",
        "ignored  nginx.ingress.kubernetes.io/configuration-snippet",
        "snippets are never executed",
        "invalid  nginx.ingress.kubernetes.io/proxy-read-timeout: 60s",
        "ingress shop/moved (refused)",
        "summary: 2 ingresses, 5 annotations: 1 applied, 1 differ, 1 ignored, 2 invalid; 1 ingresses refused",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let (code, json) = check_out(&["check", "--manifests", d, "--output", "json"]);
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["summary"]["invalid"], 2);
    assert_eq!(v["summary"]["refused"], 1);
    let web = &v["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ingress"] == "shop/web")
        .unwrap()["annotations"];
    assert!(web.as_array().unwrap().iter().any(
        |a| a["status"] == "differs" && a["key"].as_str().unwrap().ends_with("proxy-buffering")
    ));

    // Only applied annotations: exit 0.
    let clean = MIGRATING
        .split("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: moved")
        .next()
        .unwrap()
        .replace(
            "    nginx.ingress.kubernetes.io/proxy-buffering: \"on\"\n",
            "",
        )
        .replace(
            "    nginx.ingress.kubernetes.io/configuration-snippet: \"more_set_headers X: y;\"\n",
            "",
        )
        .replace("proxy-read-timeout: 60s", "proxy-read-timeout: \"60\"");
    std::fs::write(dir.path().join("app.yaml"), clean).unwrap();
    let (code, text) = check_out(&["check", "--manifests", d]);
    assert_eq!(code, Some(0), "{text}");
    let (code, _) = check_out(&["check"]);
    assert_eq!(code, Some(2), "no source named: an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_check_reads_a_cluster_with_lists_only() {
    let api = fake_api::FakeApi::start().await;
    api.apply_yaml(MIGRATING);
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, api.kubeconfig("t")).unwrap();
    let kc = kc.to_str().unwrap().to_string();
    let (code, text) =
        tokio::task::spawn_blocking(move || check_out(&["check", "--kubeconfig", &kc]))
            .await
            .unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("summary: 2 ingresses, 5 annotations"),
        "{text}"
    );
    let reqs = api.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r.method, "GET", "{r:?}");
        assert!(!r.path.contains("watch"), "no watches: {r:?}");
    }
}

#[test]
fn migration_check_reports_access_control_annotations_and_their_fail_closed_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: pingress}\nspec: {controller: pingress.dev/ingress-controller}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {ports: [{name: http, port: 80}]}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: x\n  namespace: default\n  annotations:\n    nginx.ingress.kubernetes.io/whitelist-source-range: \"10.0.0.0/8, bogus\"\n    nginx.ingress.kubernetes.io/limit-rps: \"5\"\n    nginx.ingress.kubernetes.io/auth-type: basic\n    nginx.ingress.kubernetes.io/auth-secret: nosuch\n    nginx.ingress.kubernetes.io/configuration-snippet: \"more_set_headers \\\"X-A: 1\\\"; deny all;\"\nspec:\n  ingressClassName: pingress\n  rules:\n  - host: a.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}]}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: y\n  namespace: default\n  annotations:\n    nginx.ingress.kubernetes.io/limit-rpm: \"lots\"\nspec:\n  ingressClassName: pingress\n  rules:\n  - host: b.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}]}\n",
    )
    .unwrap();
    let (code, text) = check_out(&["check", "--manifests", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    for want in [
        "applied  nginx.ingress.kubernetes.io/limit-rps: 5",
        "invalid  nginx.ingress.kubernetes.io/whitelist-source-range",
        "answer 503 (fail closed)",
        "Secret default/nosuch not found; its paths answer 503",
        "unsupported directive `deny all;`",
        "ingress default/y (refused)",
        "invalid  nginx.ingress.kubernetes.io/limit-rpm: lots",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}
