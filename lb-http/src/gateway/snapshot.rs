//! The Gateway API part of a snapshot: every bound Gateway port with the
//! Listeners merged on it, their route tables, and the compiled rule actions
//! (filters, weighted backends, timeouts) the tables point at. Built by the
//! control plane, read by the HTTP/1.1, HTTP/2 and TLS passthrough paths.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use super::{GatewayRouteTable, HostnameMatch, RouteRef, TargetId};
use crate::snapshot::BackendId;
use crate::tls::CertIndex;

/// All Gateway listeners served, and the actions of their routes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewaySnapshot {
    /// Ports by the address they are bound on (`spec.addresses[0]` or a pool
    /// address, and the Listener port). Listeners of one Gateway port are
    /// merged into one entry. TCP listeners are not here: TCPRoutes compile
    /// to L4 services.
    pub ports: BTreeMap<SocketAddr, GatewayPort>,
    /// Rule actions, indexed by [`TargetId`].
    pub actions: Vec<RuleAction>,
}

impl GatewaySnapshot {
    /// Whether no Gateway port is served.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The port a connection accepted on `local` belongs to: the exact
    /// address, else a wildcard (`0.0.0.0` / `::`) bind of the same port.
    pub fn port(&self, local: SocketAddr) -> Option<(SocketAddr, &GatewayPort)> {
        if let Some(p) = self.ports.get(&local) {
            return Some((local, p));
        }
        let any: IpAddr = match local.ip() {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let key = SocketAddr::new(any, local.port());
        self.ports.get(&key).map(|p| (key, p))
    }

    /// The action with id `id`.
    pub fn action(&self, id: TargetId) -> Option<&RuleAction> {
        self.actions.get(id.0 as usize)
    }
}

/// What a Gateway port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PortProtocol {
    /// Cleartext HTTP/1.1 (and HTTP/2 by prior knowledge).
    #[serde(rename = "HTTP")]
    Http,
    /// TLS terminated with the port's certificates, then HTTP/1.1 or HTTP/2.
    #[serde(rename = "HTTPS")]
    Https,
    /// TLS passed through unopened, routed by SNI to TLSRoutes.
    #[serde(rename = "TLS")]
    TlsPassthrough,
}

/// One bound port: its protocol, certificates and merged Listeners.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayPort {
    /// What the port speaks.
    pub protocol: PortProtocol,
    /// For HTTPS: the Listeners' certificates by server name (a Listener
    /// without hostname supplies the default).
    #[serde(skip_serializing_if = "CertIndex::is_empty")]
    pub tls: CertIndex,
    /// The Listeners on this port, most specific hostname first (exact,
    /// then wildcards longest first, then the Listener without hostname).
    pub listeners: Vec<GatewayListener>,
    /// The client networks accepted on this port (its Gateways' source
    /// ranges); `None`: everyone. Others are closed at accept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ranges: Option<lb_core::l4::SourceRanges>,
}

impl GatewayPort {
    /// The Listener serving `host` (lowercase, no port): the first, thus
    /// most specific, whose hostname matches.
    pub fn listener(&self, host: &str) -> Option<&GatewayListener> {
        self.listeners
            .iter()
            .find(|l| l.hostname.as_ref().is_none_or(|h| h.matches(host)))
    }
}

/// One Gateway Listener and the routes attached to it.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayListener {
    /// `namespace/gateway/listener`.
    pub name: String,
    /// The Listener's hostname; `None` matches every host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<HostnameMatch>,
    /// HTTPRoute and GRPCRoute matches attached (HTTP and HTTPS ports).
    pub routes: GatewayRouteTable,
    /// TLSRoutes attached (TLS passthrough ports), most specific hostname
    /// first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sni_routes: Vec<SniRoute>,
}

/// One TLSRoute on a passthrough Listener.
#[derive(Debug, Clone, Serialize)]
pub struct SniRoute {
    /// Effective hostnames (route's intersected with the Listener's); empty
    /// matches every server name.
    pub hostnames: Vec<HostnameMatch>,
    /// Which TLSRoute and rule.
    pub route: RouteRef,
    /// Where its connections go.
    pub target: TargetId,
}

/// What a matched rule does with a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleAction {
    /// `Kind namespace/name rule N`, for logs and `lb explain`.
    pub name: String,
    /// lb answers with this status itself (500 when the rule has an
    /// unsupported filter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_status: Option<u16>,
    /// `RequestHeaderModifier`.
    #[serde(skip_serializing_if = "HeaderModifier::is_empty")]
    pub request_headers: HeaderModifier,
    /// `ResponseHeaderModifier`.
    #[serde(skip_serializing_if = "HeaderModifier::is_empty")]
    pub response_headers: HeaderModifier,
    /// `RequestRedirect`: answered by lb, backends unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// `URLRewrite`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// `RequestMirror` backends (fire and forget, responses discarded).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// `backendRefs`, in order. Empty (and no redirect): lb answers 500.
    pub backends: Vec<WeightedBackend>,
    /// `timeouts.request`: the whole exchange, until the response head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Duration>,
    /// `timeouts.backendRequest`: one upstream attempt, until the response
    /// head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_timeout: Option<Duration>,
}

impl RuleAction {
    /// Sum of the backend weights.
    pub fn total_weight(&self) -> u64 {
        self.backends.iter().map(|b| u64::from(b.weight)).sum()
    }

    /// The backend for a uniformly random `roll` (any `u64`): each backend
    /// gets a share proportional to its weight; weight 0 gets nothing.
    /// `None` when every weight is 0.
    pub fn choose(&self, roll: u64) -> Option<&WeightedBackend> {
        let total = self.total_weight();
        if total == 0 {
            return None;
        }
        let mut at = roll % total;
        for b in &self.backends {
            let w = u64::from(b.weight);
            if at < w {
                return Some(b);
            }
            at -= w;
        }
        None
    }
}

/// One `RequestMirror` filter: where copies go, and how many requests get
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mirror {
    /// The mirror backend.
    pub backend: BackendId,
    /// Requests mirrored per million (`percent` or `fraction`; 1,000,000
    /// when neither is set).
    pub per_million: u32,
}

impl Mirror {
    /// A mirror of every request to `backend`.
    pub fn all(backend: BackendId) -> Self {
        Mirror {
            backend,
            per_million: 1_000_000,
        }
    }

    /// Whether the request with random `roll` gets a copy.
    pub fn takes(&self, roll: u64) -> bool {
        self.per_million >= 1_000_000 || roll % 1_000_000 < u64::from(self.per_million)
    }
}

/// One `backendRef` of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WeightedBackend {
    /// The resolved backend; `None` when the ref is invalid (missing
    /// Service, not permitted, wrong kind): its share of requests gets 500.
    pub backend: Option<BackendId>,
    /// `weight` (default 1).
    pub weight: u32,
    /// The ref's own `RequestHeaderModifier`, applied after the rule's.
    #[serde(skip_serializing_if = "HeaderModifier::is_empty")]
    pub request_headers: HeaderModifier,
    /// The ref's own `ResponseHeaderModifier`, applied after the rule's.
    #[serde(skip_serializing_if = "HeaderModifier::is_empty")]
    pub response_headers: HeaderModifier,
}

/// A header modifier filter: names are lowercase; `set` replaces, `add`
/// appends, `remove` drops every value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderModifier {
    /// Replace (or add) these headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Append these values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Remove these headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderModifier {
    /// Whether the filter changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// How a path is rewritten (redirects and `URLRewrite`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PathModifier {
    /// Replace the whole path.
    ReplaceFullPath(String),
    /// Replace the part the `PathPrefix` match matched.
    ReplacePrefixMatch(String),
}

/// `RequestRedirect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// `http` or `https`; `None` keeps the request's.
    pub scheme: Option<String>,
    /// `None` keeps the request's host.
    pub hostname: Option<String>,
    /// `None`: derived per spec (scheme's well-known port, else the
    /// Listener port).
    pub port: Option<u16>,
    /// `None` keeps the request's path.
    pub path: Option<PathModifier>,
    /// 301 or 302 (default 302).
    pub status: u16,
}

/// `URLRewrite`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// New `Host`.
    pub hostname: Option<String>,
    /// New path.
    pub path: Option<PathModifier>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weighted(weights: &[u32]) -> RuleAction {
        RuleAction {
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| WeightedBackend {
                    backend: Some(BackendId(i as u32)),
                    weight: w,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn weights_split_proportionally_and_zero_gets_nothing() {
        let a = weighted(&[3, 0, 1]);
        let mut counts = [0u32; 3];
        for roll in 0..4000u64 {
            let b = a.choose(roll).unwrap().backend.unwrap();
            counts[b.0 as usize] += 1;
        }
        assert_eq!(counts, [3000, 0, 1000]);
        assert!(weighted(&[0, 0]).choose(7).is_none());
        assert!(weighted(&[]).choose(7).is_none());
    }

    #[test]
    fn port_falls_back_to_the_wildcard_bind() {
        let mut g = GatewaySnapshot::default();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        g.ports.insert(
            any,
            GatewayPort {
                protocol: PortProtocol::Http,
                tls: CertIndex::default(),
                listeners: Vec::new(),
                source_ranges: None,
            },
        );
        let local: SocketAddr = "127.0.0.5:8080".parse().unwrap();
        assert_eq!(g.port(local).map(|(k, _)| k), Some(any));
        assert!(g.port("127.0.0.5:8081".parse().unwrap()).is_none());
        assert!(g.port("[::1]:8080".parse().unwrap()).is_none());
    }
}
