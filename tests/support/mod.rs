//! Test support: the real `pingress` binary started on a temporary config and manifests
//! directory, echo backends ("pods") on OS-chosen ports, manifest builders, and an
//! eventually-style poller with generous deadlines.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use pingress::echo::Echo;

pub mod fake_api;
pub mod tls;

/// The gateway's log filter in tests: `info`, or `PINGRESS_TEST_LOG` when set (for example
/// `PINGRESS_TEST_LOG=info,pingora_proxy=debug` to see why a connection ended).
pub fn gateway_log_filter() -> String {
    std::env::var("PINGRESS_TEST_LOG").unwrap_or_else(|_| "info".into())
}

/// Generous deadline for anything that should happen "well under a second".
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Poll `f` until it returns Some, or panic with `what` after `DEADLINE`.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out after {DEADLINE:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port the OS just handed out (bound, then released for the gateway to bind), never one
/// this process was given before: released ports can come straight back from the OS, and
/// two calls in a row once gave a gateway the same port for HTTP and HTTPS.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Start an echo backend ("pod") named `name` on an OS-chosen port.
pub async fn pod(name: &str) -> SocketAddr {
    pingress::echo::spawn("127.0.0.1:0".parse().unwrap(), name)
        .await
        .unwrap()
}

/// A pod that holds answers: requests whose path starts with `/hold` are counted on arrival
/// and answered (200, `released`) only after [`HeldPod::release`]; any other path is
/// answered at once (200, `ok`). A test can so know that a request is in flight at the pod
/// instead of guessing with a sleep.
pub struct HeldPod {
    pub addr: SocketAddr,
    arrived: tokio::sync::watch::Sender<usize>,
    released: tokio::sync::watch::Sender<bool>,
}

impl HeldPod {
    pub async fn start() -> HeldPod {
        use http_body_util::Full;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrived = tokio::sync::watch::Sender::new(0usize);
        let released = tokio::sync::watch::Sender::new(false);
        let (a, r) = (arrived.clone(), released.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (a, r) = (a.clone(), r.clone());
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let (a, r) = (a.clone(), r.clone());
                    async move {
                        let body: &'static [u8] = if req.uri().path().starts_with("/hold") {
                            a.send_modify(|n| *n += 1);
                            let _ = r.subscribe().wait_for(|go| *go).await;
                            b"released"
                        } else {
                            b"ok"
                        };
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            bytes::Bytes::from_static(body),
                        )))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });
        HeldPod {
            addr,
            arrived,
            released,
        }
    }

    /// Wait (up to [`DEADLINE`]) until `n` held requests have arrived in all.
    pub async fn wait_arrived(&self, n: usize) {
        let mut seen = self.arrived.subscribe();
        let waited = tokio::time::timeout(DEADLINE, seen.wait_for(|got| *got >= n)).await;
        assert!(
            waited.is_ok(),
            "timed out after {DEADLINE:?}: {} of {n} held requests reached the pod",
            *self.arrived.borrow()
        );
    }

    /// Answer every held request, now and from now on.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}

/// A running gateway process with its own temp dir, killed on drop.
pub struct Gateway {
    child: Child,
    pub dir: tempfile::TempDir,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    /// The debug listener (`debug_listen`).
    pub debug: SocketAddr,
    pub client: reqwest::Client,
}

impl Gateway {
    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    pub fn access_log(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// Start a gateway on the given manifests (file name -> YAML) and wait until ready.
    pub async fn start(files: &[(&str, String)]) -> Gateway {
        Self::start_with(files, "").await
    }

    /// Like `start`, with extra lines for the `pingress:` section (indented two spaces);
    /// `{http}` and `{https}` in them stand for the listen addresses chosen.
    pub async fn start_with(files: &[(&str, String)], extra: &str) -> Gateway {
        Self::launch(files, None, extra, true).await
    }

    /// Start a gateway watching the fake API server with a kubeconfig using `token`.
    pub async fn start_kube(api: &fake_api::FakeApi, token: &str, extra: &str) -> Gateway {
        Self::launch(&[], Some(api.kubeconfig(token)), extra, true).await
    }

    /// Like `start_kube`, watching only the namespace `ns`.
    pub async fn start_kube_scoped(api: &fake_api::FakeApi, extra: &str, ns: &str) -> Gateway {
        let kc = format!("{}#namespaces: [{ns}]", api.kubeconfig("t"));
        Self::launch(&[], Some(kc), extra, true).await
    }

    /// Like `start_kube`, but return as soon as the admin port answers, ready or not.
    pub async fn start_kube_unready(api: &fake_api::FakeApi, token: &str, extra: &str) -> Gateway {
        Self::launch(&[], Some(api.kubeconfig(token)), extra, false).await
    }

    /// GET /readyz: the status code, or 0 when the admin port does not answer.
    pub async fn readyz(&self) -> u16 {
        match self
            .client
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    async fn launch(
        files: &[(&str, String)],
        kubeconfig: Option<String>,
        extra: &str,
        need_ready: bool,
    ) -> Gateway {
        let mut dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        for (name, text) in files {
            std::fs::write(manifests.join(name), text).unwrap();
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(16)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        for _attempt in 0..3 {
            let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let debug: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let source = match &kubeconfig {
                None => format!(
                    "{{kind: manifests, manifests_dir: {}, poll_interval_ms: 50}}",
                    manifests.display()
                ),
                Some(kc) => {
                    // A trailing `#key: value` on the kubeconfig text is an extra source key.
                    let (kc, source_extra) = match kc.rsplit_once('#') {
                        Some((kc, extra)) => (kc, format!(", {extra}")),
                        None => (kc.as_str(), String::new()),
                    };
                    let path = dir.path().join("kubeconfig");
                    std::fs::write(&path, kc).unwrap();
                    format!(
                        "{{kind: kubernetes, kubeconfig: {}{source_extra}}}",
                        path.display()
                    )
                }
            };
            let conf = format!(
                "version: 1\nthreads: 2\npid_file: {d}/pid\nupgrade_sock: {d}/upgrade.sock\n\
                 grace_period_seconds: 2\ngraceful_shutdown_timeout_seconds: 5\n\
                 pingress:\n  http_listen: [\"{http}\"]\n  https_listen: [\"{https}\"]\n  \
                 admin_listen: \"{admin}\"\n  debug_listen: \"{debug}\"\n  \
                 source: {source}\n  \
                 debounce_ms: 20\n  upstream: {{connect_timeout_ms: 1000}}\n{extra}",
                d = dir.path().display(),
                extra = extra
                    .replace("{http}", &http.to_string())
                    .replace("{https}", &https.to_string()),
            );
            let conf_path = dir.path().join("pingress.yaml");
            std::fs::write(&conf_path, conf).unwrap();
            let log = std::fs::File::create(dir.path().join("access.log")).unwrap();
            let err = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_pingress"))
                .arg("-c")
                .arg(&conf_path)
                .env("RUST_LOG", gateway_log_filter())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .unwrap();
            let mut gw = Gateway {
                child,
                dir,
                http,
                https,
                admin,
                debug,
                client: client.clone(),
            };
            if gw.wait_ready(need_ready).await {
                return gw;
            }
            // Most likely a port taken between free_port() and bind: try fresh ports.
            eprintln!("gateway did not start: {}", gw.stderr());
            let _ = gw.child.kill();
            let _ = gw.child.wait();
            dir = std::mem::replace(&mut gw.dir, tempfile::tempdir().unwrap());
            drop(gw);
        }
        panic!("gateway failed to start three times");
    }

    /// Wait until /readyz says 200 (or, with `need_ready` false, answers at all).
    async fn wait_ready(&mut self, need_ready: bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            match self.readyz().await {
                200 => return true,
                0 => {}
                _ if !need_ready => return true,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (`TERM`, `QUIT`, ...) to the gateway process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for the process to exit; its exit code, or None if it is still running after
    /// `DEADLINE`.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Start a second gateway process on the same config with `-u`: it takes over the
    /// listening sockets once this one gets SIGQUIT.
    pub fn spawn_upgrade(&self) -> Child {
        let err = std::fs::File::create(self.dir.path().join("stderr-upgrade.log")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_pingress"))
            .arg("-u")
            .arg("-c")
            .arg(self.dir.path().join("pingress.yaml"))
            .env("RUST_LOG", gateway_log_filter())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn write(&self, name: &str, text: &str) {
        // Write to a temp file then rename, as editors and ConfigMap updates do.
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.manifests().join(name)).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.manifests().join(name)).unwrap();
    }

    /// GET `path` with a Host header; returns (status, body).
    pub async fn get(&self, host: &str, path: &str) -> reqwest::Result<(u16, String)> {
        let r = self
            .client
            .get(format!("http://{}{}", self.http, path))
            .header("host", host)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }

    /// GET and parse the echo answer; panics unless the status is 200.
    pub async fn echo(&self, host: &str, path: &str) -> Echo {
        let (status, body) = self.get(host, path).await.unwrap();
        assert_eq!(status, 200, "GET {host}{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not an echo: {e}: {body}"))
    }

    /// Which pod serves host+path, or the status code when it is not a 200.
    pub async fn who(&self, host: &str, path: &str) -> String {
        match self.get(host, path).await {
            Ok((200, body)) => serde_json::from_str::<Echo>(&body)
                .map(|e| e.pod)
                .unwrap_or(body),
            Ok((status, _)) => status.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    /// A client that sends `host` to the HTTPS port and accepts any certificate; redirects
    /// are not followed.
    pub fn insecure_https_client(&self, host: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .resolve(host, self.https)
            .build()
            .unwrap()
    }

    /// Like `who`, over HTTPS with SNI `host` (any certificate accepted; tests that care about
    /// the certificate use `tls::served_subject` or a verifying client).
    pub async fn who_https(&self, host: &str, path: &str) -> String {
        let url = format!("https://{host}:{}{path}", self.https.port());
        match self.insecure_https_client(host).get(url).send().await {
            Ok(r) if r.status() == 200 => {
                let body = r.text().await.unwrap_or_default();
                serde_json::from_str::<Echo>(&body)
                    .map(|e| e.pod)
                    .unwrap_or(body)
            }
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    /// One answer as a client sees it, over HTTP or HTTPS (SNI `host`, any certificate),
    /// with extra request headers; redirects are not followed.
    pub async fn seen(
        &self,
        https: bool,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Seen {
        let mut req = if https {
            let url = format!("https://{host}:{}{path}", self.https.port());
            self.insecure_https_client(host).get(url)
        } else {
            self.client
                .get(format!("http://{}{path}", self.http))
                .header("host", host)
        };
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let r = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Seen {
                    status: format!("error: {e}"),
                    ..Seen::default()
                }
            }
        };
        let header = |n: &str| {
            r.headers()
                .get(n)
                .map(|v| v.to_str().unwrap_or_default().to_string())
                .unwrap_or_default()
        };
        let (location, hsts) = (header("location"), header("strict-transport-security"));
        let status = r.status().as_u16().to_string();
        let body = r.text().await.unwrap_or_default();
        match serde_json::from_str::<Echo>(&body) {
            Ok(e) => Seen {
                status,
                pod: e.pod,
                path: e.path,
                host: e.headers.get("host").cloned().unwrap_or_default(),
                location,
                hsts,
            },
            Err(_) => Seen {
                status,
                pod: body,
                location,
                hsts,
                ..Seen::default()
            },
        }
    }

    /// Wait until host+path is served by `want` (a pod name or a status code).
    pub async fn wait_for(&self, host: &str, path: &str, want: &str) {
        eventually(&format!("{host}{path} -> {want}"), || async {
            (self.who(host, path).await == want).then_some(())
        })
        .await
    }

    /// Wait until `want` answers host+path several times in a row (the others drained).
    pub async fn wait_only(&self, host: &str, path: &str, want: &str) {
        eventually(&format!("only {want} serves {host}{path}"), || async {
            for _ in 0..6 {
                if self.who(host, path).await != want {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Value of one metric line (exact name with labels).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- manifest builders ----

pub const CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: pingress\nspec:\n  controller: pingress.dev/ingress-controller\n";

/// A Service with named ports (name, port).
pub fn service(ns: &str, name: &str, ports: &[(&str, i32)]) -> String {
    let mut s = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  ports:\n"
    );
    for (pname, port) in ports {
        writeln!(s, "  - name: {pname}\n    port: {port}").unwrap();
    }
    s
}

/// An EndpointSlice for `svc` whose port `port_name` lists the given pods (all on 127.0.0.1;
/// one slice per pod, since a slice has a single port number per port name).
pub fn slices(ns: &str, svc: &str, port_name: &str, pods: &[SocketAddr]) -> String {
    slices_with(ns, svc, port_name, pods, &[])
}

/// Like `slices`, with some pods marked not ready (ready: false).
pub fn slices_with(
    ns: &str,
    svc: &str,
    port_name: &str,
    pods: &[SocketAddr],
    not_ready: &[SocketAddr],
) -> String {
    let mut s = String::new();
    for (i, p) in pods.iter().enumerate() {
        let ready = !not_ready.contains(p);
        write!(
            s,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {svc}-{port_name}-{i}\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {svc}\naddressType: IPv4\nports:\n- name: {port_name}\n  port: {}\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: {ready}}}\n",
            p.port(),
            p.ip()
        )
        .unwrap();
    }
    s
}

/// One path rule: (host, pathType, path, service, port) where port is a number or a name.
pub type Rule<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

fn port_yaml(port: &str) -> String {
    if port.parse::<i32>().is_ok() {
        format!("{{number: {port}}}")
    } else {
        format!("{{name: {port}}}")
    }
}

/// An Ingress of class pingress with the given rules and an optional default backend.
pub fn ingress(ns: &str, name: &str, rules: &[Rule], default: Option<(&str, &str)>) -> String {
    let mut s = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  ingressClassName: pingress\n"
    );
    if let Some((svc, port)) = default {
        writeln!(
            s,
            "  defaultBackend:\n    service: {{name: {svc}, port: {}}}",
            port_yaml(port)
        )
        .unwrap();
    }
    if !rules.is_empty() {
        s.push_str("  rules:\n");
    }
    let mut hosts: Vec<&str> = Vec::new();
    for r in rules {
        if !hosts.contains(&r.0) {
            hosts.push(r.0);
        }
    }
    for host in hosts {
        if host.is_empty() {
            s.push_str("  - http:\n      paths:\n");
        } else {
            write!(s, "  - host: \"{host}\"\n    http:\n      paths:\n").unwrap();
        }
        for (_, kind, path, svc, port) in rules.iter().filter(|r| r.0 == host) {
            writeln!(
                s,
                "      - path: {path}\n        pathType: {kind}\n        backend:\n          service: {{name: {svc}, port: {}}}",
                port_yaml(port)
            )
            .unwrap();
        }
    }
    s
}

/// What a client sees of one answer ([`Gateway::seen`]); `pod` is the body when the answer
/// is not an echo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub status: String,
    pub pod: String,
    /// The path and Host the pod received.
    pub path: String,
    pub host: String,
    pub location: String,
    pub hsts: String,
}

/// Path of the built binary, for CLI tests.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pingress"))
}

/// Run the binary with `args`; panics with its stderr unless it succeeds. Its stdout.
pub fn pingress_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// The smallest site: IngressClass, Service `svc` (port http/80) in namespace `shop`, its
/// pods, and an Ingress of the same name sending every path of `host` to it.
pub fn site(svc: &str, host: &str, pods: &[SocketAddr]) -> String {
    format!(
        "{CLASS}{}{}{}",
        service("shop", svc, &[("http", 80)]),
        slices("shop", svc, "http", pods),
        ingress("shop", svc, &[(host, "Prefix", "/", svc, "80")], None)
    )
}

/// A steady load of GETs from several concurrent clients, counting answers that are not a
/// 200. Bounded: each worker stops when told to, or after two minutes in any case.
pub struct Load {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Names of the pods that answered.
    pub pods: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    workers: Vec<tokio::task::JoinHandle<Option<String>>>,
}

/// What a load saw.
#[derive(Debug)]
pub struct LoadResult {
    pub ok: usize,
    pub failed: usize,
    pub first_failures: Vec<String>,
}

impl Load {
    pub fn start(gw: std::sync::Arc<Gateway>, host: &str, path: &str, workers: usize) -> Load {
        use std::sync::atomic::Ordering;
        let load = Load {
            done: Default::default(),
            ok: Default::default(),
            failed: Default::default(),
            pods: Default::default(),
            workers: Vec::new(),
        };
        let mut handles = Vec::new();
        for _ in 0..workers {
            let (gw, done, ok, failed, pods) = (
                gw.clone(),
                load.done.clone(),
                load.ok.clone(),
                load.failed.clone(),
                load.pods.clone(),
            );
            let (host, path) = (host.to_string(), path.to_string());
            handles.push(tokio::spawn(async move {
                let mut first = None;
                let start = Instant::now();
                while !done.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
                    match gw.get(&host, &path).await {
                        Ok((200, body)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if let Ok(e) = serde_json::from_str::<Echo>(&body) {
                                pods.lock().unwrap().insert(e.pod);
                            }
                        }
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first.get_or_insert(format!("{other:?}"));
                        }
                    }
                }
                first
            }));
        }
        Load {
            workers: handles,
            ..load
        }
    }

    /// Requests answered so far (any status).
    pub fn count(&self) -> usize {
        use std::sync::atomic::Ordering;
        self.ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    /// Wait until at least `n` more requests than now have been answered.
    pub async fn wait_more(&self, n: usize) {
        let target = self.count() + n;
        eventually(&format!("{n} more requests"), || async {
            (self.count() >= target).then_some(())
        })
        .await
    }

    pub async fn stop(self) -> LoadResult {
        use std::sync::atomic::Ordering;
        self.done.store(true, Ordering::Relaxed);
        let mut first_failures = Vec::new();
        for w in self.workers {
            if let Some(f) = w.await.unwrap() {
                first_failures.push(f);
            }
        }
        LoadResult {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            first_failures,
        }
    }
}
