//! Gateway API hostnames: precise and `*.` wildcard hostnames, how they match
//! a request host, how specific a match is, and Listener/HTTPRoute hostname
//! intersection.
//!
//! Spec: HTTPRoute API reference, `HTTPRouteSpec.hostnames`, and
//! `Listener.hostname` (gateway.networking.k8s.io/v1): "Hostnames that are
//! prefixed with a wildcard label (`*.`) are interpreted as a suffix match.
//! That means that a match for `*.example.com` would match both
//! `test.example.com`, and `foo.test.example.com`, but not `example.com`."
//! This differs from Ingress, where `*.` covers exactly one label.

use std::fmt;

use serde::{Serialize, Serializer};

/// A Gateway API hostname: precise (`foo.example.com`) or wildcard
/// (`*.example.com`, stored without the `*.`). Always lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostnameMatch {
    /// Matches exactly this host.
    Exact(String),
    /// `*.suffix`: matches any host ending in `.suffix` with one or more
    /// labels in front (HTTPRouteSpec.hostnames: suffix match).
    Wildcard(String),
}

/// Why a hostname was rejected by [`HostnameMatch::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Gateway API hostname {0:?}")]
pub struct InvalidHostname(pub String);

impl HostnameMatch {
    /// Parses `foo.example.com` or `*.example.com` (ASCII case folded, one
    /// trailing dot dropped). A `*` anywhere but as the whole first label, an
    /// empty name and a bare `*` are rejected; full RFC 1123 validation is the
    /// control plane's job.
    pub fn parse(raw: &str) -> Result<Self, InvalidHostname> {
        let err = || InvalidHostname(raw.to_owned());
        let h = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        let (wild, rest) = match h.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, h.as_str()),
        };
        if rest.is_empty() || rest.contains('*') || rest.starts_with('.') || rest.contains("..") {
            return Err(err());
        }
        Ok(if wild {
            HostnameMatch::Wildcard(rest.to_owned())
        } else {
            HostnameMatch::Exact(rest.to_owned())
        })
    }

    /// Whether `host` (lowercase, without port) is matched.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostnameMatch::Exact(h) => h == host,
            HostnameMatch::Wildcard(suffix) => wildcard_covers(suffix, host),
        }
    }

    /// Characters in the hostname as written (`*.example.com` counts the `*.`).
    pub fn len(&self) -> usize {
        match self {
            HostnameMatch::Exact(h) => h.len(),
            HostnameMatch::Wildcard(s) => s.len() + 2,
        }
    }

    /// Never true: a hostname is never empty. Present for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether every host this one matches is also matched by `other`
    /// (`a.example.com` and `*.a.example.com` are within `*.example.com`).
    pub fn within(&self, other: &HostnameMatch) -> bool {
        match (self, other) {
            (_, HostnameMatch::Exact(o)) => matches!(self, HostnameMatch::Exact(s) if s == o),
            (HostnameMatch::Exact(s), HostnameMatch::Wildcard(o)) => wildcard_covers(o, s),
            (HostnameMatch::Wildcard(s), HostnameMatch::Wildcard(o)) => {
                s == o || wildcard_covers(o, s)
            }
        }
    }
}

/// `*.suffix` covers `host`: host ends in `.suffix` with a non-empty label part before.
fn wildcard_covers(suffix: &str, host: &str) -> bool {
    host.len() > suffix.len() + 1
        && host.ends_with(suffix)
        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
}

impl fmt::Display for HostnameMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostnameMatch::Exact(h) => f.write_str(h),
            HostnameMatch::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

impl Serialize for HostnameMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The hostnames an HTTPRoute serves on a Listener: the intersection of the
/// Listener `hostname` with the route's `hostnames`.
///
/// Spec (HTTPRouteSpec.hostnames): a Listener without a hostname accepts the
/// route's hostnames as they are; a route without hostnames takes the
/// Listener's; when both are set, "any HTTPRoute hostnames that do not match
/// the Listener hostname MUST be ignored", and each remaining pair yields the
/// more specific of the two (`test.example.com` on a `*.example.com`
/// Listener stays `test.example.com`; `*.example.com` on a `test.example.com`
/// Listener serves `test.example.com`). Two wildcards intersect when one is
/// within the other (the narrower is kept), following the "hostname
/// intersection" of the Gateway API hostnames concept page.
///
/// An empty result means "every host" only when `listener` is `None` and
/// `route` is empty; otherwise it means no intersection: the route does not
/// attach (`Accepted=False`, reason `NoMatchingListenerHostname`). Use
/// [`attaches`] to tell the two apart. Order follows `route`, duplicates dropped.
pub fn intersect(listener: Option<&HostnameMatch>, route: &[HostnameMatch]) -> Vec<HostnameMatch> {
    let Some(l) = listener else {
        let mut out: Vec<HostnameMatch> = Vec::with_capacity(route.len());
        for r in route {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        return out;
    };
    if route.is_empty() {
        return vec![l.clone()];
    }
    let mut out: Vec<HostnameMatch> = Vec::new();
    for r in route {
        let narrow = if r.within(l) {
            r
        } else if l.within(r) {
            l
        } else {
            continue;
        };
        if !out.contains(narrow) {
            out.push(narrow.clone());
        }
    }
    out
}

/// Whether a route with `route` hostnames can attach to a Listener with
/// `listener` hostname (a non-empty [`intersect`], or both unrestricted).
pub fn attaches(listener: Option<&HostnameMatch>, route: &[HostnameMatch]) -> bool {
    (listener.is_none() && route.is_empty()) || !intersect(listener, route).is_empty()
}
