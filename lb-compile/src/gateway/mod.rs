//! The Gateway API compiler: GatewayClasses of our controller, their
//! Gateways (addresses, Listeners, conflicts), and the HTTPRoutes,
//! GRPCRoutes, TLSRoutes and TCPRoutes attached to them, compiled into the
//! [`GatewaySnapshot`] (HTTP, HTTPS and TLS passthrough ports), L4 services
//! (TCP Listeners) and Kubernetes status for every object we own. Pure and
//! deterministic: no I/O, no clock.
//!
//! Spec: gateway.networking.k8s.io v1 (GatewayClass, Gateway, HTTPRoute,
//! GRPCRoute, ReferenceGrant) and the experimental TLSRoute and TCPRoute.

mod address;
mod attach;
mod classes;
mod filters;
mod grpc_routes;
mod http_routes;
mod listeners;
mod output;
mod refs;
mod routes;
mod status;
mod stream_routes;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_routes;
#[cfg(test)]
mod tests_status;

use lb_core::l4::L4Snapshot;
use lb_http::Backend;
use lb_http::gateway::{GatewaySnapshot, RuleAction};

use crate::diag::Diagnostic;
use crate::endpoints::{Findings, SliceIndex};
use crate::model::Object;
use crate::settings::Settings;
use crate::store::Store;

pub use self::filters::parse_duration;

/// What [`compile_gateway`] produces.
#[derive(Debug, Default)]
pub struct CompiledGateway {
    /// Gateway ports and rule actions.
    pub snapshot: GatewaySnapshot,
    /// Findings about Gateway API objects.
    pub diagnostics: Vec<Diagnostic>,
    /// Status of every GatewayClass, Gateway and route lb owns.
    pub status: Vec<serde_json::Value>,
    /// For each L4 Service claim given to [`compile_gateway`]: who it lost
    /// its address and port to (see [`crate::ownership`]).
    pub l4_lost: Vec<Option<String>>,
    /// Gateway listeners not bound because another owner has the port.
    pub conflicts: usize,
}

/// Shared state of one compilation.
pub(crate) struct Ctx<'a, 'b> {
    /// The objects.
    pub store: &'a Store,
    /// The configuration.
    pub cfg: &'a Settings,
    /// EndpointSlices by Service.
    pub slices: &'b SliceIndex<'a>,
    /// The snapshot's backends (Ingress ones first), appended to.
    pub backends: &'b mut Vec<Backend>,
    /// Endpoint selection findings (deduplicated).
    pub findings: Findings,
    /// Diagnostics so far.
    pub diags: Vec<Diagnostic>,
    /// Rule actions, indexed by `TargetId`.
    pub actions: Vec<RuleAction>,
}

impl Ctx<'_, '_> {
    /// Records a warning about `obj` at `field`.
    pub(crate) fn warn(&mut self, obj: &Object, field: &str, message: impl Into<String>) {
        self.diags
            .push(obj.diagnostic(Diagnostic::warning(message).field(field)));
    }
}

/// Compiles the Gateway API objects of `store`. New backends are appended
/// to `backends` (existing ones with the same Service port are reused), TCP
/// Listeners become entries of `l4.services`. `l4_claims` are the
/// addresses L4 Services ask for: ownership of each address and port is
/// settled here, between them, the Gateway listeners and lb.toml's
/// `[ingress]` listeners.
pub fn compile_gateway(
    store: &Store,
    cfg: &Settings,
    slices: &SliceIndex<'_>,
    backends: &mut Vec<Backend>,
    l4: &mut L4Snapshot,
    l4_claims: &[crate::ownership::Claim],
) -> CompiledGateway {
    let mut ctx = Ctx {
        store,
        cfg,
        slices,
        backends,
        findings: Findings::default(),
        diags: Vec::new(),
        actions: Vec::new(),
    };
    let (classes, mut status) = classes::our_classes(store, cfg);
    let (mut plans, l4_lost, conflicts) = listeners::plan_gateways(&mut ctx, &classes, l4_claims);
    let mut route_status = Vec::new();
    route_status.extend(http_routes::compile(&mut ctx, &mut plans));
    route_status.extend(grpc_routes::compile(&mut ctx, &mut plans));
    route_status.extend(stream_routes::compile_tls(&mut ctx, &mut plans));
    route_status.extend(stream_routes::compile_tcp(&mut ctx, &mut plans));
    let ports = output::build(&mut ctx, &plans, l4);
    status.extend(output::gateway_status(&mut ctx, &plans));
    status.extend(route_status);
    CompiledGateway {
        snapshot: GatewaySnapshot {
            ports,
            actions: ctx.actions,
        },
        diagnostics: ctx.diags,
        status,
        l4_lost,
        conflicts,
    }
}
