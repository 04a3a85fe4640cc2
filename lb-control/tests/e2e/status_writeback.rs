//! Status write-back to the stand-in API server: each object's status is
//! written once (server-side apply on `/status`), again only when it
//! changes, and not at all by a restarted lb when it is already there.

use std::time::{Duration, Instant};

use bench::echo::EchoServer;

use crate::l4::l4_service;
use crate::support::kube_api::KubeApi;
use crate::support::{Lb, free_port, service_yaml};

const CONTROLLER: &str = "lb.example.com/gateway-controller";

/// How many status writes `api` logged for `what` ("Kind ns/name").
fn writes(api: &KubeApi, what: &str) -> usize {
    api.status_writes().iter().filter(|w| *w == what).count()
}

/// Waits until `api` logged `n` status writes for `what`.
fn wait_writes(api: &KubeApi, lb: &Lb, what: &str, n: usize) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if writes(api, what) >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what}: {} status writes, not {n}: {:?}; log:\n{}",
        writes(api, what),
        api.status_writes(),
        lb.log_text()
    );
}

/// Gives lb time to react to whatever just happened (reload and write).
fn settle() {
    std::thread::sleep(Duration::from_millis(1500));
}

/// Unrelated events: another Service comes, changes and goes.
fn unrelated_events(api: &KubeApi) {
    for port in [81, 82, 83] {
        api.apply_yaml(&service_yaml(
            "default",
            "unrelated",
            port,
            None,
            &["127.0.0.1:9".parse().unwrap()],
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    api.delete("Service", Some("default"), "unrelated");
}

#[test]
fn load_balancer_service_status_is_written_once_per_change_and_not_on_restart() {
    let api = KubeApi::start();
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").expect("echo");
    let port = free_port();
    let svc = |ip: &str| {
        l4_service(
            "vip",
            "LoadBalancer",
            port,
            &format!("  loadBalancerIP: {ip}\n"),
            &[echo.local_addr()],
        )
    };
    api.apply_yaml(&svc("127.0.78.1"));
    let what = "Service default/vip";
    {
        let lb = Lb::on_api("status-svc", &api, "");
        wait_writes(&api, &lb, what, 1);
        let stored = api.get("Service", Some("default"), "vip").unwrap();
        assert_eq!(
            stored["status"]["loadBalancer"]["ingress"][0]["ip"], "127.0.78.1",
            "{stored:#}"
        );
        unrelated_events(&api);
        settle();
        assert_eq!(writes(&api, what), 1, "{:?}", api.status_writes());
        assert_eq!(lb.metric("lb_status_writes_total"), 1);
        assert_eq!(lb.metric("lb_status_write_errors_total"), 0);

        // A change that alters the status: exactly one more write.
        api.apply_yaml(&svc("127.0.78.2"));
        wait_writes(&api, &lb, what, 2);
        unrelated_events(&api);
        settle();
        assert_eq!(writes(&api, what), 2, "{:?}", api.status_writes());
        let stored = api.get("Service", Some("default"), "vip").unwrap();
        assert_eq!(
            stored["status"]["loadBalancer"]["ingress"][0]["ip"],
            "127.0.78.2"
        );
    }
    // A restarted lb finds the status already there: no write.
    let before = api.status_writes().len();
    let lb = Lb::on_api("status-svc-2", &api, "");
    // Only the leader writes: wait until this one leads, then give it time.
    lb.wait_metric("lb_leader", 1, Duration::from_secs(30));
    settle();
    assert_eq!(
        api.status_writes().len(),
        before,
        "{:?}",
        api.status_writes()
    );
    assert_eq!(lb.metric("lb_status_writes_total"), 0);
}

#[test]
fn ingress_gets_its_status() {
    let api = KubeApi::start();
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").expect("echo");
    api.apply_yaml(&service_yaml(
        "default",
        "web",
        80,
        None,
        &[echo.local_addr()],
    ));
    api.apply_yaml(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  ingressClassName: lb
  rules:
  - host: web.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
",
    );
    let lb = Lb::on_api("status-ing", &api, "");
    wait_writes(&api, &lb, "Ingress default/web", 1);
    let stored = api.get("Ingress", Some("default"), "web").unwrap();
    assert_eq!(
        stored["status"]["loadBalancer"]["ingress"][0]["ip"], "127.0.0.1",
        "{stored:#}"
    );
    unrelated_events(&api);
    settle();
    assert_eq!(writes(&api, "Ingress default/web"), 1);
}

#[test]
fn gateway_and_route_status_appear_and_follow_a_missing_backend() {
    let api = KubeApi::start();
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").expect("echo");
    api.apply_yaml(&service_yaml(
        "default",
        "backend",
        80,
        None,
        &[echo.local_addr()],
    ));
    let port = free_port();
    api.apply_yaml(&format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: lb}}
spec: {{controllerName: {CONTROLLER}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: lb
  addresses: [{{type: IPAddress, value: \"127.0.79.1\"}}]
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [gw.test]
  rules: [{{backendRefs: [{{name: backend, port: 80}}]}}]
"
    ));
    let lb = Lb::on_api("status-gw", &api, "");
    wait_writes(&api, &lb, "GatewayClass lb", 1);
    wait_writes(&api, &lb, "Gateway default/gw", 1);
    wait_writes(&api, &lb, "HTTPRoute default/route", 1);
    let gw = api.get("Gateway", Some("default"), "gw").unwrap();
    assert!(gw["status"]["conditions"].is_array(), "{gw:#}");
    let route = api.get("HTTPRoute", Some("default"), "route").unwrap();
    let parent = &route["status"]["parents"][0];
    assert_eq!(parent["controllerName"], CONTROLLER, "{route:#}");
    let resolved = |route: &serde_json::Value| {
        route["status"]["parents"][0]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ResolvedRefs")
            .map(|c| c["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(resolved(&route).as_deref(), Some("True"), "{route:#}");

    // The backend disappears: one more route write.
    api.delete("Service", Some("default"), "backend");
    wait_writes(&api, &lb, "HTTPRoute default/route", 2);
    settle();
    assert_eq!(writes(&api, "HTTPRoute default/route"), 2);
    assert_eq!(writes(&api, "GatewayClass lb"), 1);
    let route = api.get("HTTPRoute", Some("default"), "route").unwrap();
    assert_eq!(resolved(&route).as_deref(), Some("False"), "{route:#}");
}

#[test]
fn a_service_that_stops_being_lbs_loses_the_status_lb_wrote() {
    let api = KubeApi::start();
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").expect("echo");
    let port = free_port();
    let svc = |class: &str| {
        l4_service(
            "moving",
            "LoadBalancer",
            port,
            &format!("  loadBalancerIP: 127.0.78.3\n  loadBalancerClass: {class}\n"),
            &[echo.local_addr()],
        )
    };
    api.apply_yaml(&svc("lb.example.com/lb"));
    let what = "Service default/moving";
    let lb = Lb::on_api("status-cleanup", &api, "");
    wait_writes(&api, &lb, what, 1);
    // Another class now: lb stops serving it and removes its status.
    api.apply_yaml(&svc("other.example.com/lb"));
    wait_writes(&api, &lb, what, 2);
    let stored = api.get("Service", Some("default"), "moving").unwrap();
    assert!(
        stored["status"]["loadBalancer"]["ingress"].is_null(),
        "{stored:#}"
    );
    unrelated_events(&api);
    settle();
    assert_eq!(writes(&api, what), 2, "{:?}", api.status_writes());
    // Status another controller wrote is not lb's to remove.
    api.apply_yaml(&svc("lb.example.com/lb"));
    wait_writes(&api, &lb, what, 3);
    let mut theirs = api.get("Service", Some("default"), "moving").unwrap();
    theirs["spec"]["loadBalancerClass"] = "other.example.com/lb".into();
    theirs["status"]["loadBalancer"]["ingress"] = serde_json::json!([{"ip": "192.0.2.1"}]);
    api.apply(theirs);
    settle();
    assert_eq!(writes(&api, what), 3, "{:?}", api.status_writes());
    let stored = api.get("Service", Some("default"), "moving").unwrap();
    assert_eq!(
        stored["status"]["loadBalancer"]["ingress"][0]["ip"],
        "192.0.2.1"
    );
}
