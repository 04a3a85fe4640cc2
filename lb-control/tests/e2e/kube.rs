//! The Kubernetes API server source against the stand-in API server
//! (`support::kube_api`): initial sync before readiness, events to traffic,
//! resume after a dropped watch, relist after 410 Gone, and serving the last
//! snapshot while the API server is down.

use std::time::{Duration, Instant};

use bench::echo::EchoServer;

use crate::support::kube_api::KubeApi;
use crate::support::{Lb, admin_get, ingress_named, service_yaml};

/// Waits until `host` is served by the echo backend named `want`.
fn wait_backend(lb: &Lb, host: &str, want: &str, limit: Duration) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        if let Ok(mut c) = crate::support::Client::try_connect(lb.http) {
            let r = c.get(host, "/");
            if r.status == 200 && r.backend() == want {
                return;
            }
            last = format!("{} {}", r.status, r.backend());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{host} not served by {want} within {limit:?} (last: {last}); log:\n{}",
        lb.log_text()
    );
}

fn two_backends(api: &KubeApi) -> (EchoServer, EchoServer) {
    let a = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").expect("echo");
    let b = EchoServer::start("127.0.0.1:0".parse().unwrap(), "b").expect("echo");
    api.apply_yaml(&service_yaml(
        "default",
        "svc-a",
        80,
        None,
        &[a.local_addr()],
    ));
    api.apply_yaml(&service_yaml(
        "default",
        "svc-b",
        80,
        None,
        &[b.local_addr()],
    ));
    (a, b)
}

#[test]
fn initial_sync_then_readiness_then_traffic() {
    let api = KubeApi::start();
    api.set_down(true);
    let (_a, _b) = two_backends(&api);
    api.apply_yaml(&ingress_named("web", "kube.test", "svc-a"));
    let mut lb = Lb::on_api_unready("kube-sync", &api, "");
    // The API server does not answer: not ready.
    std::thread::sleep(Duration::from_millis(800));
    let start = Instant::now();
    while admin_get(lb.admin, "/readyz").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "admin API not up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(admin_get(lb.admin, "/readyz").unwrap().status, 503);
    api.set_down(false);
    lb.wait_ready(Duration::from_secs(20));
    let lists: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET ") && !r.contains("watch="))
        .collect();
    for plural in ["/services", "/endpointslices", "/ingresses", "/httproutes"] {
        assert!(
            lists.iter().any(|r| r.contains(plural)),
            "no list of {plural}: {lists:?}"
        );
    }
    // Ready means the API's Ingress is already served.
    assert_eq!(lb.get("kube.test", "/").backend(), "a");
    assert_eq!(lb.metric("lb_source_kubernetes_up"), 1);
}

#[test]
fn an_event_changes_served_traffic() {
    let api = KubeApi::start();
    let (_a, _b) = two_backends(&api);
    api.apply_yaml(&ingress_named("web", "kube.test", "svc-a"));
    let mut lb = Lb::on_api_unready("kube-event", &api, "");
    lb.wait_ready(Duration::from_secs(20));
    assert_eq!(lb.get("kube.test", "/").backend(), "a");
    api.apply_yaml(&ingress_named("web", "kube.test", "svc-b"));
    wait_backend(&lb, "kube.test", "b", Duration::from_secs(10));
    api.apply_yaml(&ingress_named("other", "other.test", "svc-a"));
    wait_backend(&lb, "other.test", "a", Duration::from_secs(10));
    api.delete("Ingress", Some("default"), "other");
    let start = Instant::now();
    while lb.get("other.test", "/").status == 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "deleted Ingress still served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(lb.metric("lb_source_kubernetes_events_total") >= 3);
    // Event-to-traffic of the API changes, for the record (`--nocapture`).
    let m = admin_get(lb.admin, "/metrics").expect("metrics").text();
    for line in m
        .lines()
        .filter(|l| l.starts_with("lb_event_to_traffic_seconds"))
    {
        eprintln!("kube event-to-traffic: {line}");
    }
}

#[test]
fn a_dropped_watch_resumes_from_the_last_resource_version() {
    let api = KubeApi::start();
    let (_a, _b) = two_backends(&api);
    api.apply_yaml(&ingress_named("web", "kube.test", "svc-a"));
    let mut lb = Lb::on_api_unready("kube-resume", &api, "");
    lb.wait_ready(Duration::from_secs(20));
    let rv = api.resource_version();
    let lists_before = lists(&api);
    api.drop_watches();
    api.apply_yaml(&ingress_named("web", "kube.test", "svc-b"));
    wait_backend(&lb, "kube.test", "b", Duration::from_secs(15));
    // The Ingress watch came back from where it was, without a relist.
    let resumed = api.requests().into_iter().any(|r| {
        r.contains("/ingresses?")
            && r.contains("watch=")
            && resource_version_of(&r).is_some_and(|v| v >= rv && v > 0)
    });
    assert!(resumed, "no resumed watch: {:?}", api.requests());
    assert_eq!(
        lists(&api),
        lists_before,
        "relisted after a plain drop: {:#?}",
        api.requests()
    );
}

#[test]
fn relist_after_410_gone() {
    let api = KubeApi::start();
    let (_a, _b) = two_backends(&api);
    api.apply_yaml(&ingress_named("web", "kube.test", "svc-a"));
    let mut lb = Lb::on_api_unready("kube-gone", &api, "");
    lb.wait_ready(Duration::from_secs(20));
    let lists_before = lists(&api);
    // Advance the version past what lb saw, forget the history, drop watches.
    api.apply_yaml(&ingress_named("unrelated", "unrelated.test", "svc-a"));
    wait_backend(&lb, "unrelated.test", "a", Duration::from_secs(10));
    api.compact();
    api.apply_yaml(&ingress_named("web", "kube.test", "svc-b"));
    api.compact();
    api.drop_watches();
    wait_backend(&lb, "kube.test", "b", Duration::from_secs(15));
    api.apply_yaml(&ingress_named("later", "later.test", "svc-b"));
    wait_backend(&lb, "later.test", "b", Duration::from_secs(15));
    assert!(
        lists(&api) > lists_before,
        "no relist after 410: {:?}",
        api.requests()
    );
}

#[test]
fn api_server_down_keeps_serving_the_last_snapshot() {
    let api = KubeApi::start();
    let (_a, _b) = two_backends(&api);
    api.apply_yaml(&ingress_named("web", "kube.test", "svc-a"));
    let mut lb = Lb::on_api_unready("kube-down", &api, "");
    lb.wait_ready(Duration::from_secs(20));
    lb.wait_metric("lb_source_kubernetes_up", 1, Duration::from_secs(5));
    api.set_down(true);
    lb.wait_metric("lb_source_kubernetes_up", 0, Duration::from_secs(10));
    for _ in 0..20 {
        assert_eq!(lb.get("kube.test", "/").backend(), "a");
    }
    assert_eq!(admin_get(lb.admin, "/readyz").unwrap().status, 200);
    assert!(lb.wait_log("unreachable", Duration::from_secs(5)));
    assert_eq!(
        lb.log_text().matches("API server unreachable").count(),
        1,
        "one warning per outage"
    );
    api.set_down(false);
    lb.wait_metric("lb_source_kubernetes_up", 1, Duration::from_secs(20));
    assert!(lb.wait_log("reachable again", Duration::from_secs(5)));
    api.apply_yaml(&ingress_named("web", "kube.test", "svc-b"));
    wait_backend(&lb, "kube.test", "b", Duration::from_secs(20));
}

/// How many list requests of any kind `api` served (GETs with `limit`,
/// without `watch`). After a 410 the kinds whose last version is older
/// than the history relist; a kind whose watch had seen the newest event
/// may resume without one.
fn lists(api: &KubeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("limit=") && !r.contains("watch="))
        .count()
}

/// The `resourceVersion` query parameter of a request line.
fn resource_version_of(request: &str) -> Option<u64> {
    let query = request.split_once('?')?.1;
    query
        .split(['&', ' '])
        .find_map(|p| p.strip_prefix("resourceVersion="))
        .and_then(|v| v.parse().ok())
}
