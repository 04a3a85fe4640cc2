//! TLSRoutes (SNI routing on TLS passthrough Listeners: one SNI route per
//! rule, weighted backends) and TCPRoutes (the backends of every attached
//! rule feed the TCP Listener's L4 service: one Maglev table over their
//! endpoints, each backendRef weighted by its `weight`, shared out over its
//! endpoints; weight 0 refs are left out).

use serde_json::Value;

use super::Ctx;
use super::filters::{RuleKind, compile_action};
use super::listeners::GatewayPlan;
use super::routes::{CompiledRule, Placement, Route, compile_route, hostnames};
use super::status::Reason;
use crate::model::Object;
use crate::model::gateway::{ParentReference, StreamRouteRule};

fn compile_rules(
    ctx: &mut Ctx<'_, '_>,
    kind: &'static str,
    rules: &[StreamRouteRule],
    ns: &str,
    name: &str,
    materialize: bool,
) -> Result<Vec<CompiledRule>, Reason> {
    rules
        .iter()
        .enumerate()
        .map(|(ri, rule)| {
            let k = RuleKind {
                kind,
                ns,
                prefix_only: false,
                grpc: false,
                materialize,
            };
            let outcome = compile_action(
                ctx,
                k,
                format!("{kind} {ns}/{name} rule {ri}"),
                &[],
                &rule.backend_refs,
                None,
            )?;
            Ok(CompiledRule {
                matches: Vec::new(),
                outcome,
            })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn one(
    ctx: &mut Ctx<'_, '_>,
    plans: &mut [GatewayPlan<'_>],
    obj: &Object,
    kind: &'static str,
    api_version: &str,
    parents: &[ParentReference],
    raw_hostnames: &[String],
    rules: &[StreamRouteRule],
    placement: Placement,
) -> Option<Value> {
    let route = Route {
        obj,
        kind,
        api_version,
        parents,
        hostnames: hostnames(ctx, obj, raw_hostnames),
    };
    compile_route(ctx, plans, &route, rules, placement, |c, r, ns, name, m| {
        compile_rules(c, kind, r, ns, name, m)
    })
}

/// Compiles every TLSRoute with a parent of ours; returns their status.
pub(crate) fn compile_tls(ctx: &mut Ctx<'_, '_>, plans: &mut [GatewayPlan<'_>]) -> Vec<Value> {
    let store = ctx.store;
    let mut status = Vec::new();
    for obj in store.of_kind("TLSRoute") {
        let Object::TlsRoute(r) = obj else { continue };
        let s = &r.value.spec;
        status.extend(one(
            ctx,
            plans,
            obj,
            "TLSRoute",
            &r.value.api_version,
            &s.parent_refs,
            &s.hostnames,
            &s.rules,
            Placement::Sni,
        ));
    }
    status
}

/// Compiles every TCPRoute with a parent of ours; returns their status.
pub(crate) fn compile_tcp(ctx: &mut Ctx<'_, '_>, plans: &mut [GatewayPlan<'_>]) -> Vec<Value> {
    let store = ctx.store;
    let mut status = Vec::new();
    for obj in store.of_kind("TCPRoute") {
        let Object::TcpRoute(r) = obj else { continue };
        let s = &r.value.spec;
        status.extend(one(
            ctx,
            plans,
            obj,
            "TCPRoute",
            &r.value.api_version,
            &s.parent_refs,
            &[],
            &s.rules,
            Placement::Tcp,
        ));
    }
    status
}
