//! GRPCRoutes: compiled into the same Listener tables as HTTPRoutes. A
//! gRPC method match becomes a path match on `/service/method`: both exact
//! gives `Exact /svc/method`, service only `PathPrefix /svc`, method only a
//! regular expression `/[^/]+/method`, `RegularExpression` types a regular
//! expression over the whole path, no method `PathPrefix /`. Backends are
//! spoken to over h2c.

use lb_http::gateway::{PathMatch, RouteMatch};
use serde_json::Value;

use super::Ctx;
use super::filters::{RuleKind, compile_action};
use super::http_routes::header_matches;
use super::listeners::GatewayPlan;
use super::routes::{CompiledRule, Route, compile_matches, compile_table_route, hostnames};
use super::status::Reason;
use crate::model::Object;
use crate::model::gateway::{GrpcMethodMatch, GrpcRouteMatch, GrpcRouteRule};

/// Escapes regular expression metacharacters.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn method_path(m: &GrpcMethodMatch, field: &str) -> Result<PathMatch, Reason> {
    let bad = |e: String| Reason::new("UnsupportedValue", format!("{field}.method: {e}"));
    let (svc, method) = (m.service.as_deref(), m.method.as_deref());
    match m.type_.as_deref().unwrap_or("Exact") {
        "Exact" => match (svc, method) {
            (Some(s), Some(m)) => Ok(PathMatch::Exact(format!("/{s}/{m}"))),
            (Some(s), None) => Ok(PathMatch::PathPrefix(format!("/{s}"))),
            (None, Some(m)) => {
                PathMatch::regex(&format!("/[^/]+/{}", escape(m))).map_err(|e| bad(e.to_string()))
            }
            (None, None) => Ok(PathMatch::default()),
        },
        "RegularExpression" => {
            if svc.is_none() && method.is_none() {
                return Ok(PathMatch::default());
            }
            for v in [svc, method].into_iter().flatten() {
                crate::model::validate::regex(v).map_err(bad)?;
            }
            let s = svc.map_or_else(|| "[^/]+".to_owned(), |s| format!("(?:{s})"));
            let m = method.map_or_else(|| "[^/]+".to_owned(), |m| format!("(?:{m})"));
            PathMatch::regex(&format!("/{s}/{m}"))
                .map_err(|e| bad(format!("invalid regular expression: {e}")))
        }
        other => Err(bad(format!("match type {other} is not supported"))),
    }
}

fn route_match(m: &GrpcRouteMatch, field: &str) -> Result<RouteMatch, Reason> {
    let path = match &m.method {
        Some(method) => method_path(method, field)?,
        None => PathMatch::default(),
    };
    Ok(RouteMatch::new(
        path,
        None,
        header_matches(&m.headers, field)?,
        Vec::new(),
    ))
}

fn compile_rules(
    ctx: &mut Ctx<'_, '_>,
    rules: &[GrpcRouteRule],
    ns: &str,
    name: &str,
    materialize: bool,
) -> Result<Vec<CompiledRule>, Reason> {
    rules
        .iter()
        .enumerate()
        .map(|(ri, rule)| {
            let field = format!("spec.rules[{ri}]");
            let matches = compile_matches(&rule.matches, &field, route_match)?;
            let kind = RuleKind {
                kind: "GRPCRoute",
                ns,
                prefix_only: false,
                grpc: true,
                materialize,
            };
            let outcome = compile_action(
                ctx,
                kind,
                format!("GRPCRoute {ns}/{name} rule {ri}"),
                &rule.filters,
                &rule.backend_refs,
                None,
            )
            .map_err(|e| Reason::new(e.reason, format!("{field}: {}", e.message)))?;
            Ok(CompiledRule { matches, outcome })
        })
        .collect()
}

/// Compiles every GRPCRoute with a parent of ours; returns their status.
pub(crate) fn compile(ctx: &mut Ctx<'_, '_>, plans: &mut [GatewayPlan<'_>]) -> Vec<Value> {
    let store = ctx.store;
    let mut status = Vec::new();
    let rejected: Vec<_> = store.rejected("GRPCRoute").collect();
    for obj in rejected
        .iter()
        .map(|(o, _)| *o)
        .chain(store.of_kind("GRPCRoute"))
    {
        let Object::GrpcRoute(r) = obj else { continue };
        let route = Route {
            obj,
            kind: "GRPCRoute",
            api_version: &r.value.api_version,
            parents: &r.value.spec.parent_refs,
            hostnames: hostnames(ctx, obj, &r.value.spec.hostnames),
        };
        status.extend(compile_table_route(
            ctx,
            plans,
            &route,
            &r.value.spec.rules[..],
            &rejected,
            compile_rules,
        ));
    }
    status
}
