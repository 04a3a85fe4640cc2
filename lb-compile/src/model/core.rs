//! Semantic checks for core (`v1`) and `discovery.k8s.io/v1` objects:
//! Service ports, traffic policies, IP families and topology settings,
//! EndpointSlice address types, addresses and ports, TLS Secrets.

use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lb_http::tls::Certificate;

use super::Issues;

/// Whether `n` is a valid TCP/UDP port number.
pub fn valid_port(n: i32) -> bool {
    (1..=65535).contains(&n)
}

/// Values of `service.kubernetes.io/topology-mode` (and the older
/// `service.kubernetes.io/topology-aware-hints`) that mean something.
pub const TOPOLOGY_MODE_VALUES: &[&str] = &["Auto", "auto", "Disabled", "disabled", ""];

/// `spec.trafficDistribution` values lb knows.
pub const TRAFFIC_DISTRIBUTIONS: &[&str] = &["PreferClose", "PreferSameZone", "PreferSameNode"];

/// Checks a Service: port numbers, target ports, protocols, and names
/// (required and unique when there is more than one port); traffic policies,
/// IP family policy and families as the API server validates them. Unknown
/// topology annotation values and `trafficDistribution` values are warnings
/// (ignored, as kube-proxy does).
pub fn validate_service(svc: &Service, out: &mut Issues) {
    for annotation in [
        "service.kubernetes.io/topology-mode",
        "service.kubernetes.io/topology-aware-hints",
    ] {
        if let Some(v) = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(annotation))
            && !TOPOLOGY_MODE_VALUES.contains(&v.as_str())
        {
            out.warning(
                format!("metadata.annotations[{annotation}]"),
                format!("unknown value {v:?} (expected Auto or Disabled); topology-aware routing stays off"),
            );
        }
    }
    let Some(spec) = &svc.spec else { return };
    for (field, value) in [
        ("spec.internalTrafficPolicy", &spec.internal_traffic_policy),
        ("spec.externalTrafficPolicy", &spec.external_traffic_policy),
    ] {
        if let Some(v) = value
            && !matches!(v.as_str(), "Cluster" | "Local")
        {
            out.error(
                field,
                format!("unknown variant {v:?}, expected one of Cluster, Local"),
            );
        }
    }
    if let Some(v) = &spec.ip_family_policy
        && !matches!(
            v.as_str(),
            "SingleStack" | "PreferDualStack" | "RequireDualStack"
        )
    {
        out.error(
            "spec.ipFamilyPolicy",
            format!(
                "unknown variant {v:?}, expected one of SingleStack, PreferDualStack, RequireDualStack"
            ),
        );
    }
    let families = spec.ip_families.as_deref().unwrap_or_default();
    if families.len() > 2 {
        out.error(
            "spec.ipFamilies",
            format!("at most two families allowed, found {}", families.len()),
        );
    }
    for (i, f) in families.iter().enumerate() {
        if !matches!(f.as_str(), "IPv4" | "IPv6") {
            out.error(
                format!("spec.ipFamilies[{i}]"),
                format!("unknown variant {f:?}, expected one of IPv4, IPv6"),
            );
        } else if families[..i].contains(f) {
            out.error(
                format!("spec.ipFamilies[{i}]"),
                format!("duplicate family {f}"),
            );
        }
    }
    if let Some(v) = &spec.traffic_distribution
        && !TRAFFIC_DISTRIBUTIONS.contains(&v.as_str())
    {
        out.warning(
            "spec.trafficDistribution",
            format!(
                "unknown value {v:?} (lb knows {}); ignored",
                TRAFFIC_DISTRIBUTIONS.join(", ")
            ),
        );
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        if !valid_port(p.port) {
            out.error(
                format!("{field}.port"),
                format!("port {} is not in 1-65535", p.port),
            );
        }
        match &p.target_port {
            Some(IntOrString::Int(t)) if !valid_port(*t) => {
                out.error(
                    format!("{field}.targetPort"),
                    format!("port {t} is not in 1-65535"),
                );
            }
            Some(IntOrString::String(t)) if t.is_empty() => {
                out.error(format!("{field}.targetPort"), "must not be empty");
            }
            _ => {}
        }
        if let Some(n) = p.node_port
            && !valid_port(n)
        {
            out.error(
                format!("{field}.nodePort"),
                format!("port {n} is not in 1-65535"),
            );
        }
        if let Some(proto) = &p.protocol
            && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
        {
            out.error(
                format!("{field}.protocol"),
                format!("unknown variant {proto:?}, expected one of TCP, UDP, SCTP"),
            );
        }
        let name = p.name.as_deref().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            out.error(
                format!("{field}.name"),
                "required when the Service has more than one port",
            );
        }
        if !name.is_empty() && !names.insert(name) {
            out.error(
                format!("{field}.name"),
                format!("duplicate port name {name:?}"),
            );
        }
    }
}

/// Checks an EndpointSlice: `addressType` is IPv4, IPv6 or FQDN, every
/// address parses for its type, port numbers and protocols are valid and
/// no two ports share a name and protocol.
pub fn validate_endpoint_slice(slice: &EndpointSlice, out: &mut Issues) {
    let ty = slice.address_type.as_str();
    if !matches!(ty, "IPv4" | "IPv6" | "FQDN") {
        let msg = if ty.is_empty() {
            "required: expected one of IPv4, IPv6, FQDN".to_owned()
        } else {
            format!("unknown variant {ty:?}, expected one of IPv4, IPv6, FQDN")
        };
        out.error("addressType", msg);
        return;
    }
    for (i, ep) in slice.endpoints.iter().enumerate() {
        if ep.addresses.is_empty() {
            out.error(
                format!("endpoints[{i}].addresses"),
                "must have at least one address",
            );
        }
        for (j, a) in ep.addresses.iter().enumerate() {
            let ok = match ty {
                "IPv4" => a.parse::<Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<Ipv6Addr>().is_ok(),
                _ => !a.is_empty(),
            };
            if !ok {
                out.error(
                    format!("endpoints[{i}].addresses[{j}]"),
                    format!("{a:?} is not a valid {ty} address"),
                );
            }
        }
    }
    for (i, p) in slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if let Some(n) = p.port
            && !valid_port(n)
        {
            out.error(
                format!("ports[{i}].port"),
                format!("port {n} is not in 1-65535"),
            );
        }
        if let Some(proto) = &p.protocol
            && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
        {
            out.error(
                format!("ports[{i}].protocol"),
                format!("unknown variant {proto:?}, expected one of TCP, UDP, SCTP"),
            );
        }
    }
    let ports = slice.ports.as_deref().unwrap_or_default();
    let id = |p: &k8s_openapi::api::discovery::v1::EndpointPort| {
        (
            p.name.clone().unwrap_or_default(),
            p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
        )
    };
    for (i, p) in ports.iter().enumerate() {
        let (name, proto) = id(p);
        if ports[..i]
            .iter()
            .any(|q| id(q) == (name.clone(), proto.clone()))
        {
            out.error(
                format!("ports[{i}].name"),
                format!("duplicate port name {name:?} for protocol {proto}"),
            );
        }
    }
}

/// The Secret type holding a TLS certificate and key.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Checks a Secret: a `kubernetes.io/tls` Secret must hold `tls.crt` and
/// `tls.key`, PEM encoded, the key belonging to the certificate (an invalid
/// one keeps its previous valid version serving).
///
/// Returns the certificate of a valid TLS Secret: it is parsed here, once
/// per version of the Secret, and the compile serves this parse
/// ([`SecretObject::certificate`]).
pub fn validate_secret(secret: &Secret, out: &mut Issues) -> Option<Certificate> {
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return None;
    }
    let before = out.0.len();
    check_tls_keys(secret, out);
    if out.0.len() != before {
        return None;
    }
    match certificate(secret, "") {
        Ok(c) => Some(c),
        Err(e) => {
            out.error("data", e);
            None
        }
    }
}

/// A Secret as the store holds it: the Kubernetes object and, for a valid
/// `kubernetes.io/tls` Secret, its certificate and key, parsed once when
/// the Secret was validated. Reads as the [`Secret`] it holds.
#[derive(Debug, Clone)]
pub struct SecretObject {
    /// The Secret.
    pub secret: Secret,
    /// The parsed certificate of a `kubernetes.io/tls` Secret.
    tls: Option<Certificate>,
}

impl SecretObject {
    /// Validates `secret` into the store's form (see [`validate_secret`]).
    pub fn new(secret: Secret, out: &mut Issues) -> Self {
        let tls = validate_secret(&secret, out);
        Self { secret, tls }
    }

    /// The certificate for serving, named `source` in logs and `/config`:
    /// the parse made at validation, or why there is none.
    pub fn certificate(&self, source: &str) -> Result<Certificate, String> {
        match &self.tls {
            Some(c) => Ok(c.renamed(source)),
            None => certificate(&self.secret, source),
        }
    }
}

impl std::ops::Deref for SecretObject {
    type Target = Secret;

    fn deref(&self) -> &Secret {
        &self.secret
    }
}

impl PartialEq for SecretObject {
    /// Equal when the Secrets are: the certificate is parsed from them.
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret
    }
}

fn check_tls_keys(secret: &Secret, out: &mut Issues) {
    for key in ["tls.crt", "tls.key"] {
        let in_data = secret.data.as_ref().is_some_and(|d| d.contains_key(key));
        let in_string = secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(key));
        if !in_data && !in_string {
            out.error(
                "data",
                format!("a {TLS_SECRET_TYPE} Secret must have {key:?}"),
            );
        }
    }
}

/// The bytes of `key` in a Secret (`data`, else `stringData`).
fn secret_bytes<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(&v.0);
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(String::as_bytes)
}

/// Parses a `kubernetes.io/tls` Secret into a certificate.
pub fn certificate(secret: &Secret, source: &str) -> Result<Certificate, String> {
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return Err(format!("Secret {source} is not of type {TLS_SECRET_TYPE}"));
    }
    let crt = secret_bytes(secret, "tls.crt").ok_or("the Secret has no tls.crt")?;
    let key = secret_bytes(secret, "tls.key").ok_or("the Secret has no tls.key")?;
    lb_http::tls::Certificate::from_pem(source, crt, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::deserialize;

    fn fields(issues: &Issues) -> Vec<&str> {
        issues.0.iter().map(|i| i.field.as_str()).collect()
    }

    fn service(spec: serde_json::Value) -> Issues {
        let svc: Service = deserialize(serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec
        }))
        .unwrap();
        let mut issues = Issues::default();
        validate_service(&svc, &mut issues);
        issues
    }

    #[test]
    fn service_ports() {
        assert!(
            service(serde_json::json!({"ports": [{"port": 80, "targetPort": 8080}]}))
                .0
                .is_empty()
        );
        assert!(
            service(serde_json::json!({"ports": [{"port": 80, "targetPort": "http"}]}))
                .0
                .is_empty()
        );
        let cases = [
            (
                serde_json::json!({"ports": [{"port": 0}]}),
                "spec.ports[0].port",
            ),
            (
                serde_json::json!({"ports": [{"port": 70000}]}),
                "spec.ports[0].port",
            ),
            (
                serde_json::json!({"ports": [{"port": 80, "targetPort": 0}]}),
                "spec.ports[0].targetPort",
            ),
            (
                serde_json::json!({"ports": [{"port": 80, "nodePort": 99999}]}),
                "spec.ports[0].nodePort",
            ),
            (
                serde_json::json!({"ports": [{"port": 80, "protocol": "ICMP"}]}),
                "spec.ports[0].protocol",
            ),
            (
                serde_json::json!({"ports": [{"name": "a", "port": 80}, {"port": 81}]}),
                "spec.ports[1].name",
            ),
            (
                serde_json::json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}),
                "spec.ports[1].name",
            ),
            (
                serde_json::json!({"internalTrafficPolicy": "Node"}),
                "spec.internalTrafficPolicy",
            ),
            (
                serde_json::json!({"externalTrafficPolicy": "Global"}),
                "spec.externalTrafficPolicy",
            ),
            (
                serde_json::json!({"ipFamilyPolicy": "DualStack"}),
                "spec.ipFamilyPolicy",
            ),
            (
                serde_json::json!({"ipFamilies": ["IPv4", "IPv5"]}),
                "spec.ipFamilies[1]",
            ),
            (
                serde_json::json!({"ipFamilies": ["IPv6", "IPv6"]}),
                "spec.ipFamilies[1]",
            ),
        ];
        for (spec, field) in cases {
            let issues = service(spec.clone());
            assert_eq!(fields(&issues), [field], "{spec}");
            assert!(issues.has_errors());
        }
    }

    #[test]
    fn service_traffic_settings() {
        assert!(
            service(serde_json::json!({
                "internalTrafficPolicy": "Local", "externalTrafficPolicy": "Cluster",
                "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"],
                "trafficDistribution": "PreferSameNode"
            }))
            .0
            .is_empty()
        );
        let issues = service(serde_json::json!({"ipFamilies": ["IPv4", "IPv6", "IPv4"]}));
        assert_eq!(fields(&issues), ["spec.ipFamilies", "spec.ipFamilies[2]"]);
        // Unknown topology settings are warnings: the Service still serves.
        let issues = service(serde_json::json!({"trafficDistribution": "PreferRegion"}));
        assert_eq!(fields(&issues), ["spec.trafficDistribution"]);
        assert!(!issues.has_errors());
        let svc: Service = deserialize(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "annotations": {
                "service.kubernetes.io/topology-mode": "auto",
                "service.kubernetes.io/topology-aware-hints": "yes"
            }}
        }))
        .unwrap();
        let mut issues = Issues::default();
        validate_service(&svc, &mut issues);
        assert_eq!(
            fields(&issues),
            ["metadata.annotations[service.kubernetes.io/topology-aware-hints]"]
        );
        assert!(!issues.has_errors());
    }

    fn slice(v: serde_json::Value) -> Issues {
        let mut doc = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "e"}
        });
        for (k, val) in v.as_object().unwrap() {
            doc[k] = val.clone();
        }
        let s: EndpointSlice = deserialize(doc).unwrap();
        let mut issues = Issues::default();
        validate_endpoint_slice(&s, &mut issues);
        issues
    }

    #[test]
    fn endpoint_slice_addresses() {
        let ok = slice(
            serde_json::json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}],
                                          "ports": [{"port": 8080}]}),
        );
        assert!(ok.0.is_empty());
        // One name, two protocols: fine.
        assert!(slice(serde_json::json!({"addressType": "IPv4", "endpoints": [],
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns", "port": 53}]})).0.is_empty());
        assert!(slice(serde_json::json!({"addressType": "IPv6", "endpoints": [{"addresses": ["fd00::1"]}]})).0.is_empty());
        assert!(slice(serde_json::json!({"addressType": "FQDN", "endpoints": [{"addresses": ["a.example"]}]})).0.is_empty());
        let cases = [
            (
                serde_json::json!({"addressType": "IPv5", "endpoints": []}),
                "addressType",
            ),
            (
                serde_json::json!({"addressType": "IPv4", "endpoints": [{"addresses": ["fd00::1"]}]}),
                "endpoints[0].addresses[0]",
            ),
            (
                serde_json::json!({"addressType": "IPv6", "endpoints": [{"addresses": ["10.0.0.1"]}]}),
                "endpoints[0].addresses[0]",
            ),
            (
                serde_json::json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1", "x"]}]}),
                "endpoints[0].addresses[1]",
            ),
            (
                serde_json::json!({"addressType": "IPv4", "endpoints": [{"addresses": []}]}),
                "endpoints[0].addresses",
            ),
            (
                serde_json::json!({"addressType": "IPv4", "endpoints": [], "ports": [{"port": 0}]}),
                "ports[0].port",
            ),
            (
                serde_json::json!({"addressType": "IPv4", "endpoints": [], "ports": [{"port": 80, "protocol": "HTTP"}]}),
                "ports[0].protocol",
            ),
            (
                serde_json::json!({"addressType": "IPv4", "endpoints": [],
                    "ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81, "protocol": "TCP"}]}),
                "ports[1].name",
            ),
        ];
        for (v, field) in cases {
            assert_eq!(fields(&slice(v.clone())), [field], "{v}");
        }
    }

    #[test]
    fn tls_secret_needs_cert_and_key() {
        let check = |v: serde_json::Value| {
            let mut doc = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
            for (k, val) in v.as_object().unwrap() {
                doc[k] = val.clone();
            }
            let s: Secret = deserialize(doc).unwrap();
            let mut issues = Issues::default();
            validate_secret(&s, &mut issues);
            issues.0.len()
        };
        // Both keys present but not PEM: one error about the content.
        assert_eq!(
            check(
                serde_json::json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "YQ==", "tls.key": "YQ=="}})
            ),
            1
        );
        assert_eq!(
            check(
                serde_json::json!({"type": "kubernetes.io/tls", "stringData": {"tls.crt": "a", "tls.key": "b"}})
            ),
            1
        );
        assert_eq!(
            check(serde_json::json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}})),
            1
        );
        assert_eq!(check(serde_json::json!({"type": "kubernetes.io/tls"})), 2);
        assert_eq!(check(serde_json::json!({"type": "Opaque"})), 0);
    }
}
