//! Compiling Services into L4 listeners: which addresses each Service port is
//! served on (LoadBalancer VIP, `externalIPs`, NodePort on the node's
//! addresses), its endpoints (external traffic path) in a Maglev table, and
//! the Service's `status.loadBalancer`. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use lb_core::flowhash::hash_bytes;
use lb_core::l4::{FlowSettings, L4Service, L4Snapshot};
use lb_core::maglev::{MaglevEndpoint, MaglevTable};

use crate::config::Config;
use crate::diag::Diagnostic;
use crate::endpoints::{Findings, IpFamily, SliceIndex, TrafficPath, ip_families};
use crate::model::{Object, Typed};
use crate::store::Store;

/// Seed of the VIP allocation hash (fixed: the same Service gets the same
/// address on every appliance and across restarts).
const VIP_SEED: u64 = 0x5be0_cd19_137e_2179;
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const AFFINITY_DEFAULT: Duration = Duration::from_secs(10_800);

/// What [`compile_l4`] produces.
#[derive(Debug, Default)]
pub struct CompiledL4 {
    /// The listeners and their Services.
    pub snapshot: L4Snapshot,
    /// Diagnostics about Services.
    pub diagnostics: Vec<Diagnostic>,
    /// `status` of each served LoadBalancer Service.
    pub status: Vec<serde_json::Value>,
}

/// Whether lb serves this LoadBalancer Service (by `spec.loadBalancerClass`).
fn ours(cfg: &Config, svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    match spec.and_then(|s| s.load_balancer_class.as_deref()) {
        Some(class) => class == cfg.loadbalancer.class,
        None => cfg.loadbalancer.default,
    }
}

/// Address number `n` (wrapping) of a pool, skipping the network and
/// broadcast addresses of IPv4 pools larger than /31.
fn pool_addr(net: &IpNet, n: u128) -> IpAddr {
    match net {
        IpNet::V4(v4) => {
            let base = u32::from(v4.network()) as u128;
            let size = 1u128 << (32 - v4.prefix_len());
            let (skip, usable) = if size > 2 { (1, size - 2) } else { (0, size) };
            IpAddr::from(((base + skip + n % usable) as u32).to_be_bytes())
        }
        IpNet::V6(v6) => {
            let base = u128::from(v6.network());
            let bits = 128 - u32::from(v6.prefix_len());
            let size = if bits >= 128 {
                u128::MAX
            } else {
                1u128 << bits
            };
            let (skip, usable) = if size > 2 { (1, size - 1) } else { (0, size) };
            IpAddr::from((base + skip + n % usable).to_be_bytes())
        }
    }
}

fn pool_size(net: &IpNet) -> u128 {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
    let size = if bits >= 128 {
        u128::MAX
    } else {
        1u128 << bits
    };
    if size > 2 { size - 2 } else { size }
}

/// Allocates a VIP of `family` for `key` (`namespace/name`): a hash picks
/// the first candidate; taken addresses are skipped in order, so the outcome
/// depends only on the Services and the pools, never on timing.
fn allocate(
    pools: &[IpNet],
    family: IpFamily,
    key: &str,
    taken: &BTreeSet<IpAddr>,
) -> Option<IpAddr> {
    let pools: Vec<&IpNet> = pools
        .iter()
        .filter(|p| {
            matches!(
                (family, p),
                (IpFamily::IPv4, IpNet::V4(_)) | (IpFamily::IPv6, IpNet::V6(_))
            )
        })
        .collect();
    let total: u128 = pools
        .iter()
        .map(|p| pool_size(p))
        .fold(0u128, u128::saturating_add);
    if total == 0 {
        return None;
    }
    let start = u128::from(hash_bytes(VIP_SEED, key.as_bytes())) % total;
    // Probe a bounded number of addresses.
    for i in 0..total.min(65_536) {
        let mut n = (start + i) % total;
        for p in &pools {
            let size = pool_size(p);
            if n < size {
                let ip = pool_addr(p, n);
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

/// A table's endpoints sorted by address (for [`L4Service::has_endpoint`]).
fn sorted_endpoints(table: &MaglevTable<SocketAddr>) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = table.endpoints().iter().map(|e| *e.value()).collect();
    v.sort_unstable();
    v
}

/// One Service port's listening addresses, before endpoints are resolved.
struct Bind {
    addr: SocketAddr,
    via: &'static str,
}

/// Compiles every served Service port into L4 listeners.
pub fn compile_l4(store: &Store, cfg: &Config, slices: &SliceIndex<'_>) -> CompiledL4 {
    let mut out = CompiledL4::default();
    let mut findings = Findings::default();
    // Oldest first, so an older Service keeps a contested address.
    let mut services: Vec<(&Object, &Typed<Service>)> = store
        .of_kind("Service")
        .filter_map(|o| match o {
            Object::Service(s) => Some((o, &**s)),
            _ => None,
        })
        .collect();
    services.sort_by(|(a, _), (b, _)| a.age_key().cmp(&b.age_key()));
    // Addresses requested explicitly are never handed out by allocation.
    let mut taken: BTreeSet<IpAddr> = services
        .iter()
        .filter_map(|(_, s)| s.value.spec.as_ref()?.load_balancer_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    // Who serves each (address, is UDP): TCP and UDP share port numbers.
    let mut owner: BTreeMap<(SocketAddr, bool), String> = BTreeMap::new();
    out.snapshot.flows = FlowSettings {
        capacity: cfg.loadbalancer.udp_flows,
        grace: cfg.loadbalancer.endpoint_grace,
    };
    for (obj, svc) in services {
        let Some(spec) = svc.value.spec.as_ref() else {
            continue;
        };
        let ns = obj.key().namespace.unwrap_or_else(|| "default".into());
        let name = obj.key().name;
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        let lb = kind == "LoadBalancer" && ours(cfg, &svc.value);
        let node_port = kind == "NodePort" || lb;
        let externals: Vec<IpAddr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|s| match s.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    out.diagnostics.push(
                        obj.diagnostic(
                            Diagnostic::warning(format!(
                                "externalIPs entry {s:?} is not an IP address; ignored"
                            ))
                            .field("spec.externalIPs"),
                        ),
                    );
                    None
                }
            })
            .collect();
        if !lb && !node_port && externals.is_empty() {
            continue;
        }
        // VIPs of a LoadBalancer Service.
        let mut vips = Vec::new();
        if lb {
            match spec.load_balancer_ip.as_deref() {
                Some(ip) => match ip.parse::<IpAddr>() {
                    Ok(ip) => vips.push(ip),
                    Err(_) => out.diagnostics.push(
                        obj.diagnostic(
                            Diagnostic::error(format!(
                                "loadBalancerIP {ip:?} is not an IP address"
                            ))
                            .field("spec.loadBalancerIP"),
                        ),
                    ),
                },
                None => match ip_families(svc) {
                    Err(d) => out.diagnostics.push(*d),
                    Ok(families) => {
                        for family in families {
                            match allocate(&cfg.loadbalancer.pools, family, &format!("{ns}/{name}"), &taken) {
                                Some(ip) => {
                                    taken.insert(ip);
                                    vips.push(ip);
                                }
                                None => out.diagnostics.push(obj.diagnostic(
                                    Diagnostic::warning(format!(
                                        "no free {family:?} address in [loadbalancer].pools; the Service gets no VIP of that family"
                                    ))
                                    .field("spec.ipFamilies"),
                                )),
                            }
                        }
                    }
                },
            }
        }
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .filter(|t| *t > 0)
                .map_or(AFFINITY_DEFAULT, |t| Duration::from_secs(t as u64))
        });
        let mut status_ports: Vec<&ServicePort> = Vec::new();
        for (i, port) in spec.ports.iter().flatten().enumerate() {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let udp = match protocol {
                "TCP" => false,
                "UDP" => true,
                other => {
                    out.diagnostics.push(obj.diagnostic(
                        Diagnostic::warning(format!(
                            "port {} is {other}; lb serves TCP and UDP Service ports only (SCTP is not supported)",
                            port.port
                        ))
                        .field(format!("spec.ports[{i}].protocol")),
                    ));
                    continue;
                }
            };
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let mut binds: Vec<Bind> = vips
                .iter()
                .map(|ip| Bind {
                    addr: SocketAddr::new(*ip, number),
                    via: "loadBalancer",
                })
                .collect();
            binds.extend(externals.iter().map(|ip| Bind {
                addr: SocketAddr::new(*ip, number),
                via: "externalIP",
            }));
            if node_port && let Some(np) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                binds.extend(cfg.node.addresses.iter().map(|ip| Bind {
                    addr: SocketAddr::new(*ip, np),
                    via: "nodePort",
                }));
            }
            if binds.is_empty() {
                continue;
            }
            let selection = crate::endpoints::select(
                slices,
                svc,
                port,
                TrafficPath::External,
                &cfg.node,
                &mut findings,
            );
            out.diagnostics.extend(findings.drain());
            let endpoints = selection.addrs();
            let table = match MaglevTable::new(
                endpoints.iter().map(|a| MaglevEndpoint::from_addr(*a, 1)),
                cfg.loadbalancer.maglev_table_size,
            ) {
                Ok(t) => t,
                Err(e) => {
                    out.diagnostics.push(
                        obj.diagnostic(
                            Diagnostic::error(format!("cannot build the Maglev table: {e}"))
                                .field(format!("spec.ports[{i}]")),
                        ),
                    );
                    continue;
                }
            };
            let label = format!(
                "{ns}/{name}:{}",
                port.name
                    .as_deref()
                    .map_or_else(|| port.port.to_string(), str::to_owned)
            );
            let mut on_vip = false;
            for b in binds {
                if let Some(first) = owner.get(&(b.addr, udp)) {
                    out.diagnostics.push(obj.diagnostic(
                        Diagnostic::warning(format!("{} ({protocol}) is already served by {first} (older); not served for this Service", b.addr))
                            .field(format!("spec.ports[{i}]")),
                    ));
                    continue;
                }
                owner.insert((b.addr, udp), label.clone());
                on_vip |= b.via == "loadBalancer";
                let map = if udp {
                    &mut out.snapshot.udp
                } else {
                    &mut out.snapshot.services
                };
                map.insert(
                    b.addr,
                    L4Service {
                        name: label.clone(),
                        via: b.via,
                        endpoints: sorted_endpoints(&table),
                        table: table.clone(),
                        affinity,
                        connect_timeout: cfg.loadbalancer.connect_timeout,
                        idle_timeout: if udp {
                            cfg.loadbalancer.udp_idle_timeout
                        } else {
                            cfg.loadbalancer.idle_timeout
                        },
                    },
                );
            }
            if on_vip {
                status_ports.push(port);
            }
        }
        if lb && !vips.is_empty() && !status_ports.is_empty() {
            let ports: Vec<serde_json::Value> = status_ports
                .iter()
                .map(|p| serde_json::json!({"port": p.port, "protocol": p.protocol.as_deref().unwrap_or("TCP")}))
                .collect();
            let ingress: Vec<serde_json::Value> = vips
                .iter()
                .map(
                    |ip| serde_json::json!({"ip": ip.to_string(), "ipMode": "VIP", "ports": ports}),
                )
                .collect();
            out.status.push(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"namespace": ns, "name": name},
                "status": {"loadBalancer": {"ingress": ingress}},
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_deterministic_and_skips_taken_addresses() {
        let pools: Vec<IpNet> = vec!["127.0.10.0/29".parse().unwrap()];
        let taken = BTreeSet::new();
        let a = allocate(&pools, IpFamily::IPv4, "default/web", &taken).unwrap();
        assert_eq!(
            a,
            allocate(&pools, IpFamily::IPv4, "default/web", &taken).unwrap()
        );
        assert!(pools[0].contains(&a));
        assert_ne!(
            a,
            "127.0.10.0".parse::<IpAddr>().unwrap(),
            "network address"
        );
        assert_ne!(
            a,
            "127.0.10.7".parse::<IpAddr>().unwrap(),
            "broadcast address"
        );
        let mut taken = BTreeSet::new();
        taken.insert(a);
        let b = allocate(&pools, IpFamily::IPv4, "default/web", &taken).unwrap();
        assert_ne!(a, b);
        // Six usable addresses: the seventh Service gets none.
        let mut taken = BTreeSet::new();
        for i in 0..6 {
            let ip = allocate(&pools, IpFamily::IPv4, &format!("ns/s{i}"), &taken).unwrap();
            assert!(taken.insert(ip));
        }
        assert_eq!(allocate(&pools, IpFamily::IPv4, "ns/s6", &taken), None);
        assert_eq!(
            allocate(&pools, IpFamily::IPv6, "ns/s0", &BTreeSet::new()),
            None
        );
    }

    #[test]
    fn ipv6_pools_allocate_inside_the_pool() {
        let pools: Vec<IpNet> = vec!["fd00:10::/64".parse().unwrap()];
        let ip = allocate(&pools, IpFamily::IPv6, "default/web", &BTreeSet::new()).unwrap();
        assert!(pools[0].contains(&ip));
    }
}
