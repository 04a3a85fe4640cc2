//! VIP allocation for the LoadBalancer Services lb serves: which addresses
//! each gets, decided in one pass over all of them so that no address goes
//! to two Services unless both ask to share it. Pure: no I/O.
//!
//! Claims are settled in this order, older Services first within a step:
//! 1. explicit requests: `spec.loadBalancerIP`, or the [`IPS_ANNOTATION`]
//!    list (one address per family, for dual-stack Services);
//! 2. the address a Service already has: its `status.loadBalancer.ingress`
//!    (what lb wrote, read back from the API server after a restart) or the
//!    previous compile's allocation, while it is still inside a pool of its
//!    family and not claimed in step 1;
//! 3. a Service of a sharing group takes the group's address of the family;
//! 4. a new address from the pools (a hash of `namespace/name` picks the
//!    first candidate, taken addresses are skipped), only when this lb may
//!    allocate: the elected leader, or any lb without leader election.
//!
//! Two Services share an address only when both carry
//! [`SHARED_IP_ANNOTATION`] with the same value and have no
//! (protocol, port) in common.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use lb_core::flowhash::hash_bytes;

use crate::diag::Diagnostic;
use crate::endpoints::{IpFamily, ip_families};
use crate::model::{Object, Typed};

/// Services with the same value of this annotation and no port in common
/// may share an address.
pub const SHARED_IP_ANNOTATION: &str = "lb.example.com/allow-shared-ip";
/// Requested addresses, comma-separated, at most one per family (the
/// dual-stack counterpart of the deprecated `spec.loadBalancerIP`).
pub const IPS_ANNOTATION: &str = "lb.example.com/load-balancer-ips";
/// Seed of the Service allocation hash (fixed: the same Service gets the
/// same first candidate on every appliance and across restarts).
const SERVICE_SEED: u64 = 0x5be0_cd19_137e_2179;
/// At most this many candidates are probed per allocation.
const MAX_PROBES: u128 = 65_536;

/// Allocation memory carried from one compile to the next, and whether this
/// lb may allocate new addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vips {
    /// Each served Service's (`namespace/name`) addresses.
    pub by_service: BTreeMap<String, Vec<IpAddr>>,
    /// A follower keeps and reads back addresses but allocates none.
    pub follower: bool,
}

/// A LoadBalancer Service lb serves, as allocation sees it.
pub struct Claimant<'a> {
    obj: &'a Object,
    key: String,
    families: Vec<IpFamily>,
    requested: Vec<IpAddr>,
    request_field: String,
    current: Vec<IpAddr>,
    share: Option<String>,
    ports: BTreeSet<(String, i32)>,
}

impl<'a> Claimant<'a> {
    /// Reads a Service's claim; `prior` is the previous compile's memory.
    /// Unusable requests are diagnostics (and the Service gets no address):
    /// one that is not an IP address, two of one family, or an address
    /// outside every pool of `pools` (lb never serves, adds or announces an
    /// address outside its pools; no other address is allocated instead).
    pub fn new(
        obj: &'a Object,
        svc: &Typed<Service>,
        pools: &[IpNet],
        prior: &Vips,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<Self> {
        let meta = &svc.value.metadata;
        let key = format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default()
        );
        let spec = svc.value.spec.as_ref()?;
        let annotation = |name: &str| meta.annotations.as_ref()?.get(name).cloned();
        let (request_field, raw): (String, Vec<String>) = match annotation(IPS_ANNOTATION) {
            Some(list) => (
                format!("metadata.annotations[{IPS_ANNOTATION}]"),
                list.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
            None => (
                "spec.loadBalancerIP".to_owned(),
                spec.load_balancer_ip.iter().cloned().collect(),
            ),
        };
        let mut requested = Vec::new();
        for s in &raw {
            let Ok(ip) = s.parse::<IpAddr>() else {
                diags.push(
                    obj.diagnostic(
                        Diagnostic::error(format!("{s:?} is not an IP address"))
                            .field(request_field.clone()),
                    ),
                );
                return None;
            };
            if requested
                .iter()
                .any(|r| IpFamily::of(*r) == IpFamily::of(ip))
            {
                diags.push(
                    obj.diagnostic(
                        Diagnostic::error(format!(
                            "at most one address per IP family; {ip} is a second {:?} address",
                            IpFamily::of(ip)
                        ))
                        .field(request_field.clone()),
                    ),
                );
                return None;
            }
            if !pools.iter().any(|p| p.contains(&ip)) {
                diags.push(
                    obj.diagnostic(
                        Diagnostic::error(format!(
                            "{ip} is outside every [loadbalancer] pool; refused (the Service gets no address)"
                        ))
                        .field(request_field.clone()),
                    ),
                );
                return None;
            }
            requested.push(ip);
        }
        let families = match ip_families(svc) {
            Ok(f) => f,
            Err(d) if requested.is_empty() => {
                diags.push(*d);
                return None;
            }
            Err(_) => Vec::new(),
        };
        let mut current: Vec<IpAddr> = svc
            .value
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        current.extend(prior.by_service.get(&key).into_iter().flatten());
        let ports = spec
            .ports
            .iter()
            .flatten()
            .map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.port))
            .collect();
        Some(Claimant {
            obj,
            key,
            families,
            requested,
            request_field,
            current,
            share: annotation(SHARED_IP_ANNOTATION).filter(|s| !s.is_empty()),
            ports,
        })
    }
}

/// What [`assign`] decided.
#[derive(Debug, Default)]
pub struct Assigned {
    /// Each Service's (`namespace/name`) addresses, in family order.
    pub vips: BTreeMap<String, Vec<IpAddr>>,
    /// Refused requests, exhausted pools, addresses awaiting the leader.
    pub diagnostics: Vec<Diagnostic>,
}

/// Who holds each address: indices of claimants.
#[derive(Default)]
struct Holders {
    by_ip: BTreeMap<IpAddr, Vec<usize>>,
}

impl Holders {
    /// Whether claimant `c` may hold `ip` next to its current holders; the
    /// first conflicting holder otherwise.
    fn conflict(&self, all: &[Claimant<'_>], ip: IpAddr, c: usize) -> Option<usize> {
        let holders = self.by_ip.get(&ip)?;
        holders.iter().copied().find(|&h| {
            h != c
                && (all[h].share.is_none()
                    || all[h].share != all[c].share
                    || !all[h].ports.is_disjoint(&all[c].ports))
        })
    }

    fn take(&mut self, ip: IpAddr, c: usize) {
        self.by_ip.entry(ip).or_default().push(c);
    }
}

/// Settles every claim (claimants in age order, oldest first). `reserved`
/// addresses are never allocated (other objects requested them).
pub fn assign(
    pools: &[IpNet],
    claimants: &[Claimant<'_>],
    reserved: &BTreeSet<IpAddr>,
    follower: bool,
) -> Assigned {
    let mut out = Assigned::default();
    let mut holders = Holders::default();
    let mut got: Vec<Vec<IpAddr>> = vec![Vec::new(); claimants.len()];
    // 1. Explicit requests.
    for (i, c) in claimants.iter().enumerate() {
        for ip in &c.requested {
            match holders.conflict(claimants, *ip, i) {
                None => {
                    holders.take(*ip, i);
                    got[i].push(*ip);
                }
                Some(h) => out.diagnostics.push(c.obj.diagnostic(
                    Diagnostic::error(format!(
                        "{ip} is already used by Service {} (older); Services share an address only when both carry annotation {SHARED_IP_ANNOTATION} with the same value and have no port in common",
                        claimants[h].key
                    ))
                    .field(c.request_field.clone()),
                )),
            }
        }
    }
    let in_pool = |ip: &IpAddr, family: IpFamily| {
        IpFamily::of(*ip) == family && pools.iter().any(|p| p.contains(ip))
    };
    let wants = |c: &Claimant<'_>| c.requested.is_empty();
    // 2. The address a Service already has.
    for (i, c) in claimants.iter().enumerate().filter(|(_, c)| wants(c)) {
        for &family in &c.families {
            let kept = c.current.iter().copied().find(|ip| {
                in_pool(ip, family)
                    && !reserved.contains(ip)
                    && holders.conflict(claimants, *ip, i).is_none()
            });
            if let Some(ip) = kept {
                holders.take(ip, i);
                got[i].push(ip);
            }
        }
    }
    // 3 and 4. Sharing groups, then new addresses.
    for (i, c) in claimants.iter().enumerate().filter(|(_, c)| wants(c)) {
        for &family in &c.families {
            if got[i].iter().any(|ip| IpFamily::of(*ip) == family) {
                continue;
            }
            let shared = c.share.as_ref().and_then(|_| {
                holders.by_ip.keys().copied().find(|ip| {
                    in_pool(ip, family)
                        && holders.by_ip[ip]
                            .iter()
                            .any(|&h| claimants[h].share == c.share)
                        && holders.conflict(claimants, *ip, i).is_none()
                })
            });
            let ip = match shared {
                Some(ip) => Some(ip),
                None if follower => {
                    out.diagnostics.push(c.obj.diagnostic(
                        Diagnostic::warning(format!(
                            "no {family:?} address yet: the leader lb allocates it (this lb is a follower)"
                        ))
                        .field("status.loadBalancer"),
                    ));
                    continue;
                }
                None => {
                    let taken: BTreeSet<IpAddr> = holders
                        .by_ip
                        .keys()
                        .chain(reserved.iter())
                        .copied()
                        .collect();
                    pick(pools, Some(family), SERVICE_SEED, &c.key, &taken)
                }
            };
            match ip {
                Some(ip) => {
                    holders.take(ip, i);
                    got[i].push(ip);
                }
                None => out.diagnostics.push(c.obj.diagnostic(
                    Diagnostic::warning(format!(
                        "no free {family:?} address in [loadbalancer].pools; the Service gets no VIP of that family"
                    ))
                    .field("spec.ipFamilies"),
                )),
            }
        }
    }
    for (c, mut ips) in claimants.iter().zip(got) {
        if c.requested.is_empty() {
            ips.sort_by_key(|ip| c.families.iter().position(|f| *f == IpFamily::of(*ip)));
        }
        out.vips.insert(c.key.clone(), ips);
    }
    out
}

/// Usable addresses of a pool: all but the network and broadcast (IPv4) or
/// the subnet-router anycast (IPv6) address when the pool has more than two.
fn usable(net: &IpNet) -> u128 {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
    let size = if bits >= 128 { u128::MAX } else { 1 << bits };
    match (net, size > 2) {
        (IpNet::V4(_), true) => size - 2,
        (IpNet::V6(_), true) => size - 1,
        _ => size,
    }
}

/// Usable address number `n` (< [`usable`]) of a pool.
fn nth(net: &IpNet, n: u128) -> IpAddr {
    match net {
        IpNet::V4(v4) => {
            let skip = u128::from(v4.prefix_len() < 31);
            let base = u128::from(u32::from(v4.network()));
            IpAddr::from(((base + skip + n) as u32).to_be_bytes())
        }
        IpNet::V6(v6) => {
            let skip = u128::from(v6.prefix_len() < 127);
            IpAddr::from((u128::from(v6.network()) + skip + n).to_be_bytes())
        }
    }
}

/// Picks a free address for `key` from the pools of `family` (all pools,
/// IPv4 ones first, when `None`): a hash of `key` with `seed` chooses the
/// first candidate, taken addresses are skipped in order. `None` when the
/// pools are empty or full.
pub(crate) fn pick(
    pools: &[IpNet],
    family: Option<IpFamily>,
    seed: u64,
    key: &str,
    taken: &BTreeSet<IpAddr>,
) -> Option<IpAddr> {
    let of = |f: IpFamily| {
        pools
            .iter()
            .filter(move |p| IpFamily::of(p.addr()) == f && family.is_none_or(|w| w == f))
    };
    let ordered: Vec<&IpNet> = of(IpFamily::IPv4).chain(of(IpFamily::IPv6)).collect();
    let total = ordered
        .iter()
        .map(|p| usable(p))
        .fold(0u128, u128::saturating_add);
    if total == 0 {
        return None;
    }
    let start = u128::from(hash_bytes(seed, key.as_bytes())) % total;
    for i in 0..total.min(MAX_PROBES) {
        let mut n = (start + i) % total;
        for p in &ordered {
            let size = usable(p);
            if n < size {
                let ip = nth(p, n);
                if !taken.contains(&ip) {
                    return Some(ip);
                }
                break;
            }
            n -= size;
        }
    }
    None
}

/// The address a Service `key` (`namespace/name`) of `family` is offered
/// first when nothing is taken (for tests that need two Services whose
/// first choices collide).
pub fn first_choice(pools: &[IpNet], family: IpFamily, key: &str) -> Option<IpAddr> {
    pick(pools, Some(family), SERVICE_SEED, key, &BTreeSet::new())
}

#[cfg(test)]
#[path = "vip_alloc_tests.rs"]
mod tests;
