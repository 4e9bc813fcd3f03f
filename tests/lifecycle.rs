//! Process lifecycle under load: SIGTERM drains and exits 0; a graceful upgrade (`-u` and
//! SIGQUIT) hands the listening sockets to a new process. Requests in flight, and requests
//! sent while sockets are handed over, must not fail.

use crate::support;

use std::sync::Arc;

use support::*;

/// GET `path` on life.example.com from a client of its own, so on a connection of its own
/// (one that a slow or held answer keeps busy without holding up the load's connections).
async fn own_connection_get(gw: &Gateway, path: &str) -> reqwest::Result<(u16, String)> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .get(format!("http://{}{path}", gw.http))
        .header("host", "life.example.com")
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_then_exits_zero() {
    let held = HeldPod::start().await;
    let gw = Gateway::start(&[("site.yaml", site("web", "life.example.com", &[held.addr]))]).await;
    let gw = Arc::new(gw);
    let load = Load::start(gw.clone(), "life.example.com", "/", 4);
    load.wait_more(200).await;
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { own_connection_get(&gw, "/hold").await })
        })
        .collect();
    held.wait_arrived(3).await;
    // No new requests after the signal; those already sent must complete.
    let stopping = tokio::spawn(load.stop());
    gw.signal("TERM");
    // The three held requests are still open when the gateway is already shutting down.
    eventually("/readyz no longer 200 after SIGTERM", || async {
        (gw.readyz().await != 200).then_some(())
    })
    .await;
    held.release();
    let r = stopping.await.unwrap();
    assert_eq!(r.failed, 0, "{:?}", r.first_failures);
    for r in requests {
        let (status, body) = r.await.unwrap().expect("held request completes");
        assert_eq!((status, body.as_str()), (200, "released"));
    }
    // Not ready any more, and new connections are refused soon.
    eventually("listener closed", || async {
        gw.get("life.example.com", "/").await.is_err().then_some(())
    })
    .await;
    let mut gw = Arc::into_inner(gw).expect("only owner");
    assert_eq!(gw.wait_exit().await, Some(0), "{}", gw.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_hands_over_sockets_without_failing_requests() {
    let web = pod("web").await;
    let gw =
        Arc::new(Gateway::start(&[("site.yaml", site("web", "life.example.com", &[web]))]).await);
    let old_pid = gw.pid();
    let load = Load::start(gw.clone(), "life.example.com", "/", 4);
    load.wait_more(200).await;

    let mut new = gw.spawn_upgrade();
    // The new process listens on the upgrade socket before it is told to take over (the old
    // one would retry for a few seconds, but the test should not lean on that).
    let sock = gw.dir.path().join("upgrade.sock");
    eventually("the new process listens on upgrade_sock", || async {
        sock.exists().then_some(())
    })
    .await;
    gw.signal("QUIT");
    let slow = {
        let gw = gw.clone();
        tokio::spawn(async move { own_connection_get(&gw, "/slow?delay_ms=500").await })
    };
    // The old process hands over, keeps serving through its close timeout and grace
    // period, then exits; meanwhile and afterwards the load goes on.
    eventually("old process exits", || async {
        (!alive(old_pid)).then_some(())
    })
    .await;
    load.wait_more(200).await;
    assert_eq!(
        gw.readyz().await,
        200,
        "the new process serves the admin port too"
    );
    let r = load.stop().await;
    eprintln!("upgrade: ok {} failed {}", r.ok, r.failed);
    assert_eq!(r.failed, 0, "{:?}", r.first_failures);
    let (status, _) = slow.await.unwrap().expect("slow request completes");
    assert_eq!(status, 200);
    let mut old = Arc::into_inner(gw).expect("only owner");
    assert_eq!(old.wait_exit().await, Some(0), "{}", old.stderr());
    assert!(
        new.try_wait().unwrap().is_none(),
        "the new process keeps running"
    );
    let _ = new.kill();
    let _ = new.wait();
}

/// Whether a process runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Run by hand with the built-in defaults (no config file), SIGTERM stops the gateway in
/// seconds, not after Pingora's own 300 s grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_built_in_defaults_exits_in_seconds() {
    let pod_addr = pod("web").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("site.yaml"),
        site("web", "byhand.example.com", &[pod_addr]),
    )
    .unwrap();
    let (http, https, admin) = (free_port(), free_port(), free_port());
    let mut child = std::process::Command::new(bin())
        .arg("--manifests")
        .arg(dir.path())
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--https-listen", &format!("127.0.0.1:{https}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--debug-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--no-access-log")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually("served", || async {
        let r = client
            .get(format!("http://127.0.0.1:{http}/"))
            .header("host", "byhand.example.com")
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let pid = child.id();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    // Generous for a loaded machine, and far below 300 s: grace 2 s + shutdown up to 5 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 60 s after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");
}
