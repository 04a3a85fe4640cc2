//! Gateway API (v1) HTTPRoute matching for the data plane: the compiled,
//! immutable per-Listener route table ([`GatewayRouteTable`]), the match
//! types it is built from, hostname matching and Listener/route hostname
//! intersection, and the precedence order between matches.
//!
//! The control plane (not here) turns attached HTTPRoutes into
//! [`RouteEntry`] values, one per `HTTPRouteMatch` (a rule without matches
//! gives one [`RouteMatch::default`], i.e. `PathPrefix /`), and builds one
//! table per Listener. A rule's matches are ORed because each is an entry of
//! its own; the fields of one match are ANDed.

pub mod apply;
mod hostname;
mod matcher;
pub mod precedence;
mod request;
mod snapshot;
mod table;

#[cfg(test)]
mod tests;

use serde::Serialize;

pub use apply::{Field, RedirectFrom, modify_fields, modify_map, redirect_location, rewrite_path};
pub use hostname::{HostnameMatch, InvalidHostname, attaches, intersect};
pub use matcher::{HeaderMatch, PathMatch, Pattern, QueryMatch, RouteMatch, ValueMatch};
pub use request::{HeaderSource, host_key, split_target};
pub use snapshot::{
    GatewayListener, GatewayPort, GatewaySnapshot, HeaderModifier, Mirror, PathModifier,
    PortProtocol, Redirect, Rewrite, RuleAction, SniRoute, WeightedBackend,
};
pub use table::GatewayRouteTable;

/// Opaque id of the backend set a match forwards to (resolved by the compiler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TargetId(pub u32);

/// Which HTTPRoute, rule and match an entry came from, plus the route's age
/// for precedence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteRef {
    /// HTTPRoute namespace.
    pub namespace: String,
    /// HTTPRoute name.
    pub name: String,
    /// Index into `spec.rules`.
    pub rule_index: u32,
    /// Index into the rule's `matches` (0 for a rule without matches).
    pub match_index: u32,
    /// `metadata.creationTimestamp`, seconds since the Unix epoch.
    pub created: i64,
}

/// One `HTTPRouteMatch` of an attached HTTPRoute, ready for the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteEntry {
    /// The route's effective hostnames on this Listener (after
    /// [`intersect`]); empty means every host.
    pub hostnames: Vec<HostnameMatch>,
    /// The match conditions.
    #[serde(rename = "match")]
    pub rule_match: RouteMatch,
    /// Where the entry came from.
    pub route: RouteRef,
    /// Where matching requests go.
    pub target: TargetId,
}
