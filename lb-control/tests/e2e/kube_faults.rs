//! Faults a real API server does not produce on demand, against the
//! stand-in API server (`support::kube_api`): a watch dropped mid-stream
//! resumes from the last resourceVersion without a relist, and a 410 Gone
//! after compaction relists. Everything else about the API server source is
//! tested against the real control plane (`kube.rs`).

use std::time::{Duration, Instant};

use bench::echo::EchoServer;

use crate::support::kube_api::KubeApi;
use crate::support::{Lb, ingress_named, service_yaml};

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
fn a_dropped_watch_resumes_from_the_last_resource_version() {
    let api = KubeApi::start();
    let (_a, _b) = two_backends(&api);
    api.apply_yaml(&ingress_named("web", "kube.test", "svc-a"));
    // Every object lb lists is at or below this version. (Read before lb
    // starts: lb's own status writes move the version on, and whether the
    // watch saw that event before the drop is a race.)
    let rv = api.resource_version();
    let mut lb = Lb::on_api_unready("kube-resume", &api, "");
    lb.wait_ready(Duration::from_secs(20));
    let lists_before = lists(&api);
    let before_drop = api.requests().len();
    api.drop_watches();
    api.apply_yaml(&ingress_named("web", "kube.test", "svc-b"));
    wait_backend(&lb, "kube.test", "b", Duration::from_secs(15));
    // The Ingress watch came back from where it was, without a relist.
    let resumed = api.requests().into_iter().skip(before_drop).any(|r| {
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
    // Kinds whose watch resumed from before the compaction get 410 and
    // relist after their back-off; the Ingress watch may have seen the
    // newest event before the drop and resumed without one.
    let deadline = Instant::now() + Duration::from_secs(15);
    while lists(&api) <= lists_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        lists(&api) > lists_before,
        "no relist after 410: {:?}",
        api.requests()
    );
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
