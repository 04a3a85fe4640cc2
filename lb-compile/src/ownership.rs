//! One owner per (address, protocol, port): who may listen where when
//! Ingress listeners (`[ingress]` in lb.toml), Gateway listeners and L4
//! Services (LoadBalancer VIPs, `externalIPs`, NodePorts) ask for the same
//! port. All of lb's sockets use SO_REUSEPORT under one user, so the kernel
//! would split (or, for a more specific bind, take over) a listener's
//! connections between two claimants; lb therefore never binds both.
//!
//! Overlap: two claims overlap when they have the same transport (TCP or
//! UDP) and port, and the same address or one of them is the wildcard of
//! the other's family (0.0.0.0, `::`; lb binds IPv6 sockets IPV6_V6ONLY, so
//! `::` does not cover IPv4). Order: listeners from lb.toml always win, then
//! the older object (creation timestamp, then kind, namespace and name), so
//! the outcome depends neither on list order nor on reload history.
//! Gateways on one address share its ports among themselves by hostname
//! (decided in `gateway::listeners`), so two Gateway claims never conflict
//! here. Pure: no I/O.

use std::collections::HashMap;
use std::net::SocketAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::model::{Object, ObjectKey};

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Who makes a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OwnerKind {
    /// An `[ingress] http`/`https` listener of lb.toml.
    Config,
    /// A Gateway listener.
    Gateway,
    /// An L4 Service port (VIP, externalIP or NodePort).
    Service,
}

impl OwnerKind {
    /// The label value of `lb_listener_conflicts`.
    pub fn label(self) -> &'static str {
        match self {
            OwnerKind::Config => "ingress",
            OwnerKind::Gateway => "gateway",
            OwnerKind::Service => "service",
        }
    }
}

/// Age of an object: missing creation timestamp last, then the timestamp,
/// then the object's key (kind, namespace, name).
pub type Age = (bool, Option<Time>, ObjectKey);

/// The age of `obj`, owned.
pub fn age_of(obj: &Object) -> Age {
    let (missing, created, key) = obj.age_key();
    (missing, created.cloned(), key)
}

/// One request to listen on an address.
#[derive(Debug, Clone)]
pub struct Claim {
    /// TCP or UDP.
    pub transport: Transport,
    /// Address and port.
    pub addr: SocketAddr,
    /// Who asks.
    pub kind: OwnerKind,
    /// The asking object's age (`None` for lb.toml listeners).
    pub age: Option<Age>,
    /// Who asks, for messages (`Service ns/name:port`, `[ingress] http`).
    pub owner: String,
}

impl Claim {
    /// Whether `self` and `other` cannot both be bound.
    pub fn overlaps(&self, other: &Claim) -> bool {
        if self.transport != other.transport || self.addr.port() != other.addr.port() {
            return false;
        }
        let (a, b) = (self.addr.ip(), other.addr.ip());
        if a.is_ipv4() != b.is_ipv4() {
            return false;
        }
        a == b || a.is_unspecified() || b.is_unspecified()
    }

    fn rank(&self) -> (bool, Option<&Age>) {
        (self.kind != OwnerKind::Config, self.age.as_ref())
    }

    fn exempt(&self, other: &Claim) -> bool {
        (self.kind == OwnerKind::Gateway && other.kind == OwnerKind::Gateway)
            || (self.kind == OwnerKind::Config && other.kind == OwnerKind::Config)
            || (self.kind == other.kind && self.owner == other.owner)
    }
}

/// For each claim (in input order): `None` when it may be bound, or the
/// index of the claim it loses to.
pub fn resolve(claims: &[Claim]) -> Vec<Option<usize>> {
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by(|&a, &b| {
        claims[a]
            .rank()
            .cmp(&claims[b].rank())
            .then_with(|| claims[a].addr.cmp(&claims[b].addr))
            .then_with(|| claims[a].transport.cmp(&claims[b].transport))
            .then_with(|| a.cmp(&b))
    });
    let mut out = vec![None; claims.len()];
    // Winners so far by (transport, port): only those can overlap.
    let mut winners: HashMap<(Transport, u16), Vec<usize>> = HashMap::new();
    for i in order {
        let c = &claims[i];
        let same_port = winners.entry((c.transport, c.addr.port())).or_default();
        let beaten = same_port
            .iter()
            .copied()
            .find(|&w| claims[w].overlaps(c) && !claims[w].exempt(c));
        match beaten {
            Some(w) => out[i] = Some(w),
            None => same_port.push(i),
        }
    }
    out
}

/// The claims of lb.toml's `[ingress]` listeners (TCP).
pub fn config_claims(http: &[SocketAddr], https: &[SocketAddr]) -> Vec<Claim> {
    let one = |addr: &SocketAddr, what: &str| Claim {
        transport: Transport::Tcp,
        addr: *addr,
        kind: OwnerKind::Config,
        age: None,
        owner: format!("the [ingress] {what} listener of lb.toml"),
    };
    http.iter()
        .map(|a| one(a, "http"))
        .chain(https.iter().map(|a| one(a, "https")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Option<Time> {
        Some(serde_json::from_value(serde_json::json!(s)).unwrap())
    }

    fn claim(kind: OwnerKind, addr: &str, created: Option<&str>, name: &str) -> Claim {
        claim_t(kind, Transport::Tcp, addr, created, name)
    }

    fn claim_t(
        kind: OwnerKind,
        transport: Transport,
        addr: &str,
        created: Option<&str>,
        name: &str,
    ) -> Claim {
        let age = (kind != OwnerKind::Config).then(|| {
            (
                created.is_none(),
                created.and_then(time),
                ObjectKey {
                    kind: if kind == OwnerKind::Gateway {
                        "Gateway".into()
                    } else {
                        "Service".into()
                    },
                    namespace: Some("ns".into()),
                    name: name.into(),
                },
            )
        });
        Claim {
            transport,
            addr: addr.parse().unwrap(),
            kind,
            age,
            owner: name.into(),
        }
    }

    const OLD: Option<&str> = Some("2020-01-01T00:00:00Z");
    const NEW: Option<&str> = Some("2024-01-01T00:00:00Z");

    #[test]
    fn config_listener_beats_an_older_service_on_a_specific_address() {
        let claims = vec![
            claim(OwnerKind::Service, "127.0.0.1:8080", OLD, "steal"),
            claim(OwnerKind::Config, "0.0.0.0:8080", None, "ingress"),
        ];
        assert_eq!(resolve(&claims), vec![Some(1), None]);
    }

    #[test]
    fn wildcards_cover_their_family_only_and_tcp_udp_do_not_conflict() {
        let claims = vec![
            claim(OwnerKind::Config, "0.0.0.0:80", None, "ingress"),
            claim(OwnerKind::Service, "[::1]:80", OLD, "v6"),
            claim_t(
                OwnerKind::Service,
                Transport::Udp,
                "10.0.0.1:80",
                OLD,
                "udp",
            ),
            claim(OwnerKind::Service, "10.0.0.1:81", OLD, "other-port"),
            claim(OwnerKind::Service, "10.0.0.1:80", OLD, "tcp"),
        ];
        assert_eq!(resolve(&claims), vec![None, None, None, None, Some(0)]);
        // A wildcard Service loses to a specific, older one, and vice versa.
        let claims = vec![
            claim(OwnerKind::Service, "[::]:53", NEW, "wild"),
            claim(OwnerKind::Gateway, "[fd00::1]:53", OLD, "gw"),
        ];
        assert_eq!(resolve(&claims), vec![Some(1), None]);
    }

    #[test]
    fn older_object_wins_whatever_the_order_and_name_breaks_ties() {
        let a = claim(OwnerKind::Service, "10.0.0.1:443", NEW, "a");
        let b = claim(OwnerKind::Gateway, "10.0.0.1:443", OLD, "b");
        assert_eq!(resolve(&[a.clone(), b.clone()]), vec![Some(1), None]);
        assert_eq!(resolve(&[b, a]), vec![None, Some(0)]);
        // Same timestamp: namespace/name (kind first) decides.
        let x = claim(OwnerKind::Service, "10.0.0.1:443", OLD, "x");
        let y = claim(OwnerKind::Service, "10.0.0.1:443", OLD, "y");
        assert_eq!(resolve(&[y.clone(), x.clone()]), vec![Some(1), None]);
        // No timestamp: after every object that has one.
        let z = claim(OwnerKind::Service, "10.0.0.1:443", None, "0-first-by-name");
        assert_eq!(resolve(&[z, y]), vec![Some(1), None]);
    }

    #[test]
    fn gateways_share_among_themselves_and_a_loser_does_not_block() {
        let claims = vec![
            claim(OwnerKind::Gateway, "10.0.0.1:80", OLD, "g1"),
            claim(
                OwnerKind::Service,
                "10.0.0.1:80",
                Some("2021-01-01T00:00:00Z"),
                "s",
            ),
            claim(OwnerKind::Gateway, "10.0.0.1:80", NEW, "g2"),
        ];
        assert_eq!(resolve(&claims), vec![None, Some(0), None]);
        // One Service claiming the same address twice (two ports mapped to
        // one NodePort is rejected upstream; this is the same label) is no
        // conflict with itself.
        let s = claim(OwnerKind::Service, "10.0.0.2:80", OLD, "same");
        assert_eq!(resolve(&[s.clone(), s]), vec![None, None]);
    }

    #[test]
    fn config_claims_name_their_section() {
        let c = config_claims(
            &["0.0.0.0:80".parse().unwrap()],
            &["[::]:443".parse().unwrap()],
        );
        assert_eq!(c.len(), 2);
        assert!(c[0].owner.contains("http") && c[1].owner.contains("https"));
        assert!(c.iter().all(|c| c.kind == OwnerKind::Config));
    }
}
