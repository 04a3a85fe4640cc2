//! The Kubernetes API server source against the real control plane
//! (`bench/cluster.sh`: etcd, kube-apiserver, kube-controller-manager and
//! the pod runner): Pods of a Deployment serve through an Ingress and a
//! LoadBalancer Service; lb is ready on a cluster without the Gateway API
//! CRDs and serves a Gateway within seconds of their installation, keeps
//! serving while the API server is down and resyncs when it is back. lb
//! runs as its ServiceAccount (`lb.kubeconfig`, RBAC of config/kubernetes/):
//! no request of it may be refused.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::k8s::{self, backend_at, backend_via_ingress, wait_for};
use crate::support::{Cluster, Lb, admin_get, cluster::LB_USER, shared_cluster};

/// The set of backends that answer `n` requests for `host` through lb.
fn backends_via_ingress(lb: &Lb, host: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .filter_map(|_| backend_via_ingress(lb, host))
        .collect()
}

fn no_refusal(cluster: &Cluster, mark: u64) {
    let refused = cluster.forbidden_since(mark, LB_USER);
    assert!(
        refused.is_empty(),
        "the API server refused lb: {refused:#?}"
    );
}

#[test]
fn pods_of_a_deployment_serve_through_an_ingress_and_a_load_balancer_service() {
    let cluster = shared_cluster();
    let mark = cluster.audit_mark();
    let ns = cluster.namespace("kube-objects");
    k8s::ingress_class(&cluster);
    ns.apply(&k8s::deployment("web", 2, 2));
    ns.apply(&k8s::service("web", true));
    ns.apply(&k8s::ingress("web", "web.kube.test", "web"));
    let pods = k8s::wait_ready_pods(&cluster, &ns.name, "web", 2);
    let lb = Lb::on_cluster(
        "kube-objects",
        &cluster,
        &[&ns.name],
        "",
        &k8s::loadbalancer_pool(),
    );
    // The EndpointSlice controller's slice names both Pods: both serve.
    let all: BTreeSet<String> = pods.iter().cloned().collect();
    let seen = wait_for(
        Duration::from_secs(20),
        "both pods through the Ingress",
        || {
            let seen = backends_via_ingress(&lb, "web.kube.test", 10);
            (seen == all).then_some(seen)
        },
    );
    assert_eq!(seen.len(), 2);
    // The VIP lb allocated, as lb wrote it to the Service's status, serves them too.
    let vip = k8s::wait_service_vip(&cluster, &ns.name, "web");
    let at = SocketAddr::new(vip, 80);
    wait_for(Duration::from_secs(20), "the VIP serves", || {
        backend_at(at).filter(|b| all.contains(b))
    });
    // Scale up: the new Pod serves within seconds.
    ns.kubectl(&["scale", "deployment/web", "--replicas=3"]);
    let three = k8s::wait_ready_pods(&cluster, &ns.name, "web", 3);
    let new: Vec<&String> = three.iter().filter(|p| !all.contains(*p)).collect();
    assert_eq!(new.len(), 1, "{three:?}");
    let start = Instant::now();
    wait_for(Duration::from_secs(15), "the new pod serves", || {
        backend_via_ingress(&lb, "web.kube.test").filter(|b| b == new[0])
    });
    eprintln!(
        "scale-up: new pod served {:?} after it was ready",
        start.elapsed()
    );
    // Ingress status: lb's addresses (no wildcard), HTTP and HTTPS ports.
    let ingress = wait_for(Duration::from_secs(20), "Ingress status", || {
        let i = cluster.get_json(Some(&ns.name), "ingress", "web")?;
        i["status"]["loadBalancer"]["ingress"][0]["ip"]
            .is_string()
            .then_some(i)
    });
    let entry = &ingress["status"]["loadBalancer"]["ingress"][0];
    assert_eq!(entry["ip"], "127.0.0.1", "{ingress:#}");
    let ports: Vec<u64> = entry["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(
        ports,
        [u64::from(lb.http.port()), u64::from(lb.https.port())]
    );
    no_refusal(&cluster, mark);
}

/// A GatewayClass, a Gateway on `addr` and an HTTPRoute for `host` to
/// Service `service`.
fn gateway_objects(addr: SocketAddr, host: &str, service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: lb}}
spec: {{controllerName: lb.example.com/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: lb
  addresses: [{{type: IPAddress, value: \"{ip}\"}}]
  listeners: [{{name: http, protocol: HTTP, port: {port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [\"{host}\"]
  rules: [{{backendRefs: [{{name: {service}, port: 80}}]}}]
",
        ip = addr.ip(),
        port = addr.port()
    )
}

/// GET / with `Host: host` at `addr`: the backend when 200.
fn backend_via(addr: SocketAddr, host: &str) -> Option<String> {
    let mut c = crate::support::Client::try_connect(addr).ok()?;
    let r = c.get(host, "/");
    (r.status == 200).then(|| r.backend())
}

#[test]
fn without_gateway_crds_lb_is_ready_and_serves_a_gateway_once_they_are_installed() {
    let t0 = Instant::now();
    let stage = |what: &str| eprintln!("crds test: {what} at {:?}", t0.elapsed());
    let cluster = Cluster::private("crds").unwrap_or_else(|e| panic!("{e}"));
    stage("cluster up");
    let mark = cluster.audit_mark();
    let ns = cluster.namespace("crds");
    k8s::ingress_class(&cluster);
    ns.apply(&k8s::deployment("web", 1, 1));
    ns.apply(&k8s::service("web", true));
    ns.apply(&k8s::ingress("web", "web.crds.test", "web"));
    let pods = k8s::wait_ready_pods(&cluster, &ns.name, "web", 1);

    // An API server that is starting refuses every request until its RBAC
    // caches are filled (the controller manager's too): 403s between a stop
    // and the end of the start do not count. lb repeats each of those
    // requests once the server is ready, where a missing permission shows.
    let mut windows = vec![(0, cluster.audit_mark())];
    stage("pods ready");
    // lb starts while the API server is down: not ready, no listener.
    cluster.apiserver("stop").unwrap();
    let mut lb =
        Lb::on_cluster_unready("crds", &cluster, &[&ns.name], "", &k8s::loadbalancer_pool());
    let status = wait_for(Duration::from_secs(15), "the admin API", || {
        admin_get(lb.admin, "/readyz").map(|r| r.status)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(status, 503);
    assert_eq!(admin_get(lb.admin, "/readyz").unwrap().status, 503);
    cluster.apiserver("start").unwrap();
    let ready = cluster.audit_mark();
    stage("api restarted");
    // No Gateway API CRDs: ready anyway, serving the Ingress and the Service.
    lb.wait_ready(Duration::from_secs(30));
    assert_eq!(
        backend_via_ingress(&lb, "web.crds.test").as_deref(),
        Some(pods[0].as_str())
    );
    let vip = k8s::wait_service_vip(&cluster, &ns.name, "web");
    assert_eq!(backend_at(SocketAddr::new(vip, 80)), Some(pods[0].clone()));
    let log = lb.log_text();
    let absent: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("does not serve"))
        .collect();
    assert_eq!(absent.len(), 1, "the absent kinds are logged once:\n{log}");
    assert!(absent[0].contains("HTTPRoute") && absent[0].contains("TLSRoute"));

    stage("served without CRDs");
    // The CRDs arrive: a Gateway serves within 10 s, without a restart.
    let gw: SocketAddr = format!("127.0.0.1:{}", crate::support::free_port())
        .parse()
        .unwrap();
    let start = Instant::now();
    cluster.crds("standard").unwrap();
    ns.apply(&gateway_objects(gw, "gw.crds.test", "web"));
    wait_for(Duration::from_secs(10), "the Gateway serves", || {
        backend_via(gw, "gw.crds.test")
    });
    let took = start.elapsed();
    eprintln!("CRDs installed to Gateway traffic: {took:?}");
    assert!(lb.wait_log("serves HTTPRoute now", Duration::from_secs(5)));
    stage("gateway served");
    // The CRDs go (before any API server restart: a CRD deleted while its
    // storage is still initializing waits minutes on the API server's
    // finalizer backoff): the Gateway stops serving, the rest goes on.
    cluster.crds("none").unwrap();
    wait_for(Duration::from_secs(20), "the Gateway stops", || {
        crate::support::Client::try_connect(gw)
            .is_err()
            .then_some(())
    });
    assert!(lb.wait_log("no longer serves HTTPRoute", Duration::from_secs(10)));
    assert!(backend_via_ingress(&lb, "web.crds.test").is_some());
    assert_eq!(admin_get(lb.admin, "/readyz").unwrap().status, 200);
    stage("crds removed");
    // The API server stops: traffic is unaffected, lb stays ready.
    windows.push((ready, cluster.audit_mark()));
    cluster.apiserver("stop").unwrap();
    lb.wait_metric("lb_source_kubernetes_up", 0, Duration::from_secs(15));
    for _ in 0..20 {
        assert_eq!(
            backend_via_ingress(&lb, "web.crds.test").as_deref(),
            Some(pods[0].as_str())
        );
        assert_eq!(backend_at(SocketAddr::new(vip, 80)), Some(pods[0].clone()));
    }
    assert_eq!(admin_get(lb.admin, "/readyz").unwrap().status, 200);
    stage("down checked");
    // Back: changes made since are served (resync).
    cluster.apiserver("start").unwrap();
    let ready = cluster.audit_mark();
    lb.wait_metric("lb_source_kubernetes_up", 1, Duration::from_secs(30));
    ns.apply(&k8s::ingress("later", "later.crds.test", "web"));
    wait_for(
        Duration::from_secs(20),
        "an Ingress made after the restart",
        || backend_via_ingress(&lb, "later.crds.test"),
    );
    stage("resynced");
    drop(lb);
    windows.push((ready, u64::MAX));
    for (from, to) in windows {
        let refused = cluster.forbidden_between(from.max(mark), to, LB_USER);
        assert!(
            refused.is_empty(),
            "the API server refused lb: {refused:#?}"
        );
    }
}
