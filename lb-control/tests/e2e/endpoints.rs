//! Endpoint selection through the running binary: the serving-and-terminating
//! fallback, and topology hints against `[node] zone`. Each endpoint is an
//! echo backend on its own loopback address (127.0.0.x, one shared port, as
//! an EndpointSlice port requires) answering with its own name.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bench::echo::EchoServer;

use crate::support::{Lb, free_port};

/// Echo backends named `names[i]` on `127.0.0.(i + 2)`, all on one port.
struct Endpoints {
    port: u16,
    /// Kept to keep the backends running until the test ends.
    _servers: Vec<EchoServer>,
}

impl Endpoints {
    fn start(names: &[&str]) -> Endpoints {
        // free_port() checks 127.0.0.1 only: retry with another port when one
        // of the other addresses has it taken.
        'attempt: for _ in 0..10 {
            let port = free_port();
            let mut servers = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match EchoServer::start(Self::addr_of(i, port), name) {
                    Ok(s) => servers.push(s),
                    Err(_) => continue 'attempt,
                }
            }
            return Endpoints {
                port,
                _servers: servers,
            };
        }
        panic!(
            "no port free on 127.0.0.2-{} after 10 tries",
            names.len() + 1
        );
    }

    fn addr_of(i: usize, port: u16) -> SocketAddr {
        let last = u8::try_from(i + 2).expect("few backends");
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), port)
    }

    /// The address of the `i`-th backend.
    fn ip(&self, i: usize) -> String {
        Self::addr_of(i, self.port).ip().to_string()
    }
}

/// An Ingress routing `Host: ep.test` paths to Services of port 80.
fn ingress(routes: &[(&str, &str)]) -> String {
    let mut out = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: ep}\nspec:\n  ingressClassName: lb\n  rules:\n  - host: ep.test\n    http:\n      paths:\n",
    );
    for (path, svc) in routes {
        out.push_str(&format!(
            "      - {{path: {path}, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n"
        ));
    }
    out
}

/// A Service with one unnamed port 80, with `annotations` (YAML flow map),
/// and one EndpointSlice listing `endpoints` (YAML block list items).
fn service(name: &str, annotations: &str, port: u16, endpoints: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  annotations: {annotations}
spec:
  ports: [{{port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: \"\", protocol: TCP, port: {port}}}]
endpoints:
{endpoints}"
    )
}

/// The backends answering `n` requests for `path` on one keep-alive connection.
fn answers(lb: &Lb, path: &str, n: usize) -> Vec<String> {
    let mut client = lb.client();
    (0..n)
        .map(|_| {
            let resp = client.get("ep.test", path);
            assert_eq!(resp.status, 200, "{path}: {}", resp.text());
            resp.backend()
        })
        .collect()
}

#[test]
fn terminating_endpoint_serves_when_none_is_ready() {
    let b = Endpoints::start(&["unready", "terminated", "draining"]);
    let endpoints = format!(
        "- addresses: [\"{}\"]
  conditions: {{ready: false}}
- addresses: [\"{}\"]
  conditions: {{ready: false, serving: false, terminating: true}}
- addresses: [\"{}\"]
  conditions: {{ready: false, serving: true, terminating: true}}
",
        b.ip(0),
        b.ip(1),
        b.ip(2)
    );
    let files = [
        ("svc.yaml", service("drain", "{}", b.port, &endpoints)),
        ("ingress.yaml", ingress(&[("/", "drain")])),
    ];
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, t)| (*a, t.as_str())).collect();
    let lb = Lb::start("ep-terminating", &refs, "");
    let got: BTreeSet<String> = answers(&lb, "/", 8).into_iter().collect();
    assert_eq!(got, BTreeSet::from(["draining".to_owned()]));
}

#[test]
fn topology_hints_pick_this_zones_endpoint() {
    let b = Endpoints::start(&["in-zone-a", "in-zone-b"]);
    let hinted = format!(
        "- addresses: [\"{}\"]
  zone: zone-a
  hints: {{forZones: [{{name: zone-a}}]}}
- addresses: [\"{}\"]
  zone: zone-b
  hints: {{forZones: [{{name: zone-b}}]}}
",
        b.ip(0),
        b.ip(1)
    );
    // The zone-a endpoint has no hints: Kubernetes falls back to all endpoints.
    let partly = format!(
        "- addresses: [\"{}\"]
  zone: zone-a
- addresses: [\"{}\"]
  zone: zone-b
  hints: {{forZones: [{{name: zone-b}}]}}
",
        b.ip(0),
        b.ip(1)
    );
    let auto = "{service.kubernetes.io/topology-mode: Auto}";
    let files = [
        ("zonal.yaml", service("zonal", auto, b.port, &hinted)),
        ("partly.yaml", service("partly", auto, b.port, &partly)),
        ("plain.yaml", service("plain", "{}", b.port, &hinted)),
        (
            "ingress.yaml",
            ingress(&[
                ("/zonal", "zonal"),
                ("/partly", "partly"),
                ("/plain", "plain"),
            ]),
        ),
    ];
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, t)| (*a, t.as_str())).collect();
    let lb = Lb::start(
        "ep-topology",
        &refs,
        "[node]\nname = \"edge-1\"\nzone = \"zone-b\"\n",
    );
    let set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    let both = BTreeSet::from(["in-zone-a".to_owned(), "in-zone-b".to_owned()]);
    assert_eq!(
        set(answers(&lb, "/zonal", 8)),
        BTreeSet::from(["in-zone-b".to_owned()])
    );
    // Round robin over both endpoints on one connection: 8 requests see both.
    assert_eq!(set(answers(&lb, "/partly", 8)), both);
    // Hints without the Service asking for topology-aware routing: ignored.
    assert_eq!(set(answers(&lb, "/plain", 8)), both);
}
