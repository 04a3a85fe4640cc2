//! Ingress v1 routing through the running binary: hosts, path types,
//! precedence, default backend, class selection, named ports, errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bench::echo::EchoServer;

use crate::support::{Lb, free_port, service_yaml};

const CLASS: &str = "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: lb
  annotations:
    ingressclass.kubernetes.io/is-default-class: \"true\"
spec:
  controller: lb.example.com/ingress-controller
";

struct Backends {
    servers: BTreeMap<&'static str, EchoServer>,
}

impl Backends {
    fn start(names: &[&'static str]) -> Backends {
        let servers = names
            .iter()
            .map(|n| {
                (
                    *n,
                    EchoServer::start("127.0.0.1:0".parse().unwrap(), n).expect("echo"),
                )
            })
            .collect();
        Backends { servers }
    }

    fn addr(&self, name: &str) -> SocketAddr {
        self.servers[name].local_addr()
    }
}

fn routing_manifests(b: &Backends) -> Vec<(String, String)> {
    let services = [
        service_yaml("default", "svc-a", 80, Some("http"), &[b.addr("a")]),
        service_yaml("default", "svc-b", 8080, None, &[b.addr("b")]),
        service_yaml("default", "svc-c", 80, None, &[b.addr("c")]),
        service_yaml("default", "svc-d", 80, None, &[b.addr("d")]),
        service_yaml("default", "svc-wild", 80, None, &[b.addr("wild")]),
        service_yaml("default", "svc-default", 80, None, &[b.addr("default")]),
        service_yaml("default", "svc-x", 80, None, &[b.addr("x")]),
    ];
    let ingresses = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: main
  creationTimestamp: \"2024-01-01T00:00:00Z\"
spec:
  ingressClassName: lb
  defaultBackend:
    service: {name: svc-default, port: {number: 80}}
  rules:
  - host: foo.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: svc-a, port: {name: http}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: svc-b, port: {number: 8080}}}}
      - {path: /api/v1, pathType: Exact, backend: {service: {name: svc-c, port: {number: 80}}}}
      - {path: /api/v1, pathType: Prefix, backend: {service: {name: svc-d, port: {number: 80}}}}
      - {path: /impl, pathType: ImplementationSpecific, backend: {service: {name: svc-c, port: {number: 80}}}}
  - host: \"*.example.com\"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: svc-wild, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: younger
  creationTimestamp: \"2025-01-01T00:00:00Z\"
spec:
  ingressClassName: lb
  rules:
  - host: foo.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: svc-x, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: other-class
spec:
  ingressClassName: other
  rules:
  - host: other.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: svc-x, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: no-class
spec:
  rules:
  - host: noclass.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: svc-c, port: {number: 80}}}}
";
    vec![
        ("class.yaml".into(), CLASS.into()),
        ("services.yaml".into(), services.join("---\n")),
        ("ingress.yaml".into(), ingresses.into()),
    ]
}

fn as_refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

#[test]
fn ingress_routing_table() {
    let b = Backends::start(&["a", "b", "c", "d", "wild", "default", "x"]);
    let files = routing_manifests(&b);
    let lb = Lb::start("routing", &as_refs(&files), "");
    let cases: &[(&str, &str, &str)] = &[
        // Exact host, Prefix matched segment by segment, longest wins.
        ("foo.example.com", "/", "a"),
        ("foo.example.com", "/anything/deep", "a"),
        ("foo.example.com", "/api", "b"),
        ("foo.example.com", "/api/", "b"),
        ("foo.example.com", "/api/users?x=1", "b"),
        ("foo.example.com", "/apix", "a"),
        // Exact beats Prefix at equal length; a trailing slash is not Exact.
        ("foo.example.com", "/api/v1", "c"),
        ("foo.example.com", "/api/v1?page=2", "c"),
        ("foo.example.com", "/api/v1/", "d"),
        ("foo.example.com", "/api/v1/items", "d"),
        // ImplementationSpecific is treated as Prefix.
        ("foo.example.com", "/impl/x", "c"),
        // Host is case-insensitive and its port is ignored.
        ("FOO.Example.COM:8080", "/api", "b"),
        // Wildcards cover exactly one label.
        ("bar.example.com", "/", "wild"),
        ("a.bar.example.com", "/", "default"),
        ("example.com", "/", "default"),
        // Another class's Ingress is not served; its host falls to the wildcard.
        ("other.example.com", "/", "wild"),
        // No class, and our IngressClass is the default class.
        ("noclass.test", "/x", "c"),
        // Nothing matches: spec.defaultBackend.
        ("unknown.test", "/", "default"),
    ];
    let mut client = lb.client();
    for (host, path, want) in cases {
        let resp = client.get(host, path);
        assert_eq!(resp.status, 200, "{host}{path}: {}", resp.text());
        assert_eq!(resp.backend(), *want, "{host}{path}");
    }
    // The younger Ingress lost the conflict and says so.
    assert!(
        lb.wait_log("younger", std::time::Duration::from_secs(2)),
        "conflict not logged:\n{}",
        lb.log_text()
    );
}

#[test]
fn forwarded_headers_reach_the_backend() {
    let b = Backends::start(&["a", "b", "c", "d", "wild", "default", "x"]);
    let files = routing_manifests(&b);
    let lb = Lb::start("xff", &as_refs(&files), "");
    let mut client = lb.client();
    let resp = client
        .request(
            "GET",
            "foo.example.com",
            "/api/x",
            &[
                ("X-Forwarded-For", "203.0.113.7"),
                ("Connection", "keep-alive, X-Drop"),
                ("X-Drop", "1"),
            ],
            None,
        )
        .expect("request");
    let json = resp.json();
    let headers: Vec<(String, String)> =
        serde_json::from_value(json["headers"].clone()).expect("headers");
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(get("x-forwarded-host").as_deref(), Some("foo.example.com"));
    assert_eq!(
        get("x-drop"),
        None,
        "header named in Connection must not be forwarded"
    );
    let conn = get("connection").unwrap_or_default().to_ascii_lowercase();
    assert!(
        !conn.contains("x-drop"),
        "hop-by-hop names must not be forwarded: {conn}"
    );
}

#[test]
fn not_found_unavailable_and_bad_gateway() {
    let ok = EchoServer::start("127.0.0.1:0".parse().unwrap(), "ok").expect("echo");
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let unready = "apiVersion: v1
kind: Service
metadata: {name: unready}
spec:
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: unready-1
  labels: {kubernetes.io/service-name: unready}
addressType: IPv4
ports: [{port: 9}]
endpoints:
- addresses: [\"127.0.0.1\"]
  conditions: {ready: false}
";
    let ingress = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: errors}
spec:
  ingressClassName: lb
  rules:
  - host: err.test
    http:
      paths:
      - {path: /ok, pathType: Prefix, backend: {service: {name: ok, port: {number: 80}}}}
      - {path: /unready, pathType: Prefix, backend: {service: {name: unready, port: {number: 80}}}}
      - {path: /missing, pathType: Prefix, backend: {service: {name: no-such-service, port: {number: 80}}}}
      - {path: /dead, pathType: Prefix, backend: {service: {name: dead, port: {number: 80}}}}
";
    let files = [
        (
            "a.yaml",
            service_yaml("default", "ok", 80, None, &[ok.local_addr()]),
        ),
        ("b.yaml", service_yaml("default", "dead", 80, None, &[dead])),
        ("c.yaml", unready.to_owned()),
        ("d.yaml", ingress.to_owned()),
    ];
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let lb = Lb::start("errors", &refs, "");
    let mut c = lb.client();
    assert_eq!(c.get("err.test", "/ok").status, 200);
    assert_eq!(
        c.get("err.test", "/nope").status,
        404,
        "no rule matches and no default backend"
    );
    assert_eq!(c.get("other.test", "/ok").status, 404, "unknown host");
    assert_eq!(
        c.get("err.test", "/unready").status,
        503,
        "only unready endpoints"
    );
    assert_eq!(
        c.get("err.test", "/missing").status,
        503,
        "Service does not exist"
    );
    assert_eq!(
        lb.get("err.test", "/dead").status,
        502,
        "endpoint refuses connections"
    );
    // The connection still works after the errors.
    assert_eq!(c.get("err.test", "/ok").status, 200);
    let metrics = crate::support::admin_get(lb.admin, "/metrics")
        .expect("metrics")
        .text();
    assert!(
        metrics.contains("lb_http_responses_total{code=\"4xx\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lb_http_responses_total{code=\"5xx\"} 3"),
        "{metrics}"
    );
}
