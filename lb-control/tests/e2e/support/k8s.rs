//! Kubernetes objects for the tests on the real control plane (Deployments
//! whose Pods the pod runner runs as echo backends named after the Pod,
//! Services, Ingresses), and waiting on the cluster.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{Cluster, Lb};

/// The port every test Pod's echo backend listens on.
pub const POD_PORT: u16 = 8080;

/// A Deployment `name` of `replicas` echo Pods (label `app: NAME`), rolling
/// one Pod at a time with no unavailable Pod, each Pod terminating within
/// `grace` seconds.
pub fn deployment(name: &str, replicas: u32, grace: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: {grace}
      containers:
      - name: echo
        image: lb-echo
        ports: [{{containerPort: {POD_PORT}}}]
        readinessProbe: {{tcpSocket: {{port: {POD_PORT}}}, periodSeconds: 1}}
"
    )
}

/// A Service `name` (port 80 to the Pods' [`POD_PORT`], selector `app: NAME`);
/// `load_balancer`: of type LoadBalancer and lb's class, without NodePorts.
pub fn service(name: &str, load_balancer: bool) -> String {
    let lb = if load_balancer {
        "\n  type: LoadBalancer\n  loadBalancerClass: lb.example.com/lb\n  allocateLoadBalancerNodePorts: false"
    } else {
        ""
    };
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:{lb}
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: {POD_PORT}}}]
"
    )
}

/// An Ingress `name` of class `lb` sending every path of `host` to port 80
/// of `service`.
pub fn ingress(name: &str, host: &str, service: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  ingressClassName: lb
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}
"
    )
}

/// The IngressClass `lb` of config/kubernetes/classes.yaml (cluster-scoped;
/// applying it again is harmless).
pub fn ingress_class(cluster: &Cluster) {
    cluster.apply(
        "default",
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: lb}\nspec: {controller: lb.example.com/ingress-controller}\n",
    );
}

/// A `[loadbalancer]` section with a pool of 8 loopback VIPs no other test
/// of this process uses, and the pool's addresses.
pub fn pool() -> (String, Vec<std::net::IpAddr>) {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let (b, c, d) = (200 + (pid % 50), (pid / 50) % 250, (n % 32) * 8);
    let addrs = (0..8)
        .map(|i| std::net::IpAddr::from([127, b as u8, c as u8, (d + i) as u8]))
        .collect();
    (
        format!("[loadbalancer]\npools = [\"127.{b}.{c}.{d}/29\"]\n"),
        addrs,
    )
}

/// [`pool`]'s `[loadbalancer]` section only.
pub fn loadbalancer_pool() -> String {
    pool().0
}

/// How many status writes lb's ServiceAccount made to `resource` `name`
/// (patches of its `/status` that succeeded) after audit `mark`.
pub fn status_writes(cluster: &Cluster, mark: u64, resource: &str, name: &str) -> usize {
    cluster
        .audit_since(mark)
        .iter()
        .filter(|e| {
            e["user"]["username"] == super::cluster::LB_USER
                && e["verb"] == "patch"
                && e["objectRef"]["resource"] == resource
                && e["objectRef"]["subresource"] == "status"
                && e["objectRef"]["name"] == name
                && e["responseStatus"]["code"]
                    .as_u64()
                    .is_some_and(|c| c < 300)
        })
        .count()
}

/// Polls `f` every 50 ms until it answers `Some`, at most `limit`; panics
/// with `what` after.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The names of the ready Pods of Deployment `app` in `namespace`.
pub fn ready_pods(cluster: &Cluster, namespace: &str, app: &str) -> Vec<String> {
    let out = cluster.kubectl(&[
        "-n",
        namespace,
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "json",
    ]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("pod list");
    let mut names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Waits until Deployment `app` has `n` ready Pods; returns their names.
pub fn wait_ready_pods(cluster: &Cluster, namespace: &str, app: &str, n: usize) -> Vec<String> {
    wait_for(
        Duration::from_secs(60),
        &format!("{n} ready pods of {app}"),
        || {
            let pods = ready_pods(cluster, namespace, app);
            (pods.len() == n).then_some(pods)
        },
    )
}

/// The first `status.loadBalancer.ingress` IP of Service `name`, once written.
pub fn wait_service_vip(cluster: &Cluster, namespace: &str, name: &str) -> std::net::IpAddr {
    wait_for(
        Duration::from_secs(30),
        "the Service's status.loadBalancer",
        || {
            let svc = cluster.get_json(Some(namespace), "service", name)?;
            svc["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()?
                .parse()
                .ok()
        },
    )
}

/// The echo backend (Pod) that answers `GET /` for `host` through lb's HTTP
/// listener, on a fresh connection; `None` unless 200.
pub fn backend_via_ingress(lb: &Lb, host: &str) -> Option<String> {
    let mut c = super::Client::try_connect(lb.http).ok()?;
    let r = c.get(host, "/");
    (r.status == 200).then(|| r.backend())
}

/// The echo backend (Pod) that answers `GET /` at `addr` (an L4 VIP).
pub fn backend_at(addr: SocketAddr) -> Option<String> {
    let mut c = super::Client::try_connect(addr).ok()?;
    let r = c.get("vip", "/");
    (r.status == 200).then(|| r.backend())
}
