//! Compiled HTTP route tables with Ingress v1 semantics.
//!
//! Hosts are looked up by hash (exact names first, then `*.` wildcards covering
//! exactly one label, then rules without a host); paths by an exact-path hash
//! and a trie over `/`-separated segments, so a lookup costs one hash probe per
//! path segment and never scans a list of prefixes. Exact beats Prefix, and the
//! longest (deepest) prefix wins.
//!
//! [`RouteTable::explain`] answers the same question as [`RouteTable::lookup`]
//! for humans (`lb explain`): it evaluates every rule on its own, off the hot
//! path, and says which one routes the request and why each other one does not.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

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

impl fmt::Display for HostMatch {
    /// `foo.com`, `*.foo.com`, or `*` for every host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Any => f.write_str("*"),
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// Where a matched request goes, and which object rule sent it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteTarget {
    /// The backend the request is sent to.
    pub backend: BackendId,
    /// Human-readable origin, e.g. `Ingress default/web rule 0 path 1`
    /// (shared by the rule list and the lookup tables).
    pub source: Arc<str>,
    /// The client networks this rule's object admits (an Ingress's source
    /// ranges annotation); `None`: everyone. Others get 403.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ranges: Option<lb_core::l4::SourceRanges>,
}

/// The object field a rule was compiled from, for explanations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteOrigin {
    /// Object kind, e.g. `Ingress` (shared by the object's rules).
    pub kind: Arc<str>,
    /// Object namespace (shared by the object's rules).
    pub namespace: Arc<str>,
    /// Object name (shared by the object's rules).
    pub name: Arc<str>,
    /// Field path in the object, e.g. `spec.rules[0].http.paths[1]`.
    pub field: String,
    /// The path type as written (`ImplementationSpecific` compiles to
    /// [`PathKind::Prefix`]); `None` for a default backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_type: Option<String>,
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
    /// The object field the rule came from, when the compiler recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<RouteOrigin>,
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

    /// An empty builder with room for `rules` rules.
    pub fn with_capacity(rules: usize) -> Self {
        let mut b = Self::default();
        b.table.rules.reserve(rules);
        b
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
        self.add_with_origin(host, path, kind, target, None)
    }

    /// Like [`RouteTableBuilder::add`], recording the object field the rule
    /// came from for [`RouteTable::explain`].
    pub fn add_with_origin(
        &mut self,
        host: HostMatch,
        path: &str,
        kind: PathKind,
        target: RouteTarget,
        origin: Option<RouteOrigin>,
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
            origin,
        });
        Ok(())
    }

    /// Sets the default backend for requests no rule matches; the first one set wins.
    pub fn set_default(&mut self, target: RouteTarget) -> Result<(), Conflict> {
        self.set_default_with_origin(target, None)
    }

    /// Like [`RouteTableBuilder::set_default`], recording where the default
    /// backend came from.
    pub fn set_default_with_origin(
        &mut self,
        target: RouteTarget,
        origin: Option<RouteOrigin>,
    ) -> Result<(), Conflict> {
        if let Some(existing) = &self.table.default {
            return Err(Conflict {
                existing: existing.clone(),
            });
        }
        self.table.default = Some(target);
        self.table.default_origin = origin;
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
    /// Where the default backend came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    default_origin: Option<RouteOrigin>,
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
        if let Some(t) = wildcard_suffix(host)
            .and_then(|suffix| self.wildcard.get(suffix))
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

    /// Where the default backend came from, if recorded.
    pub fn default_origin(&self) -> Option<&RouteOrigin> {
        self.default_origin.as_ref()
    }
}

/// A rule's host group relative to one request host, in lookup order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostGroup {
    /// Rules for exactly the request host: tried first.
    Exact,
    /// Rules for the `*.` wildcard covering the request host: tried second.
    Wildcard,
    /// Rules without a host: tried third.
    Any,
    /// Rules for other hosts: never tried for this request.
    Other,
}

/// How one rule fared against one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// This rule routes the request.
    Selected,
    /// The path matches as a prefix, but an Exact rule of the same host group wins.
    ExactWon,
    /// The path matches, but a longer prefix of the same host group wins.
    LongerPrefixWon,
    /// The path matches, but a host group tried earlier routed the request.
    EarlierHostGroupWon,
    /// An Exact rule whose path is not the request path.
    ExactPathDiffers,
    /// A Prefix rule whose segments do not begin the request path's segments.
    NotAPrefix,
    /// The rule's host does not cover the request host.
    OtherHost,
}

/// One rule of the table judged against one request.
#[derive(Debug, Clone, Serialize)]
pub struct Considered<'a> {
    /// Index in [`RouteTable::rules`].
    pub index: usize,
    /// The rule.
    pub rule: &'a RouteRule,
    /// Its host group for this request.
    pub group: HostGroup,
    /// The outcome.
    pub verdict: Verdict,
    /// One line saying why.
    pub reason: String,
}

/// What routes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The rule at this index of [`RouteTable::rules`].
    Rule(usize),
    /// The default backend.
    Default,
    /// Nothing: the data plane answers 404.
    NotFound,
}

/// A step of the lookup order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Rules for exactly the request host.
    Exact,
    /// Rules for the `*.` wildcard covering the request host.
    Wildcard,
    /// Rules without a host.
    Any,
    /// The default backend.
    Default,
}

/// What a step of the lookup order found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// This step routed the request.
    Matched,
    /// The step has rules, none of which matches the path.
    NoMatch,
    /// The table has nothing for this step.
    Absent,
    /// An earlier step routed the request.
    NotReached,
}

/// One step of the lookup order for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Which step.
    pub kind: StepKind,
    /// The host key probed (`foo.com`, `*.com`); empty for host-less rules,
    /// the default backend, and a host without a dot (no wildcard applies).
    pub key: String,
    /// Rules in the table for this key (1 for a configured default backend).
    pub rules: usize,
    /// The outcome.
    pub state: StepState,
}

/// Why a request routes where it does: every rule judged, the lookup order
/// step by step, and the decision, which always equals [`RouteTable::lookup`].
#[derive(Debug, Clone)]
pub struct Explanation<'a> {
    /// The request host, as given (already normalised by the caller).
    pub host: String,
    /// The request path without its query string.
    pub path: String,
    /// Exact host, wildcard, host-less rules, default backend, in lookup order.
    pub steps: Vec<Step>,
    /// Every rule of the table, ordered by host group (stable within a group).
    pub rules: Vec<Considered<'a>>,
    /// The outcome.
    pub decision: Decision,
    table: &'a RouteTable,
}

impl<'a> Explanation<'a> {
    /// The target the request goes to, if any.
    pub fn target(&self) -> Option<&'a RouteTarget> {
        match self.decision {
            Decision::Rule(i) => self.table.rules.get(i).map(|r| &r.target),
            Decision::Default => self.table.default.as_ref(),
            Decision::NotFound => None,
        }
    }

    /// The rule that routes the request, if a rule (not the default) does.
    pub fn rule(&self) -> Option<&'a RouteRule> {
        match self.decision {
            Decision::Rule(i) => self.table.rules.get(i),
            _ => None,
        }
    }
}

/// How specific a rule's path match is: `None` when it does not match,
/// exact matches above every prefix, longer prefixes above shorter ones.
fn path_rank(rule: &RouteRule, path: &str, req: &[&str]) -> Option<usize> {
    match rule.kind {
        PathKind::Exact => (rule.path == path).then_some(usize::MAX),
        PathKind::Prefix => {
            let mut n = 0;
            for seg in segments(&rule.path) {
                if req.get(n) != Some(&seg) {
                    return None;
                }
                n += 1;
            }
            Some(n)
        }
    }
}

fn group_label(group: HostGroup) -> &'static str {
    match group {
        HostGroup::Exact => "exact-host rules",
        HostGroup::Wildcard => "wildcard-host rules",
        HostGroup::Any => "host-less rules",
        HostGroup::Other => "rules for other hosts",
    }
}

fn other_host_reason(rule: &RouteRule, host: &str) -> String {
    match &rule.host {
        HostMatch::Exact(h) if host.is_empty() => format!("host {h}: the request has no host"),
        HostMatch::Exact(h) => format!("host {h} is not {host}"),
        HostMatch::Wildcard(s) if host == s => {
            format!("*.{s} needs exactly one label before {s}")
        }
        HostMatch::Wildcard(s) if host.ends_with(&format!(".{s}")) => {
            format!("*.{s} covers exactly one label; {host} has more")
        }
        HostMatch::Wildcard(s) => format!("*.{s} does not cover {host}"),
        HostMatch::Any => "matches every host".to_owned(),
    }
}

fn mismatch_reason(rule: &RouteRule, path: &str, req: &[&str]) -> String {
    let p = &rule.path;
    if rule.kind == PathKind::Exact {
        let why = if p.trim_end_matches('/') == path.trim_end_matches('/') {
            " (a trailing slash makes them differ)"
        } else if p.eq_ignore_ascii_case(path) {
            " (paths are case-sensitive)"
        } else if path.starts_with(p.as_str()) {
            " (Exact does not match longer paths)"
        } else {
            ""
        };
        return format!("exact path {p} is not {path}{why}");
    }
    let rule_segs: Vec<&str> = segments(p).collect();
    let Some(k) = rule_segs.iter().zip(req).position(|(a, b)| a != b) else {
        return format!("prefix {p} is longer than the path {path}");
    };
    let (want, got) = (rule_segs[k], req[k]);
    if got.starts_with(want) {
        format!("prefix {p} ends inside the segment {got:?}; prefixes match whole segments")
    } else if got.eq_ignore_ascii_case(want) {
        format!(
            "prefix {p}: segment {got:?} differs from {want:?} in case; paths are case-sensitive"
        )
    } else {
        format!("prefix {p}: segment {} is {got:?}, not {want:?}", k + 1)
    }
}

impl RouteTable {
    /// Explains how [`RouteTable::lookup`] routes `host` and `path`: judges
    /// every rule on its own (no index structures), applies the same
    /// precedence, and returns the decision with a reason per rule. For
    /// tools, not the data plane: it allocates and scans every rule.
    pub fn explain(&self, host: &str, path: &str) -> Explanation<'_> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let suffix = wildcard_suffix(host);
        let req: Vec<&str> = segments(path).collect();
        let judged: Vec<(HostGroup, Option<usize>)> = self
            .rules
            .iter()
            .map(|r| {
                let group = match &r.host {
                    HostMatch::Exact(h) if h == host => HostGroup::Exact,
                    HostMatch::Wildcard(s) if Some(s.as_str()) == suffix => HostGroup::Wildcard,
                    HostMatch::Any => HostGroup::Any,
                    _ => HostGroup::Other,
                };
                (group, path_rank(r, path, &req))
            })
            .collect();
        let best_in = |group: HostGroup| {
            judged
                .iter()
                .enumerate()
                .filter(|(_, (g, rank))| *g == group && rank.is_some())
                .max_by_key(|(_, (_, rank))| *rank)
                .map(|(i, _)| i)
        };
        let winner = [HostGroup::Exact, HostGroup::Wildcard, HostGroup::Any]
            .into_iter()
            .find_map(best_in);
        let decision = match winner {
            Some(i) => Decision::Rule(i),
            None if self.default.is_some() => Decision::Default,
            None => Decision::NotFound,
        };
        let win_group = winner.map(|w| judged[w].0);

        let mut rules: Vec<Considered<'_>> = self
            .rules
            .iter()
            .zip(&judged)
            .enumerate()
            .map(|(index, (rule, &(group, rank)))| {
                let (verdict, reason) = match (group, rank, winner) {
                    (HostGroup::Other, _, _) => (Verdict::OtherHost, other_host_reason(rule, host)),
                    (_, None, _) if rule.kind == PathKind::Exact => {
                        (Verdict::ExactPathDiffers, mismatch_reason(rule, path, &req))
                    }
                    (_, None, _) => (Verdict::NotAPrefix, mismatch_reason(rule, path, &req)),
                    (_, Some(_), Some(w)) if w == index => {
                        let why = match rule.kind {
                            PathKind::Exact => format!("exact path {} equals the path", rule.path),
                            PathKind::Prefix => format!(
                                "prefix {} is the longest matching prefix of the {}",
                                rule.path,
                                group_label(group)
                            ),
                        };
                        (Verdict::Selected, why)
                    }
                    (_, Some(_), Some(w)) if judged[w].0 == group => {
                        let won = &self.rules[w].path;
                        if judged[w].1 == Some(usize::MAX) {
                            let why = format!(
                                "prefix {} matches, but the Exact path {won} wins over prefixes",
                                rule.path
                            );
                            (Verdict::ExactWon, why)
                        } else {
                            let why = format!(
                                "prefix {} matches, but the longer prefix {won} wins",
                                rule.path
                            );
                            (Verdict::LongerPrefixWon, why)
                        }
                    }
                    (_, Some(_), _) => {
                        let earlier = win_group.map_or("an earlier group", group_label);
                        let why = format!(
                            "path {} matches, but the {earlier} are tried first and one matched",
                            rule.path
                        );
                        (Verdict::EarlierHostGroupWon, why)
                    }
                };
                Considered {
                    index,
                    rule,
                    group,
                    verdict,
                    reason,
                }
            })
            .collect();
        rules.sort_by_key(|c| c.group);

        let count = |group: HostGroup| judged.iter().filter(|(g, _)| *g == group).count();
        let state = |group: HostGroup, n: usize| match win_group {
            Some(g) if g == group => StepState::Matched,
            _ if n == 0 => StepState::Absent,
            Some(g) if g < group => StepState::NotReached,
            _ => StepState::NoMatch,
        };
        let mut steps = Vec::with_capacity(4);
        for (kind, group, key) in [
            (StepKind::Exact, HostGroup::Exact, host.to_owned()),
            (
                StepKind::Wildcard,
                HostGroup::Wildcard,
                suffix.map(|s| format!("*.{s}")).unwrap_or_default(),
            ),
            (StepKind::Any, HostGroup::Any, String::new()),
        ] {
            let n = count(group);
            steps.push(Step {
                kind,
                key,
                rules: n,
                state: state(group, n),
            });
        }
        steps.push(Step {
            kind: StepKind::Default,
            key: String::new(),
            rules: usize::from(self.default.is_some()),
            state: match decision {
                Decision::Default => StepState::Matched,
                Decision::Rule(_) if self.default.is_some() => StepState::NotReached,
                Decision::Rule(_) | Decision::NotFound => StepState::Absent,
            },
        });
        Explanation {
            host: host.to_owned(),
            path: path.to_owned(),
            steps,
            rules,
            decision,
            table: self,
        }
    }
}

/// The part of `host` a `*.suffix` rule compares with its suffix: what
/// follows the first label, when that label is not empty.
pub(crate) fn wildcard_suffix(host: &str) -> Option<&str> {
    host.split_once('.')
        .filter(|(label, _)| !label.is_empty())
        .map(|(_, suffix)| suffix)
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
            source: format!("t{n}").into(),
            source_ranges: None,
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

    /// `*.a.com` matched the host `.a.com`, whose first label is empty, not
    /// one more label (the `route_lookup` fuzz target's reference matcher
    /// holds lookups to the same rule).
    #[test]
    fn wildcards_need_a_non_empty_label() {
        let tb = table(&[("*.a.com", "/", Prefix, 1)]);
        assert_eq!(hit(&tb, "x.a.com", "/"), Some(1));
        assert_eq!(hit(&tb, ".a.com", "/"), None);
        assert_eq!(hit(&tb, "a.com", "/"), None);
        assert_eq!(tb.explain(".a.com", "/").target(), None);
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

    /// Every rule of `tb` is checked by `explain` against `lookup` for `host`
    /// (raw, normalised here) and `path`; returns the decision.
    fn agree(tb: &RouteTable, host: &str, path: &str) -> Decision {
        let mut h = String::new();
        normalize_host(host, &mut h);
        let e = tb.explain(&h, path);
        let want = tb.lookup(&h, path);
        assert_eq!(
            e.target(),
            want,
            "explain and lookup differ for {host:?} {path:?}"
        );
        let selected: Vec<_> = e
            .rules
            .iter()
            .filter(|c| c.verdict == Verdict::Selected)
            .collect();
        match e.decision {
            Decision::Rule(i) => {
                assert_eq!(selected.len(), 1, "{host:?} {path:?}");
                assert_eq!(selected[0].index, i);
                assert!(std::ptr::eq(e.rule().unwrap(), &tb.rules()[i]));
            }
            Decision::Default | Decision::NotFound => {
                assert!(selected.is_empty(), "{host:?} {path:?}");
                // No tried rule may match the path when nothing did.
                for c in &e.rules {
                    assert!(
                        matches!(
                            c.verdict,
                            Verdict::OtherHost | Verdict::ExactPathDiffers | Verdict::NotAPrefix
                        ),
                        "{host:?} {path:?}: {c:?}"
                    );
                }
            }
        }
        assert_eq!(e.rules.len(), tb.rules().len());
        assert!(e.rules.iter().all(|c| !c.reason.is_empty()));
        let matched = e.steps.iter().filter(|s| s.state == StepState::Matched);
        assert_eq!(
            matched.count(),
            usize::from(e.decision != Decision::NotFound)
        );
        e.decision
    }

    fn full_table(with_default: bool) -> RouteTable {
        let rules: &[(&str, &str, PathKind)] = &[
            ("foo.example.com", "/", Prefix),
            ("foo.example.com", "/api", Prefix),
            ("foo.example.com", "/api/v1", Exact),
            ("foo.example.com", "/api/v1", Prefix),
            ("foo.example.com", "/impl/", Prefix),
            ("foo.example.com", "/exact/", Exact),
            ("foo.example.com", "/a/b/c", Prefix),
            ("Bar.Example.com", "/only", Exact),
            ("*.example.com", "/", Prefix),
            ("*.example.com", "/wild/x", Prefix),
            ("*.example.com", "/api", Exact),
            ("*.bar.example.com", "/deep", Prefix),
            ("", "/any", Prefix),
            ("", "/api/v2", Prefix),
            ("", "/x", Exact),
            ("", "/Case", Prefix),
        ];
        let mut b = RouteTableBuilder::new();
        for (n, (host, path, kind)) in rules.iter().enumerate() {
            b.add(HostMatch::parse(host), path, *kind, t(n as u32))
                .unwrap();
        }
        if with_default {
            b.set_default(t(99)).unwrap();
        }
        b.build()
    }

    fn probe_hosts(tb: &RouteTable) -> Vec<String> {
        let mut hosts: Vec<String> = [
            "",
            "unknown.test",
            "example.com",
            "a.b.example.com",
            "FOO.Example.COM:8080",
            "foo.example.com.",
            "x.bar.example.com",
            "bar.example.com:80",
            "[::1]:80",
            "foo",
            ".example.com",
        ]
        .map(String::from)
        .to_vec();
        for r in tb.rules() {
            match &r.host {
                HostMatch::Exact(h) => {
                    hosts.push(h.clone());
                    hosts.push(format!("{}:443", h.to_ascii_uppercase()));
                    hosts.push(format!("x.{h}"));
                }
                HostMatch::Wildcard(s) => {
                    hosts.push(format!("one.{s}"));
                    hosts.push(format!("two.one.{s}"));
                    hosts.push(s.clone());
                }
                HostMatch::Any => hosts.push("any.where".into()),
            }
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }

    fn probe_paths(tb: &RouteTable) -> Vec<String> {
        let mut paths: Vec<String> = ["/", "", "//", "/api//v1", "*", "/API", "/api/v1?x=1"]
            .map(String::from)
            .to_vec();
        for r in tb.rules() {
            let p = &r.path;
            let trimmed = p.trim_end_matches('/');
            paths.extend([
                p.clone(),
                format!("{trimmed}/"),
                format!("{p}x"),
                format!("{trimmed}/x"),
                trimmed.to_owned(),
                p.to_ascii_uppercase(),
                format!("{p}?q=1"),
                p.rsplit_once('/').map_or("/", |(a, _)| a).to_owned(),
            ]);
        }
        paths.sort();
        paths.dedup();
        paths
    }

    #[test]
    fn explain_agrees_with_lookup_on_generated_probes() {
        for with_default in [true, false] {
            let tb = full_table(with_default);
            let (hosts, paths) = (probe_hosts(&tb), probe_paths(&tb));
            let mut seen = std::collections::HashSet::new();
            for host in &hosts {
                for path in &paths {
                    seen.insert(agree(&tb, host, path));
                }
            }
            // Every rule was selected by some probe, and the fallbacks happened.
            for i in 0..tb.rules().len() {
                assert!(seen.contains(&Decision::Rule(i)), "rule {i} never selected");
            }
            let fallback = if with_default {
                Decision::Default
            } else {
                Decision::NotFound
            };
            assert!(seen.contains(&fallback));
        }
    }

    #[test]
    fn explain_agrees_with_lookup_on_random_tables() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let segs = ["a", "b", "ab", "", "A"];
        let hosts = ["h.x", "*.x", "", "g.x", "*.h.x", "x", "H.X"];
        let path = |next: &mut dyn FnMut(usize) -> usize| {
            let mut p = String::new();
            for _ in 0..next(4) {
                p.push('/');
                p.push_str(segs[next(segs.len())]);
            }
            if p.is_empty() || next(3) == 0 {
                p.push('/');
            }
            p
        };
        let mut hits = [0usize; 2];
        for round in 0..20 {
            let mut b = RouteTableBuilder::new();
            for n in 0..40 {
                let kind = if next(2) == 0 { Exact } else { Prefix };
                let host = HostMatch::parse(hosts[next(hosts.len())]);
                let p = path(&mut next);
                let _ = b.add(host, &p, kind, t(n));
            }
            if round % 2 == 0 {
                b.set_default(t(999)).unwrap();
            }
            let tb = b.build();
            for _ in 0..300 {
                let host = ["h.x", "g.x", "x", "a.h.x", "H.x:1", "", "q.g.x"][next(7)];
                let p = path(&mut next);
                hits[usize::from(matches!(agree(&tb, host, &p), Decision::Rule(_)))] += 1;
            }
        }
        assert!(hits[0] > 500 && hits[1] > 500, "{hits:?}");
    }

    #[test]
    fn explain_gives_reasons() {
        let tb = full_table(true);
        let e = tb.explain("foo.example.com", "/api/v1");
        let by_path = |kind: PathKind, path: &str, group: HostGroup| {
            e.rules
                .iter()
                .find(|c| c.rule.kind == kind && c.rule.path == path && c.group == group)
                .unwrap()
                .clone()
        };
        assert_eq!(e.decision, Decision::Rule(2));
        assert_eq!(
            by_path(Exact, "/api/v1", HostGroup::Exact).verdict,
            Verdict::Selected
        );
        assert_eq!(
            by_path(Prefix, "/api/v1", HostGroup::Exact).verdict,
            Verdict::ExactWon
        );
        assert_eq!(
            by_path(Prefix, "/api", HostGroup::Exact).verdict,
            Verdict::ExactWon
        );
        let wild = by_path(Prefix, "/", HostGroup::Wildcard);
        assert_eq!(wild.verdict, Verdict::EarlierHostGroupWon);
        let other = by_path(Prefix, "/deep", HostGroup::Other);
        assert_eq!(other.verdict, Verdict::OtherHost);
        assert!(other.reason.contains("does not cover"), "{}", other.reason);
        assert_eq!(e.steps[0].state, StepState::Matched);
        assert_eq!(e.steps[3].state, StepState::NotReached);

        let e = tb.explain("foo.example.com", "/api/v1/");
        let c = e.rules.iter().find(|c| c.rule.path == "/api").unwrap();
        assert_eq!(c.verdict, Verdict::LongerPrefixWon);
        assert!(c.reason.contains("longer prefix /api/v1"), "{}", c.reason);
        let c = e.rules.iter().find(|c| c.index == 2).unwrap();
        assert_eq!(c.verdict, Verdict::ExactPathDiffers);
        assert!(c.reason.contains("trailing slash"), "{}", c.reason);

        let e = tb.explain("foo.example.com", "/apix");
        let c = e.rules.iter().find(|c| c.index == 1).unwrap();
        assert_eq!(c.verdict, Verdict::NotAPrefix);
        assert!(c.reason.contains("whole segments"), "{}", c.reason);

        let e = tb.explain("a.b.example.com", "/");
        assert_eq!(e.decision, Decision::Default);
        let c = e.rules.iter().find(|c| c.index == 8).unwrap();
        assert!(c.reason.contains("exactly one label"), "{}", c.reason);
        assert_eq!(e.steps[1].key, "*.b.example.com");
        assert_eq!(e.steps[1].state, StepState::Absent);

        let e = tb.explain("one.example.com", "/any/x");
        assert_eq!(e.decision, Decision::Rule(8));
        let c = e.rules.iter().find(|c| c.index == 12).unwrap();
        assert_eq!(c.verdict, Verdict::EarlierHostGroupWon);
    }

    #[test]
    fn origins_are_kept() {
        let origin = RouteOrigin {
            kind: "Ingress".into(),
            namespace: "ns".into(),
            name: "web".into(),
            field: "spec.rules[0].http.paths[0]".into(),
            path_type: Some("ImplementationSpecific".into()),
        };
        let mut b = RouteTableBuilder::new();
        b.add_with_origin(HostMatch::Any, "/", Prefix, t(1), Some(origin.clone()))
            .unwrap();
        b.set_default_with_origin(t(2), Some(origin.clone()))
            .unwrap();
        let tb = b.build();
        assert_eq!(tb.rules()[0].origin.as_ref(), Some(&origin));
        assert_eq!(tb.default_origin(), Some(&origin));
    }
}
