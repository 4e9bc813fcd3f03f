//! The in-cluster source end to end: the real gateway binary and the real kube client and
//! watchers against the fake API server (tests/support/fake_api.rs), with real HTTP through
//! the gateway.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use support::fake_api::FakeApi;
use support::*;

const FAST_LEASE: &str = "  leader_election: {lease_duration_seconds: 2, renew_interval_ms: 300}\n  status: {addresses: [\"203.0.113.10\"]}\n";

/// Config for a replica with its own identity, a fast lease and a status address.
fn replica(id: &str) -> String {
    format!("  leader_election: {{identity: {id}, lease_duration_seconds: 2, renew_interval_ms: 300}}\n  status: {{addresses: [\"203.0.113.10\"]}}\n")
}

async fn site_on_api(api: &FakeApi, pods: &[std::net::SocketAddr]) {
    api.apply_yaml(&format!(
        "{CLASS}{}{}",
        service("shop", "web", &[("http", 80)]),
        ingress(
            "shop",
            "web",
            &[("k.example.com", "Prefix", "/", "web", "80")],
            None
        )
    ));
    api.apply_yaml(&slices("shop", "web", "http", pods));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_follows_objects_created_updated_and_deleted_on_the_api() {
    let api = FakeApi::start().await;
    let a = pod("a").await;
    let b = pod("b").await;
    site_on_api(&api, &[a]).await;
    let gw = Gateway::start_kube(&api, "t", FAST_LEASE).await;
    assert_eq!(gw.who("k.example.com", "/").await, "a");

    // Endpoints: a -> b.
    api.apply_yaml(&slices("shop", "web", "http", &[b]));
    gw.wait_for("k.example.com", "/", "b").await;

    // Ingress changed: new host.
    api.apply_yaml(&ingress(
        "shop",
        "web",
        &[("k2.example.com", "Prefix", "/", "web", "80")],
        None,
    ));
    gw.wait_for("k2.example.com", "/", "b").await;
    assert_eq!(gw.who("k.example.com", "/").await, "404");

    // Service port renamed: the route resolves no more (503), then back.
    api.apply_yaml(&service("shop", "web", &[("other", 81)]));
    gw.wait_for("k2.example.com", "/", "503").await;
    api.apply_yaml(&service("shop", "web", &[("http", 80)]));
    gw.wait_for("k2.example.com", "/", "b").await;

    // TLS Secrets are watched (only type kubernetes.io/tls) without disturbing routes.
    api.apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: cert, namespace: shop}\ntype: kubernetes.io/tls\ndata: {tls.crt: \"\", tls.key: \"\"}\n");
    api.delete("Secret", "shop", "cert");
    assert!(
        api.requests().iter().any(|r| r.path.ends_with("/secrets")),
        "secrets are listed"
    );

    // Deleted: 404.
    api.delete("Ingress", "shop", "web");
    gw.wait_for("k2.example.com", "/", "404").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_one_to_ten_pods_and_back_under_load_fails_nothing() {
    let api = FakeApi::start().await;
    let mut pods = Vec::new();
    for i in 0..10 {
        pods.push(pod(&format!("pod-{i}")).await);
    }
    site_on_api(&api, &pods[..1]).await;
    let gw = Arc::new(Gateway::start_kube(&api, "t", FAST_LEASE).await);
    let load = Load::start(gw.clone(), "k.example.com", "/", 6);
    for n in (2..=10).chain((1..10).rev()) {
        api.apply_yaml(&slices("shop", "web", "http", &pods[..n]));
        for gone in n..10 {
            api.delete("EndpointSlice", "shop", &format!("web-http-{gone}"));
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        if n == 10 {
            eventually("all ten pods serve", || async {
                (load.pods.lock().unwrap().len() == 10).then_some(())
            })
            .await;
        }
    }
    // Back to one: only pod-0 answers.
    gw.wait_only("k.example.com", "/", "pod-0").await;
    load.wait_more(200).await;
    let r = load.stop().await;
    eprintln!("scale test: ok {} failed {}", r.ok, r.failed);
    assert_eq!(r.failed, 0, "{:?}", r.first_failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_outage_keeps_serving_and_catches_up_after() {
    let api = FakeApi::start().await;
    let a = pod("a").await;
    let b = pod("b").await;
    site_on_api(&api, &[a]).await;
    api.apply_yaml(&ingress(
        "shop",
        "doomed",
        &[("doomed.example.com", "Prefix", "/", "web", "80")],
        None,
    ));
    let gw = Arc::new(Gateway::start_kube(&api, "t", FAST_LEASE).await);
    gw.wait_for("doomed.example.com", "/", "a").await;
    let load = Load::start(gw.clone(), "k.example.com", "/", 4);

    api.stop();
    // Changes made while the gateway cannot see them, including a deletion that history
    // will no longer hold (compaction forces a relist on reconnect).
    api.apply_yaml(&slices("shop", "web", "http", &[b]));
    api.delete("Ingress", "shop", "doomed");
    api.compact_and_drop_watches();
    load.wait_more(300).await;
    let ready = gw
        .client
        .get(format!("http://{}/readyz", gw.admin))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        ready, 200,
        "readiness stays true while the API server is away"
    );
    assert_eq!(
        gw.who("doomed.example.com", "/").await,
        "a",
        "last good state"
    );

    api.restart().await;
    gw.wait_for("k.example.com", "/", "b").await;
    gw.wait_for("doomed.example.com", "/", "404").await;
    let r = load.stop().await;
    eprintln!("outage test: ok {} failed {}", r.ok, r.failed);
    assert_eq!(r.failed, 0, "{:?}", r.first_failures);
    assert!(gw.metric("pingress_source_errors_total").await.unwrap() >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_resource_version_relists_without_dropping_a_route() {
    let api = FakeApi::start().await;
    let a = pod("a").await;
    site_on_api(&api, &[a]).await;
    let gw = Arc::new(Gateway::start_kube(&api, "t", FAST_LEASE).await);
    let load = Load::start(gw.clone(), "k.example.com", "/", 4);
    for i in 0..5 {
        api.compact_and_drop_watches();
        load.wait_more(100).await;
        // A change after each forced relist is still followed.
        api.apply_yaml(&ingress(
            "shop",
            "extra",
            &[(&format!("e{i}.example.com"), "Prefix", "/", "web", "80")],
            None,
        ));
        gw.wait_for(&format!("e{i}.example.com"), "/", "a").await;
    }
    let r = load.stop().await;
    assert_eq!(r.failed, 0, "{:?}", r.first_failures);
    let relists = api
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/ingresses"))
        .count();
    assert!(
        relists >= 6,
        "expected a relist per forced 410, saw {relists} lists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_status_and_events() {
    let api = FakeApi::start().await;
    let a = pod("a").await;
    site_on_api(&api, &[a]).await;
    api.apply_yaml(&ingress(
        "shop",
        "broken",
        &[("broken.example.com", "Prefix", "/", "ghost", "80")],
        None,
    ));
    let g1 = Gateway::start_kube(&api, "token-a", &replica("gw-a")).await;
    let g2 = Gateway::start_kube(&api, "token-b", &replica("gw-b")).await;
    // Both serve traffic.
    assert_eq!(g1.who("k.example.com", "/").await, "a");
    assert_eq!(g2.who("k.example.com", "/").await, "a");

    let status_of = |name: &str| {
        api.get("Ingress", "shop", name)
            .map(|i| i["status"]["loadBalancer"]["ingress"].clone())
            .unwrap_or_default()
    };
    eventually("status written", || async {
        (status_of("web") == serde_json::json!([{"ip": "203.0.113.10"}])).then_some(())
    })
    .await;
    eventually("event for the missing service", || async {
        api.list("Event")
            .into_iter()
            .find(|e| e["involvedObject"]["name"] == "broken" && e["reason"] == "ServiceNotFound")
    })
    .await;
    let holder = api.get("Lease", "default", "pingress-leader").unwrap()["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let holder_token = if holder == "gw-a" {
        "token-a"
    } else {
        "token-b"
    };
    assert!(holder == "gw-a" || holder == "gw-b", "{holder}");

    // Steady state: once the writes have settled (none for 1.5 s), none for 2 s more.
    let writes = |api: &FakeApi| -> Vec<_> {
        api.requests()
            .into_iter()
            .filter(|r| {
                (r.method == "PATCH" && r.path.ends_with("/status"))
                    || (r.method == "POST" && r.path.ends_with("/events"))
            })
            .collect()
    };
    let settled = eventually("status and event writes settle", || async {
        let before = writes(&api).len();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        (writes(&api).len() == before).then_some(before)
    })
    .await;
    // The quiet window itself: a steady state is the absence of writes over time.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(writes(&api).len(), settled, "no writes in a steady state");
    for w in writes(&api) {
        assert_eq!(
            w.token, holder_token,
            "{w:?} not written by the leader {holder}"
        );
    }
    let events = api.list("Event").len();
    assert_eq!(events, 1, "one event, not one per resync");

    // An Ingress that leaves our class gets its status cleared.
    api.apply_yaml(
        &ingress(
            "shop",
            "web",
            &[("k.example.com", "Prefix", "/", "web", "80")],
            None,
        )
        .replace(
            "ingressClassName: pingress",
            "ingressClassName: someone-else",
        ),
    );
    eventually("status cleared", || async {
        status_of("web").is_null().then_some(())
    })
    .await;

    // The leader goes away: the other replica takes over the lease.
    let mut replicas = vec![g1, g2];
    let (leader, survivor_id) = if holder == "gw-a" {
        (replicas.remove(0), "gw-b")
    } else {
        (replicas.remove(1), "gw-a")
    };
    drop(leader);
    eventually("the surviving replica takes the lease", || async {
        let l = api.get("Lease", "default", "pingress-leader")?;
        (l["spec"]["holderIdentity"] == survivor_id).then_some(())
    })
    .await;
    assert_eq!(
        replicas[0].who("k.example.com", "/").await,
        "404",
        "web left our class"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_after_every_initial_list() {
    let api = FakeApi::start().await;
    let a = pod("a").await;
    site_on_api(&api, &[a]).await;
    api.stop();
    let gw = Gateway::start_kube_unready(&api, "t", FAST_LEASE).await;
    // The admin port answers, but nothing has been listed yet.
    for _ in 0..10 {
        assert_eq!(gw.readyz().await, 503);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.who("k.example.com", "/").await, "404");
    api.restart().await;
    eventually("ready", || async {
        (gw.readyz().await == 200).then_some(())
    })
    .await;
    assert_eq!(gw.who("k.example.com", "/").await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_scoping_watches_only_the_listed_namespaces() {
    let api = FakeApi::start().await;
    let a = pod("a").await;
    site_on_api(&api, &[a]).await;
    api.apply_yaml(&format!(
        "{}{}{}",
        service("other", "web", &[("http", 80)]),
        slices("other", "web", "http", &[a]),
        ingress(
            "other",
            "web",
            &[("o.example.com", "Prefix", "/", "web", "80")],
            None
        )
    ));
    let gw = Gateway::start_kube_scoped(&api, FAST_LEASE, "shop").await;
    assert_eq!(gw.who("k.example.com", "/").await, "a");
    assert_eq!(
        gw.who("o.example.com", "/").await,
        "404",
        "namespace other is not watched"
    );
    // No cluster-wide watch of namespaced kinds: every Secret request is namespaced.
    let secrets: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("secrets"))
        .collect();
    assert!(!secrets.is_empty());
    assert!(
        secrets
            .iter()
            .all(|r| r.path.starts_with("/api/v1/namespaces/shop/secrets")),
        "{secrets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_can_publish_the_address_of_a_named_service() {
    let api = FakeApi::start().await;
    let a = pod("a").await;
    site_on_api(&api, &[a]).await;
    api.apply_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: edge, namespace: infra}\nspec:\n  type: LoadBalancer\n  ports: [{port: 80}]\nstatus:\n  loadBalancer:\n    ingress: [{hostname: lb.example.net}]\n",
    );
    let _gw = Gateway::start_kube(
        &api,
        "t",
        "  leader_election: {lease_duration_seconds: 2, renew_interval_ms: 300}\n  status: {service: infra/edge}\n",
    )
    .await;
    eventually("status from the Service", || async {
        let s = api.get("Ingress", "shop", "web")?["status"]["loadBalancer"]["ingress"].clone();
        (s == serde_json::json!([{"hostname": "lb.example.net"}])).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secrets_from_the_api_are_served_rotated_and_kept_when_deleted() {
    use support::tls::{served_subject, tls_ingress, tls_secret, Ca};
    let api = FakeApi::start().await;
    let a = pod("a").await;
    let ca = Ca::new();
    let gen1 = ca.issue(&["k.example.com"], "gen-1");
    let gen2 = ca.issue(&["k.example.com"], "gen-2");
    api.apply_yaml(&format!(
        "{CLASS}{}{}{}",
        service("shop", "web", &[("http", 80)]),
        tls_secret("shop", "k-cert", &gen1),
        tls_ingress(
            "shop",
            "web",
            &[],
            &[("k-cert", &["k.example.com"])],
            &["k.example.com"],
            "web",
            "80"
        ),
    ));
    api.apply_yaml(&slices("shop", "web", "http", &[a]));
    let gw = Gateway::start_kube(&api, "t", FAST_LEASE).await;
    assert!(served_subject(gw.https, Some("k.example.com")).contains("O=gen-1"));
    assert_eq!(gw.who("k.example.com", "/").await, "308");
    assert_eq!(gw.who_https("k.example.com", "/").await, "a");

    // Rotation through a watch event.
    api.apply_yaml(&tls_secret("shop", "k-cert", &gen2));
    eventually("rotated certificate served", || async {
        served_subject(gw.https, Some("k.example.com"))
            .contains("O=gen-2")
            .then_some(())
    })
    .await;

    // Deleted: diagnostic and a Warning Event on the Ingress; gen-2 stays in service.
    api.delete("Secret", "shop", "k-cert");
    eventually("tls_secret Event", || async {
        api.list("Event")
            .iter()
            .any(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("secret shop/k-cert not found"))
            })
            .then_some(())
    })
    .await;
    assert!(served_subject(gw.https, Some("k.example.com")).contains("O=gen-2"));
    assert_eq!(gw.who_https("k.example.com", "/").await, "a");
}

const GATEWAY_API: &str = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: pingress}\nspec: {controllerName: pingress.dev/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: shop}\nspec:\n  gatewayClassName: pingress\n  listeners: [{name: http, protocol: HTTP, port: 80}]\n";

fn http_route(name: &str, host: &str, filter_type: &str) -> String {
    format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{host}]\n  rules:\n  - filters: [{{type: {filter_type}, requestHeaderModifier: {{set: [{{name: x-route, value: {name}}}]}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n")
}

/// HTTPRoutes from the API are served; one that does not decode into the standard types (an
/// experimental filter type) is reported alone and keeps its last good version, without
/// stalling the watch for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_routes_from_the_api_and_one_undecodable_route_alone() {
    let api = FakeApi::start().await;
    let a = pod("a").await;
    api.apply_yaml(&format!(
        "{GATEWAY_API}{}{}{}",
        service("shop", "web", &[("http", 80)]),
        http_route("one", "one.example.com", "RequestHeaderModifier"),
        http_route("two", "two.example.com", "RequestHeaderModifier"),
    ));
    api.apply_yaml(&slices("shop", "web", "http", &[a]));
    let gw = Gateway::start_kube(&api, "t", FAST_LEASE).await;
    gw.wait_for("one.example.com", "/", "a").await;
    assert_eq!(
        gw.echo("two.example.com", "/")
            .await
            .headers
            .get("x-route")
            .map(String::as_str),
        Some("two")
    );
    // `two` turns into something the standard types cannot read, and a third route is
    // added after it: `two` keeps its last good version, `three` is served.
    api.apply_yaml(&http_route("two", "two.example.com", "ExternalAuth"));
    api.apply_yaml(&http_route(
        "three",
        "three.example.com",
        "RequestHeaderModifier",
    ));
    gw.wait_for("three.example.com", "/", "a").await;
    assert_eq!(gw.who("two.example.com", "/").await, "a");
    eventually("the undecodable route is logged", || async {
        let e = gw.stderr();
        (e.contains("does not decode") && e.contains("shop/two")).then_some(())
    })
    .await;
}

/// Without the Gateway API CRDs (their lists answer 404) the gateway still becomes ready
/// and serves Ingresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_gateway_api_crds_ingress_is_served() {
    let api = FakeApi::start().await;
    for kind in [
        "GatewayClass",
        "Gateway",
        "HTTPRoute",
        "GRPCRoute",
        "ReferenceGrant",
    ] {
        api.hide(kind);
    }
    let a = pod("a").await;
    site_on_api(&api, &[a]).await;
    let gw = Gateway::start_kube(&api, "t", FAST_LEASE).await;
    gw.wait_for("k.example.com", "/", "a").await;
    assert!(gw.stderr().contains("CRD not installed"), "{}", gw.stderr());
}

/// The leader writes Gateway API status: the GatewayClass, the Gateway (conditions with
/// observedGeneration, listeners, addresses) and the route's parent entry next to another
/// controller's, which stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_writes_gateway_api_status_next_to_other_controllers() {
    let api = FakeApi::start().await;
    let a = pod("a").await;
    let route = http_route("one", "one.example.com", "RequestHeaderModifier").replace(
        "metadata: {name: one, namespace: shop}",
        "metadata: {name: one, namespace: shop, generation: 4}",
    );
    let route = format!("{route}status:\n  parents:\n  - parentRef: {{name: elsewhere}}\n    controllerName: example.com/other\n    conditions: []\n");
    api.apply_yaml(&format!(
        "{GATEWAY_API}{}{route}",
        service("shop", "web", &[("http", 80)])
    ));
    api.apply_yaml(&slices("shop", "web", "http", &[a]));
    let _gw = Gateway::start_kube(&api, "t", FAST_LEASE).await;
    let parents = eventually("the route's status has our parent entry", || async {
        let r = api.get("HTTPRoute", "shop", "one")?;
        let parents = r["status"]["parents"].as_array()?.clone();
        (parents.len() == 2).then_some(parents)
    })
    .await;
    assert_eq!(parents[0]["controllerName"], "example.com/other");
    assert_eq!(
        parents[1]["controllerName"],
        "pingress.dev/gateway-controller"
    );
    let accepted = parents[1]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .unwrap()
        .clone();
    assert_eq!(accepted["status"], "True");
    assert_eq!(accepted["observedGeneration"], 4);
    let gw = eventually("the Gateway's status is written", || async {
        let g = api.get("Gateway", "shop", "gw")?;
        g["status"]["listeners"].is_array().then_some(g)
    })
    .await;
    assert_eq!(gw["status"]["addresses"][0]["value"], "203.0.113.10");
    assert_eq!(gw["status"]["listeners"][0]["attachedRoutes"], 1);
    assert_eq!(gw["status"]["conditions"][1]["type"], "Programmed");
    let class = api.get("GatewayClass", "", "pingress").unwrap();
    assert_eq!(class["status"]["conditions"][0]["reason"], "Accepted");

    // *ObservedGenerationBump, GatewayModifyListeners: after edits (the API server bumps
    // metadata.generation; the fake one takes it as given) every condition carries the new
    // generation, and the Gateway's second listener appears in its status.
    let edited = route.replace("generation: 4}", "generation: 5}").replace(
        "backendRefs: [{name: web, port: 80}]",
        "backendRefs: [{name: gone, port: 80}]",
    );
    api.apply_yaml(&edited);
    api.apply_yaml(
        &GATEWAY_API
            .replace("metadata: {name: gw, namespace: shop}", "metadata: {name: gw, namespace: shop, generation: 2}")
            .replace(
                "listeners: [{name: http, protocol: HTTP, port: 80}]",
                "listeners: [{name: http, protocol: HTTP, port: 80}, {name: other, protocol: HTTP, port: 80, hostname: other.example.com}]",
            )
            .replace("metadata: {name: pingress}", "metadata: {name: pingress, generation: 3}"),
    );
    let conds = |obj: &serde_json::Value, path: &[&str]| -> Vec<serde_json::Value> {
        let mut v = obj;
        for p in path {
            v = match p.parse::<usize>() {
                Ok(i) => &v[i],
                Err(_) => &v[*p],
            };
        }
        v.as_array().cloned().unwrap_or_default()
    };
    let route_conds = eventually("the route's conditions follow generation 5", || async {
        let r = api.get("HTTPRoute", "shop", "one")?;
        let parents = r["status"]["parents"].as_array()?.clone();
        let ours = parents
            .iter()
            .find(|p| p["controllerName"] == "pingress.dev/gateway-controller")?;
        let c = conds(ours, &["conditions"]);
        c.iter().all(|c| c["observedGeneration"] == 5).then_some(c)
    })
    .await;
    let resolved = route_conds
        .iter()
        .find(|c| c["type"] == "ResolvedRefs")
        .unwrap();
    assert_eq!(
        (&resolved["status"], &resolved["reason"]),
        (
            &serde_json::json!("False"),
            &serde_json::json!("BackendNotFound")
        )
    );
    let gw = eventually("the Gateway's conditions follow generation 2", || async {
        let g = api.get("Gateway", "shop", "gw")?;
        let ok = conds(&g, &["status", "conditions"])
            .iter()
            .all(|c| c["observedGeneration"] == 2)
            && conds(&g, &["status", "listeners"]).len() == 2;
        ok.then_some(g)
    })
    .await;
    let names: Vec<&str> = gw["status"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["http", "other"]);
    for l in gw["status"]["listeners"].as_array().unwrap() {
        assert!(
            conds(l, &["conditions"])
                .iter()
                .all(|c| c["observedGeneration"] == 2),
            "{l}"
        );
    }
    eventually("the GatewayClass follows generation 3", || async {
        let c = api.get("GatewayClass", "", "pingress")?;
        (c["status"]["conditions"][0]["observedGeneration"] == 3).then_some(())
    })
    .await;
}
