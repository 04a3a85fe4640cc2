//! Compiled HTTP route tables with Ingress v1 semantics.
//!
//! Hosts are looked up by hash (exact names first, then `*.` wildcards covering
//! exactly one label, then rules without a host); paths by an exact-path hash
//! and a trie over `/`-separated segments, so a lookup costs one hash probe per
//! path segment and never scans a list of prefixes. Exact beats Prefix, and the
//! longest (deepest) prefix wins.

use std::collections::HashMap;

use serde::Serialize;

use crate::snapshot::BackendId;

/// How a rule's path is compared with the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PathKind {
    /// The request path must equal the rule path (case-sensitive).
    Exact,
    /// The rule path must be a prefix of the request path, element by element.
    Prefix,
}

/// Which request hosts a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum HostMatch {
    /// Every host (a rule without `host`).
    Any,
    /// Exactly this host (lowercase).
    Exact(String),
    /// `*.suffix`: any host with exactly one more label in front of `suffix` (lowercase).
    Wildcard(String),
}

impl HostMatch {
    /// Parses an Ingress `host` value: empty means [`HostMatch::Any`].
    pub fn parse(host: &str) -> Self {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            HostMatch::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            HostMatch::Wildcard(suffix.to_owned())
        } else {
            HostMatch::Exact(host)
        }
    }
}

/// Where a matched request goes, and which object rule sent it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteTarget {
    /// The backend the request is sent to.
    pub backend: BackendId,
    /// Human-readable origin, e.g. `Ingress default/web rule 0 path 1`.
    pub source: String,
}

/// A rule as added to the table, kept for `/config` output and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteRule {
    /// Host match.
    pub host: HostMatch,
    /// Rule path as written.
    pub path: String,
    /// Path type.
    pub kind: PathKind,
    /// Target.
    pub target: RouteTarget,
}

/// Returned when a rule duplicates one already in the builder; the first one stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The rule that was already there and keeps serving.
    pub existing: RouteTarget,
}

#[derive(Debug, Clone, Default)]
struct Node {
    children: HashMap<Box<str>, u32>,
    prefix: Option<RouteTarget>,
}

/// Paths for one host match.
#[derive(Debug, Clone)]
struct PathTable {
    exact: HashMap<Box<str>, RouteTarget>,
    nodes: Vec<Node>,
}

impl Default for PathTable {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            nodes: vec![Node::default()],
        }
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl PathTable {
    fn insert(&mut self, path: &str, kind: PathKind, target: RouteTarget) -> Result<(), Conflict> {
        match kind {
            PathKind::Exact => {
                if let Some(existing) = self.exact.get(path) {
                    return Err(Conflict {
                        existing: existing.clone(),
                    });
                }
                self.exact.insert(path.into(), target);
            }
            PathKind::Prefix => {
                let mut node = 0usize;
                for seg in segments(path) {
                    node = match self.nodes[node].children.get(seg) {
                        Some(&next) => next as usize,
                        None => {
                            let next = self.nodes.len();
                            self.nodes.push(Node::default());
                            self.nodes[node].children.insert(seg.into(), next as u32);
                            next
                        }
                    };
                }
                if let Some(existing) = &self.nodes[node].prefix {
                    return Err(Conflict {
                        existing: existing.clone(),
                    });
                }
                self.nodes[node].prefix = Some(target);
            }
        }
        Ok(())
    }

    fn lookup(&self, path: &str) -> Option<&RouteTarget> {
        if let Some(t) = self.exact.get(path) {
            return Some(t);
        }
        let mut node = &self.nodes[0];
        let mut best = node.prefix.as_ref();
        for seg in segments(path) {
            match node.children.get(seg) {
                Some(&next) => node = &self.nodes[next as usize],
                None => break,
            }
            if node.prefix.is_some() {
                best = node.prefix.as_ref();
            }
        }
        best
    }
}

/// Collects rules and builds an immutable [`RouteTable`].
#[derive(Debug, Default)]
pub struct RouteTableBuilder {
    table: RouteTable,
}

impl RouteTableBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule. Rules must be added in precedence order (oldest object
    /// first): a later rule with the same host, path and kind is refused.
    pub fn add(
        &mut self,
        host: HostMatch,
        path: &str,
        kind: PathKind,
        target: RouteTarget,
    ) -> Result<(), Conflict> {
        let t = &mut self.table;
        let paths = match &host {
            HostMatch::Any => t.any.get_or_insert_with(PathTable::default),
            HostMatch::Exact(h) => t.exact.entry(h.clone()).or_default(),
            HostMatch::Wildcard(s) => t.wildcard.entry(s.clone()).or_default(),
        };
        paths.insert(path, kind, target.clone())?;
        t.rules.push(RouteRule {
            host,
            path: path.to_owned(),
            kind,
            target,
        });
        Ok(())
    }

    /// Sets the default backend for requests no rule matches; the first one set wins.
    pub fn set_default(&mut self, target: RouteTarget) -> Result<(), Conflict> {
        if let Some(existing) = &self.table.default {
            return Err(Conflict {
                existing: existing.clone(),
            });
        }
        self.table.default = Some(target);
        Ok(())
    }

    /// Finishes the table.
    pub fn build(self) -> RouteTable {
        self.table
    }
}

/// An immutable host and path routing table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteTable {
    /// Every rule, in the order it was added (for inspection only).
    rules: Vec<RouteRule>,
    /// The default backend.
    default: Option<RouteTarget>,
    #[serde(skip)]
    exact: HashMap<String, PathTable>,
    #[serde(skip)]
    wildcard: HashMap<String, PathTable>,
    #[serde(skip)]
    any: Option<PathTable>,
}

impl RouteTable {
    /// Routes a request. `host` must be normalised with [`normalize_host`];
    /// `path` is the request target's path (a query string is ignored).
    pub fn lookup(&self, host: &str, path: &str) -> Option<&RouteTarget> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if let Some(t) = self.exact.get(host).and_then(|p| p.lookup(path)) {
            return Some(t);
        }
        if let Some(t) = host
            .split_once('.')
            .and_then(|(_, suffix)| self.wildcard.get(suffix))
            .and_then(|p| p.lookup(path))
        {
            return Some(t);
        }
        if let Some(t) = self.any.as_ref().and_then(|p| p.lookup(path)) {
            return Some(t);
        }
        self.default.as_ref()
    }

    /// The rules in the table, in the order they were added.
    pub fn rules(&self) -> &[RouteRule] {
        &self.rules
    }

    /// The default backend, if any.
    pub fn default_target(&self) -> Option<&RouteTarget> {
        self.default.as_ref()
    }
}

/// Normalises a `Host` header value into `out`: port removed, trailing dot
/// removed, ASCII lowercase. IPv6 literals keep their brackets.
pub fn normalize_host(raw: &str, out: &mut String) {
    out.clear();
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    out.extend(host.chars().map(|c| c.to_ascii_lowercase()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u32) -> RouteTarget {
        RouteTarget {
            backend: BackendId(n),
            source: format!("t{n}"),
        }
    }

    fn table(rules: &[(&str, &str, PathKind, u32)]) -> RouteTable {
        let mut b = RouteTableBuilder::new();
        for (host, path, kind, n) in rules {
            b.add(HostMatch::parse(host), path, *kind, t(*n)).unwrap();
        }
        b.build()
    }

    fn hit(table: &RouteTable, host: &str, path: &str) -> Option<u32> {
        let mut h = String::new();
        normalize_host(host, &mut h);
        table.lookup(&h, path).map(|t| t.backend.0)
    }

    use PathKind::{Exact, Prefix};

    #[test]
    fn prefix_matches_element_by_element() {
        // The Kubernetes documentation's examples table.
        let cases: &[(&str, PathKind, &str, bool)] = &[
            ("/", Prefix, "/", true),
            ("/", Prefix, "/anything", true),
            ("/foo", Exact, "/foo", true),
            ("/foo", Exact, "/bar", false),
            ("/foo", Exact, "/foo/", false),
            ("/foo/", Exact, "/foo", false),
            ("/foo", Prefix, "/foo", true),
            ("/foo", Prefix, "/foo/", true),
            ("/foo/", Prefix, "/foo", true),
            ("/foo/", Prefix, "/foo/", true),
            ("/aaa/bb", Prefix, "/aaa/bbb", false),
            ("/aaa/bbb", Prefix, "/aaa/bbb", true),
            ("/aaa/bbb/", Prefix, "/aaa/bbb", true),
            ("/aaa/bbb", Prefix, "/aaa/bbb/", true),
            ("/aaa/bbb", Prefix, "/aaa/bbb/ccc", true),
            ("/aaa/bbb", Prefix, "/aaa/bbbxyz", false),
            ("/foo", Prefix, "/foobar", false),
        ];
        for (rule, kind, req, expect) in cases {
            let tb = table(&[("", rule, *kind, 1)]);
            assert_eq!(
                hit(&tb, "x", req).is_some(),
                *expect,
                "{kind:?} {rule} vs {req}"
            );
        }
    }

    #[test]
    fn longest_prefix_wins_and_exact_beats_prefix() {
        let tb = table(&[
            ("", "/", Prefix, 1),
            ("", "/aaa", Prefix, 2),
            ("", "/aaa/bbb", Prefix, 3),
            ("", "/aaa/bbb", Exact, 4),
        ]);
        assert_eq!(hit(&tb, "h", "/x"), Some(1));
        assert_eq!(hit(&tb, "h", "/aaa/ccc"), Some(2));
        assert_eq!(hit(&tb, "h", "/aaa/bbb/c"), Some(3));
        assert_eq!(hit(&tb, "h", "/aaa/bbb"), Some(4));
        assert_eq!(hit(&tb, "h", "/aaa/bbb?q=1"), Some(4));
        assert_eq!(hit(&tb, "h", "/aaa/bbb/"), Some(3));
    }

    #[test]
    fn hosts_exact_then_wildcard_then_any_then_default() {
        let mut b = RouteTableBuilder::new();
        b.add(HostMatch::parse("foo.bar.com"), "/", Prefix, t(1))
            .unwrap();
        b.add(HostMatch::parse("*.bar.com"), "/", Prefix, t(2))
            .unwrap();
        b.add(HostMatch::parse(""), "/any", Prefix, t(3)).unwrap();
        b.set_default(t(9)).unwrap();
        let tb = b.build();
        assert_eq!(hit(&tb, "foo.bar.com", "/"), Some(1));
        assert_eq!(hit(&tb, "FOO.bar.com:8080", "/"), Some(1));
        assert_eq!(hit(&tb, "baz.bar.com", "/"), Some(2));
        // A wildcard covers exactly one label.
        assert_eq!(hit(&tb, "bar.com", "/"), Some(9));
        assert_eq!(hit(&tb, "a.baz.bar.com", "/"), Some(9));
        assert_eq!(hit(&tb, "other", "/any/x"), Some(3));
        assert_eq!(hit(&tb, "other", "/none"), Some(9));
    }

    #[test]
    fn duplicates_keep_the_first() {
        let mut b = RouteTableBuilder::new();
        b.add(HostMatch::Any, "/a", Prefix, t(1)).unwrap();
        let err = b.add(HostMatch::Any, "/a/", Prefix, t(2)).unwrap_err();
        assert_eq!(err.existing.backend, BackendId(1));
        assert!(b.add(HostMatch::Any, "/a", Exact, t(3)).is_ok());
    }

    #[test]
    fn normalizes_hosts() {
        let mut h = String::new();
        normalize_host("Example.COM.:80", &mut h);
        assert_eq!(h, "example.com");
        normalize_host("[::1]:8080", &mut h);
        assert_eq!(h, "[::1]");
    }
}
