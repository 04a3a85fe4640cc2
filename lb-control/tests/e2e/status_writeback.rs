//! Status write-back to the real API server, counted in its audit log: each
//! object's status is written once (server-side apply on `/status`), again
//! only when it changes, not at all by a restarted lb when it is already
//! there; a route's `status.parents` entries of another controller survive
//! lb's writes; a Service that stops being lb's loses lb's status.

use std::time::Duration;

use crate::support::k8s::{self, status_writes, wait_for};
use crate::support::{Cluster, Lb, cluster::LB_USER, free_port, shared_cluster};

/// Gives lb time to react to whatever just happened (reload and write).
fn settle() {
    std::thread::sleep(Duration::from_millis(2000));
}

/// Waits until lb's writes to `resource` `name` since `mark` reach `n`.
fn wait_writes(cluster: &Cluster, lb: &Lb, mark: u64, resource: &str, name: &str, n: usize) {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if status_writes(cluster, mark, resource, name) >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{resource} {name}: {} status writes, not {n}; log:\n{}",
        status_writes(cluster, mark, resource, name),
        lb.log_text()
    );
}

/// Unrelated events in `ns`: a Service comes, changes and goes.
fn unrelated_events(ns: &bench::cluster::Namespace<'_>) {
    for port in [81, 82, 83] {
        ns.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: unrelated}}\nspec: {{ports: [{{port: {port}}}]}}\n"
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    ns.kubectl(&["delete", "service", "unrelated"]);
}

fn no_refusal(cluster: &Cluster, mark: u64) {
    let refused = cluster.forbidden_since(mark, LB_USER);
    assert!(
        refused.is_empty(),
        "the API server refused lb: {refused:#?}"
    );
}

/// A LoadBalancer Service of lb's class asking for `ip`.
fn lb_service(ip: std::net::IpAddr) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: vip}}
spec:
  type: LoadBalancer
  loadBalancerClass: lb.example.com/lb
  allocateLoadBalancerNodePorts: false
  loadBalancerIP: \"{ip}\"
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: {}}}]
",
        k8s::POD_PORT
    )
}

#[test]
fn load_balancer_service_status_is_written_once_per_change_and_not_on_restart() {
    let cluster = shared_cluster();
    let ns = cluster.namespace("status-svc");
    let mark = cluster.audit_mark();
    let (pool, ips) = k8s::pool();
    ns.apply(&lb_service(ips[1]));
    {
        let lb = Lb::on_cluster("status-svc", &cluster, &[&ns.name], "", &pool);
        wait_writes(&cluster, &lb, mark, "services", "vip", 1);
        let stored = cluster.get_json(Some(&ns.name), "service", "vip").unwrap();
        assert_eq!(
            stored["status"]["loadBalancer"]["ingress"][0]["ip"],
            ips[1].to_string(),
            "{stored:#}"
        );
        unrelated_events(&ns);
        settle();
        assert_eq!(status_writes(&cluster, mark, "services", "vip"), 1);
        assert_eq!(lb.metric("lb_status_writes_total"), 1);
        assert_eq!(lb.metric("lb_status_write_errors_total"), 0);

        // A change that alters the status: exactly one more write.
        ns.apply(&lb_service(ips[2]));
        wait_writes(&cluster, &lb, mark, "services", "vip", 2);
        unrelated_events(&ns);
        settle();
        assert_eq!(status_writes(&cluster, mark, "services", "vip"), 2);
        let stored = cluster.get_json(Some(&ns.name), "service", "vip").unwrap();
        assert_eq!(
            stored["status"]["loadBalancer"]["ingress"][0]["ip"],
            ips[2].to_string()
        );
    }
    // A restarted lb finds the status already there: no write.
    let restart = cluster.audit_mark();
    let lb = Lb::on_cluster("status-svc", &cluster, &[&ns.name], "", &pool);
    // Only the leader writes: wait until this one leads, then give it time.
    lb.wait_metric("lb_leader", 1, Duration::from_secs(30));
    settle();
    assert_eq!(status_writes(&cluster, restart, "services", "vip"), 0);
    assert_eq!(lb.metric("lb_status_writes_total"), 0);
    no_refusal(&cluster, mark);
}

#[test]
fn a_service_that_stops_being_lbs_loses_the_status_lb_wrote() {
    let cluster = shared_cluster();
    let ns = cluster.namespace("status-moving");
    let mark = cluster.audit_mark();
    let (pool, ips) = k8s::pool();
    ns.apply(&lb_service(ips[3]));
    let lb = Lb::on_cluster("status-moving", &cluster, &[&ns.name], "", &pool);
    wait_writes(&cluster, &lb, mark, "services", "vip", 1);
    // No longer a LoadBalancer: lb stops serving it, its status goes.
    ns.kubectl(&[
        "patch",
        "service",
        "vip",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP","loadBalancerClass":null,"loadBalancerIP":null,"allocateLoadBalancerNodePorts":null}}"#,
    ]);
    wait_for(Duration::from_secs(20), "the status to go", || {
        let s = cluster.get_json(Some(&ns.name), "service", "vip")?;
        s["status"]["loadBalancer"]["ingress"]
            .is_null()
            .then_some(())
    });
    // The API server may clear it first; lb removes it at most once.
    settle();
    let writes = status_writes(&cluster, mark, "services", "vip");
    assert!(writes <= 2, "{writes} writes");
    unrelated_events(&ns);
    settle();
    assert_eq!(status_writes(&cluster, mark, "services", "vip"), writes);
    assert_eq!(
        lb.metric("lb_status_write_errors_total"),
        0,
        "{}",
        lb.log_text()
    );
    // A Service of another class: whatever its controller writes is left alone.
    ns.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: theirs}\nspec: {type: LoadBalancer, loadBalancerClass: other.example.com/lb, allocateLoadBalancerNodePorts: false, ports: [{port: 80}]}\n",
    );
    ns.kubectl(&[
        "patch",
        "service",
        "theirs",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.1"}]}}}"#,
    ]);
    settle();
    assert_eq!(status_writes(&cluster, mark, "services", "theirs"), 0);
    let stored = cluster
        .get_json(Some(&ns.name), "service", "theirs")
        .unwrap();
    assert_eq!(
        stored["status"]["loadBalancer"]["ingress"][0]["ip"],
        "192.0.2.1"
    );
    no_refusal(&cluster, mark);
}

/// Gateway API CRDs on the shared cluster (installing them again is harmless).
fn gateway_crds(cluster: &Cluster) {
    if cluster
        .get_json(None, "crd", "httproutes.gateway.networking.k8s.io")
        .is_none()
    {
        cluster.crds("standard").unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn route_status_keeps_another_controllers_entry_and_follows_a_missing_backend() {
    let cluster = shared_cluster();
    gateway_crds(&cluster);
    let ns = cluster.namespace("status-route");
    let mark = cluster.audit_mark();
    // A class and controller of this test's own (GatewayClasses are cluster-wide).
    let class = ns.name.clone();
    let controller = format!("lb.example.com/{}", ns.name);
    ns.apply(&k8s::deployment("web", 1, 1));
    ns.apply(&k8s::service("web", false));
    let port = free_port();
    ns.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: {class}}}
spec: {{controllerName: {controller}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: {class}
  addresses: [{{type: IPAddress, value: \"127.0.0.1\"}}]
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw}}, {{name: elsewhere}}]
  hostnames: [gw.test]
  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]
"
    ));
    k8s::wait_ready_pods(&cluster, &ns.name, "web", 1);
    let lb = Lb::on_cluster(
        "status-route",
        &cluster,
        &[&ns.name],
        "",
        &format!("[gateway]\ncontroller_name = \"{controller}\"\n"),
    );
    wait_writes(&cluster, &lb, mark, "gatewayclasses", &class, 1);
    wait_writes(&cluster, &lb, mark, "gateways", "gw", 1);
    wait_writes(&cluster, &lb, mark, "httproutes", "route", 1);
    let parents = |cluster: &Cluster| -> Vec<serde_json::Value> {
        cluster
            .get_json(Some(&ns.name), "httproute", "route")
            .and_then(|r| r["status"]["parents"].as_array().cloned())
            .unwrap_or_default()
    };
    let by = |ps: &[serde_json::Value], who: &str| {
        ps.iter().find(|p| p["controllerName"] == who).cloned()
    };
    let resolved = |p: &serde_json::Value| {
        p["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ResolvedRefs")
            .and_then(|c| c["status"].as_str().map(str::to_owned))
    };
    let mine = by(&parents(&cluster), &controller).expect("lb's entry");
    assert_eq!(resolved(&mine).as_deref(), Some("True"), "{mine:#}");

    // Another controller writes its entry for its own Gateway, by
    // server-side apply with a field manager of its own. The list is atomic:
    // its apply replaces lb's entry, and lb puts its own back beside it.
    let theirs = serde_json::json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "elsewhere"},
        "controllerName": "other.example.com/gateway-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]
    });
    let apply = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "route", "namespace": ns.name},
        "status": {"parents": [theirs]}
    });
    let out = cluster.kubectl_in(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=other-controller",
            "--subresource=status",
            "-f",
            "-",
        ],
        &apply.to_string(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(20), "both entries", || {
        let ps = parents(&cluster);
        (by(&ps, &controller).is_some()
            && by(&ps, "other.example.com/gateway-controller").is_some())
        .then_some(())
    });

    // lb's status changes (the backend goes): lb's entry changes, theirs stays.
    let before = status_writes(&cluster, mark, "httproutes", "route");
    ns.kubectl(&["delete", "service", "web"]);
    wait_writes(&cluster, &lb, mark, "httproutes", "route", before + 1);
    settle();
    let ps = parents(&cluster);
    let mine = by(&ps, &controller).expect("lb's entry");
    assert_eq!(resolved(&mine).as_deref(), Some("False"), "{ps:#?}");
    assert_eq!(
        by(&ps, "other.example.com/gateway-controller"),
        Some(theirs),
        "{ps:#?}"
    );
    assert_eq!(
        status_writes(&cluster, mark, "httproutes", "route"),
        before + 1
    );
    // Nothing else changed: one GatewayClass write in all.
    assert_eq!(status_writes(&cluster, mark, "gatewayclasses", &class), 1);
    drop(lb);
    no_refusal(&cluster, mark);
    cluster.kubectl(&["delete", "gatewayclass", &class, "--wait=false"]);
}
