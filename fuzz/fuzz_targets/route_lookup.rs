//! Ingress route lookup against a reference matcher written from the
//! documented rules (lb-http route.rs, Ingress v1): a table built from
//! arbitrary hosts and paths must route every request exactly as the
//! reference does, and refuse exactly the duplicate rules the reference
//! calls duplicates.
//!
//! The reference rules: hosts are tried in the order exact host, then
//! `*.suffix` (the request host is one non-empty label, a dot and `suffix`),
//! then rules without a host; within the first host group that has a
//! matching rule, an Exact rule equal to the path (query removed) wins,
//! else the Prefix rule with the most `/`-separated elements that are the
//! first elements of the path (empty elements ignored); else the default.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use lb_http::route::normalize_host;
use lb_http::snapshot::BackendId;
use lb_http::{HostMatch, PathKind, RouteTableBuilder, RouteTarget};
use libfuzzer_sys::fuzz_target;

const LABELS: &[&str] = &["a", "b", "example", "com", "*", "A", "x-y", ""];
const SEGMENTS: &[&str] = &["", "a", "b", "api", "v1", "A", ".", "..", "%2F", "a b"];

fn pick<'a>(u: &mut Unstructured<'_>, from: &[&'a str]) -> arbitrary::Result<&'a str> {
    Ok(from[usize::from(u.arbitrary::<u8>()?) % from.len()])
}

/// A host from a small vocabulary (so that rules and requests meet), or
/// arbitrary text.
fn host(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.ratio(1, 8)? {
        return u.arbitrary();
    }
    let n = u.int_in_range(0..=3)?;
    let mut labels = Vec::new();
    for _ in 0..n {
        labels.push(pick(u, LABELS)?);
    }
    let mut h = labels.join(".");
    if u.ratio(1, 8)? {
        h.push('.');
    }
    Ok(h)
}

fn path(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.ratio(1, 8)? {
        return u.arbitrary();
    }
    let n = u.int_in_range(0..=4)?;
    let mut p = String::new();
    for _ in 0..n {
        p.push('/');
        p.push_str(pick(u, SEGMENTS)?);
    }
    if p.is_empty() || u.ratio(1, 6)? {
        p.push('/');
    }
    if u.ratio(1, 8)? {
        p.push_str("?q=/a");
    }
    Ok(p)
}

#[derive(Debug)]
struct Rule {
    host: HostMatch,
    path: String,
    kind: PathKind,
    backend: u32,
}

#[derive(Debug)]
struct Input {
    rules: Vec<Rule>,
    default: Option<u32>,
    requests: Vec<(String, String)>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut rules = Vec::new();
        for i in 0..u.int_in_range(0..=12)? {
            let kind = if u.arbitrary()? {
                PathKind::Exact
            } else {
                PathKind::Prefix
            };
            rules.push(Rule {
                host: HostMatch::parse(&host(u)?),
                path: path(u)?,
                kind,
                backend: i,
            });
        }
        let default = if u.arbitrary()? { Some(999) } else { None };
        let mut requests = Vec::new();
        for _ in 0..u.int_in_range(1..=8)? {
            requests.push((host(u)?, path(u)?));
        }
        Ok(Input {
            rules,
            default,
            requests,
        })
    }
}

fn segments(p: &str) -> Vec<&str> {
    p.split('/').filter(|s| !s.is_empty()).collect()
}

fn same_rule(a: &Rule, b: &Rule) -> bool {
    a.host == b.host
        && a.kind == b.kind
        && match a.kind {
            PathKind::Exact => a.path == b.path,
            PathKind::Prefix => segments(&a.path) == segments(&b.path),
        }
}

fn reference(rules: &[&Rule], default: Option<u32>, host: &str, path: &str) -> Option<u32> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let in_group = |group: usize, r: &Rule| match (&r.host, group) {
        (HostMatch::Exact(h), 0) => h == host,
        (HostMatch::Wildcard(s), 1) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == s),
        (HostMatch::Any, 2) => true,
        _ => false,
    };
    let want = segments(path);
    for group in 0..3 {
        let candidates: Vec<&&Rule> = rules.iter().filter(|r| in_group(group, r)).collect();
        if let Some(r) = candidates
            .iter()
            .find(|r| r.kind == PathKind::Exact && r.path == path)
        {
            return Some(r.backend);
        }
        let best = candidates
            .iter()
            .filter(|r| r.kind == PathKind::Prefix)
            .map(|r| (segments(&r.path), r.backend))
            .filter(|(segs, _)| want.starts_with(segs))
            .max_by_key(|(segs, _)| segs.len());
        if let Some((_, backend)) = best {
            return Some(backend);
        }
    }
    default
}

fuzz_target!(|input: Input| {
    let mut builder = RouteTableBuilder::new();
    let mut accepted: Vec<&Rule> = Vec::new();
    for rule in &input.rules {
        let target = RouteTarget {
            backend: BackendId(rule.backend),
            source: "".into(),
            source_ranges: None,
        };
        let added = builder.add(rule.host.clone(), &rule.path, rule.kind, target);
        let duplicate = accepted.iter().any(|a| same_rule(a, rule));
        assert_eq!(added.is_err(), duplicate, "rule {}", rule.backend);
        if added.is_ok() {
            accepted.push(rule);
        }
    }
    if let Some(d) = input.default {
        builder
            .set_default(RouteTarget {
                backend: BackendId(d),
                source: "".into(),
                source_ranges: None,
            })
            .unwrap();
    }
    let table = builder.build();
    let mut h = String::new();
    for (host, path) in &input.requests {
        normalize_host(host, &mut h);
        let got = table.lookup(&h, path).map(|t| t.backend.0);
        let want = reference(&accepted, input.default, &h, path);
        assert_eq!(got, want, "host {h:?} path {path:?}");
    }
});
