//! Partial translation must give what a whole translation of the same snapshot gives: random
//! edit sequences over Ingresses that share hosts, Services, TLS (wildcards too), aliases,
//! www redirects, canaries, regex mode, balancing, auth Secrets and refused updates, and over
//! the Services they send to, with and without a global default backend.

use super::*;
use crate::routing::{Conditions, PathKind};
use crate::source::files::parse_manifests;
use crate::source::Object;
use crate::translate::tests::conf;
use crate::translate::translate_with;

const BASE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: pingress}
spec: {controller: pingress.dev/ingress-controller}
---
apiVersion: v1
kind: Secret
metadata: {name: users, namespace: shop}
type: Opaque
data: {auth: dXNlcjp7U0hBfXFVcWpHNVZFbVdnU2h6TlRGeGhmcVk0Q2FXaz0KYnJva2VuLWxpbmUK}
"#;

fn objects(yaml: &str) -> Vec<Object> {
    parse_manifests(yaml, "test").unwrap().objects
}

fn service(i: usize) -> String {
    format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: shop}}\nspec:\n  ports:\n  - {{name: http, port: 80}}\n")
}

const HOSTS: [&str; 8] = [
    "a.ex.com",
    "b.ex.com",
    "www.a.ex.com",
    "c.other.org",
    "*.ex.com",
    "",
    "d.ex.com",
    "e.other.org",
];
const PATHS: [&str; 5] = ["/", "/api", "/api/v1", "/x(/|$)(.*)", "/app"];

/// A random Ingress `name` of namespace `shop`.
fn random_ingress(rng: &mut fastrand::Rng, name: &str) -> String {
    let pick = |rng: &mut fastrand::Rng, xs: &[&'static str]| xs[rng.usize(..xs.len())];
    let mut ann = Vec::new();
    let mut flag = |rng: &mut fastrand::Rng, p: u8, kv: &str| {
        if rng.u8(..100) < p {
            ann.push(kv.to_string());
        }
    };
    flag(rng, 10, "nginx.ingress.kubernetes.io/use-regex: \"true\"");
    flag(rng, 8, "nginx.ingress.kubernetes.io/rewrite-target: /$2");
    flag(rng, 12, "nginx.ingress.kubernetes.io/canary: \"true\"\n    nginx.ingress.kubernetes.io/canary-by-header: X-Canary");
    flag(
        rng,
        8,
        "nginx.ingress.kubernetes.io/server-alias: alias.ex.com",
    );
    flag(
        rng,
        8,
        "nginx.ingress.kubernetes.io/from-to-www-redirect: \"true\"",
    );
    flag(rng, 6, "nginx.ingress.kubernetes.io/app-root: /start");
    flag(rng, 10, "nginx.ingress.kubernetes.io/load-balance: ewma");
    flag(rng, 6, "nginx.ingress.kubernetes.io/affinity: cookie");
    flag(rng, 6, "nginx.ingress.kubernetes.io/custom-http-errors: \"503\"\n    nginx.ingress.kubernetes.io/default-backend: s3");
    match rng.u8(..100) {
        0..6 => flag(rng, 100, "nginx.ingress.kubernetes.io/auth-type: basic\n    nginx.ingress.kubernetes.io/auth-secret: users"),
        6..10 => flag(rng, 100, "nginx.ingress.kubernetes.io/auth-type: basic\n    nginx.ingress.kubernetes.io/auth-secret: missing"),
        _ => {}
    }
    flag(rng, 6, "nginx.ingress.kubernetes.io/limit-rps: \"5\"");
    flag(rng, 8, "nginx.ingress.kubernetes.io/limit-rpm: \"oops\"");
    flag(
        rng,
        6,
        "nginx.ingress.kubernetes.io/ssl-redirect: \"false\"",
    );
    let class = if rng.u8(..100) < 8 {
        "other"
    } else {
        "pingress"
    };
    let created = format!("2026-01-0{}T00:00:00Z", rng.usize(1..4));
    let mut y = format!("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: shop\n  creationTimestamp: \"{created}\"\n");
    if !ann.is_empty() {
        y.push_str("  annotations:\n");
        for a in &ann {
            y.push_str(&format!("    {a}\n"));
        }
    }
    y.push_str(&format!("spec:\n  ingressClassName: {class}\n"));
    let backend = |rng: &mut fastrand::Rng| {
        // s5 has no Service object: a 503 route and a diagnostic.
        format!(
            "{{service: {{name: s{}, port: {{number: 80}}}}}}",
            rng.usize(..6)
        )
    };
    if rng.u8(..100) < 15 {
        y.push_str(&format!("  defaultBackend: {}\n", backend(rng)));
    }
    let rules = rng.usize(..3);
    let mut hosts = Vec::new();
    if rules > 0 {
        y.push_str("  rules:\n");
    }
    for _ in 0..rules {
        let host = pick(rng, &HOSTS);
        hosts.push(host);
        if host.is_empty() {
            y.push_str("  - http:\n");
        } else {
            y.push_str(&format!("  - host: \"{host}\"\n    http:\n"));
        }
        y.push_str("      paths:\n");
        for _ in 0..rng.usize(1..3) {
            let path = pick(rng, &PATHS);
            let kind = pick(rng, &["Prefix", "Exact", "ImplementationSpecific"]);
            y.push_str(&format!(
                "      - {{path: \"{path}\", pathType: {kind}, backend: {}}}\n",
                backend(rng)
            ));
        }
    }
    if rng.u8(..100) < 25 {
        let secret = pick(rng, &["tls1", "tls2"]);
        let tls_hosts = match rng.u8(..4) {
            0 => String::new(),
            1 => "    hosts: [\"*.ex.com\"]\n".to_string(),
            _ => format!("    hosts: [\"{}\"]\n", pick(rng, &HOSTS[..4])),
        };
        y.push_str(&format!("  tls:\n  - secretName: {secret}\n{tls_hosts}"));
    }
    y
}

type Row<'a> = (
    HostMatch,
    Option<&'a RouteSpec>,
    Option<&'a RouteSpec>,
    Vec<(PathKind, &'a str, Option<&'a Conditions>, &'a RouteSpec)>,
);

fn rows(t: &RouteTable<RouteSpec>) -> (Vec<Row<'_>>, Option<&RouteSpec>) {
    let hosts = (t.hosts().into_iter())
        .map(|(h, r)| (h, r.root(), r.host_default(), r.rules()))
        .collect();
    (hosts, t.fallback())
}

fn sorted_diags(d: &[Diagnostic]) -> Vec<String> {
    let mut v: Vec<String> = d.iter().map(|d| format!("{d} [{:?}]", d.kind)).collect();
    v.sort();
    v
}

/// One seed's run: `steps` random edits, each checked against a whole translation; returns
/// how many were translated in part.
fn run(seed: u64, steps: usize) -> usize {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut conf = conf();
    if seed % 2 == 1 {
        // A global default backend: its pool is pinned, custom-http-errors use it, and a
        // change to its Service is translated whole.
        conf.default_backend = Some((
            ObjKey::new("shop", "s4"),
            crate::config::PortRef::Number(80),
        ));
    }
    let mut snap = Snapshot::default();
    for o in objects(BASE) {
        assert!(snap.insert(o));
    }
    for i in 0..5 {
        for o in objects(&service(i)) {
            assert!(snap.insert(o));
        }
    }
    let mut islands = Islands::default();
    let mut table: RouteTable<RouteSpec> = RouteTable::default();
    let mut whole_good = LastGood::default();
    let mut prev: Option<Snapshot> = None;
    let mut partial = 0;
    let mut service_edits = 0;
    for step in 0..steps {
        let next_yaml = if rng.u8(..100) < 12 {
            // A Service edit: another port (the Ingresses name port 80), an appProtocol,
            // or gone; s5 comes and goes.
            let i = rng.usize(..6);
            service_edits += 1;
            match rng.u8(..4) {
                0 => service(i).replace("port: 80", "port: 81"),
                1 => service(i).replace("port: 80", "port: 80, appProtocol: kubernetes.io/h2c"),
                _ => service(i),
            }
        } else {
            let name = format!("i{}", rng.usize(..10));
            random_ingress(&mut rng, &name)
        };
        let obj = objects(&next_yaml).remove(0);
        if rng.u8(..100) < 15 {
            snap.remove(&obj);
        } else {
            snap.upsert(obj);
        }
        let stepped = prev.as_ref().and_then(|p| islands.step(p, &snap, &conf));
        match stepped {
            Some(p) => {
                partial += 1;
                table.replace_hosts(&p.removed_hosts, p.removed_fallback, p.routes);
            }
            None => {
                let mut t = translate_with(&snap, &conf, islands.last_good());
                islands.rebuild(&snap, &mut t);
                table = t.routes;
            }
        }
        let mut whole = translate_with(&snap, &conf, &whole_good);
        whole_good = std::mem::take(&mut whole.accepted);
        let ctx = || format!("seed {seed} step {step}: after {next_yaml}");
        assert!(
            rows(&table) == rows(&whole.routes),
            "{}\npartial: {:#?}\nwhole: {:#?}",
            ctx(),
            rows(&table),
            rows(&whole.routes)
        );
        assert_eq!(
            sorted_diags(&islands.diagnostics()),
            sorted_diags(&whole.diagnostics),
            "{}",
            ctx()
        );
        assert_eq!(islands.tls(), whole.tls, "{}", ctx());
        assert_eq!(
            islands.client_auth_hosts(),
            whole.client_auth_hosts,
            "{}",
            ctx()
        );
        assert_eq!(islands.ours(), whole.ingresses, "{}", ctx());
        assert_eq!(
            islands.pools(),
            table_uses(&whole.routes, &whole.default_route)
                .0
                .into_iter()
                .collect::<BTreeSet<_>>(),
            "{}",
            ctx()
        );
        let kept: Vec<_> = islands.last_good().ingresses.iter().collect();
        let want: Vec<_> = whole_good.ingresses.iter().collect();
        assert_eq!(kept, want, "{}", ctx());
        prev = Some(snap.clone());
    }
    assert!(service_edits > 0, "seed {seed}: no Service was edited");
    partial
}

#[test]
fn partial_translation_matches_a_whole_translation_over_random_edits() {
    let mut partial = 0;
    let seeds: u64 = 40;
    let steps: usize = 60;
    for seed in 0..seeds {
        partial += run(seed, steps);
    }
    println!(
        "{partial} of {} edits translated in part",
        seeds as usize * steps
    );
    // Most edits must take the partial path, or this test checks nothing.
    assert!(
        partial * 2 > seeds as usize * steps,
        "only {partial} of {} edits were translated in part",
        seeds as usize * steps
    );
}

#[test]
fn an_edit_translates_only_its_island() {
    let conf = conf();
    let mut snap = Snapshot::default();
    for o in objects(BASE) {
        assert!(snap.insert(o));
    }
    let ing = |i: usize, host: &str| {
        format!("{}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i{i}, namespace: shop}}\nspec:\n  ingressClassName: pingress\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: s{i}, port: {{number: 80}}}}}}}}\n", service(i))
    };
    for i in 0..50 {
        for o in objects(&ing(i, &format!("h{i}.ex.com"))) {
            snap.upsert(o);
        }
    }
    let mut t = translate_with(&snap, &conf, &LastGood::default());
    let mut islands = Islands::default();
    islands.rebuild(&snap, &mut t);
    assert_eq!(islands.len(), 50);
    let prev = snap.clone();
    // i7 moves to i8's host: the two islands become one, translated together.
    for o in objects(&ing(7, "h8.ex.com")) {
        snap.upsert(o);
    }
    let p = islands
        .step(&prev, &snap, &conf)
        .expect("an Ingress edit is partial");
    assert_eq!(p.translated, 2);
    assert_eq!(islands.len(), 49);
    let mut removed = p.removed_hosts.clone();
    removed.sort();
    assert_eq!(
        removed,
        vec![
            HostMatch::Exact("h7.ex.com".into()),
            HostMatch::Exact("h8.ex.com".into())
        ]
    );
    // i7 is older by name (no creationTimestamp): it takes h8.ex.com/, so i8's Service s8
    // serves nothing any more.
    let dropped: Vec<&str> = p.dropped_pools.iter().map(|k| k.service.as_str()).collect();
    assert_eq!(dropped, ["s8"]);
    assert_eq!(
        p.routes.lookup("h8.ex.com", "/").map(|r| &r.backend),
        Some(&BackendSpec::Service(UpstreamKey {
            namespace: "shop".into(),
            service: "s7".into(),
            port_name: "http".into(),
            port: 80,
            cluster_ip: false,
        }))
    );

    // A Service change translates the Ingresses that send to it.
    let prev = snap.clone();
    for o in objects(&service(3).replace("port: 80", "port: 81")) {
        snap.upsert(o);
    }
    let p = islands
        .step(&prev, &snap, &conf)
        .expect("a Service edit is partial");
    assert_eq!(p.translated, 1);
    assert_eq!(p.removed_hosts, [HostMatch::Exact("h3.ex.com".into())]);
    assert_eq!(
        p.routes.lookup("h3.ex.com", "/").map(|r| &r.backend),
        Some(&BackendSpec::Unavailable {
            namespace: "shop".into(),
            service: "s3".into()
        })
    );
    let dropped: Vec<&str> = p.dropped_pools.iter().map(|k| k.service.as_str()).collect();
    assert_eq!(dropped, ["s3"]);

    // ... except the global default backend's Service: translated whole.
    let conf = TranslateConf {
        default_backend: Some((
            ObjKey::new("shop", "s4"),
            crate::config::PortRef::Number(80),
        )),
        ..conf
    };
    let mut t = translate_with(&snap, &conf, &LastGood::default());
    islands.rebuild(&snap, &mut t);
    let prev = snap.clone();
    for o in objects(&service(4).replace("port: 80", "port: 81")) {
        snap.upsert(o);
    }
    assert!(islands.step(&prev, &snap, &conf).is_none());
}
