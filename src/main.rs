//! The `pingress` command: run the gateway, check a config, or run the demo echo backend.

mod floor;

/// mimalloc instead of glibc malloc: Pingora's request path allocates and frees many small
/// buffers. Measured (callgrind, one proxied HTTP/1.1 request): 123.3k -> 103.1k
/// instructions; load harness h1-small: about 12% less CPU per request, for about 16 MiB
/// more peak RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pingress::config::{parse_listen, Config, SourceKind};
use pingress::source::files;
use pingress::translate::{translate, TranslateConf};

/// Kubernetes Ingress controller and edge gateway on Cloudflare Pingora.
///
/// Without a subcommand, runs the gateway. Flags override the config file.
#[derive(Parser, Debug)]
#[command(name = "pingress", version, about, long_about = None)]
struct Cli {
    /// The YAML server config (Pingora keys plus a `pingress:` section).
    /// Without it, built-in defaults are used.
    #[arg(short = 'c', long = "conf", value_name = "FILE")]
    conf: Option<PathBuf>,

    /// Check the config (and the manifests directory) and exit: 0 when valid. The
    /// Kubernetes API is not contacted, so a ConfigMap's text can be checked anywhere.
    #[arg(short = 't', long = "test")]
    test: bool,

    /// With -t and the kubernetes source: also connect (credentials, then the API server's
    /// /version).
    #[arg(long = "check-source", requires = "test")]
    check_source: bool,

    /// Take over the listening sockets of a running pingress (graceful upgrade).
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,

    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,

    /// Serve routes from this manifests directory (sets `pingress.source`).
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,

    /// Watch the Kubernetes API through this kubeconfig (sets `pingress.source.kind:
    /// kubernetes`).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use (sets `pingress.source.kind: kubernetes`).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,

    /// Plain-HTTP listen address, repeatable (replaces `pingress.http_listen`).
    #[arg(long = "http-listen", value_name = "ADDR")]
    http_listen: Vec<String>,

    /// HTTPS listen address, repeatable (replaces `pingress.https_listen`).
    #[arg(long = "https-listen", value_name = "ADDR")]
    https_listen: Vec<String>,

    /// Admin listen address (replaces `pingress.admin_listen`).
    #[arg(long = "admin-listen", value_name = "ADDR")]
    admin_listen: Option<String>,

    /// Debug listen address; empty turns it off (replaces `pingress.debug_listen`).
    #[arg(long = "debug-listen", value_name = "ADDR")]
    debug_listen: Option<String>,

    /// Turn the JSON access log off.
    #[arg(long = "no-access-log")]
    no_access_log: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print manifests with every extensions/v1beta1 or networking.k8s.io/v1beta1 Ingress
    /// converted to networking.k8s.io/v1 (other documents unchanged), for use with a cluster
    /// that no longer serves the old APIs. With `--to gateway-api`, the Ingresses of ours
    /// become a GatewayClass, Gateways, HTTPRoutes and GRPCRoutes (the class and the
    /// controller name come from the config, `-c`), and a report on stderr lists what has no
    /// Gateway API equivalent: exit status 0 when the output serves what the Ingresses did,
    /// 1 when the report lists a difference (the output is printed all the same), 2 on
    /// errors.
    Convert {
        /// Manifest files (or directories of them) to convert.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `ingress-v1` (networking.k8s.io/v1 Ingresses) or `gateway-api`.
        #[arg(long, value_name = "API", default_value = "ingress-v1", value_parser = ["ingress-v1", "gateway-api"])]
        to: String,
        /// Set `spec.ingressClassName` to this class and drop the legacy
        /// `kubernetes.io/ingress.class` annotation (`--to ingress-v1` only).
        #[arg(long, value_name = "NAME")]
        ingress_class: Option<String>,
    },
    /// Migration report: will these Ingresses behave as under ingress-nginx? Classifies every
    /// annotation of each Ingress of ours (applied, differs, ignored, invalid) and lists the
    /// other diagnostics. Exit status 0 when every annotation is applied as ingress-nginx
    /// does, 1 otherwise, 2 on errors. Reads a cluster with one list per kind: no watch, no
    /// writes.
    Check {
        /// Read the Ingresses of this manifests directory.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["kubeconfig", "context"])]
        manifests: Option<PathBuf>,
        /// Read the Ingresses of the cluster of this kubeconfig.
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
        /// Kubeconfig context to use.
        #[arg(long, value_name = "NAME")]
        context: Option<String>,
        /// `text` or `json`.
        #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
    /// Which rule, which backend, and why (or why not) for one request: "why is my
    /// Ingress answering 404". Reads a manifests directory, or asks a running gateway's
    /// debug listener (the default: `debug_listen` of the config, 127.0.0.1:10255).
    Explain {
        /// The request's Host.
        #[arg(long)]
        host: String,
        /// The request's path (with an optional `?query`).
        #[arg(long, default_value = "/")]
        path: String,
        /// The request's method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// A request header, `Name=value` (repeatable).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// Explain against this manifests directory instead of a running gateway.
        #[arg(long, value_name = "DIR")]
        manifests: Option<PathBuf>,
        /// The debug listener of a running gateway (e.g. `127.0.0.1:10255` through
        /// `kubectl port-forward`).
        #[arg(long, value_name = "ADDR", conflicts_with = "manifests")]
        debug: Option<String>,
        /// `text` or `json`.
        #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
    /// Run an echo backend that answers with what it received and its own name.
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Name reported in every answer (like a pod name).
        #[arg(long, default_value = "echo")]
        name: String,
    },
    /// Load-harness baseline (hidden): a plain Pingora proxy to one backend with the config's
    /// server section and listeners, no routing (src/floor.rs).
    #[command(hide = true)]
    Floor {
        /// The one backend every request goes to.
        #[arg(long)]
        backend: SocketAddr,
        /// Certificate (PEM) for the HTTPS listeners.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Private key (PEM) for the HTTPS listeners.
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.conf {
        Some(path) => Config::load(path)?,
        None => Config::default_config(),
    };
    let p = &mut config.pingress;
    if let Some(dir) = &cli.manifests {
        p.source.kind = SourceKind::Manifests;
        p.source.manifests_dir = dir.clone();
    }
    if cli.kubeconfig.is_some() || cli.context.is_some() {
        p.source.kind = SourceKind::Kubernetes;
        p.source.kubeconfig = cli.kubeconfig.clone().or(p.source.kubeconfig.take());
        p.source.context = cli.context.clone().or(p.source.context.take());
    }
    if !cli.http_listen.is_empty() {
        p.http_listen = cli.http_listen.clone();
    }
    if let Some(a) = &cli.admin_listen {
        p.admin_listen = a.clone();
    }
    if !cli.https_listen.is_empty() {
        p.https_listen = cli.https_listen.clone();
    }
    if let Some(a) = &cli.debug_listen {
        p.debug_listen = a.clone();
    }
    if cli.no_access_log {
        p.access_log.enabled = false;
    }
    for a in &cli.http_listen {
        parse_listen(a).map_err(|e| anyhow::anyhow!("--http-listen: {e}"))?;
    }
    for a in &cli.https_listen {
        parse_listen(a).map_err(|e| anyhow::anyhow!("--https-listen: {e}"))?;
    }
    if let Some(a) = &cli.admin_listen {
        parse_listen(a).map_err(|e| anyhow::anyhow!("--admin-listen: {e}"))?;
    }
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
    Ok(config)
}

/// A runtime for the commands that talk to a cluster or a gateway once.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start runtime")
}

/// `-t`: the config, then the manifests directory and what translation makes of it.
fn check(config: &Config, check_source: bool) -> anyhow::Result<()> {
    let metrics = std::sync::Arc::new(pingress::metrics::Metrics::new());
    let store = pingress::tls::CertStore::new(config.pingress.tls.min_version);
    let mut certs = pingress::tls::Certs::new(&config.pingress.tls, store, metrics)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if config.pingress.source.kind == SourceKind::Manifests {
        let dir = &config.pingress.source.manifests_dir;
        let (snap, warnings) = files::read_once(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        let mut t = translate(&snap, &TranslateConf::from(&config.pingress));
        let tls_diags = certs.update(&t.tls, &snap);
        t.diagnostics.extend(tls_diags);
        for d in &t.diagnostics {
            eprintln!("warning: {d}");
        }
        eprintln!(
            "manifests {}: {} ingresses of ours, {} path rules, {} diagnostics",
            dir.display(),
            t.ingresses.len(),
            t.routes.len(),
            t.diagnostics.len()
        );
    }
    if config.pingress.source.kind == SourceKind::Kubernetes {
        let explicit =
            config.pingress.source.kubeconfig.is_some() || config.pingress.source.context.is_some();
        if !check_source && explicit {
            // A kubeconfig named on the command line or in the file is read (a local
            // check); the API server is not contacted.
            let kconf = pingress::source::kube::KubeSourceConf::from(&config.pingress.source);
            let rt = runtime()?;
            rt.block_on(pingress::source::kube::client(&kconf))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "source kubernetes: kubeconfig ok; the API server was not contacted (add --check-source to connect)"
            );
        } else if !check_source {
            eprintln!(
                "source kubernetes: not contacted, credentials not looked for (add --check-source to connect)"
            );
        } else {
            let kconf = pingress::source::kube::KubeSourceConf::from(&config.pingress.source);
            let rt = runtime()?;
            let version = rt
                .block_on(async {
                    let client = pingress::source::kube::client(&kconf).await?;
                    client
                        .apiserver_version()
                        .await
                        .map_err(|e| format!("the API server did not answer /version: {e}"))
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "source kubernetes: connected, API server {}.{} ({})",
                version.major, version.minor, version.git_version
            );
        }
    }
    eprintln!("config ok");
    Ok(())
}

/// `pingress explain`: against a manifests directory (translated and linked here, as the
/// gateway would), or a running gateway's `/debug/explain`.
fn explain(
    cli: &Cli,
    q: &pingress::debug::ExplainQuery,
    manifests: Option<&std::path::Path>,
    debug: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let config = match &cli.conf {
        Some(path) => Config::load(path)?,
        None => Config::default_config(),
    };
    if let Some(dir) = manifests {
        let (snap, warnings) = files::read_once(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        let shared = pingress::generation::Shared::new(std::sync::Arc::new(
            pingress::metrics::Metrics::new(),
        ));
        let mut controller = pingress::controller::Controller::new(
            TranslateConf::from(&config.pingress),
            shared.clone(),
        );
        controller.apply(std::sync::Arc::new(snap));
        let generation = shared.generation.load_full();
        let state = shared.debug.load_full();
        return Ok(pingress::debug::explain(&generation, state.as_deref(), q));
    }
    let addr = debug.unwrap_or(&config.pingress.debug_listen);
    if addr.is_empty() {
        anyhow::bail!("no --manifests, no --debug and debug_listen is off in the config");
    }
    let url = format!("http://{addr}/debug/explain?{}", q.to_query());
    let rt = runtime()?;
    rt.block_on(async {
        let r = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .build()?
            .get(&url)
            .send()
            .await
            .with_context(|| format!("the debug listener at {addr} (is the gateway running? is `kubectl port-forward` up?)"))?;
        anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
        Ok(r.json().await?)
    })
}

/// `pingress check`: print the migration report; Ok(true) when everything is the same.
fn migration_check(
    cli: &Cli,
    manifests: &Option<PathBuf>,
    kubeconfig: &Option<PathBuf>,
    context: &Option<String>,
    output: &str,
) -> anyhow::Result<bool> {
    let config = match &cli.conf {
        Some(path) => Config::load(path)?,
        None => Config::default_config(),
    };
    let snap = if let Some(dir) = manifests {
        let (snap, warnings) = files::read_once(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        snap
    } else if kubeconfig.is_some() || context.is_some() {
        let mut source = config.pingress.source.clone();
        source.kubeconfig = kubeconfig.clone();
        source.context = context.clone();
        let kconf = pingress::source::kube::KubeSourceConf::from(&source);
        let rt = runtime()?;
        rt.block_on(async {
            let client = pingress::source::kube::client(&kconf)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            pingress::check::list_cluster(client, &kconf.namespaces)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        })?
    } else {
        anyhow::bail!("say where the Ingresses are: --manifests DIR or --kubeconfig FILE");
    };
    let t = translate(&snap, &TranslateConf::from(&config.pingress));
    let report = pingress::check::Report::new(&t);
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(report.all_same())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `pingress convert --to gateway-api`: YAML on stdout, the report on stderr.
fn convert_to_gateway_api(cli: &Cli, files: &[PathBuf]) -> ExitCode {
    let config = match load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut inputs = Vec::new();
    for f in files {
        let paths = if f.is_dir() {
            let mut v: Vec<PathBuf> = match std::fs::read_dir(f) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                    })
                    .collect(),
                Err(e) => {
                    eprintln!("error: {}: {e}", f.display());
                    return ExitCode::from(2);
                }
            };
            v.sort();
            v
        } else {
            vec![f.clone()]
        };
        for p in paths {
            match std::fs::read_to_string(&p) {
                Ok(t) => inputs.push((p.display().to_string(), t)),
                Err(e) => {
                    eprintln!("error: {}: {e}", p.display());
                    return ExitCode::from(2);
                }
            }
        }
    }
    match pingress::convert::to_gateway_api(&inputs, &config.pingress) {
        Ok(out) => {
            print!("{}", out.yaml);
            for n in &out.notes {
                eprintln!("{n}");
            }
            eprintln!(
                "converted {} ingresses; {} notes",
                out.ingresses.len(),
                out.notes.len()
            );
            let lost = out
                .notes
                .iter()
                .any(|n| n.kind != pingress::convert::NoteKind::NotServed);
            if !lost {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    if let Some(Command::Convert {
        files,
        to,
        ingress_class,
    }) = &cli.command
    {
        if to == "gateway-api" {
            if ingress_class.is_some() {
                eprintln!("error: --ingress-class is for --to ingress-v1; the class of the Ingresses to convert comes from the config");
                return ExitCode::from(2);
            }
            return convert_to_gateway_api(&cli, files);
        }
        let mut docs = Vec::new();
        for f in files {
            let text = match std::fs::read_to_string(f) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", f.display());
                    return ExitCode::FAILURE;
                }
            };
            let origin = f.display().to_string();
            match pingress::source::legacy::convert_text(&text, &origin, ingress_class.as_deref()) {
                Ok(out) => docs.push(out),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        print!("{}", docs.join("---\n"));
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Echo { listen, name }) = &cli.command {
        return match run_echo(*listen, name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Explain {
        host,
        path,
        method,
        headers,
        manifests,
        debug,
        output,
    }) = &cli.command
    {
        let mut q = pingress::debug::ExplainQuery {
            host: host.clone(),
            path: path.clone(),
            method: method.to_ascii_uppercase(),
            headers: Vec::new(),
        };
        for h in headers {
            match h.split_once('=') {
                Some((n, v)) => q
                    .headers
                    .push((n.trim().to_ascii_lowercase(), v.to_string())),
                None => {
                    eprintln!("error: --header {h}: expected NAME=VALUE");
                    return ExitCode::from(2);
                }
            }
        }
        return match explain(&cli, &q, manifests.as_deref(), debug.as_deref()) {
            Ok(v) => {
                if output == "json" {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                } else {
                    print!("{}", pingress::debug::explain_text(&v));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Check {
        manifests,
        kubeconfig,
        context,
        output,
    }) = &cli.command
    {
        return match migration_check(&cli, manifests, kubeconfig, context, output) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Floor { backend, cert, key }) = &cli.command {
        if let Err(e) = floor::run(config, *backend, cert.as_deref(), key.as_deref()) {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    if cli.test {
        return match check(&config, cli.check_source) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let opt = pingora::server::configuration::Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        ..Default::default()
    };
    let server = match pingress::server::build(config, opt) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    server.run_forever()
}

fn run_echo(listen: SocketAddr, name: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("start runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("bind {listen}"))?;
        eprintln!("echo backend {name} listening on {listen}");
        pingress::echo::serve(listener, name.to_string()).await;
        Ok(())
    })
}
