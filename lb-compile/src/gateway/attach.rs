//! Route attachment: which Listeners a route's `parentRef` selects
//! (`sectionName`, `port`), which of those admit the route
//! (`allowedRoutes`: namespaces and kinds), and which share a hostname with
//! it; the outcome is the route's `Accepted` condition for that parent.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use lb_http::gateway::{HostnameMatch, attaches, intersect};

use super::listeners::{FromNamespaces, GatewayPlan};
use super::refs::GATEWAY_GROUP;
use super::status::Reason;
use crate::model::Object;
use crate::model::gateway::ParentReference;
use crate::store::Store;

/// The label the API server puts on every Namespace: its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// One Listener a route attached to, and the route's hostnames there.
#[derive(Debug, Clone)]
pub(crate) struct Attachment {
    /// Index into the Gateway plans.
    pub gateway: usize,
    /// Index into that Gateway's Listeners.
    pub listener: usize,
    /// [`intersect`] of the Listener and route hostnames.
    pub hostnames: Vec<HostnameMatch>,
}

/// What one `parentRef` comes to.
#[derive(Debug)]
pub(crate) enum Parent {
    /// Not a Gateway of ours: lb writes no status for it.
    NotOurs,
    /// Ours (or a missing Gateway): the `Accepted` outcome and the Listeners
    /// attached (empty unless accepted).
    Ours(Result<(), Reason>, Vec<Attachment>),
}

/// The labels of namespace `ns` (none without a Namespace object).
fn namespace_labels(store: &Store, ns: &str) -> Option<BTreeMap<String, String>> {
    match store.find("Namespace", None, ns) {
        Some(Object::Namespace(n)) => {
            let mut labels = n.value.metadata.labels.clone().unwrap_or_default();
            labels
                .entry(NAMESPACE_NAME_LABEL.to_owned())
                .or_insert_with(|| ns.to_owned());
            Some(labels)
        }
        _ => None,
    }
}

/// Whether `labels` satisfy a LabelSelector (`matchLabels` and every
/// `matchExpressions` requirement; an unknown operator never matches).
pub(crate) fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_exprs = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_exprs
}

/// Resolves one `parentRef` of a `kind` route in `route_ns` with
/// `hostnames` (empty for kinds without hostnames).
pub(crate) fn attach(
    store: &Store,
    plans: &[GatewayPlan<'_>],
    kind: &str,
    route_ns: &str,
    hostnames: &[HostnameMatch],
    p: &ParentReference,
) -> Parent {
    let group = p.group.as_deref().unwrap_or(GATEWAY_GROUP);
    if group != GATEWAY_GROUP || p.kind.as_deref().unwrap_or("Gateway") != "Gateway" {
        return Parent::NotOurs;
    }
    let ns = p.namespace.as_deref().unwrap_or(route_ns);
    let Some(gi) = plans.iter().position(|g| g.ns == ns && g.name == p.name) else {
        if store.find("Gateway", Some(ns), &p.name).is_some() {
            return Parent::NotOurs;
        }
        return Parent::Ours(
            Err(Reason::new(
                "NoMatchingParent",
                format!("Gateway {ns}/{} not found", p.name),
            )),
            Vec::new(),
        );
    };
    let gw = &plans[gi];
    let selected: Vec<usize> = gw
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| p.section_name.as_deref().is_none_or(|s| s == l.name))
        .filter(|(_, l)| p.port.is_none_or(|port| port == i32::from(l.port)))
        .map(|(i, _)| i)
        .collect();
    if selected.is_empty() {
        return Parent::Ours(
            Err(Reason::new(
                "NoMatchingParent",
                format!(
                    "Gateway {ns}/{} has no listener matching sectionName {:?} and port {:?}",
                    p.name, p.section_name, p.port
                ),
            )),
            Vec::new(),
        );
    }
    let labels = namespace_labels(store, route_ns);
    let allowed: Vec<usize> = selected
        .into_iter()
        .filter(|&i| {
            let l = &gw.listeners[i];
            let ns_ok = match &l.from {
                FromNamespaces::Same => route_ns == gw.ns,
                FromNamespaces::All => true,
                FromNamespaces::Selector(sel) => sel.as_ref().is_some_and(|s| {
                    selector_matches(s, labels.as_ref().unwrap_or(&BTreeMap::new()))
                }),
            };
            ns_ok && l.kinds.contains(&kind)
        })
        .collect();
    if allowed.is_empty() {
        return Parent::Ours(
            Err(Reason::new(
                "NotAllowedByListeners",
                format!(
                    "no selected listener of Gateway {ns}/{} allows {kind}s from namespace {route_ns}",
                    p.name
                ),
            )),
            Vec::new(),
        );
    }
    let attached: Vec<Attachment> = allowed
        .into_iter()
        .filter_map(|i| {
            let lh = gw.listeners[i].hostname.as_ref();
            attaches(lh, hostnames).then(|| Attachment {
                gateway: gi,
                listener: i,
                hostnames: intersect(lh, hostnames),
            })
        })
        .collect();
    if attached.is_empty() {
        return Parent::Ours(
            Err(Reason::new(
                "NoMatchingListenerHostname",
                format!(
                    "no listener of Gateway {ns}/{} allowing the route shares a hostname with it",
                    p.name
                ),
            )),
            Vec::new(),
        );
    }
    Parent::Ours(Ok(()), attached)
}
