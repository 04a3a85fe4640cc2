//! Semantic checks for `networking.k8s.io/v1` Ingress: path types, paths,
//! backends and rule hosts, as the Kubernetes API server validates them
//! (restricted to what lb supports).

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::Issues;
use super::core::valid_port;

/// The `pathType` values Ingress v1 defines.
pub const PATH_TYPES: [&str; 3] = ["Exact", "Prefix", "ImplementationSpecific"];

/// Checks an Ingress: rule hosts, every path's `pathType` and `path`, and
/// every backend (rules and `spec.defaultBackend`).
pub fn validate_ingress(ing: &Ingress, out: &mut Issues) {
    let Some(spec) = &ing.spec else { return };
    if let Some(b) = &spec.default_backend {
        validate_backend(b, "spec.defaultBackend", out);
    }
    for (r, rule) in spec.rules.as_deref().unwrap_or_default().iter().enumerate() {
        if let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty())
            && let Err(msg) = validate_host(host)
        {
            out.error(format!("spec.rules[{r}].host"), msg);
        }
        let Some(http) = &rule.http else { continue };
        for (p, path) in http.paths.iter().enumerate() {
            let field = format!("spec.rules[{r}].http.paths[{p}]");
            let ty = path.path_type.as_str();
            if !PATH_TYPES.contains(&ty) {
                let msg = if ty.is_empty() {
                    "required: expected one of Exact, Prefix, ImplementationSpecific".to_owned()
                } else {
                    format!(
                        "unknown variant {ty:?}, expected one of Exact, Prefix, ImplementationSpecific"
                    )
                };
                out.error(format!("{field}.pathType"), msg);
            }
            let value = path.path.as_deref().unwrap_or("");
            let must_be_absolute = matches!(ty, "Exact" | "Prefix") || !value.is_empty();
            if must_be_absolute && !value.starts_with('/') {
                out.error(
                    format!("{field}.path"),
                    format!("{value:?} must be an absolute path (start with \"/\")"),
                );
            }
            validate_backend(&path.backend, &format!("{field}.backend"), out);
        }
    }
}

fn validate_backend(b: &IngressBackend, field: &str, out: &mut Issues) {
    match (&b.service, &b.resource) {
        (None, None) => out.error(field, "one of service or resource is required"),
        (Some(_), Some(_)) => out.error(field, "service and resource are mutually exclusive"),
        (None, Some(_)) => out.error(
            format!("{field}.resource"),
            "resource backends are not supported by lb",
        ),
        (Some(svc), None) => {
            if svc.name.is_empty() {
                out.error(format!("{field}.service.name"), "required");
            }
            match svc
                .port
                .as_ref()
                .map(|p| (p.number, p.name.as_deref().filter(|n| !n.is_empty())))
            {
                None | Some((None, None)) => out.error(
                    format!("{field}.service.port"),
                    "one of number or name is required",
                ),
                Some((Some(_), Some(_))) => out.error(
                    format!("{field}.service.port"),
                    "number and name are mutually exclusive",
                ),
                Some((Some(n), None)) if !valid_port(n) => out.error(
                    format!("{field}.service.port.number"),
                    format!("port {n} is not in 1-65535"),
                ),
                Some(_) => {}
            }
        }
    }
}

/// Checks an Ingress rule host: a lowercase DNS name, not an IP address; a
/// wildcard is allowed only as the whole first label (`*.example.com`).
pub fn validate_host(host: &str) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_ok()
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
    {
        return Err(format!("{host:?} must be a DNS name, not an IP address"));
    }
    let rest = host.strip_prefix("*.").unwrap_or(host);
    if rest.contains('*') {
        return Err(format!(
            "{host:?}: a wildcard is only allowed as the whole first label (\"*.example.com\")"
        ));
    }
    if host.len() > 253 {
        return Err(format!("{host:?} is longer than 253 characters"));
    }
    for label in rest.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{host:?} is not a valid lowercase DNS name (label {label:?})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::deserialize;

    fn check(spec: serde_json::Value) -> Vec<String> {
        let ing: Ingress = deserialize(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"}, "spec": spec
        }))
        .unwrap();
        let mut issues = Issues::default();
        validate_ingress(&ing, &mut issues);
        issues.0.into_iter().map(|i| i.field).collect()
    }

    fn one_path(path: serde_json::Value) -> Vec<String> {
        check(serde_json::json!({"rules": [{"http": {"paths": [path]}}]}))
    }

    #[test]
    fn valid_ingress_has_no_issues() {
        let svc = serde_json::json!({"service": {"name": "s", "port": {"number": 80}}});
        let named = serde_json::json!({"service": {"name": "s", "port": {"name": "http"}}});
        assert!(
            check(serde_json::json!({
                "defaultBackend": svc,
                "rules": [{"host": "*.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": svc},
                    {"path": "/x", "pathType": "Exact", "backend": named},
                    {"pathType": "ImplementationSpecific", "backend": svc},
                ]}}]
            }))
            .is_empty()
        );
    }

    #[test]
    fn path_rules() {
        let svc = serde_json::json!({"service": {"name": "s", "port": {"number": 80}}});
        let p = "spec.rules[0].http.paths[0]";
        let cases = [
            (
                serde_json::json!({"path": "/", "pathType": "Foo", "backend": svc}),
                format!("{p}.pathType"),
            ),
            (
                serde_json::json!({"path": "foo", "pathType": "Prefix", "backend": svc}),
                format!("{p}.path"),
            ),
            (
                serde_json::json!({"pathType": "Exact", "backend": svc}),
                format!("{p}.path"),
            ),
            (
                serde_json::json!({"path": "x", "pathType": "ImplementationSpecific", "backend": svc}),
                format!("{p}.path"),
            ),
        ];
        for (path, field) in cases {
            assert_eq!(one_path(path.clone()), [field], "{path}");
        }
    }

    #[test]
    fn missing_path_type_is_required() {
        // k8s-openapi defaults a missing required string to "", so this is ours to catch.
        let svc = serde_json::json!({"service": {"name": "s", "port": {"number": 80}}});
        let fields = one_path(serde_json::json!({"path": "/", "backend": svc}));
        assert_eq!(fields, ["spec.rules[0].http.paths[0].pathType"]);
    }

    #[test]
    fn backend_rules() {
        let p = "spec.rules[0].http.paths[0].backend";
        let cases = [
            (serde_json::json!({}), p.to_owned()),
            (
                serde_json::json!({"resource": {"kind": "Bucket", "name": "b"}}),
                format!("{p}.resource"),
            ),
            (
                serde_json::json!({"service": {"name": "s"}}),
                format!("{p}.service.port"),
            ),
            (
                serde_json::json!({"service": {"name": "s", "port": {}}}),
                format!("{p}.service.port"),
            ),
            (
                serde_json::json!({"service": {"name": "s", "port": {"number": 80, "name": "x"}}}),
                format!("{p}.service.port"),
            ),
            (
                serde_json::json!({"service": {"name": "s", "port": {"number": 0}}}),
                format!("{p}.service.port.number"),
            ),
        ];
        for (backend, field) in cases {
            let path = serde_json::json!({"path": "/", "pathType": "Prefix", "backend": backend});
            assert_eq!(one_path(path), [field], "{backend}");
        }
        assert_eq!(
            check(serde_json::json!({"defaultBackend": {}})),
            ["spec.defaultBackend"]
        );
    }

    #[test]
    fn host_rules() {
        for ok in ["foo.com", "*.foo.com", "a-b.c0.example", "x"] {
            assert_eq!(validate_host(ok), Ok(()), "{ok}");
        }
        for bad in [
            "10.0.0.1",
            "::1",
            "[::1]",
            "foo.*.com",
            "*foo.com",
            "*",
            "foo.com.*",
            "**.foo.com",
            "Foo.com",
            "a..b",
            "-a.com",
        ] {
            assert!(validate_host(bad).is_err(), "{bad}");
        }
        assert_eq!(
            check(serde_json::json!({"rules": [{"host": "foo.*.com"}]})),
            ["spec.rules[0].host"]
        );
    }
}
