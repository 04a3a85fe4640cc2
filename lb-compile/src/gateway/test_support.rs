//! Helpers for the Gateway compiler tests: manifests (classes, Services,
//! Secrets, Gateways), compiling them, and reading status back.

use std::net::SocketAddr;
use std::path::Path;

use lb_http::gateway::GatewayPort;
use serde_json::Value;

use crate::compile::{Compiled, compile};
use crate::diag::Severity;
use crate::manifests::objects_from_str;
use crate::settings::Settings;
use crate::store::Store;

/// Our GatewayClass `lb` and another controller's `other`.
pub(super) const CLASSES: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: lb}
spec: {controllerName: lb.example.com/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.net/other}
";

/// A self-signed P-256 certificate for gw.example.com and *.example.com.
pub(super) const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBsjCCAVmgAwIBAgIUKSLRToCYI5l3PDM2SdKa1ZwsGS0wCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOZ3cuZXhhbXBsZS5jb20wIBcNMjYxMTI3MDMyOTA1WhgPMjEy
NjExMDMwMzI5MDVaMBkxFzAVBgNVBAMMDmd3LmV4YW1wbGUuY29tMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAE1oXl168TDAydFHrXLkhR0YGCh1f7FmhJ8ND2XhTL
91aEVo9/mI1hq5ACUUvJWlR40LlrBjN/iUIGI1Q1gPMtDKN9MHswHQYDVR0OBBYE
FDoF8AhLsFmcLdrnl+MKnkJV51SCMB8GA1UdIwQYMBaAFDoF8AhLsFmcLdrnl+MK
nkJV51SCMA8GA1UdEwEB/wQFMAMBAf8wKAYDVR0RBCEwH4IOZ3cuZXhhbXBsZS5j
b22CDSouZXhhbXBsZS5jb20wCgYIKoZIzj0EAwIDRwAwRAIgXu045bqN1iYqiu0E
/miY6GIMqyVtjTiTXbe+7stnzLYCIHntsE0SgY8zOmuD23nNqQxk26BDD8Qo78Wr
BwLcoWls
-----END CERTIFICATE-----
";

/// The key of [`CERT`].
pub(super) const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgutq4sVGwJcuCN7ts
teLYwELxXiidOetrcA06UrTfvi6hRANCAATWheXXrxMMDJ0UetcuSFHRgYKHV/sW
aEnw0PZeFMv3VoRWj3+YjWGrkAJRS8laVHjQuWsGM3+JQgYjVDWA8y0M
-----END PRIVATE KEY-----
";

/// A `kubernetes.io/tls` Secret holding [`CERT`].
pub(super) fn secret(ns: &str, name: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(CERT),
        indent(KEY)
    )
}

/// A Service with one TCP port and one ready endpoint.
pub(super) fn service(ns: &str, name: &str, port: u16, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: [{{port: {port}, targetPort: 8000}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{port: 8000}}]\nendpoints: [{{addresses: [\"{ip}\"]}}]\n"
    )
}

/// A Gateway of class `lb` in `ns` with `spec` (YAML flow fields after the class).
pub(super) fn gateway(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{gatewayClassName: lb, {spec}}}\n"
    )
}

/// The configuration: pool 127.0.60.0/29, small Maglev tables.
pub(super) fn cfg(pools: &str) -> Settings {
    toml::from_str::<Settings>(&format!(
            "[ingress]\nhttp = [\"127.0.0.1:8080\"]\n[loadbalancer]\npools = [{pools}]\nmaglev_table_size = 251\n"
        ))
    .expect("config")
}

/// Compiles `yaml` (after [`CLASSES`]) with `cfg`; the objects must load cleanly.
pub(super) fn run_with(yaml: &str, cfg: &Settings) -> Compiled {
    let text = format!("{CLASSES}{yaml}");
    let (raws, mut diags) = objects_from_str(&text, Path::new("t.yaml"));
    let (store, more) = Store::build(&raws);
    diags.extend(more);
    assert!(
        diags.iter().all(|d| d.severity != Severity::Error),
        "{diags:?}"
    );
    compile(&store, cfg)
}

/// Compiles with the default pool.
pub(super) fn run(yaml: &str) -> Compiled {
    run_with(yaml, &cfg("\"127.0.60.0/29\""))
}

/// The status object of `kind` `name`.
pub(super) fn status<'a>(c: &'a Compiled, kind: &str, name: &str) -> &'a Value {
    c.status
        .iter()
        .find(|s| s["kind"] == kind && s["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no status for {kind} {name}: {:#?}", c.status))
}

/// `(status, reason)` of condition `ty` in a `conditions` array.
pub(super) fn cond(conditions: &Value, ty: &str) -> (String, String) {
    let c = conditions
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == ty))
        .unwrap_or_else(|| panic!("no {ty} in {conditions:#}"));
    (
        c["status"].as_str().unwrap().to_owned(),
        c["reason"].as_str().unwrap().to_owned(),
    )
}

/// Shorthand for an expected condition.
pub(super) fn is(status: &str, reason: &str) -> (String, String) {
    (status.to_owned(), reason.to_owned())
}

/// The status of listener `name` of Gateway `gw`.
pub(super) fn listener<'a>(c: &'a Compiled, gw: &str, name: &str) -> &'a Value {
    status(c, "Gateway", gw)["status"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap()
}

/// The Gateway port bound on `addr`.
pub(super) fn port<'a>(c: &'a Compiled, addr: &str) -> &'a GatewayPort {
    let a: SocketAddr = addr.parse().unwrap();
    c.snapshot
        .gateway
        .ports
        .get(&a)
        .unwrap_or_else(|| panic!("no port {addr}: {:?}", c.snapshot.gateway.ports.keys()))
}
