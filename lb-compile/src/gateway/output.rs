//! The planned Gateways turned into output: Gateway ports (Listeners merged
//! per bound address, most specific hostname first, certificates by
//! Listener hostname), L4 services for TCP Listeners, and each Gateway's
//! status (addresses, conditions, Listener status).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use lb_core::l4::{L4Service, L4Snapshot, SourceRanges};
use lb_core::maglev::{MaglevEndpoint, MaglevTable};
use lb_http::BackendId;
use lb_http::gateway::{
    GatewayListener, GatewayPort, GatewayRouteTable, HostnameMatch, PortProtocol, SniRoute,
};
use lb_http::tls::CertIndex;
use serde_json::{Value, json};

use super::Ctx;
use super::listeners::{GatewayPlan, ListenerPlan, Proto};
use super::refs::GATEWAY_GROUP;
use super::status::{Reason, Stamp, object_status};

/// Sort key putting exact hostnames first, then wildcards with the longest
/// suffix first, then no hostname.
fn specificity(h: Option<&HostnameMatch>) -> (u8, Reverse<usize>) {
    match h {
        Some(HostnameMatch::Exact(_)) => (0, Reverse(0)),
        Some(w @ HostnameMatch::Wildcard(_)) => (1, Reverse(w.len())),
        None => (2, Reverse(0)),
    }
}

fn sni_key(s: &SniRoute) -> impl Ord + '_ {
    let best = s
        .hostnames
        .iter()
        .map(|h| specificity(Some(h)))
        .min()
        .unwrap_or((2, Reverse(0)));
    (
        best,
        s.route.created,
        &s.route.namespace,
        &s.route.name,
        s.route.rule_index,
    )
}

/// Builds the Gateway ports and adds TCP Listeners to `l4`.
pub(crate) fn build(
    ctx: &mut Ctx<'_, '_>,
    plans: &[GatewayPlan<'_>],
    l4: &mut L4Snapshot,
) -> BTreeMap<SocketAddr, GatewayPort> {
    let mut ports: BTreeMap<SocketAddr, GatewayPort> = BTreeMap::new();
    // Per port: whether every Gateway on it has source ranges (a Gateway
    // without them opens the port to everyone).
    let mut restricted: BTreeMap<SocketAddr, bool> = BTreeMap::new();
    for plan in plans {
        let Some(ip) = plan.addr else { continue };
        let ranges = crate::source_ranges::annotated(
            plan.obj,
            crate::source_ranges::ANNOTATION,
            &mut ctx.diags,
        );
        for l in plan.listeners.iter().filter(|l| l.programmed) {
            let at = SocketAddr::new(ip, l.port);
            let name = format!("{}/{}/{}", plan.ns, plan.name, l.name);
            let protocol = match l.proto {
                Some(Proto::Http) => PortProtocol::Http,
                Some(Proto::Https) => PortProtocol::Https,
                Some(Proto::Tls) => PortProtocol::TlsPassthrough,
                Some(Proto::Tcp) => {
                    tcp_service(ctx, plan, l, at, name, ranges.clone(), l4);
                    continue;
                }
                None => continue,
            };
            let port = ports.entry(at).or_insert_with(|| GatewayPort {
                protocol,
                tls: CertIndex::default(),
                listeners: Vec::new(),
                source_ranges: None,
            });
            let all = restricted.entry(at).or_insert(true);
            *all &= ranges.is_some();
            port.source_ranges = match (*all, &port.source_ranges, &ranges) {
                (false, _, _) => None,
                (true, Some(a), Some(b)) => Some(a.union(b)),
                (true, None, r) => r.clone(),
                (true, Some(a), None) => Some(a.clone()),
            };
            if let Some(cert) = &l.cert {
                match &l.hostname {
                    Some(h) => {
                        port.tls
                            .names
                            .entry(h.to_string())
                            .or_insert_with(|| cert.clone());
                    }
                    None => {
                        port.tls.default.get_or_insert_with(|| cert.clone());
                    }
                }
            }
            let mut sni = l.sni.clone();
            sni.sort_by(|a, b| sni_key(a).cmp(&sni_key(b)));
            port.listeners.push(GatewayListener {
                name,
                hostname: l.hostname.clone(),
                routes: GatewayRouteTable::build(l.entries.clone()),
                sni_routes: sni,
            });
        }
    }
    for port in ports.values_mut() {
        port.listeners.sort_by(|a, b| {
            (specificity(a.hostname.as_ref()), &a.hostname, &a.name).cmp(&(
                specificity(b.hostname.as_ref()),
                &b.hostname,
                &b.name,
            ))
        });
    }
    ports
}

fn tcp_service(
    ctx: &mut Ctx<'_, '_>,
    plan: &GatewayPlan<'_>,
    l: &ListenerPlan,
    at: SocketAddr,
    name: String,
    source_ranges: Option<SourceRanges>,
    l4: &mut L4Snapshot,
) {
    let weights = tcp_weights(ctx, &l.tcp);
    let endpoints: Vec<SocketAddr> = weights.keys().copied().collect();
    let cfg = &ctx.cfg.loadbalancer;
    match MaglevTable::new(
        weights
            .iter()
            .map(|(a, w)| MaglevEndpoint::from_addr(*a, *w)),
        cfg.maglev_table_size,
    ) {
        Ok(table) => {
            l4.services.insert(
                at,
                L4Service {
                    name,
                    via: "gateway",
                    endpoints,
                    table,
                    affinity: None,
                    connect_timeout: cfg.connect_timeout,
                    idle_timeout: cfg.idle_timeout,
                    source_ranges,
                },
            );
        }
        Err(e) => ctx.warn(
            plan.obj,
            &l.field,
            format!("cannot build the Maglev table: {e}; not served"),
        ),
    }
}

/// Scale of TCPRoute weights in the Maglev table: a backendRef's weight
/// times this is shared out over its endpoints, so that each ref gets its
/// `weight / sum(weights)` of new connections however many endpoints it has.
const TCP_WEIGHT_SCALE: u64 = 10_000;

/// The Maglev weight of every endpoint of a TCP Listener's `(backend,
/// weight)` refs: each ref's scaled weight split evenly over its endpoints,
/// summed where refs share an endpoint. Refs without endpoints take no
/// share (L4 has no way to refuse their part of the connections).
fn tcp_weights(ctx: &Ctx<'_, '_>, refs: &[(BackendId, u32)]) -> BTreeMap<SocketAddr, u32> {
    let mut weights: BTreeMap<SocketAddr, u64> = BTreeMap::new();
    for (id, weight) in refs {
        let Some(b) = ctx.backends.get(id.0 as usize) else {
            continue;
        };
        let n = b.endpoints.len() as u64;
        if n == 0 || *weight == 0 {
            continue;
        }
        let each = (u64::from(*weight) * TCP_WEIGHT_SCALE / n).max(1);
        for a in &b.endpoints {
            *weights.entry(*a).or_default() += each;
        }
    }
    weights
        .into_iter()
        .map(|(a, w)| (a, u32::try_from(w).unwrap_or(u32::MAX)))
        .collect()
}

fn listener_status(stamp: &Stamp, l: &ListenerPlan, addr_problem: Option<&Reason>) -> Value {
    let programmed = if l.programmed {
        Ok(())
    } else if let (true, true, Some(r)) = (l.accepted.is_ok(), l.conflicted.is_none(), addr_problem)
    {
        Err(r.clone())
    } else {
        Err(Reason::new(
            "Invalid",
            "the listener is not accepted, conflicted or has no usable certificate or route kind",
        ))
    };
    let conflicted = match &l.conflicted {
        Some(r) => stamp.condition("Conflicted", true, r.reason, r.message.clone()),
        None => stamp.condition("Conflicted", false, "NoConflicts", "no conflicts"),
    };
    let mut conditions = vec![
        stamp.outcome("Accepted", &l.accepted, "Accepted", "listener accepted"),
        stamp.outcome(
            "Programmed",
            &programmed,
            "Programmed",
            "listener programmed",
        ),
        stamp.outcome(
            "ResolvedRefs",
            &l.resolved,
            "ResolvedRefs",
            "all references resolved",
        ),
        conflicted,
    ];
    // Present only when True, like the spec's other negative-polarity
    // conditions that are optional.
    if let Some(r) = &l.overlapping {
        conditions.push(stamp.condition("OverlappingTLSConfig", true, r.reason, r.message.clone()));
    }
    json!({
        "name": l.name,
        "supportedKinds": l.kinds.iter().map(|k| json!({"group": GATEWAY_GROUP, "kind": k})).collect::<Vec<_>>(),
        "attachedRoutes": l.attached,
        "conditions": conditions,
    })
}

/// The status of every planned Gateway, in namespace/name order.
pub(crate) fn gateway_status(ctx: &mut Ctx<'_, '_>, plans: &[GatewayPlan<'_>]) -> Vec<Value> {
    let mut sorted: Vec<&GatewayPlan<'_>> = plans.iter().collect();
    sorted.sort_by(|a, b| (&a.ns, &a.name).cmp(&(&b.ns, &b.name)));
    let mut out = Vec::new();
    for plan in sorted {
        let stamp = Stamp::of(&plan.gw.value.metadata);
        let ls = &plan.listeners;
        let bad: Vec<&str> = ls
            .iter()
            .filter(|l| l.accepted.is_err() || l.conflicted.is_some() || l.resolved.is_err())
            .map(|l| l.name.as_str())
            .collect();
        let usable = ls
            .iter()
            .any(|l| l.accepted.is_ok() && l.conflicted.is_none());
        let accepted = match &plan.accepted {
            Err(e) => Err(e.clone()),
            Ok(()) if !ls.is_empty() && !usable => Err(Reason::new(
                "ListenersNotValid",
                format!("no listener is valid: {}", bad.join(", ")),
            )),
            Ok(()) => Ok(()),
        };
        let accepted_cond = match (&accepted, bad.is_empty()) {
            (Ok(()), false) => stamp.condition(
                "Accepted",
                true,
                "ListenersNotValid",
                format!("invalid listeners: {}", bad.join(", ")),
            ),
            (r, _) => stamp.outcome("Accepted", r, "Accepted", "Gateway accepted"),
        };
        let programmed = if accepted.is_err() {
            Err(Reason::new("Invalid", "the Gateway is not accepted"))
        } else if let Some(r) = &plan.address_error {
            Err(r.clone())
        } else if plan.addr.is_none() {
            Err(Reason::new(
                "AddressNotAssigned",
                "no address requested and none free in [loadbalancer].pools",
            ))
        } else if !ls.is_empty() && !ls.iter().any(|l| l.programmed) {
            Err(Reason::new("Invalid", "no listener is programmed"))
        } else {
            Ok(())
        };
        for r in [&accepted, &programmed]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
        {
            ctx.warn(plan.obj, "spec", format!("{}: {}", r.reason, r.message));
        }
        for l in ls {
            for r in [&l.accepted, &l.resolved]
                .into_iter()
                .filter_map(|r| r.as_ref().err())
                .chain(&l.conflicted)
            {
                ctx.warn(
                    plan.obj,
                    &l.field,
                    format!("listener {} {}: {}", l.name, r.reason, r.message),
                );
            }
        }
        let addr_problem = match (&plan.address_error, plan.addr) {
            (Some(r), _) => Some(r.clone()),
            (None, None) => Some(Reason::new("Pending", "the Gateway has no address")),
            (None, Some(_)) => None,
        };
        let mut status = json!({
            "conditions": [
                accepted_cond,
                stamp.outcome("Programmed", &programmed, "Programmed", "Gateway programmed"),
            ],
            "listeners": ls.iter().map(|l| listener_status(&stamp, l, addr_problem.as_ref())).collect::<Vec<_>>(),
        });
        if let Some(ip) = plan.addr {
            status["addresses"] = json!([{"type": "IPAddress", "value": ip.to_string()}]);
        }
        out.push(object_status(
            &plan.gw.value.api_version,
            "Gateway",
            Some(&plan.ns),
            &plan.name,
            status,
        ));
    }
    out
}
