//! `lb explain` agrees with the running data plane: for a table of (host,
//! path) probes, the backend `lb explain --json` names is the one whose echo
//! server answered the real request (or both say 404 / 503). A bad
//! configuration exits 2 with a clear message.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bench::echo::EchoServer;
use serde_json::Value;

use crate::support::{Lb, scratch_dir, service_yaml};

/// Echo servers named like the Services they back (`svc-<name>`).
fn echo(names: &[&'static str]) -> BTreeMap<&'static str, EchoServer> {
    names
        .iter()
        .map(|n| {
            let server = EchoServer::start("127.0.0.1:0".parse().unwrap(), n).expect("echo");
            (*n, server)
        })
        .collect()
}

fn manifests(b: &BTreeMap<&'static str, EchoServer>, with_default: bool) -> Vec<(String, String)> {
    let addr = |n: &str| b[n].local_addr();
    let mut services = vec![
        service_yaml("default", "svc-a", 80, Some("http"), &[addr("a")]),
        service_yaml("default", "svc-b", 8080, None, &[addr("b")]),
        service_yaml("default", "svc-c", 80, None, &[addr("c")]),
        service_yaml("default", "svc-d", 80, None, &[addr("d")]),
        service_yaml("default", "svc-wild", 80, None, &[addr("wild")]),
        service_yaml("default", "svc-x", 80, None, &[addr("x")]),
        service_yaml("default", "svc-default", 80, None, &[addr("default")]),
        service_yaml("team", "svc-any", 80, None, &[addr("any")]),
        // No EndpointSlice at all: 503.
        "apiVersion: v1\nkind: Service\nmetadata: {name: svc-empty}\nspec: {ports: [{port: 80}]}\n"
            .to_owned(),
    ];
    // One ready endpoint (the echo server) and one that is not ready.
    let mixed = addr("mixed");
    services.push(format!(
        "apiVersion: v1
kind: Service
metadata: {{name: svc-mixed}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-mixed-1
  labels: {{kubernetes.io/service-name: svc-mixed}}
addressType: IPv4
ports: [{{port: {port}}}]
endpoints:
- addresses: [\"{ip}\"]
  conditions: {{ready: true}}
- addresses: [\"127.0.0.9\"]
  conditions: {{ready: false}}
",
        port = mixed.port(),
        ip = mixed.ip()
    ));
    let default = if with_default {
        "  defaultBackend:\n    service: {name: svc-default, port: {number: 80}}\n"
    } else {
        ""
    };
    let ingresses = format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: main
  creationTimestamp: \"2024-01-01T00:00:00Z\"
spec:
  ingressClassName: lb
{default}  rules:
  - host: foo.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc-a, port: {{name: http}}}}}}}}
      - {{path: /api, pathType: Prefix, backend: {{service: {{name: svc-b, port: {{number: 8080}}}}}}}}
      - {{path: /api/v1, pathType: Exact, backend: {{service: {{name: svc-c, port: {{number: 80}}}}}}}}
      - {{path: /api/v1/, pathType: Prefix, backend: {{service: {{name: svc-d, port: {{number: 80}}}}}}}}
      - {{path: /impl, pathType: ImplementationSpecific, backend: {{service: {{name: svc-c, port: {{number: 80}}}}}}}}
      - {{path: /empty, pathType: Prefix, backend: {{service: {{name: svc-empty, port: {{number: 80}}}}}}}}
      - {{path: /mixed, pathType: Exact, backend: {{service: {{name: svc-mixed, port: {{number: 80}}}}}}}}
  - host: \"*.example.com\"
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc-wild, port: {{number: 80}}}}}}}}
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
      - {{path: /api, pathType: Prefix, backend: {{service: {{name: svc-x, port: {{number: 80}}}}}}}}
      - {{path: /only-x, pathType: Exact, backend: {{service: {{name: svc-x, port: {{number: 80}}}}}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: hostless
  namespace: team
spec:
  ingressClassName: lb
  rules:
  - http:
      paths:
      - {{path: /any, pathType: Prefix, backend: {{service: {{name: svc-any, port: {{number: 80}}}}}}}}
      - {{path: /exact/, pathType: Exact, backend: {{service: {{name: svc-any, port: {{number: 80}}}}}}}}
"
    );
    vec![
        ("services.yaml".into(), services.join("---\n")),
        ("ingress.yaml".into(), ingresses),
    ]
}

/// Runs `lb explain --json` and returns (exit code, parsed stdout, stderr).
fn explain(config: &Path, host: &str, path: &str) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["explain", "--json", "--config"])
        .arg(config)
        .args(["--host", host, "--path", path])
        .args(["--method", "GET", "--header", "X-Probe: 1"])
        .output()
        .expect("run lb explain");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// The echo name behind a backend name `namespace/svc-<name>:port`.
fn echo_name(backend: &str) -> &str {
    let service = backend.split_once('/').map_or(backend, |(_, s)| s);
    let service = service.rsplit_once(':').map_or(service, |(s, _)| s);
    service.strip_prefix("svc-").unwrap_or(service)
}

/// Sends every probe to the running lb and to `lb explain`, and checks they
/// agree; returns each probe's explanation.
fn agree(lb: &Lb, probes: &[(&str, &str)]) -> Vec<Value> {
    let mut out = Vec::new();
    for (host, path) in probes {
        // A connection per probe: lb closes one after a 400.
        let resp = lb.client().get(host, path);
        let (code, json, stderr) = explain(&lb.config_path(), host, path);
        let what = format!("{host} {path}: {json:#}\n{stderr}");
        match resp.status {
            404 => {
                assert_eq!(code, 1, "{what}");
                assert!(json["matched"].is_null(), "{what}");
                assert_eq!(json["result"]["status"], 404, "{what}");
            }
            503 => {
                assert_eq!(code, 0, "{what}");
                assert_eq!(json["result"]["status"], 503, "{what}");
                assert_eq!(json["backend"]["selected"], 0, "{what}");
            }
            200 => {
                assert_eq!(code, 0, "{what}");
                assert!(json["result"]["status"].is_null(), "{what}");
                let named = json["backend"]["name"].as_str().expect("backend name");
                assert_eq!(echo_name(named), resp.backend(), "{what}");
            }
            400 => {
                assert_eq!(code, 1, "{what}");
                assert_eq!(json["result"]["status"], 400, "{what}");
            }
            other => panic!("{host} {path}: unexpected status {other}: {}", resp.text()),
        }
        out.push(json);
    }
    out
}

const PROBES: &[(&str, &str)] = &[
    ("foo.example.com", "/"),
    ("foo.example.com", "/anything/deep"),
    ("foo.example.com", "/api"),
    ("foo.example.com", "/api/"),
    ("foo.example.com", "/api/users?x=1"),
    ("foo.example.com", "/apix"),
    ("foo.example.com", "/api/v1"),
    ("foo.example.com", "/api/v1?page=2"),
    ("foo.example.com", "/api/v1/"),
    ("foo.example.com", "/api/v1/items"),
    ("foo.example.com", "/impl/x"),
    ("foo.example.com", "/empty/x"),
    ("foo.example.com", "/mixed"),
    ("foo.example.com", "/only-x"),
    // Routing sees the normalised path, in lb and in lb explain alike.
    ("foo.example.com", "/x/../api/v1/items"),
    ("foo.example.com", "//api/./v1"),
    ("foo.example.com", "/%61pi/v1"),
    ("foo.example.com", "/api%2Fv1"),
    ("FOO.Example.COM:8080", "/api"),
    ("foo.example.com.", "/api/v1"),
    ("bar.example.com", "/"),
    ("bar.example.com", "/any/thing"),
    ("a.bar.example.com", "/any"),
    ("a.bar.example.com", "/"),
    ("example.com", "/"),
    ("unknown.test", "/any"),
    ("unknown.test", "/anyway"),
    ("unknown.test", "/exact/"),
    ("unknown.test", "/exact"),
    ("unknown.test", "/"),
];

const NAMES: &[&str] = &["a", "b", "c", "d", "wild", "x", "default", "any", "mixed"];

#[test]
fn explain_names_the_backend_that_answers() {
    let b = echo(NAMES);
    let files = manifests(&b, true);
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let lb = Lb::start("explain", &refs, "");
    let answers = agree(&lb, PROBES);
    let by_probe = |host: &str, path: &str| {
        let i = PROBES.iter().position(|p| *p == (host, path)).unwrap();
        &answers[i]
    };

    // Origin, path type as written, host match kind.
    let impl_ = by_probe("foo.example.com", "/impl/x");
    assert_eq!(impl_["matched"]["origin"]["name"], "main");
    assert_eq!(
        impl_["matched"]["origin"]["field"],
        "spec.rules[0].http.paths[4]"
    );
    assert_eq!(impl_["matched"]["path_type"], "ImplementationSpecific");
    assert_eq!(impl_["matched"]["compiled_as"], "Prefix");
    assert_eq!(impl_["matched"]["host_match"], "exact");
    let wild = by_probe("bar.example.com", "/any/thing");
    assert_eq!(wild["matched"]["host_match"], "wildcard");
    assert_eq!(wild["host"], "bar.example.com");
    let hostless = by_probe("unknown.test", "/any");
    assert_eq!(hostless["matched"]["host_match"], "any");
    assert_eq!(hostless["matched"]["origin"]["namespace"], "team");
    let fallback = by_probe("a.bar.example.com", "/");
    assert_eq!(fallback["decision"], "default");
    assert_eq!(fallback["matched"]["default_backend"], true);
    assert_eq!(
        fallback["matched"]["origin"]["field"],
        "spec.defaultBackend"
    );
    let dotted = by_probe("foo.example.com", "/x/../api/v1/items");
    assert_eq!(dotted["path"], "/api/v1/items", "{dotted:#}");
    assert_eq!(by_probe("foo.example.com", "/%61pi/v1")["path"], "/api/v1");
    let hidden = by_probe("foo.example.com", "/api%2Fv1");
    assert!(
        hidden["result"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("encoded / or \\"),
        "{hidden:#}"
    );
    let port = by_probe("FOO.Example.COM:8080", "/api");
    assert_eq!(port["host"], "foo.example.com");
    assert_eq!(port["request"]["headers"][0][0], "X-Probe");

    // Why not: the longer prefix, the exact path, and the conflict loser is absent.
    let v1 = by_probe("foo.example.com", "/api/v1/items");
    let reasons: Vec<&str> = v1["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("longer prefix /api/v1/")),
        "{reasons:#?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("exact path /api/v1 is not")),
        "{reasons:#?}"
    );
    let wild_reason = fallback["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "*.example.com")
        .expect("wildcard rule listed");
    assert_eq!(wild_reason["verdict"], "other_host");
    assert!(
        wild_reason["reason"]
            .as_str()
            .unwrap()
            .contains("exactly one label"),
        "{wild_reason}"
    );

    // Endpoint states: the ready one is selected, the unready one excluded.
    let mixed = by_probe("foo.example.com", "/mixed");
    let eps = mixed["backend"]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2, "{mixed:#}");
    let ready = eps.iter().find(|e| e["selected"] == true).unwrap();
    assert_eq!(ready["state"], "ready");
    let unready = eps.iter().find(|e| e["selected"] == false).unwrap();
    assert_eq!(
        unready["address"],
        "127.0.0.9:".to_owned() + &b["mixed"].local_addr().port().to_string()
    );
    assert_eq!(unready["excluded_because"], "not ready");

    // The listener is the one lb serves on.
    assert_eq!(mixed["listeners"][0], lb.http.to_string());

    // Text output says the same.
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["explain", "--config"])
        .arg(lb.config_path())
        .args(["--host", "foo.example.com", "--path", "/api/v1/items"])
        .output()
        .expect("run lb explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for needle in [
        "matched    Ingress default/main spec.rules[0].http.paths[3]",
        "backend    default/svc-d:80",
        "(selected)",
        "longer prefix /api/v1/ wins",
        "routing uses host and path only",
        "lb explain: routed",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
}

#[test]
fn explain_and_lb_both_answer_404_without_a_default_backend() {
    let b = echo(NAMES);
    let files = manifests(&b, false);
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let lb = Lb::start("explain-404", &refs, "");
    let answers = agree(&lb, PROBES);
    let not_found = answers.iter().filter(|a| a["decision"] == "none").count();
    assert!(not_found >= 4, "expected several 404 probes");
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["explain", "--config"])
        .arg(lb.config_path())
        .args(["--host", "unknown.test", "--path", "/"])
        .output()
        .expect("run lb explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("404"), "{text}");
    assert!(text.contains("lb explain: no route (404)"), "{text}");
}

#[test]
fn explain_with_a_bad_config_exits_two() {
    let dir = scratch_dir("explain-bad");
    let config = dir.join("lb.toml");
    std::fs::write(&config, "[ingress]\nklass = \"lb\"\n").unwrap();
    let run = |config: &Path, json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lb"));
        cmd.args(["explain", "--config"])
            .arg(config)
            .args(["--host", "a.test", "--path", "/"]);
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("run lb explain")
    };
    let out = run(&config, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("klass"), "{stderr}");
    assert!(stderr.contains("configuration unusable"), "{stderr}");

    let out = run(&config, true);
    assert_eq!(out.status.code(), Some(2));
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["exit_code"], 2);
    assert!(
        json["config_error"].as_str().unwrap().contains("klass"),
        "{json}"
    );

    let out = run(&dir.join("missing.toml"), false);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out.stderr.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
