//! The route values lb writes into heads, checked with [`super::validate`]:
//! header modifier names and values, `URLRewrite` and `RequestRedirect`
//! host names and paths, for HTTPRoutes and GRPCRoutes alike.

use serde_json::Value;

use super::Issues;
use super::gateway::{HeaderFilter, PathModifierSpec, RouteFilter};
use super::validate;

/// Checks the filters of rule `r` (`spec.rules[r].filters`) and those of
/// each of its backendRefs (`spec.rules[r].backendRefs[b].filters`).
pub(super) fn validate_rule_filters<'a>(
    r: usize,
    filters: &[Value],
    backend_filters: impl Iterator<Item = &'a [Value]>,
    out: &mut Issues,
) {
    let field = format!("spec.rules[{r}]");
    validate_filters(filters, &field, out);
    for (b, filters) in backend_filters.enumerate() {
        validate_filters(filters, &format!("{field}.backendRefs[{b}]"), out);
    }
}

/// Checks the values of `filters` (under `field`) that lb writes into
/// request or response heads: header modifier names and values, URLRewrite
/// and RequestRedirect host names and paths. A filter that does not parse or
/// has a type lb does not implement is left to the route compiler, which
/// reports it in the route's status.
pub(super) fn validate_filters(filters: &[Value], field: &str, out: &mut Issues) {
    for (i, raw) in filters.iter().enumerate() {
        let Ok(f) = serde_json::from_value::<RouteFilter>(raw.clone()) else {
            continue;
        };
        let field = format!("{field}.filters[{i}]");
        for (name, m) in [
            ("requestHeaderModifier", &f.request_header_modifier),
            ("responseHeaderModifier", &f.response_header_modifier),
        ] {
            if let Some(m) = m {
                validate_header_filter(m, &format!("{field}.{name}"), out);
            }
        }
        let mut host_and_path =
            |name: &str, host: &Option<String>, path: &Option<PathModifierSpec>| {
                if let Some(h) = host
                    && let Err(e) = validate::hostname(h, false)
                {
                    out.error(format!("{field}.{name}.hostname"), e);
                }
                if let Some(p) = path {
                    for (key, v) in [
                        ("replaceFullPath", &p.replace_full_path),
                        ("replacePrefixMatch", &p.replace_prefix_match),
                    ] {
                        if let Some(v) = v
                            && let Err(e) = validate::path(v)
                        {
                            out.error(format!("{field}.{name}.path.{key}"), e);
                        }
                    }
                }
            };
        if let Some(r) = &f.url_rewrite {
            host_and_path("urlRewrite", &r.hostname, &r.path);
        }
        if let Some(r) = &f.request_redirect {
            host_and_path("requestRedirect", &r.hostname, &r.path);
        }
    }
}

fn validate_header_filter(m: &HeaderFilter, field: &str, out: &mut Issues) {
    for (list, pairs) in [("set", &m.set), ("add", &m.add)] {
        for (i, h) in pairs.iter().enumerate() {
            if let Err(e) = validate::header_name(&h.name) {
                out.error(format!("{field}.{list}[{i}].name"), e);
            }
            if let Err(e) = validate::header_value(&h.value) {
                out.error(format!("{field}.{list}[{i}].value"), e);
            }
        }
    }
    for (i, name) in m.remove.iter().enumerate() {
        if let Err(e) = validate::header_name(name) {
            out.error(format!("{field}.remove[{i}]"), e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gateway::{GrpcRoute, HttpRoute, validate_grpc_route, validate_http_route};
    use super::*;

    #[test]
    fn http_route_wire_values_are_checked() {
        let route: HttpRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
            "spec": {"rules": [
                {"filters": [
                    {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                        "set": [{"name": "X-Ok", "value": "fine\tvalue"}],
                        "add": [{"name": "X-A", "value": "v\r\nX-Injected: yes"}],
                        "remove": ["Bad Name"]}},
                    {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                        "set": [{"name": "X:Y", "value": "v"}]}},
                    {"type": "URLRewrite", "urlRewrite": {"hostname": "a.test\r\nx: y",
                        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/a b"}}}]},
                {"filters": [{"type": "RequestRedirect", "requestRedirect": {
                    "hostname": "*.a.test",
                    "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "x"}}}],
                 "backendRefs": [{"name": "s", "port": 80, "filters": [
                    {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                        "set": [{"name": "x", "value": "\0"}]}}]}]},
                {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
                    "set": [{"name": "X-Good", "value": "ok"}]}},
                    {"type": "URLRewrite", "urlRewrite": {"hostname": "B.Test",
                        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/ok?q=1"}}},
                    {"type": "Unknown"}]}]}
        }))
        .unwrap();
        let mut issues = Issues::default();
        validate_http_route(&route, &mut issues);
        let fields: Vec<_> = issues.0.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.rules[0].filters[0].requestHeaderModifier.add[0].value",
                "spec.rules[0].filters[0].requestHeaderModifier.remove[0]",
                "spec.rules[0].filters[1].responseHeaderModifier.set[0].name",
                "spec.rules[0].filters[2].urlRewrite.hostname",
                "spec.rules[0].filters[2].urlRewrite.path.replaceFullPath",
                "spec.rules[1].filters[0].requestRedirect.hostname",
                "spec.rules[1].filters[0].requestRedirect.path.replacePrefixMatch",
                "spec.rules[1].backendRefs[0].filters[0].requestHeaderModifier.set[0].value",
            ]
        );
        assert!(issues.has_errors());
    }

    #[test]
    fn grpc_route_header_values_are_checked() {
        let route: GrpcRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute", "metadata": {"name": "r"},
            "spec": {"rules": [{"filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                "add": [{"name": "x-a", "value": "v\nx-b: c"}]}}]}]}
        }))
        .unwrap();
        let mut issues = Issues::default();
        validate_grpc_route(&route, &mut issues);
        let fields: Vec<_> = issues.0.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.rules[0].filters[0].responseHeaderModifier.add[0].value"]
        );
    }
}
