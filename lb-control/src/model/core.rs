//! Semantic checks for core (`v1`) and `discovery.k8s.io/v1` objects:
//! Service ports, EndpointSlice address types and addresses, TLS Secrets.

use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Issues;

/// Whether `n` is a valid TCP/UDP port number.
pub fn valid_port(n: i32) -> bool {
    (1..=65535).contains(&n)
}

/// Checks a Service: port numbers, target ports, protocols, and names
/// (required and unique when there is more than one port).
pub fn validate_service(svc: &Service, out: &mut Issues) {
    let Some(spec) = &svc.spec else { return };
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
/// address parses for its type, and port numbers are valid.
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
    }
}

/// The Secret type holding a TLS certificate and key.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Checks a Secret: a `kubernetes.io/tls` Secret must hold `tls.crt` and `tls.key`.
pub fn validate_secret(secret: &Secret, out: &mut Issues) {
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return;
    }
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
        ];
        for (spec, field) in cases {
            let issues = service(spec.clone());
            assert_eq!(fields(&issues), [field], "{spec}");
            assert!(issues.has_errors());
        }
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
        assert_eq!(
            check(
                serde_json::json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "YQ==", "tls.key": "YQ=="}})
            ),
            0
        );
        assert_eq!(
            check(
                serde_json::json!({"type": "kubernetes.io/tls", "stringData": {"tls.crt": "a", "tls.key": "b"}})
            ),
            0
        );
        assert_eq!(
            check(serde_json::json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}})),
            1
        );
        assert_eq!(check(serde_json::json!({"type": "kubernetes.io/tls"})), 2);
        assert_eq!(check(serde_json::json!({"type": "Opaque"})), 0);
    }
}
