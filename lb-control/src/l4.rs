//! Compiling Services into L4 listeners: which addresses each Service port is
//! served on (LoadBalancer VIP, `externalIPs`, NodePort on the node's
//! addresses), its endpoints (external traffic path) in a Maglev table, and
//! the Service's `status.loadBalancer`. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use lb_core::l4::{FlowSettings, L4Service, L4Snapshot};
use lb_core::maglev::{MaglevEndpoint, MaglevTable};

use crate::config::Config;
use crate::diag::Diagnostic;
use crate::endpoints::{Findings, SliceIndex, TrafficPath};
use crate::model::{Object, Typed};
use crate::store::Store;
use crate::vip_alloc::{Claimant, Vips, assign};

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
    /// Each served LoadBalancer Service's (`namespace/name`) addresses.
    pub vips: BTreeMap<String, Vec<IpAddr>>,
}

/// Whether lb serves this LoadBalancer Service (by `spec.loadBalancerClass`).
fn ours(cfg: &Config, svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    match spec.and_then(|s| s.load_balancer_class.as_deref()) {
        Some(class) => class == cfg.loadbalancer.class,
        None => cfg.loadbalancer.default,
    }
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

/// Compiles every served Service port into L4 listeners; `prior` carries
/// the previous compile's VIPs (see [`crate::vip_alloc`]).
pub fn compile_l4(
    store: &Store,
    cfg: &Config,
    slices: &SliceIndex<'_>,
    prior: &Vips,
) -> CompiledL4 {
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
    // Addresses other objects request explicitly are never allocated.
    let reserved: BTreeSet<IpAddr> = services
        .iter()
        .filter_map(|(_, s)| s.value.spec.as_ref()?.load_balancer_ip.as_deref())
        .chain(gateway_requests(store).iter().map(String::as_str))
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let claimants: Vec<Claimant<'_>> = services
        .iter()
        .filter(|(_, s)| {
            s.value.spec.as_ref().and_then(|p| p.type_.as_deref()) == Some("LoadBalancer")
                && ours(cfg, &s.value)
        })
        .filter_map(|(o, s)| Claimant::new(o, s, prior, &mut out.diagnostics))
        .collect();
    let assigned = assign(
        &cfg.loadbalancer.pools,
        &claimants,
        &reserved,
        prior.follower,
    );
    out.diagnostics.extend(assigned.diagnostics);
    out.vips = assigned.vips;
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
        let vips: Vec<IpAddr> = if lb {
            out.vips
                .get(&format!("{ns}/{name}"))
                .cloned()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
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

/// Addresses Gateways request in `spec.addresses` (kept out of Service
/// allocation).
fn gateway_requests(store: &Store) -> Vec<String> {
    store
        .of_kind("Gateway")
        .filter_map(|o| match o {
            Object::Gateway(g) => Some(g),
            _ => None,
        })
        .flat_map(|g| g.value.spec.addresses.iter().map(|a| a.value.clone()))
        .collect()
}
