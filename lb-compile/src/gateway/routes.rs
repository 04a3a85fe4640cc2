//! What every route kind shares: resolving its `parentRefs`, placing its
//! compiled rules on the attached Listeners (route table entries, SNI
//! routes or TCP backends), counting `attachedRoutes`, and its
//! `status.parents`.
//!
//! A route is Accepted by a parent when some selected Listener admits it
//! and shares a hostname with it, and its rules are valid. A rule that
//! answers 500 for an unsupported filter is dropped in effect: the route
//! stays Accepted while another rule works, with `PartiallyInvalid=True`
//! (message "Dropped Rule ..."), and is `Accepted=False`, reason
//! `UnsupportedValue`, when no rule works.

use lb_http::gateway::{HostnameMatch, RouteEntry, RouteMatch, RouteRef, SniRoute, TargetId};
use serde_json::{Value, json};

use super::Ctx;
use super::attach::{Attachment, Parent, attach};
use super::filters::RuleOutcome;
use super::listeners::GatewayPlan;
use super::status::{Reason, Stamp, object_status};
use crate::model::Object;
use crate::model::gateway::ParentReference;

/// One compiled rule.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    /// HTTP/gRPC matches (empty for TLS and TCP rules).
    pub matches: Vec<RouteMatch>,
    /// The action.
    pub outcome: RuleOutcome,
}

/// Where a route kind's rules go on a Listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Route table entries, one per match.
    Table,
    /// One SNI route per rule.
    Sni,
    /// The rule's backends feed the TCP Listener's L4 service.
    Tcp,
}

/// A route being compiled.
pub(crate) struct Route<'r> {
    /// The object.
    pub obj: &'r Object,
    /// `HTTPRoute`, `GRPCRoute`, `TLSRoute` or `TCPRoute`.
    pub kind: &'static str,
    /// `apiVersion` as written.
    pub api_version: &'r str,
    /// `spec.parentRefs`.
    pub parents: &'r [ParentReference],
    /// Parsed `spec.hostnames`.
    pub hostnames: Vec<HostnameMatch>,
}

impl Route<'_> {
    /// Namespace and name.
    pub(crate) fn id(&self) -> (String, String) {
        let k = self.obj.key();
        (k.namespace.unwrap_or_default(), k.name)
    }
}

/// The `Accepted=False` reason of a route that failed model validation
/// (`errors` joined): `UnsupportedValue`, saying whether a previous valid
/// version keeps serving.
pub(crate) fn rejected_reason(
    store: &crate::store::Store,
    key: &crate::model::ObjectKey,
    errors: &str,
) -> Reason {
    let kept = if store.get(key).is_some() {
        "; the previous valid version keeps serving"
    } else {
        ""
    };
    Reason::new("UnsupportedValue", format!("{errors}{kept}"))
}

/// Parses route hostnames, warning about (and dropping) invalid ones.
pub(crate) fn hostnames(ctx: &mut Ctx<'_, '_>, obj: &Object, raw: &[String]) -> Vec<HostnameMatch> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, h)| match HostnameMatch::parse(h) {
            Ok(h) => Some(h),
            Err(e) => {
                ctx.warn(
                    obj,
                    &format!("spec.hostnames[{i}]"),
                    format!("{e}; ignored"),
                );
                None
            }
        })
        .collect()
}

/// One parentRef of ours: the ref, its `Accepted` outcome, the Listeners attached.
pub(crate) type ParentOutcome<'p> = (&'p ParentReference, Result<(), Reason>, Vec<Attachment>);

/// Resolves every parentRef; `None` when no parent is ours (no status).
pub(crate) fn resolve_parents<'p>(
    ctx: &Ctx<'_, '_>,
    plans: &[GatewayPlan<'_>],
    route: &'p Route<'_>,
) -> Option<Vec<ParentOutcome<'p>>> {
    let (ns, _) = route.id();
    let out: Vec<_> = route
        .parents
        .iter()
        .filter_map(
            |p| match attach(ctx.store, plans, route.kind, &ns, &route.hostnames, p) {
                Parent::NotOurs => None,
                Parent::Ours(r, a) => Some((p, r, a)),
            },
        )
        .collect();
    (!out.is_empty()).then_some(out)
}

/// A rule's `matches` compiled with `one` (each given its field path,
/// `FIELD.matches[i]`); a rule without matches matches everything
/// ([`RouteMatch::default`], `PathPrefix /`).
pub(crate) fn compile_matches<M>(
    matches: &[M],
    field: &str,
    one: impl Fn(&M, &str) -> Result<RouteMatch, Reason>,
) -> Result<Vec<RouteMatch>, Reason> {
    if matches.is_empty() {
        return Ok(vec![RouteMatch::default()]);
    }
    matches
        .iter()
        .enumerate()
        .map(|(mi, m)| one(m, &format!("{field}.matches[{mi}]")))
        .collect()
}

/// Compiles one HTTPRoute or GRPCRoute into the route table. `rejected`
/// holds the kind's versions that failed validation: such a version is not
/// accepted and gets no entries; while a previous valid version keeps
/// serving, that version's status is left out, the rejected one's is
/// reported. Returns the status to report, if any.
pub(crate) fn compile_table_route<R: ?Sized>(
    ctx: &mut Ctx<'_, '_>,
    plans: &mut [GatewayPlan<'_>],
    route: &Route<'_>,
    rules: &R,
    rejected: &[(&Object, &str)],
    compile_rules: impl Fn(&mut Ctx<'_, '_>, &R, &str, &str, bool) -> Result<Vec<CompiledRule>, Reason>,
) -> Option<Value> {
    let store = ctx.store;
    let key = route.obj.key();
    let invalid = rejected
        .iter()
        .find(|(o, _)| std::ptr::eq(*o, route.obj))
        .map(|(_, errors)| rejected_reason(store, &key, errors));
    let is_rejected_version = invalid.is_some();
    let out = match invalid {
        // The version that failed validation: not accepted, no entries.
        Some(reason) => compile_route(
            ctx,
            plans,
            route,
            rules,
            Placement::Table,
            |_, _, _, _, _| Err(reason.clone()),
        ),
        None => compile_route(ctx, plans, route, rules, Placement::Table, compile_rules),
    };
    // A previous valid version keeps serving, but the status is the
    // rejected version's (reported on its own turn).
    if !store.is_rejected(&key) || is_rejected_version {
        out
    } else {
        None
    }
}

/// Compiles one route: resolves its parents, compiles its rules with
/// `compile` (a dry run first, so that a route no parent attaches adds no
/// backends; for real when some parent does) and places them with
/// [`finish`]. `None` when no parent is a Gateway of ours.
pub(crate) fn compile_route<R: ?Sized>(
    ctx: &mut Ctx<'_, '_>,
    plans: &mut [GatewayPlan<'_>],
    route: &Route<'_>,
    rules: &R,
    placement: Placement,
    compile: impl Fn(&mut Ctx<'_, '_>, &R, &str, &str, bool) -> Result<Vec<CompiledRule>, Reason>,
) -> Option<Value> {
    let parents = resolve_parents(ctx, plans, route)?;
    let materialize = parents.iter().any(|(_, ok, a)| ok.is_ok() && !a.is_empty());
    let (ns, name) = route.id();
    let compiled = match compile(ctx, rules, &ns, &name, false) {
        Ok(_) if materialize => compile(ctx, rules, &ns, &name, true),
        other => other,
    };
    Some(finish(ctx, plans, route, parents, compiled, placement))
}

/// Places `rules` (or the route-level error `invalid`) on the attached
/// Listeners and returns the route's status object.
pub(crate) fn finish(
    ctx: &mut Ctx<'_, '_>,
    plans: &mut [GatewayPlan<'_>],
    route: &Route<'_>,
    parents: Vec<ParentOutcome<'_>>,
    rules: Result<Vec<CompiledRule>, Reason>,
    placement: Placement,
) -> Value {
    let (ns, name) = route.id();
    let meta = route.obj.meta();
    let stamp = Stamp::of(meta);
    let created = route
        .obj
        .creation_timestamp()
        .map_or(0, |t| t.0.as_second());
    let (rules, invalid) = match rules {
        Ok(r) => (r, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let dropped: Vec<String> = rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.outcome
                .unsupported
                .as_ref()
                .map(|m| format!("rule {i}: {m}"))
        })
        .collect();
    // Every rule dropped for an unsupported filter: the route is not
    // accepted, yet its matches stay programmed so that the requests they
    // take get 500, as the spec asks of a filter that cannot be applied.
    let all_dropped = invalid.is_none() && !rules.is_empty() && dropped.len() == rules.len();
    let route_ok: Result<(), Reason> = match invalid {
        Some(e) => Err(e),
        None if !rules.is_empty() && dropped.len() == rules.len() => Err(Reason::new(
            "UnsupportedValue",
            format!(
                "no rule is supported ({}); requests get 500",
                dropped.join("; ")
            ),
        )),
        None => Ok(()),
    };
    let resolved = rules
        .iter()
        .find_map(|r| r.outcome.resolved.clone().err())
        .map_or(Ok(()), Err);
    if let Err(e) = &route_ok {
        ctx.warn(
            route.obj,
            "spec.rules",
            format!("not accepted ({}): {}", e.reason, e.message),
        );
    }
    if let Err(e) = &resolved {
        ctx.warn(
            route.obj,
            "spec.rules",
            format!("unresolved reference ({}): {}", e.reason, e.message),
        );
    }
    if !dropped.is_empty() && route_ok.is_ok() {
        ctx.warn(
            route.obj,
            "spec.rules",
            format!("requests get 500 for {}", dropped.join("; ")),
        );
    }
    // Action ids, assigned when a rule is first placed.
    let mut ids: Vec<Option<TargetId>> = vec![None; rules.len()];
    let mut out = Vec::new();
    for (pref, attached, attachments) in parents {
        let placed = attached.is_ok() && all_dropped;
        let accepted = attached.and(route_ok.clone());
        if let Err(e) = &accepted
            && route_ok.is_ok()
        {
            ctx.warn(
                route.obj,
                "spec.parentRefs",
                format!(
                    "not accepted by Gateway {} ({}): {}",
                    pref.name, e.reason, e.message
                ),
            );
        }
        if accepted.is_ok() || placed {
            for a in attachments {
                let listener = &mut plans[a.gateway].listeners[a.listener];
                if accepted.is_ok() {
                    listener.attached += 1;
                }
                if !listener.programmed {
                    continue;
                }
                for (ri, rule) in rules.iter().enumerate() {
                    let target = *ids[ri].get_or_insert_with(|| {
                        ctx.actions.push(rule.outcome.action.clone());
                        TargetId((ctx.actions.len() - 1) as u32)
                    });
                    let rref = |mi: usize| RouteRef {
                        namespace: ns.clone(),
                        name: name.clone(),
                        rule_index: ri as u32,
                        match_index: mi as u32,
                        created,
                    };
                    match placement {
                        Placement::Table => {
                            for (mi, m) in rule.matches.iter().enumerate() {
                                listener.entries.push(RouteEntry {
                                    hostnames: a.hostnames.clone(),
                                    rule_match: m.clone(),
                                    route: rref(mi),
                                    target,
                                });
                            }
                        }
                        Placement::Sni => listener.sni.push(SniRoute {
                            hostnames: a.hostnames.clone(),
                            route: rref(0),
                            target,
                        }),
                        Placement::Tcp => listener.tcp.extend(
                            rule.outcome
                                .action
                                .backends
                                .iter()
                                .filter(|b| b.weight > 0)
                                .filter_map(|b| b.backend.map(|id| (id, b.weight))),
                        ),
                    }
                }
            }
        }
        let mut conditions = vec![
            stamp.outcome("Accepted", &accepted, "Accepted", "accepted by the Gateway"),
            stamp.outcome(
                "ResolvedRefs",
                &resolved,
                "ResolvedRefs",
                "all references resolved",
            ),
        ];
        if !dropped.is_empty() && route_ok.is_ok() {
            conditions.push(stamp.condition(
                "PartiallyInvalid",
                true,
                "UnsupportedValue",
                format!(
                    "Dropped Rule(s): {}; requests matching them get 500",
                    dropped.join("; ")
                ),
            ));
        }
        out.push(json!({
            "parentRef": pref,
            "controllerName": ctx.cfg.gateway.controller_name,
            "conditions": conditions,
        }));
    }
    object_status(
        route.api_version,
        route.kind,
        Some(&ns),
        &name,
        json!({ "parents": out }),
    )
}
