//! `lb check`: exit codes, summary and diagnostics.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{lb_bin, lb_check, scratch_dir};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
fn shipped_config_checks_clean() {
    let out = Command::new(lb_bin())
        .args(["check", "--config", "config/lb.toml"])
        .current_dir(repo_root())
        .output()
        .expect("run lb check");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for word in ["Ingress", "Service", "EndpointSlice", "routes", "endpoints"] {
        assert!(text.contains(word), "summary lacks {word}: {text}");
    }
}

#[test]
fn unknown_config_key_is_unusable_and_named() {
    let dir = scratch_dir("check-key");
    let cfg = dir.join("lb.toml");
    std::fs::write(&cfg, "[admin]\nlisten = \"127.0.0.1:9\"\n\n[ingress]\nclass = \"lb\"\nhtpp = [\"127.0.0.1:1\"]\n").unwrap();
    let (code, text) = lb_check(&cfg);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("htpp"), "key not named: {text}");
    assert!(text.contains("line 6"), "line not named: {text}");
}

#[test]
fn invalid_object_is_reported_with_file_document_and_field() {
    let dir = scratch_dir("check-bad");
    let manifests = dir.join("manifests");
    std::fs::write(
        manifests.join("bad.yaml"),
        "apiVersion: v1
kind: Service
metadata: {name: fine}
spec:
  ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken, namespace: shop}
spec:
  rules:
  - http:
      paths:
      - path: /x
        pathType: Sometimes
        backend: {service: {name: fine, port: {number: 80}}}
",
    )
    .unwrap();
    let cfg = dir.join("lb.toml");
    std::fs::write(
        &cfg,
        format!("[sources]\nfiles = [\"{}\"]\n", manifests.display()),
    )
    .unwrap();
    let (code, text) = lb_check(&cfg);
    assert_eq!(code, 1, "{text}");
    for part in [
        "bad.yaml",
        "doc 1",
        "Ingress",
        "shop/broken",
        "spec.rules[0].http.paths[0].pathType",
    ] {
        assert!(text.contains(part), "diagnostic lacks {part:?}: {text}");
    }
}

#[test]
fn cluster_manifests_are_valid_and_grant_what_lb_uses() {
    let dir = repo_root().join("config/kubernetes");
    // The classes check clean with lb's own validation.
    let scratch = scratch_dir("cluster-manifests");
    let config = scratch.join("lb.toml");
    std::fs::write(
        &config,
        format!(
            "[sources]\nfiles = [\"{}\"]\n",
            dir.join("classes.yaml").display()
        ),
    )
    .unwrap();
    let (code, text) = lb_check(&config);
    assert_eq!(code, 0, "{text}");
    // RBAC: every document parses, and the ClusterRole covers each kind lb
    // reads with get/list/watch and each status it writes.
    let rbac = std::fs::read_to_string(dir.join("rbac.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&rbac)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    let role = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    let grants_in = |role: &serde_json::Value, resource: &str, verb: &str| {
        role["rules"].as_array().unwrap().iter().any(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == resource)
                && r["verbs"].as_array().unwrap().iter().any(|x| x == verb)
        })
    };
    let grants = |resource: &str, verb: &str| grants_in(role, resource, verb);
    // Every kind the API server source watches, but Secrets cluster-wide.
    for spec in lb_control::source::kube::watched() {
        for verb in ["list", "watch"] {
            assert_eq!(
                grants(spec.plural, verb),
                spec.kind != "Secret",
                "{verb} {}",
                spec.plural
            );
        }
    }
    for status in [
        "services/status",
        "ingresses/status",
        "gateways/status",
        "httproutes/status",
    ] {
        assert!(grants(status, "patch"), "patch {status} not granted");
    }
    // Least privilege: nothing lb does not call.
    for (resource, verb) in [
        ("pods", "list"),
        ("networkpolicies", "list"),
        ("events", "create"),
        ("services/status", "update"),
        ("secrets", "update"),
    ] {
        assert!(!grants(resource, verb), "{verb} {resource} granted");
    }
    // TLS Secrets: a namespaced Role to grant per namespace.
    let tls = std::fs::read_to_string(dir.join("tls-secrets.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&tls)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .collect();
    let role = docs.iter().find(|d| d["kind"] == "Role").unwrap();
    assert!(role["metadata"].get("namespace").is_none());
    assert!(grants_in(role, "secrets", "list") && grants_in(role, "secrets", "watch"));
    assert!(!grants_in(role, "secrets", "get"));
}

#[test]
fn crlf_in_a_route_header_value_fails_check_and_names_the_field() {
    let dir = scratch_dir("check-crlf");
    std::fs::write(
        dir.join("manifests").join("route.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: inject, namespace: shop}
spec:
  parentRefs: [{name: g}]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Ok, value: fine}]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: X-A, value: \"v\\r\\nX-Injected: yes\"}]
    backendRefs: [{name: web, port: 80}]
",
    )
    .unwrap();
    let cfg = dir.join("lb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sources]\nfiles = [\"{}\"]\n",
            dir.join("manifests").display()
        ),
    )
    .unwrap();
    let (code, text) = lb_check(&cfg);
    assert_eq!(code, 1, "{text}");
    for part in [
        "route.yaml",
        "HTTPRoute",
        "shop/inject",
        "spec.rules[0].filters[1].responseHeaderModifier.add[0].value",
        "control character",
    ] {
        assert!(text.contains(part), "diagnostic lacks {part:?}: {text}");
    }
}
