//! HTTPRoutes: matches compiled into [`RouteMatch`]es (one route table entry
//! per `HTTPRouteMatch`; a rule without matches is `PathPrefix /`), rules
//! into actions. An invalid regular expression, method or path makes the
//! route `Accepted=False`, reason `UnsupportedValue`, with no entries.

use lb_http::gateway::{HeaderMatch, PathMatch, QueryMatch, RouteMatch, ValueMatch};
use serde_json::Value;

use super::Ctx;
use super::filters::{RuleKind, compile_action};
use super::listeners::GatewayPlan;
use super::routes::{CompiledRule, Route, compile_matches, compile_table_route, hostnames};
use super::status::Reason;
use crate::model::Object;
use crate::model::gateway::{HttpHeaderMatch, HttpRouteMatch, HttpRouteRule};
use crate::model::validate;

fn unsupported(message: String) -> Reason {
    Reason::new("UnsupportedValue", message)
}

/// A header or query value match.
pub(crate) fn value_match(m: &HttpHeaderMatch, field: &str) -> Result<ValueMatch, Reason> {
    match m.type_.as_deref().unwrap_or("Exact") {
        "Exact" => Ok(ValueMatch::Exact(m.value.clone())),
        "RegularExpression" => {
            validate::regex(&m.value).map_err(|e| unsupported(format!("{field}: {e}")))?;
            ValueMatch::regex(&m.value)
                .map_err(|e| unsupported(format!("{field}: invalid regular expression: {e}")))
        }
        other => Err(unsupported(format!(
            "{field}: match type {other} is not supported"
        ))),
    }
}

/// Header matches of an HTTPRoute or GRPCRoute match.
pub(crate) fn header_matches(
    headers: &[HttpHeaderMatch],
    field: &str,
) -> Result<Vec<HeaderMatch>, Reason> {
    headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            Ok(HeaderMatch::new(
                &h.name,
                value_match(h, &format!("{field}.headers[{i}]"))?,
            ))
        })
        .collect()
}

fn route_match(m: &HttpRouteMatch, field: &str) -> Result<RouteMatch, Reason> {
    let path = match &m.path {
        None => PathMatch::default(),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".to_owned());
            match p.type_.as_deref().unwrap_or("PathPrefix") {
                "Exact" if value.starts_with('/') => PathMatch::Exact(value),
                "PathPrefix" if value.starts_with('/') => PathMatch::PathPrefix(value),
                "RegularExpression" => {
                    validate::regex(&value)
                        .map_err(|e| unsupported(format!("{field}.path: {e}")))?;
                    PathMatch::regex(&value).map_err(|e| {
                        unsupported(format!("{field}.path: invalid regular expression: {e}"))
                    })?
                }
                t => {
                    return Err(unsupported(format!(
                        "{field}.path: {t} {value:?} is not supported"
                    )));
                }
            }
        }
    };
    let method = m
        .method
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|_| {
            unsupported(format!(
                "{field}.method: {:?} is not an HTTP method",
                m.method
            ))
        })?;
    let query = m
        .query_params
        .iter()
        .enumerate()
        .map(|(i, q)| {
            Ok(QueryMatch {
                name: q.name.clone(),
                value: value_match(q, &format!("{field}.queryParams[{i}]"))?,
            })
        })
        .collect::<Result<Vec<_>, Reason>>()?;
    Ok(RouteMatch::new(
        path,
        method,
        header_matches(&m.headers, field)?,
        query,
    ))
}

fn is_prefix(m: &HttpRouteMatch) -> bool {
    m.path
        .as_ref()
        .is_none_or(|p| p.type_.as_deref().unwrap_or("PathPrefix") == "PathPrefix")
}

/// Compiles every HTTPRoute with a parent of ours; returns their status.
pub(crate) fn compile(ctx: &mut Ctx<'_, '_>, plans: &mut [GatewayPlan<'_>]) -> Vec<Value> {
    let store = ctx.store;
    let mut status = Vec::new();
    let rejected: Vec<_> = store.rejected("HTTPRoute").collect();
    for obj in rejected
        .iter()
        .map(|(o, _)| *o)
        .chain(store.of_kind("HTTPRoute"))
    {
        let Object::HttpRoute(r) = obj else { continue };
        let route = Route {
            obj,
            kind: "HTTPRoute",
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

fn compile_rules(
    ctx: &mut Ctx<'_, '_>,
    rules: &[HttpRouteRule],
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
                kind: "HTTPRoute",
                ns,
                prefix_only: rule.matches.iter().all(is_prefix),
                grpc: false,
                materialize,
            };
            let outcome = compile_action(
                ctx,
                kind,
                format!("HTTPRoute {ns}/{name} rule {ri}"),
                &rule.filters,
                &rule.backend_refs,
                rule.timeouts.as_ref(),
            )
            .map_err(|e| Reason::new(e.reason, format!("{field}: {}", e.message)))?;
            Ok(CompiledRule { matches, outcome })
        })
        .collect()
}
