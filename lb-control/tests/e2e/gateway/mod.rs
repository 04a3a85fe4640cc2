//! Gateway API through the running binary. The `conformance` module follows
//! the scenarios of the Gateway API conformance suite (HTTP profile, core and
//! the extended features lb supports) with our own manifests: the suite's
//! base namespaces, Services and Gateways are rebuilt here with echo
//! backends that report their name, the path and the headers they saw.
//! Other modules: precedence tables, weights, status conditions, TLS
//! passthrough and TCPRoute, GRPCRoute, and route changes under load.

mod conformance;
mod grpc;
mod lifecycle;
mod listeners;
mod load;
mod precedence;
mod status;
mod stream;
mod values;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bench::echo::EchoServer;

use crate::support::client::{Client, Response};
use crate::support::{Lb, admin_get, service_yaml};

/// The suite's namespaces.
pub const INFRA: &str = "gateway-conformance-infra";
pub const APP: &str = "gateway-conformance-app-backend";
pub const WEB: &str = "gateway-conformance-web-backend";
/// The controller name lb answers to by default (`[gateway].controller_name`).
pub const CONTROLLER: &str = "lb.example.com/gateway-controller";

/// The echo backends of the base manifests: (namespace, Service name).
const BACKENDS: &[(&str, &str)] = &[
    (INFRA, "infra-backend-v1"),
    (INFRA, "infra-backend-v2"),
    (INFRA, "infra-backend-v3"),
    (APP, "app-backend-v1"),
    (APP, "app-backend-v2"),
    (WEB, "web-backend"),
];

/// A loopback address no other test uses, so Gateway ports never collide.
pub fn unique_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    Ipv4Addr::new(
        127,
        100 + (pid % 100) as u8,
        (n / 250) as u8,
        (n % 250 + 1) as u8,
    )
}

/// Echo backends, the base manifests and the Gateways' address.
pub struct Infra {
    backends: BTreeMap<String, EchoServer>,
    /// The address every base Gateway listens on.
    pub ip: Ipv4Addr,
}

impl Infra {
    /// Starts the echo backends.
    pub fn start() -> Infra {
        Self::with_extra(&[])
    }

    /// Starts the base backends plus `extra` (namespace, name) ones.
    pub fn with_extra(extra: &[(&str, &str)]) -> Infra {
        let backends = BACKENDS
            .iter()
            .chain(extra)
            .map(|(ns, name)| {
                let server =
                    EchoServer::start("127.0.0.1:0".parse().unwrap(), name).expect("echo backend");
                (format!("{ns}/{name}"), server)
            })
            .collect();
        Infra {
            backends,
            ip: unique_ip(),
        }
    }

    /// The echo backend `ns/name`.
    pub fn backend(&self, ns: &str, name: &str) -> &EchoServer {
        &self.backends[&format!("{ns}/{name}")]
    }

    /// Namespaces (the backend ones labelled `gateway-conformance: backend`),
    /// Services with their EndpointSlices, our GatewayClass, and the three
    /// Gateways of the suite: `same-namespace` (port 8080, routes from its
    /// namespace), `all-namespaces` (8081, any namespace) and
    /// `backend-namespaces` (8082, namespaces selected by label).
    pub fn base(&self) -> String {
        let mut out = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {INFRA}}}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {{name: {APP}, labels: {{gateway-conformance: backend}}}}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {{name: {WEB}, labels: {{gateway-conformance: backend}}}}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: lb}}\nspec: {{controllerName: {CONTROLLER}}}\n---\n"
        );
        for (key, server) in &self.backends {
            let (ns, name) = key.split_once('/').unwrap();
            out.push_str(&service_yaml(ns, name, 8080, None, &[server.local_addr()]));
            out.push_str("---\n");
        }
        for (name, port, from) in [
            ("same-namespace", 8080, "from: Same"),
            ("all-namespaces", 8081, "from: All"),
            (
                "backend-namespaces",
                8082,
                "from: Selector\n        selector:\n          matchLabels: {gateway-conformance: backend}",
            ),
        ] {
            out.push_str(&format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: {INFRA}\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\nspec:\n  gatewayClassName: lb\n  addresses: [{{type: IPAddress, value: \"{ip}\"}}]\n  listeners:\n  - name: http\n    port: {port}\n    protocol: HTTP\n    allowedRoutes:\n      namespaces:\n        {from}\n---\n",
                ip = self.ip
            ));
        }
        out
    }

    /// Starts lb serving the base manifests plus `test` (one YAML stream).
    pub fn lb(&self, tag: &str, test: &str) -> Lb {
        Lb::start(tag, &[("base.yaml", &self.base()), ("test.yaml", test)], "")
    }

    /// The address of a base Gateway's listener.
    pub fn gw(&self, name: &str) -> SocketAddr {
        let port = match name {
            "same-namespace" => 8080,
            "all-namespaces" => 8081,
            "backend-namespaces" => 8082,
            other => panic!("no base Gateway {other}"),
        };
        SocketAddr::new(self.ip.into(), port)
    }
}

/// `method path` to `addr` with `Host: host` and extra headers, on a fresh
/// connection.
pub fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut c = Client::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    c.request(method, host, path, headers, None)
        .unwrap_or_else(|e| panic!("{method} {host}{path} via {addr}: {e}"))
}

/// `GET path` with `Host: host`.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    send(addr, "GET", host, path, &[])
}

/// `GET` with extra headers.
pub fn get_with(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    send(addr, "GET", host, path, headers)
}

/// Asserts that a request reached `backend` (200 from that echo backend).
#[track_caller]
pub fn expect_backend(resp: &Response, backend: &str, what: &str) {
    assert_eq!(
        (resp.status, resp.backend().as_str()),
        (200, backend),
        "{what}: {}",
        resp.text()
    );
}

/// The request path (with query) the echo backend saw.
pub fn seen_path(resp: &Response) -> String {
    resp.json()["path"].as_str().unwrap_or_default().to_owned()
}

/// The values of header `name` the echo backend saw, in order.
pub fn seen_header(resp: &Response, name: &str) -> Vec<String> {
    resp.json()["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
                .filter_map(|h| h[1].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The status entry `/status` reports for `kind` `ns/name`.
pub fn object_status(lb: &Lb, kind: &str, ns: &str, name: &str) -> serde_json::Value {
    let all = admin_get(lb.admin, "/status").expect("/status").json();
    all.as_array()
        .and_then(|a| {
            a.iter().find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && (o["metadata"]["namespace"] == ns
                        || (ns.is_empty() && o["metadata"]["namespace"].is_null()))
            })
        })
        .map(|o| o["status"].clone())
        .unwrap_or_else(|| panic!("no status for {kind} {ns}/{name}: {all:#}"))
}

/// `(status, reason)` of condition `type_` in a `conditions` array.
pub fn condition(conditions: &serde_json::Value, type_: &str) -> (String, String) {
    conditions
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:#}"))
}

/// The conditions of a route's status for parent Gateway `ns/gateway`.
pub fn route_parent_conditions(status: &serde_json::Value, gateway: &str) -> serde_json::Value {
    status["parents"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["parentRef"]["name"] == gateway)
                .map(|p| p["conditions"].clone())
        })
        .unwrap_or_else(|| panic!("no parent {gateway} in {status:#}"))
}

/// Asserts a route's Accepted and ResolvedRefs conditions for one parent.
#[track_caller]
pub fn expect_route(
    lb: &Lb,
    kind: &str,
    ns: &str,
    name: &str,
    gateway: &str,
    accepted: (&str, &str),
    resolved: (&str, &str),
) {
    let status = object_status(lb, kind, ns, name);
    let conds = route_parent_conditions(&status, gateway);
    let got = (
        condition(&conds, "Accepted"),
        condition(&conds, "ResolvedRefs"),
    );
    let want = (
        (accepted.0.to_owned(), accepted.1.to_owned()),
        (resolved.0.to_owned(), resolved.1.to_owned()),
    );
    assert_eq!(got, want, "{kind} {ns}/{name} status: {status:#}");
}

/// Retries `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A `kubernetes.io/tls` Secret `ns/name` holding `(certificate, key)` PEM.
pub fn tls_secret_in(ns: &str, name: &str, (crt, key): &(String, String)) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
        indent(crt),
        indent(key)
    )
}

/// `GET path` over HTTPS/1.1 to `addr` with curl, trusting any certificate:
/// TLS server name `sni`, `Host: host`. The response as received (redirects
/// are not followed); status 0 when the exchange failed (no TLS, reset).
pub fn curl_tls(addr: SocketAddr, sni: &str, host: &str, path: &str) -> Response {
    curl_tls_as(addr, sni, host, path, false)
}

/// [`curl_tls`] over HTTP/2 (`h2`, the Host becomes `:authority`) or HTTP/1.1.
pub fn curl_tls_as(addr: SocketAddr, sni: &str, host: &str, path: &str, h2: bool) -> Response {
    let out = std::process::Command::new("curl")
        .args(["-sik", "--max-time", "10"])
        .arg(if h2 { "--http2" } else { "--http1.1" })
        .arg("--resolve")
        .arg(format!("{sni}:{}:{}", addr.port(), addr.ip()))
        .args(["-H", &format!("Host: {host}")])
        .arg(format!("https://{sni}:{}{path}", addr.port()))
        .output()
        .expect("curl runs");
    crate::support::client::parse_full_response(&out.stdout).unwrap_or(Response {
        status: 0,
        headers: Vec::new(),
        body: out.stderr,
    })
}

/// Every value of response header `name`, in order.
pub fn response_header_values(resp: &Response, name: &str) -> Vec<String> {
    resp.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

/// `attachedRoutes` of listener `listener` in a Gateway's status.
pub fn attached_routes(gateway_status: &serde_json::Value, listener: &str) -> u64 {
    gateway_status["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == listener))
        .and_then(|l| l["attachedRoutes"].as_u64())
        .unwrap_or_else(|| panic!("no listener {listener} in {gateway_status:#}"))
}

/// Listener `name` of a Gateway's status.
pub fn listener_of(gateway_status: &serde_json::Value, name: &str) -> serde_json::Value {
    gateway_status["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no listener {name} in {gateway_status:#}"))
}

/// Replaces lb's `test.yaml` atomically (write aside, rename over) and waits
/// for the generation it produces; returns that generation.
pub fn rewrite_test_yaml(lb: &Lb, text: &str) -> u64 {
    let before = lb.generation();
    crate::support::replace(&lb.manifest_path("test.yaml"), text);
    lb.wait_generation_above(before, Duration::from_secs(10))
}

/// Whether a TCP connection to `addr` is refused (bounded: 2 s connect timeout).
pub fn refused(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
}

/// The subject CN presented at `addr` for server name `sni`.
pub fn served_cn(addr: SocketAddr, sni: &str) -> Option<String> {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            sni,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .and_then(|s| s.rsplit("CN").next())
        .map(|s| s.trim_start_matches([' ', '=']).trim().to_owned())
}
