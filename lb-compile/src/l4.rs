//! Compiling Services into L4 listeners: which addresses each Service port is
//! served on (LoadBalancer VIP, `externalIPs`, NodePort on the node's
//! addresses), its endpoints (external traffic path) in a Maglev table, and
//! the Service's `status.loadBalancer`. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use lb_core::l4::{FlowSettings, L4Service, L4Snapshot};
use lb_core::maglev::{MaglevEndpoint, MaglevTable};

use crate::diag::Diagnostic;
use crate::endpoints::{Findings, SliceIndex, TrafficPath};
use crate::model::{Object, Typed};
use crate::ownership::{Claim, OwnerKind, Transport, age_of};
use crate::settings::Settings;
use crate::store::Store;
use crate::vip_alloc::{Claimant, Vips, assign};

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const AFFINITY_DEFAULT: Duration = Duration::from_secs(10_800);

/// What [`compile_l4`] produces. Its listening addresses are claims
/// until [`CompiledL4::finish`] learns which of them lost to an Ingress or
/// Gateway listener (see [`crate::ownership`]).
#[derive(Debug, Default)]
pub struct CompiledL4<'a> {
    /// The listeners and their Services (filled by [`CompiledL4::finish`]).
    pub snapshot: L4Snapshot,
    /// Diagnostics about Services.
    pub diagnostics: Vec<Diagnostic>,
    /// `status` of each served LoadBalancer Service (filled by `finish`).
    pub status: Vec<serde_json::Value>,
    /// Each served LoadBalancer Service's (`namespace/name`) addresses.
    pub vips: BTreeMap<String, Vec<IpAddr>>,
    /// Every address a Service port asks to listen on, in one list with
    /// [`CompiledL4::pending`].
    pub claims: Vec<Claim>,
    pending: Vec<Pending<'a>>,
    lb_services: Vec<LbStatus>,
    /// `loadbalancer.udp_flow_sockets`: the flow tables of one worker
    /// together hold at most this many flows (each has a socket).
    flow_sockets: usize,
}

/// What a claim in [`CompiledL4::claims`] serves if it wins.
#[derive(Debug)]
struct Pending<'a> {
    obj: &'a Object,
    field: String,
    udp: bool,
    service: L4Service,
    /// The LoadBalancer Service and port (status) a VIP bind belongs to.
    status_port: Option<(usize, usize)>,
}

/// A served LoadBalancer Service, for its `status.loadBalancer`.
#[derive(Debug)]
struct LbStatus {
    ns: String,
    name: String,
    vips: Vec<IpAddr>,
    /// (port, protocol, what became of its VIP binds).
    ports: Vec<(i32, String, PortFate)>,
}

/// What became of the VIP binds of one LoadBalancer Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortFate {
    /// No bind settled yet (or none asked for).
    Unbound,
    /// Every bind lost its address, protocol and port to another owner.
    Lost,
    /// At least one bind serves.
    Kept,
}

/// `status.loadBalancer.ingress[].ports[].error` of a port whose every VIP
/// bind belongs to another owner (a provider-specific value, in the
/// `domain/CamelCase` form the Service API asks for).
pub const PORT_CONFLICT_ERROR: &str = "lb.example.com/PortConflict";

impl CompiledL4<'_> {
    /// Puts the claims that won into the snapshot and reports the others;
    /// `lost[i]` is who claim `i` lost to (its [`Claim::owner`]).
    pub fn finish(&mut self, lost: &[Option<String>]) {
        for (i, (p, claim)) in self.pending.drain(..).zip(&self.claims).enumerate() {
            if let Some(winner) = lost.get(i).and_then(Option::as_ref) {
                if let Some((s, port)) = p.status_port {
                    let fate = &mut self.lb_services[s].ports[port].2;
                    if *fate == PortFate::Unbound {
                        *fate = PortFate::Lost;
                    }
                }
                let protocol = if p.udp { "UDP" } else { "TCP" };
                self.diagnostics.push(p.obj.diagnostic(
                    Diagnostic::warning(format!(
                        "{} ({protocol}) belongs to {winner}; not served for this Service (one owner per address, protocol and port: lb.toml listeners first, then the older object)",
                        claim.addr
                    ))
                    .field(p.field),
                ));
                continue;
            }
            if let Some((s, port)) = p.status_port {
                self.lb_services[s].ports[port].2 = PortFate::Kept;
            }
            let map = if p.udp {
                &mut self.snapshot.udp
            } else {
                &mut self.snapshot.services
            };
            map.insert(claim.addr, p.service);
        }
        // Each UDP flow holds a socket: split the worker's budget over the
        // UDP addresses served, so a flood of spoofed sources evicts flows
        // (least recently used first) instead of running out of descriptors.
        if self.flow_sockets > 0 {
            let share = (self.flow_sockets / self.snapshot.udp.len().max(1)).max(1);
            self.snapshot.flows.capacity = self.snapshot.flows.capacity.min(share);
        }
        for s in self.lb_services.drain(..) {
            // Served ports, and the ports that lost every bind with the
            // error saying so; a Service whose every port lost still shows
            // its addresses, each port with the error.
            let ports: Vec<serde_json::Value> = s
                .ports
                .iter()
                .filter_map(|(port, protocol, fate)| match fate {
                    PortFate::Kept => Some(serde_json::json!({"port": port, "protocol": protocol})),
                    PortFate::Lost => Some(serde_json::json!({
                        "port": port,
                        "protocol": protocol,
                        "error": PORT_CONFLICT_ERROR,
                    })),
                    PortFate::Unbound => None,
                })
                .collect();
            if s.vips.is_empty() || ports.is_empty() {
                continue;
            }
            let ingress: Vec<serde_json::Value> = s
                .vips
                .iter()
                .map(
                    |ip| serde_json::json!({"ip": ip.to_string(), "ipMode": "VIP", "ports": ports}),
                )
                .collect();
            self.status.push(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"namespace": s.ns, "name": s.name},
                "status": {"loadBalancer": {"ingress": ingress}},
            }));
        }
    }
}

/// Whether lb serves this LoadBalancer Service (by `spec.loadBalancerClass`).
fn ours(cfg: &Settings, svc: &Service) -> bool {
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
pub fn compile_l4<'a>(
    store: &'a Store,
    cfg: &Settings,
    slices: &SliceIndex<'_>,
    prior: &Vips,
) -> CompiledL4<'a> {
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
    services.sort_by_cached_key(|&(a, _)| a.age_key());
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
        .filter_map(|(o, s)| {
            Claimant::new(o, s, &cfg.loadbalancer.pools, prior, &mut out.diagnostics)
        })
        .collect();
    let assigned = assign(
        &cfg.loadbalancer.pools,
        &claimants,
        &reserved,
        prior.follower,
    );
    out.diagnostics.extend(assigned.diagnostics);
    out.vips = assigned.vips;
    out.snapshot.flows = FlowSettings {
        capacity: cfg.loadbalancer.udp_flows,
        grace: cfg.loadbalancer.endpoint_grace,
    };
    out.flow_sockets = cfg.loadbalancer.udp_flow_sockets;
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
            .filter_map(|s| match s.parse::<IpAddr>() {
                Ok(ip) if cfg.loadbalancer.external_ips.iter().any(|n| n.contains(&ip)) => {
                    Some(ip)
                }
                Ok(ip) => {
                    out.diagnostics.push(obj.diagnostic(
                        Diagnostic::warning(format!(
                            "externalIPs entry {ip} is outside [loadbalancer] external_ips; ignored (not bound)"
                        ))
                        .field("spec.externalIPs"),
                    ));
                    None
                }
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
        // `loadBalancerSourceRanges` restrict the VIPs (as kube-proxy does:
        // NodePorts and externalIPs stay open).
        let source_ranges = if lb {
            crate::source_ranges::for_service(obj, &svc.value, &mut out.diagnostics)
        } else {
            None
        };
        let status_index = lb.then(|| {
            out.lb_services.push(LbStatus {
                ns: ns.clone(),
                name: name.clone(),
                vips: vips.clone(),
                ports: Vec::new(),
            });
            out.lb_services.len() - 1
        });
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
            let status_port = status_index.map(|si| {
                let ports = &mut out.lb_services[si].ports;
                ports.push((port.port, protocol.to_owned(), PortFate::Unbound));
                (si, ports.len() - 1)
            });
            for b in binds {
                out.claims.push(Claim {
                    transport: if udp { Transport::Udp } else { Transport::Tcp },
                    addr: b.addr,
                    kind: OwnerKind::Service,
                    age: Some(age_of(obj)),
                    owner: format!("Service {label}"),
                });
                out.pending.push(Pending {
                    obj,
                    field: format!("spec.ports[{i}]"),
                    udp,
                    status_port: status_port.filter(|_| b.via == "loadBalancer"),
                    service: L4Service {
                        source_ranges: source_ranges.clone().filter(|_| b.via == "loadBalancer"),
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
                });
            }
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
