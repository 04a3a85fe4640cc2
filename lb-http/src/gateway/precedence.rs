//! The precedence order between matches attached to one Listener, and the
//! reference (scan-everything) lookup the indexed table must agree with.
//!
//! Highest precedence first; each criterion applies on a tie of the ones
//! before it:
//!
//! 1. Hostname (HTTPRouteSpec.hostnames: "precedence must be given to rules
//!    from the HTTPRoute with the largest number of: characters in a matching
//!    non-wildcard hostname; characters in a matching hostname"): an exact
//!    hostname beats any wildcard, a longer wildcard beats a shorter one, and
//!    a route without hostnames comes last. This ranks matching entries; it
//!    does not hide the less specific routes, so a request that no rule of
//!    the exact-host route matches falls through to wildcard routes.
//! 2. Path (HTTPRouteRule.matches): `Exact`, then `RegularExpression`, then
//!    `PathPrefix` with the largest number of characters (trailing `/`
//!    ignored, as it is for matching). The spec leaves regex precedence
//!    implementation-specific; lb puts regexes after exact paths and before
//!    every prefix, longer pattern source first.
//! 3. A method match.
//! 4. The largest number of header matches.
//! 5. The largest number of query parameter matches.
//! 6. The oldest route by creation timestamp.
//! 7. The route first in alphabetical order of `{namespace}/{name}`.
//! 8. Rule order within the route, then match order within the rule
//!    (HTTPRouteRule.matches: "the FIRST matching rule (in list order)").
//!
//! Entries with equal keys (duplicates) keep their input order.

use std::cmp::{Ordering, Reverse};

use super::hostname::HostnameMatch;
use super::matcher::{PathMatch, prefix_key};
use super::request::HeaderSource;
use super::{RouteEntry, request};

/// Hostname specificity of a match: (characters of a matching non-wildcard
/// hostname, characters of the matching hostname); larger wins.
pub type HostRank = (usize, usize);

/// How well `hostnames` match `host` (lowercase, no port); `None` when none
/// does. No hostnames means every host, at rank `(0, 0)`.
pub fn host_rank(hostnames: &[HostnameMatch], host: &str) -> Option<HostRank> {
    if hostnames.is_empty() {
        return Some((0, 0));
    }
    hostnames
        .iter()
        .filter(|h| h.matches(host))
        .map(|h| match h {
            HostnameMatch::Exact(e) => (e.len(), e.len()),
            HostnameMatch::Wildcard(_) => (0, h.len()),
        })
        .max()
}

/// Everything after the hostname in the precedence order, as a sort key:
/// smaller sorts first (wins).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct MatchRank {
    path_class: u8,
    path_len: Reverse<usize>,
    method: Reverse<bool>,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    created: i64,
    route: String,
    rule: u32,
    matched: u32,
    index: usize,
}

impl MatchRank {
    /// The key of `entries[index]`.
    pub(crate) fn of(e: &RouteEntry, index: usize) -> Self {
        let m = &e.rule_match;
        let (path_class, path_len) = match m.path() {
            PathMatch::Exact(v) => (0, v.len()),
            PathMatch::RegularExpression(p) => (1, p.as_str().len()),
            PathMatch::PathPrefix(v) => (2, prefix_key(v).len()),
        };
        MatchRank {
            path_class,
            path_len: Reverse(path_len),
            method: Reverse(m.method().is_some()),
            headers: Reverse(m.headers().len()),
            query: Reverse(m.query().len()),
            created: e.route.created,
            route: format!("{}/{}", e.route.namespace, e.route.name),
            rule: e.route.rule_index,
            matched: e.route.match_index,
            index,
        }
    }
}

/// The entries whose hostnames match `host`, in precedence order: the first
/// whose conditions hold is what a lookup returns. For diagnostics
/// (`lb explain`), never the hot path.
pub fn candidates<'e>(entries: &'e [RouteEntry], host: &str) -> Vec<&'e RouteEntry> {
    let host = request::host_key(host);
    let mut ranked: Vec<(HostRank, MatchRank, &RouteEntry)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((host_rank(&e.hostnames, &host)?, MatchRank::of(e, i), e)))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, _, e)| e).collect()
}

/// The reference lookup: evaluates every entry on its own and returns the
/// best matching one by the full precedence order. O(entries); for tests
/// and diagnostics, never the hot path.
pub fn lookup_naive<'e, H: HeaderSource + ?Sized>(
    entries: &'e [RouteEntry],
    host: &str,
    path: &str,
    method: &[u8],
    headers: &H,
    query: &str,
) -> Option<&'e RouteEntry> {
    let host = request::host_key(host);
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let hr = host_rank(&e.hostnames, &host)?;
            e.rule_match
                .matches(path, method, headers, query)
                .then(|| (hr, MatchRank::of(e, i), e))
        })
        .min_by(|a, b| match b.0.cmp(&a.0) {
            Ordering::Equal => a.1.cmp(&b.1),
            o => o,
        })
        .map(|(_, _, e)| e)
}
