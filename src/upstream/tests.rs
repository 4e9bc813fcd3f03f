use super::*;
use crate::source::files::parse_manifests;
use crate::source::Object;

fn key(port_name: &str) -> UpstreamKey {
    UpstreamKey {
        namespace: "shop".into(),
        service: "web".into(),
        port_name: port_name.into(),
        port: 80,
        cluster_ip: false,
    }
}

fn snap(yaml: &str) -> Snapshot {
    let mut s = Snapshot::default();
    for o in parse_manifests(yaml, "t").unwrap().objects {
        assert!(matches!(o, Object::EndpointSlice(_)));
        s.insert(o);
    }
    s
}

const SLICES: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080}
- {name: admin, port: 9000}
endpoints:
- addresses: ["10.0.0.1"]
  conditions: {ready: true}
- addresses: ["10.0.0.2"]
  conditions: {ready: false}
- addresses: ["10.0.0.3"]
  conditions: {ready: true, terminating: true}
- addresses: ["10.0.0.4"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-2
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080}
endpoints:
- addresses: ["10.0.0.5"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: other
  namespace: shop
  labels: {kubernetes.io/service-name: other}
addressType: IPv4
ports:
- {name: http, port: 7000}
endpoints:
- addresses: ["10.9.9.9"]
"#;

fn addrs(list: &[&str]) -> BTreeSet<SocketAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn ready_endpoints_of_all_slices_with_the_named_port() {
    let s = snap(SLICES);
    let slices = &s.slices_of("shop", "web");
    assert_eq!(
        endpoints_for(slices, &key("http")),
        addrs(&["10.0.0.1:8080", "10.0.0.4:8080", "10.0.0.5:8080"])
    );
    assert_eq!(
        endpoints_for(slices, &key("admin")),
        addrs(&["10.0.0.1:9000", "10.0.0.4:9000"])
    );
    assert!(endpoints_for(slices, &key("")).is_empty());
}

#[test]
fn round_robin_visits_every_endpoint_evenly() {
    let p = Pool::new(key("http"), None);
    assert!(p.select(&[]).is_none());
    assert!(p.set_endpoints(addrs(&["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"])));
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for _ in 0..300 {
        *counts.entry(p.select(&[]).unwrap()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&c| c == 100), "{counts:?}");
}

#[test]
fn select_skips_tried_endpoints() {
    let p = Pool::new(key("http"), None);
    p.set_endpoints(addrs(&["10.0.0.1:1", "10.0.0.2:1"]));
    let first = p.select(&[]).unwrap();
    for _ in 0..10 {
        let second = p.select(&[first]).unwrap();
        assert_ne!(first, second);
    }
    let all: Vec<_> = p.endpoints().into_iter().collect();
    assert!(p.select(&all).is_none());
}

#[test]
fn set_endpoints_reports_changes_only() {
    let p = Pool::new(key("http"), None);
    assert!(!p.set_endpoints(BTreeSet::new()));
    assert!(p.set_endpoints(addrs(&["10.0.0.1:1"])));
    assert!(!p.set_endpoints(addrs(&["10.0.0.1:1"])));
    assert_eq!(p.len(), 1);
}

#[test]
fn registry_refreshes_and_drops_unused_pools() {
    let mut u = Upstreams::new(None);
    let a = u.pool(&key("http"));
    let b = u.pool(&key("http"));
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(u.refresh(&snap(SLICES)), 1);
    assert_eq!(a.len(), 3);
    assert_eq!(u.refresh(&snap(SLICES)), 0);
    u.retain(&HashSet::new());
    assert!(u.is_empty());
    assert_eq!(a.len(), 3, "in-flight holders keep a working pool");
}

/// SLICES, and the same again for a Service `api` (its first slice renamed `api-1`; the
/// second copies keep their names, so the first definitions win).
fn web_and_api_slices() -> String {
    format!(
        "{SLICES}---\n{}",
        SLICES
            .replace("name: web-1", "name: api-1")
            .replace("service-name: web", "service-name: api")
    )
}

#[test]
fn refreshing_named_services_touches_only_their_pools() {
    let mut u = Upstreams::new(None);
    let web = u.pool(&key("http"));
    let api = u.pool(&UpstreamKey {
        service: "api".into(),
        ..key("http")
    });
    let both = web_and_api_slices();
    let only_web: BTreeSet<(String, String)> = [("shop".to_string(), "web".to_string())].into();
    assert_eq!(u.refresh_services(&snap(&both), &only_web), 1);
    assert_eq!((web.len(), api.len()), (3, 0), "api's slices are not read");
    let only_api: BTreeSet<(String, String)> = [("shop".to_string(), "api".to_string())].into();
    assert_eq!(u.refresh_services(&snap(&both), &only_api), 1);
    // The same endpoints as a full refresh finds for api.
    let mut full = Upstreams::new(None);
    let api_full = full.pool(&UpstreamKey {
        service: "api".into(),
        ..key("http")
    });
    full.refresh(&snap(&both));
    assert!(!api.is_empty());
    assert_eq!(api.len(), api_full.len());
    assert_eq!(u.refresh_services(&snap(&both), &BTreeSet::new()), 0);
}

#[test]
fn a_new_generation_refreshes_new_pools_and_changed_services_only() {
    let api_key = UpstreamKey {
        service: "api".into(),
        ..key("http")
    };
    let both = web_and_api_slices();
    let s = snap(&both);
    let mut u = Upstreams::new(None);
    let web = u.pool(&key("http"));
    // Both pools are new: both get their endpoints though no Service is named.
    assert_eq!(u.refresh_changed(&s, Some(&BTreeSet::new())), 1);
    assert_eq!(web.len(), 3);
    let api = u.pool(&api_key);
    assert_eq!(u.refresh_changed(&s, Some(&BTreeSet::new())), 1);
    assert_eq!(api.len(), 2);
    // Not new and not named: left as they are even when the snapshot says otherwise.
    let empty = Snapshot::default();
    assert_eq!(u.refresh_changed(&empty, Some(&BTreeSet::new())), 0);
    assert_eq!((api.len(), web.len()), (2, 3));
    // Named: recomputed (the empty snapshot has no slices for api).
    let named: BTreeSet<(String, String)> = [("shop".to_string(), "api".to_string())].into();
    assert_eq!(u.refresh_changed(&empty, Some(&named)), 1);
    assert_eq!((api.len(), web.len()), (0, 3));
    // None: every pool.
    assert_eq!(u.refresh_changed(&Snapshot::default(), None), 1);
    assert_eq!(web.len(), 0);
}
