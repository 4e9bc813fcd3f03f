//! Live changes: editing the manifests directory of a running gateway changes routing and
//! endpoints without a restart, a broken file keeps the last good state, and a steady load
//! across many changes sees no failed request.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use support::*;

fn web_service() -> String {
    format!("{CLASS}{}", service("live", "web", &[("http", 80)]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_added_changed_and_removed_without_restart() {
    let a = pod("a").await;
    let b = pod("b").await;
    let base = format!(
        "{}{}{}{}",
        web_service(),
        service("live", "other", &[("http", 80)]),
        slices("live", "web", "http", &[a]),
        slices("live", "other", "http", &[b]),
    );
    let gw = Gateway::start(&[("base.yaml", base)]).await;
    assert_eq!(gw.who("new.example.com", "/").await, "404");

    gw.write(
        "ing.yaml",
        &ingress(
            "live",
            "ing",
            &[("new.example.com", "Prefix", "/", "web", "80")],
            None,
        ),
    );
    gw.wait_for("new.example.com", "/", "a").await;

    gw.write(
        "ing.yaml",
        &ingress(
            "live",
            "ing",
            &[("new.example.com", "Prefix", "/", "other", "http")],
            None,
        ),
    );
    gw.wait_for("new.example.com", "/", "b").await;

    gw.write(
        "ing.yaml",
        &ingress(
            "live",
            "ing",
            &[
                ("new.example.com", "Prefix", "/", "other", "http"),
                ("new.example.com", "Exact", "/only-a", "web", "http"),
            ],
            None,
        ),
    );
    gw.wait_for("new.example.com", "/only-a", "a").await;
    assert_eq!(gw.who("new.example.com", "/only-a/x").await, "b");

    gw.remove("ing.yaml");
    gw.wait_for("new.example.com", "/", "404").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_swap_pools_without_a_new_generation() {
    let p1 = pod("p1").await;
    let p2 = pod("p2").await;
    let gw = Gateway::start(&[
        (
            "svc.yaml",
            format!(
                "{}{}",
                web_service(),
                ingress(
                    "live",
                    "web",
                    &[("e.example.com", "Prefix", "/", "web", "80")],
                    None
                )
            ),
        ),
        ("eps.yaml", slices("live", "web", "http", &[p1])),
    ])
    .await;
    assert_eq!(gw.who("e.example.com", "/").await, "p1");
    let generations = gw
        .metric("pingress_generations_applied_total")
        .await
        .unwrap();

    // Scale up: p2 starts receiving traffic.
    gw.write("eps.yaml", &slices("live", "web", "http", &[p1, p2]));
    gw.wait_for("e.example.com", "/", "p2").await;

    // Scale to p2 only: p1 stops receiving traffic.
    gw.write("eps.yaml", &slices("live", "web", "http", &[p2]));
    gw.wait_only("e.example.com", "/", "p2").await;

    // p2 not ready: no endpoints left, 503.
    gw.write(
        "eps.yaml",
        &slices_with("live", "web", "http", &[p2], &[p2]),
    );
    gw.wait_for("e.example.com", "/", "503").await;

    assert_eq!(
        gw.metric("pingress_generations_applied_total").await,
        Some(generations),
        "endpoint-only changes must not re-translate routes"
    );
    assert!(gw.metric("pingress_endpoint_updates_total").await.unwrap() >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_manifest_keeps_last_good_state_and_is_reported() {
    let a = pod("a").await;
    let good = format!(
        "{}{}{}",
        web_service(),
        slices("live", "web", "http", &[a]),
        ingress(
            "live",
            "web",
            &[("b.example.com", "Prefix", "/", "web", "80")],
            None
        )
    );
    let gw = Gateway::start(&[("app.yaml", good.clone())]).await;
    assert_eq!(gw.who("b.example.com", "/").await, "a");

    // Line 6 of the new text has a value of the wrong type.
    gw.write(
        "app.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports: 80\n",
    );
    eventually("broken file reported", || async {
        (gw.metric("pingress_manifest_files_invalid").await == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(
        gw.who("b.example.com", "/").await,
        "a",
        "last good state stays"
    );
    let stderr = gw.stderr();
    assert!(
        stderr.contains("app.yaml:6") && stderr.contains("Service web"),
        "error names file and line: {stderr}"
    );

    // Another file keeps working meanwhile.
    gw.write(
        "more.yaml",
        &ingress(
            "live",
            "more",
            &[("m.example.com", "Prefix", "/", "web", "80")],
            None,
        ),
    );
    gw.wait_for("m.example.com", "/", "a").await;

    // Fixed: the file is read again.
    gw.write("app.yaml", &good.replace("b.example.com", "c.example.com"));
    gw.wait_for("c.example.com", "/", "a").await;
    assert_eq!(gw.who("b.example.com", "/").await, "404");
    assert_eq!(
        gw.metric("pingress_manifest_files_invalid").await,
        Some(0.0)
    );
}

/// At least 2,000 requests across 50 route and endpoint changes: none may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_across_fifty_changes_sees_no_failures() {
    let p0 = pod("p0").await;
    let p1 = pod("p1").await;
    let p2 = pod("p2").await;
    let alt = pod("alt").await;
    let main_ing = |extra: usize| {
        let extra_path = format!("/extra-{extra}");
        ingress(
            "live",
            "main",
            &[
                ("load.example.com", "Prefix", "/", "web", "80"),
                ("load.example.com", "Prefix", &extra_path, "alt", "http"),
            ],
            None,
        )
    };
    let gw = Arc::new(
        Gateway::start(&[
            (
                "svc.yaml",
                format!(
                    "{}{}{}",
                    web_service(),
                    service("live", "alt", &[("http", 80)]),
                    slices("live", "alt", "http", &[alt])
                ),
            ),
            ("eps.yaml", slices("live", "web", "http", &[p0, p1])),
            ("main.yaml", main_ing(0)),
        ])
        .await,
    );
    assert_eq!(gw.get("load.example.com", "/").await.unwrap().0, 200);

    let load = Load::start(gw.clone(), "load.example.com", "/item", 8);
    for i in 1..=50 {
        match i % 3 {
            0 => gw.write("eps.yaml", &slices("live", "web", "http", &[p0, p1, p2])),
            1 => gw.write("eps.yaml", &slices("live", "web", "http", &[p0, p1])),
            _ => gw.write("main.yaml", &main_ing(i)),
        }
        if i % 5 == 0 {
            gw.write(
                "other.yaml",
                &ingress(
                    "live",
                    &format!("other-{i}"),
                    &[("other.example.com", "Prefix", "/", "web", "80")],
                    None,
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // Keep the load going until at least 2,000 requests went through.
    eventually("2,000 requests", || async {
        (load.count() >= 2000).then_some(())
    })
    .await;
    let saw_p2 = load.pods.lock().unwrap().contains("p2");
    let r = load.stop().await;
    eprintln!("requests ok: {}, failed: {}", r.ok, r.failed);
    assert_eq!(r.failed, 0, "failed requests: {:?}", r.first_failures);
    assert!(r.ok >= 2000, "only {} requests", r.ok);
    assert!(saw_p2, "endpoint changes took effect under load");
    gw.wait_for("load.example.com", "/extra-50", "alt").await;
    assert_ne!(
        gw.who("load.example.com", "/extra-49").await,
        "alt",
        "the replaced path no longer routes to alt"
    );
}
