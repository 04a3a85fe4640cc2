//! The compiled, immutable HTTPRoute table of one Listener and its indexed
//! lookup.
//!
//! Hosts are found by hash: the exact host, then each `*.` wildcard suffix of
//! the host from longest to shortest, then routes without hostnames; that is
//! the hostname precedence order, so the first host group with a match
//! decides. Within a group, paths are found by an exact-path hash, then the
//! regex list, then one hash probe per `/`-element prefix of the path, from
//! longest to shortest. Every candidate list is sorted by the rest of the
//! precedence key at build time, so the first candidate whose method, header
//! and query conditions hold is the answer; only regex paths and the
//! candidates sharing a host and path are evaluated one by one.

use std::collections::HashMap;

use serde::{Serialize, Serializer};

use super::RouteEntry;
use super::hostname::HostnameMatch;
use super::matcher::{PathMatch, prefix_key};
use super::precedence::MatchRank;
use super::request::{self, HeaderSource};

/// Candidates for one host group, by path kind; lists hold entry indices in
/// precedence order.
#[derive(Debug, Clone, Default)]
struct PathIndex {
    exact: HashMap<Box<str>, Vec<u32>>,
    regex: Vec<u32>,
    prefix: HashMap<Box<str>, Vec<u32>>,
}

impl PathIndex {
    fn add(&mut self, e: &RouteEntry, i: u32) {
        match e.rule_match.path() {
            PathMatch::Exact(v) => self.exact.entry(v.as_str().into()).or_default().push(i),
            PathMatch::RegularExpression(_) => self.regex.push(i),
            PathMatch::PathPrefix(v) => {
                self.prefix.entry(prefix_key(v).into()).or_default().push(i)
            }
        }
    }

    fn sort(&mut self, ranks: &[MatchRank]) {
        let by_rank =
            |l: &mut Vec<u32>| l.sort_by(|a, b| ranks[*a as usize].cmp(&ranks[*b as usize]));
        self.exact.values_mut().for_each(by_rank);
        by_rank(&mut self.regex);
        self.prefix.values_mut().for_each(by_rank);
    }

    fn find<H: HeaderSource + ?Sized>(&self, t: &GatewayRouteTable, r: &Req<'_, H>) -> Option<u32> {
        let first = |list: &[u32]| {
            list.iter().copied().find(|&i| {
                t.entries[i as usize]
                    .rule_match
                    .matches_rest(r.method, r.headers, r.query)
            })
        };
        if let Some(i) = self.exact.get(r.path).and_then(|l| first(l)) {
            return Some(i);
        }
        if let Some(i) = self.regex.iter().copied().find(|&i| {
            let m = &t.entries[i as usize].rule_match;
            m.path().matches(r.path) && m.matches_rest(r.method, r.headers, r.query)
        }) {
            return Some(i);
        }
        if self.prefix.is_empty() {
            return None;
        }
        // Element-wise prefixes of the path, longest first, then `/`.
        let trimmed = r.path.trim_end_matches('/');
        let mut end = trimmed.len();
        loop {
            let key = &trimmed[..end];
            if !key.is_empty()
                && let Some(i) = self.prefix.get(key).and_then(|l| first(l))
            {
                return Some(i);
            }
            match trimmed[..end].rfind('/') {
                Some(p) if p > 0 => end = p,
                _ => break,
            }
        }
        self.prefix.get("/").and_then(|l| first(l))
    }
}

/// The request fields a lookup reads.
struct Req<'a, H: ?Sized> {
    path: &'a str,
    method: &'a [u8],
    headers: &'a H,
    query: &'a str,
}

/// All HTTPRoute matches attached to one Listener, compiled for lookup.
/// Immutable once built; a configuration change builds a new table.
#[derive(Debug, Clone)]
pub struct GatewayRouteTable {
    entries: Vec<RouteEntry>,
    exact_hosts: HashMap<Box<str>, PathIndex>,
    wildcard_hosts: HashMap<Box<str>, PathIndex>,
    any_host: PathIndex,
}

impl GatewayRouteTable {
    /// Compiles `entries` (one per `HTTPRouteMatch`, with the route's
    /// effective hostnames already intersected with the Listener's).
    pub fn build(entries: Vec<RouteEntry>) -> Self {
        let ranks: Vec<MatchRank> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| MatchRank::of(e, i))
            .collect();
        let mut exact_hosts: HashMap<Box<str>, PathIndex> = HashMap::new();
        let mut wildcard_hosts: HashMap<Box<str>, PathIndex> = HashMap::new();
        let mut any_host = PathIndex::default();
        for (i, e) in entries.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 route matches");
            if e.hostnames.is_empty() {
                any_host.add(e, i);
            }
            let mut seen: Vec<&HostnameMatch> = Vec::with_capacity(e.hostnames.len());
            for h in &e.hostnames {
                if seen.contains(&h) {
                    continue;
                }
                seen.push(h);
                let ix = match h {
                    HostnameMatch::Exact(n) => exact_hosts.entry(n.as_str().into()).or_default(),
                    HostnameMatch::Wildcard(s) => {
                        wildcard_hosts.entry(s.as_str().into()).or_default()
                    }
                };
                ix.add(e, i);
            }
        }
        exact_hosts.values_mut().for_each(|ix| ix.sort(&ranks));
        wildcard_hosts.values_mut().for_each(|ix| ix.sort(&ranks));
        any_host.sort(&ranks);
        GatewayRouteTable {
            entries,
            exact_hosts,
            wildcard_hosts,
            any_host,
        }
    }

    /// The entry that routes the request, by the Gateway API precedence
    /// order (see [`super::precedence`]); `None` means 404.
    ///
    /// `host` is the Host header or `:authority` (port and case ignored),
    /// `path` the request path without query, `method` the request method,
    /// `query` the raw query string without `?`.
    pub fn lookup<H: HeaderSource + ?Sized>(
        &self,
        host: &str,
        path: &str,
        method: &[u8],
        headers: &H,
        query: &str,
    ) -> Option<&RouteEntry> {
        let host = request::host_key(host);
        let r = Req {
            path,
            method,
            headers,
            query,
        };
        let found = self
            .exact_hosts
            .get(&*host)
            .and_then(|ix| ix.find(self, &r))
            .or_else(|| {
                host.match_indices('.')
                    .filter(|(p, _)| *p > 0)
                    .find_map(|(p, _)| self.wildcard_hosts.get(&host[p + 1..])?.find(self, &r))
            })
            .or_else(|| self.any_host.find(self, &r))?;
        Some(&self.entries[found as usize])
    }

    /// [`lookup`](Self::lookup) with the request-target (`/path?query`) split here.
    pub fn lookup_target<H: HeaderSource + ?Sized>(
        &self,
        host: &str,
        target: &str,
        method: &[u8],
        headers: &H,
    ) -> Option<&RouteEntry> {
        let (path, query) = request::split_target(target);
        self.lookup(host, path, method, headers, query)
    }

    /// The entries, in input order.
    pub fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }

    /// Number of entries (route matches).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table routes nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Serialize for GatewayRouteTable {
    /// The entries, for `/config` dumps.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(s)
    }
}
