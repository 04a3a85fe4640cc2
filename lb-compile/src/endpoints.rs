//! Endpoint selection: which endpoints of a Service port receive traffic,
//! with Kubernetes semantics, shared by the L7 routes (Ingress, Gateway) and
//! the L4 Service listeners. Pure functions, no I/O.
//!
//! For one Service port, [`select`] runs the steps kube-proxy runs:
//!
//! 1. **Gather** ([`gather`]): every EndpointSlice labelled
//!    `kubernetes.io/service-name` in the Service's namespace, IPv4 and IPv6
//!    alike (FQDN slices are skipped with one warning per slice). The slice
//!    port is the one with the Service port's name (`""` for an unnamed port)
//!    and protocol (TCP when unset). Only `addresses[0]` of an endpoint
//!    counts. The same `ip:port` in two slices is kept once: the first in
//!    slice-name order, unless a later copy is on this node (kube-proxy
//!    prefers the local copy too).
//! 2. **Choose** ([`choose`]): readiness (`conditions.ready`, unset = ready;
//!    every endpoint when the Service sets `publishNotReadyAddresses`), the
//!    traffic policy of the path (`internalTrafficPolicy` for ClusterIP
//!    traffic, which is what Ingress and Gateway routing is;
//!    `externalTrafficPolicy` for LoadBalancer, NodePort and externalIPs),
//!    topology (zone hints, same node), and the serving-and-terminating
//!    fallback when nothing ready is left (KEP-1669).
//!
//! [`ip_families`] tells the L4 side which IP families a Service has.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::diag::Diagnostic;
use crate::model::{DEFAULT_NAMESPACE, Object, Typed};
use crate::settings::Node;
use crate::store::Store;

/// EndpointSlice label naming the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Service annotation that turns on topology-aware routing (value `Auto`).
pub const TOPOLOGY_MODE_ANNOTATION: &str = "service.kubernetes.io/topology-mode";
/// The annotation's name before Kubernetes 1.27 (value `auto`); used when
/// [`TOPOLOGY_MODE_ANNOTATION`] is absent.
pub const TOPOLOGY_HINTS_ANNOTATION: &str = "service.kubernetes.io/topology-aware-hints";

/// The protocol of a Service or EndpointSlice port that does not name one.
const DEFAULT_PROTOCOL: &str = "TCP";

/// How traffic reached lb, which decides the traffic policy that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TrafficPath {
    /// Traffic for the Service's cluster IP; for lb, Ingress and Gateway
    /// routing. `spec.internalTrafficPolicy` applies.
    Internal,
    /// Traffic arriving on a LoadBalancer IP, a NodePort or an external IP
    /// (the L4 listeners). `spec.externalTrafficPolicy` applies.
    External,
}

/// `spec.internalTrafficPolicy` / `spec.externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum TrafficPolicy {
    /// Every endpoint in the cluster (possibly narrowed by topology).
    #[default]
    Cluster,
    /// Only endpoints whose `nodeName` is this node; none there means no
    /// endpoints at all (traffic is refused, requests get 503).
    Local,
}

impl TrafficPolicy {
    /// Reads a policy field; unset or unknown values are `Cluster` (model
    /// validation reports unknown values).
    pub fn from_field(value: Option<&str>) -> Self {
        match value {
            Some("Local") => TrafficPolicy::Local,
            _ => TrafficPolicy::Cluster,
        }
    }
}

/// Topology-aware routing: requested by a Service, or applied by a selection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum Topology {
    /// No topology preference: every (ready) endpoint.
    #[default]
    Off,
    /// Endpoints whose `hints.forZones` names this node's zone
    /// (`topology-mode: Auto`, `trafficDistribution: PreferClose` or
    /// `PreferSameZone`).
    SameZone,
    /// Endpoints on this node, then [`Topology::SameZone`]
    /// (`trafficDistribution: PreferSameNode`).
    SameNode,
}

/// What a Service asks of endpoint selection, read from its spec and annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceRules {
    /// `spec.publishNotReadyAddresses`: every endpoint counts as ready.
    pub publish_not_ready: bool,
    /// `spec.internalTrafficPolicy`, for [`TrafficPath::Internal`].
    pub internal_policy: TrafficPolicy,
    /// `spec.externalTrafficPolicy`, for [`TrafficPath::External`].
    pub external_policy: TrafficPolicy,
    /// The topology preference.
    pub topology: Topology,
    /// The field that asked for the topology preference, for diagnostics.
    pub topology_field: Option<String>,
}

impl ServiceRules {
    /// Reads the rules of `svc`. The topology annotation takes precedence over
    /// `spec.trafficDistribution`, as in the EndpointSlice controller: a
    /// `topology-mode` of `Auto` means zone hints, any other value turns
    /// topology off whatever `trafficDistribution` says.
    pub fn from_service(svc: &Service) -> Self {
        let spec = svc.spec.as_ref();
        let annotations = svc.metadata.annotations.as_ref();
        let annotated = [TOPOLOGY_MODE_ANNOTATION, TOPOLOGY_HINTS_ANNOTATION]
            .into_iter()
            .find_map(|a| Some((a, annotations?.get(a)?)));
        let (topology, topology_field) = match annotated {
            Some((a, v)) => {
                let on = matches!(v.as_str(), "Auto" | "auto");
                (
                    if on {
                        Topology::SameZone
                    } else {
                        Topology::Off
                    },
                    on.then(|| format!("metadata.annotations[{a}]")),
                )
            }
            None => {
                let td = spec.and_then(|s| s.traffic_distribution.as_deref());
                let t = match td {
                    Some("PreferClose" | "PreferSameZone") => Topology::SameZone,
                    Some("PreferSameNode") => Topology::SameNode,
                    _ => Topology::Off,
                };
                (
                    t,
                    (t != Topology::Off).then(|| "spec.trafficDistribution".to_owned()),
                )
            }
        };
        ServiceRules {
            publish_not_ready: spec
                .and_then(|s| s.publish_not_ready_addresses)
                .unwrap_or(false),
            internal_policy: TrafficPolicy::from_field(
                spec.and_then(|s| s.internal_traffic_policy.as_deref()),
            ),
            external_policy: TrafficPolicy::from_field(
                spec.and_then(|s| s.external_traffic_policy.as_deref()),
            ),
            topology,
            topology_field,
        }
    }

    /// The traffic policy for traffic arriving on `path`.
    pub fn policy(&self, path: TrafficPath) -> TrafficPolicy {
        match path {
            TrafficPath::Internal => self.internal_policy,
            TrafficPath::External => self.external_policy,
        }
    }
}

/// One endpoint of a Service port as the EndpointSlices describe it, before selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `addresses[0]` and the slice port's number.
    pub addr: SocketAddr,
    /// `nodeName`.
    pub node_name: Option<String>,
    /// `zone`.
    pub zone: Option<String>,
    /// `conditions.ready` (unset = true).
    pub ready: bool,
    /// `conditions.serving` (unset = true).
    pub serving: bool,
    /// `conditions.terminating` (unset = false).
    pub terminating: bool,
    /// `hints.forZones[].name`.
    pub for_zones: Vec<String>,
    /// `hints.forNodes[].name`.
    pub for_nodes: Vec<String>,
}

impl Default for Candidate {
    /// `0.0.0.0:0`, no node, no zone, no hints, every condition false.
    fn default() -> Self {
        Candidate {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            node_name: None,
            zone: None,
            ready: false,
            serving: false,
            terminating: false,
            for_zones: Vec::new(),
            for_nodes: Vec::new(),
        }
    }
}

impl Candidate {
    fn on_node(&self, node: &str) -> bool {
        self.node_name.as_deref() == Some(node)
    }
}

/// A chosen endpoint and its identity. The L4 Maglev table keys on
/// [`Endpoint::key`] (`ip:port`); Kubernetes has no endpoint weights.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    /// Address and port traffic goes to.
    pub addr: SocketAddr,
    /// The node the endpoint runs on, if the slice says.
    pub node_name: Option<String>,
    /// The endpoint's zone, if the slice says.
    pub zone: Option<String>,
}

impl Endpoint {
    /// `ip:port` (`[ip]:port` for IPv6): a stable key for consistent hashing.
    pub fn key(&self) -> String {
        self.addr.to_string()
    }
}

impl From<&Candidate> for Endpoint {
    fn from(c: &Candidate) -> Self {
        Endpoint {
            addr: c.addr,
            node_name: c.node_name.clone(),
            zone: c.zone.clone(),
        }
    }
}

/// The endpoints chosen for one Service port, and how they were chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// The chosen endpoints, ordered by address. Empty means no traffic can
    /// be served (503 for HTTP, refused for L4).
    pub endpoints: Vec<Endpoint>,
    /// The traffic policy that applied.
    pub policy: TrafficPolicy,
    /// The topology filter that applied (`Off` when the Service asked for
    /// one but the hints did not allow it).
    pub topology: Topology,
    /// True when no endpoint was ready and the serving, terminating ones were used.
    pub terminating_fallback: bool,
    /// How many distinct endpoints the slices listed for the port.
    pub candidates: usize,
}

impl Selection {
    /// The chosen addresses, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.endpoints.iter().map(|e| e.addr).collect()
    }
}

/// Diagnostics recorded while selecting, each kept once however many Service
/// ports or paths run into it (one FQDN warning per slice, for example).
#[derive(Debug, Clone, Default)]
pub struct Findings {
    seen: BTreeSet<String>,
    new: Vec<Diagnostic>,
}

impl Findings {
    /// Records `d` unless an identical diagnostic was recorded before;
    /// returns whether it was new.
    pub fn push(&mut self, d: Diagnostic) -> bool {
        let fresh = self.seen.insert(d.to_string());
        if fresh {
            self.new.push(d);
        }
        fresh
    }

    /// Takes the diagnostics recorded since the last call (duplicates stay suppressed).
    pub fn drain(&mut self) -> Vec<Diagnostic> {
        std::mem::take(&mut self.new)
    }
}

/// Every EndpointSlice of the store grouped by (namespace, Service), built
/// once per compilation so each Service port's lookup is a map probe.
#[derive(Debug, Default)]
pub struct SliceIndex<'a> {
    by_service: BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a Typed<EndpointSlice>>>>,
}

impl<'a> SliceIndex<'a> {
    /// Indexes the EndpointSlices of `store` by their `kubernetes.io/service-name`
    /// label; slices without the label belong to no Service. Each list is in
    /// slice-name order.
    pub fn new(store: &'a Store) -> Self {
        let mut by_service: BTreeMap<&str, BTreeMap<&str, Vec<_>>> = BTreeMap::new();
        for obj in store.of_kind("EndpointSlice") {
            let Object::EndpointSlice(es) = obj else {
                continue;
            };
            let meta = &es.value.metadata;
            let Some(service) = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
                continue;
            };
            let ns = meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
            by_service
                .entry(ns)
                .or_default()
                .entry(service.as_str())
                .or_default()
                .push(&**es);
        }
        SliceIndex { by_service }
    }

    /// The slices of Service `namespace/service`, in slice-name order.
    pub fn slices(&self, namespace: &str, service: &str) -> &[&'a Typed<EndpointSlice>] {
        self.by_service
            .get(namespace)
            .and_then(|m| m.get(service))
            .map_or(&[], Vec::as_slice)
    }
}

/// Locates a diagnostic at a typed object (file, document, kind, namespace/name).
fn locate<T>(t: &Typed<T>, d: Diagnostic) -> Diagnostic
where
    T: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let meta = t.value.metadata();
    t.origin.locate(d).object(
        T::KIND,
        meta.namespace.as_deref(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// How a Service port is written in diagnostics: `80 (http)` or `80`.
fn port_label(port: &ServicePort) -> String {
    match port.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => format!("{} ({name})", port.port),
        None => port.port.to_string(),
    }
}

/// Reads the endpoints of Service port `port` from `slices` (the Service's
/// slices, in slice-name order), merged and de-duplicated by `ip:port`. See
/// the module documentation for the matching rules. FQDN slices, and slices
/// whose matching port has no number, are skipped with a warning each.
pub fn gather(
    slices: &[&Typed<EndpointSlice>],
    port: &ServicePort,
    node: &Node,
    findings: &mut Findings,
) -> Vec<Candidate> {
    let want_name = port.name.as_deref().unwrap_or("");
    let want_proto = port.protocol.as_deref().unwrap_or(DEFAULT_PROTOCOL);
    let mut by_addr: BTreeMap<SocketAddr, Candidate> = BTreeMap::new();
    for slice in slices {
        let s = &slice.value;
        match s.address_type.as_str() {
            "IPv4" | "IPv6" => {}
            "FQDN" => {
                findings.push(locate(
                    slice,
                    Diagnostic::warning("FQDN endpoints are not supported; slice skipped")
                        .field("addressType"),
                ));
                continue;
            }
            other => {
                findings.push(locate(
                    slice,
                    Diagnostic::warning(format!(
                        "address type {other:?} is not supported; slice skipped"
                    ))
                    .field("addressType"),
                ));
                continue;
            }
        }
        let matching = s
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .find(|(_, p)| {
                p.name.as_deref().unwrap_or("") == want_name
                    && p.protocol.as_deref().unwrap_or(DEFAULT_PROTOCOL) == want_proto
            });
        let Some((i, slice_port)) = matching else {
            continue;
        };
        let Some(number) = slice_port
            .port
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&n| n != 0)
        else {
            findings.push(locate(
                slice,
                Diagnostic::warning(format!(
                    "no usable port number for Service port {}; the slice's endpoints are not used for it",
                    port_label(port)
                ))
                .field(format!("ports[{i}].port")),
            ));
            continue;
        };
        for (j, ep) in s.endpoints.iter().enumerate() {
            let Some(first) = ep.addresses.first() else {
                continue;
            };
            let Ok(ip) = first.parse::<IpAddr>() else {
                findings.push(locate(
                    slice,
                    Diagnostic::warning(format!(
                        "{first:?} is not an IP address; endpoint skipped"
                    ))
                    .field(format!("endpoints[{j}].addresses[0]")),
                ));
                continue;
            };
            let cond = ep.conditions.as_ref();
            let hints = ep.hints.as_ref();
            let candidate = Candidate {
                addr: SocketAddr::new(ip, number),
                node_name: ep.node_name.clone(),
                zone: ep.zone.clone(),
                ready: cond.and_then(|c| c.ready).unwrap_or(true),
                serving: cond.and_then(|c| c.serving).unwrap_or(true),
                terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
                for_zones: hints
                    .and_then(|h| h.for_zones.as_ref())
                    .map(|z| z.iter().map(|z| z.name.clone()).collect())
                    .unwrap_or_default(),
                for_nodes: hints
                    .and_then(|h| h.for_nodes.as_ref())
                    .map(|n| n.iter().map(|n| n.name.clone()).collect())
                    .unwrap_or_default(),
            };
            match by_addr.get_mut(&candidate.addr) {
                None => {
                    by_addr.insert(candidate.addr, candidate);
                }
                Some(kept) => {
                    if !kept.on_node(&node.name) && candidate.on_node(&node.name) {
                        *kept = candidate;
                    }
                }
            }
        }
    }
    by_addr.into_values().collect()
}

/// The topology filter in force for one selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Zone,
    /// Same node by `hints.forNodes` (every ready endpoint has them).
    NodeHints,
    /// Same node by `nodeName` (some ready endpoint has no node hints).
    NodeName,
}

impl Mode {
    fn admits(self, c: &Candidate, node: &Node) -> bool {
        match self {
            Mode::Off => true,
            Mode::Zone => node.zone.as_ref().is_some_and(|z| c.for_zones.contains(z)),
            Mode::NodeHints => c.for_nodes.contains(&node.name),
            Mode::NodeName => c.on_node(&node.name),
        }
    }

    fn public(self) -> Topology {
        match self {
            Mode::Off => Topology::Off,
            Mode::Zone => Topology::SameZone,
            Mode::NodeHints | Mode::NodeName => Topology::SameNode,
        }
    }
}

/// Decides the topology filter from the ready endpoints, as kube-proxy's
/// `topologyModeFromHints` does, gated by what the Service requested.
/// Same node: every ready endpoint has `hints.forNodes` and one names this
/// node, or (hints missing) one ready endpoint's `nodeName` is this node.
/// Same zone: every ready endpoint has `hints.forZones` and one names this
/// node's zone. Otherwise off: all endpoints.
fn topology_mode(ready: &[&Candidate], requested: Topology, node: &Node) -> Mode {
    if ready.is_empty() || requested == Topology::Off {
        return Mode::Off;
    }
    if requested == Topology::SameNode {
        let mode = if ready.iter().all(|c| !c.for_nodes.is_empty()) {
            Mode::NodeHints
        } else {
            Mode::NodeName
        };
        if ready.iter().any(|c| mode.admits(c, node)) {
            return mode;
        }
    }
    let all_hinted = ready.iter().all(|c| !c.for_zones.is_empty());
    if all_hinted && ready.iter().any(|c| Mode::Zone.admits(c, node)) {
        return Mode::Zone;
    }
    Mode::Off
}

/// Chooses the endpoints traffic arriving on `path` may use, among the
/// de-duplicated `candidates` of one Service port.
///
/// - Policy `Local`: the ready endpoints on this node, else the serving and
///   terminating ones on this node, else none. Topology does not apply.
/// - Policy `Cluster`: the ready endpoints the topology filter admits, else
///   the serving and terminating ones it admits.
///
/// With `publishNotReadyAddresses` every endpoint is ready.
pub fn choose(
    candidates: &[Candidate],
    rules: &ServiceRules,
    path: TrafficPath,
    node: &Node,
) -> Selection {
    let is_ready = |c: &Candidate| rules.publish_not_ready || c.ready;
    let is_draining = |c: &Candidate| c.serving && c.terminating;
    let policy = rules.policy(path);
    let mode = match policy {
        TrafficPolicy::Local => Mode::Off,
        TrafficPolicy::Cluster => {
            let ready: Vec<&Candidate> = candidates.iter().filter(|c| is_ready(c)).collect();
            topology_mode(&ready, rules.topology, node)
        }
    };
    let admit = |c: &Candidate| match policy {
        TrafficPolicy::Local => c.on_node(&node.name),
        TrafficPolicy::Cluster => mode.admits(c, node),
    };
    let pick = |want: &dyn Fn(&Candidate) -> bool| -> Vec<Endpoint> {
        candidates
            .iter()
            .filter(|c| want(c) && admit(c))
            .map(Endpoint::from)
            .collect()
    };
    let mut endpoints = pick(&is_ready);
    let mut terminating_fallback = false;
    if endpoints.is_empty() {
        endpoints = pick(&is_draining);
        terminating_fallback = !endpoints.is_empty();
    }
    endpoints.sort();
    Selection {
        endpoints,
        policy,
        topology: mode.public(),
        terminating_fallback,
        candidates: candidates.len(),
    }
}

/// Selects the endpoints of `port` of Service `svc` for traffic arriving on
/// `path`: [`gather`] from the Service's slices in `index`, then [`choose`].
///
/// Warnings go to `findings`: skipped slices, a `Local` policy that leaves
/// no endpoint (the Kubernetes behaviour: traffic is refused), and a
/// topology preference that can never match because `[node] zone` is unset.
pub fn select(
    index: &SliceIndex<'_>,
    svc: &Typed<Service>,
    port: &ServicePort,
    path: TrafficPath,
    node: &Node,
    findings: &mut Findings,
) -> Selection {
    let meta = &svc.value.metadata;
    let ns = meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let name = meta.name.as_deref().unwrap_or("");
    let rules = ServiceRules::from_service(&svc.value);
    let candidates = gather(index.slices(ns, name), port, node, findings);
    let selection = choose(&candidates, &rules, path, node);
    if selection.policy == TrafficPolicy::Local && selection.endpoints.is_empty() {
        let (field, outcome) = match path {
            TrafficPath::Internal => ("spec.internalTrafficPolicy", "requests get 503"),
            TrafficPath::External => ("spec.externalTrafficPolicy", "connections are refused"),
        };
        let elsewhere = candidates.iter().filter(|c| !c.on_node(&node.name)).count();
        findings.push(locate(
            svc,
            Diagnostic::warning(format!(
                "Local: no usable endpoint of port {} on node {:?} ({elsewhere} on other nodes); {outcome}",
                port_label(port),
                node.name
            ))
            .field(field),
        ));
    }
    if node.zone.is_none()
        && rules.topology != Topology::Off
        && selection.policy == TrafficPolicy::Cluster
    {
        findings.push(locate(
            svc,
            Diagnostic::warning(
                "topology-aware routing requested but [node] zone is not set; zone hints cannot match",
            )
            .field(rules.topology_field.clone().unwrap_or_default()),
        ));
    }
    selection
}

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IpFamily {
    /// `IPv4`.
    IPv4,
    /// `IPv6`.
    IPv6,
}

impl IpFamily {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::IPv4,
            IpAddr::V6(_) => IpFamily::IPv6,
        }
    }

    /// Parses `IPv4` or `IPv6` as Kubernetes writes them.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(IpFamily::IPv4),
            "IPv6" => Some(IpFamily::IPv6),
            _ => None,
        }
    }
}

/// The IP families a Service is served on, primary first, from
/// `spec.ipFamilies` and `spec.ipFamilyPolicy` (default `SingleStack`):
///
/// - the families are `spec.ipFamilies`; when it is empty, the families of
///   `spec.clusterIPs` (else `spec.clusterIP`); when those say nothing either,
///   IPv4 (the usual primary family);
/// - `SingleStack`: the first family; `PreferDualStack`: both when two are
///   listed, else the one; `RequireDualStack`: both, and an error when fewer
///   than two are listed;
/// - `ExternalName` Services have no families (an empty list).
///
/// Any unusable value is an error diagnostic naming the Service and field
/// (boxed: a diagnostic is large and the error path is rare).
pub fn ip_families(svc: &Typed<Service>) -> Result<Vec<IpFamily>, Box<Diagnostic>> {
    let err = |field: String, msg: String| {
        Err(Box::new(locate(svc, Diagnostic::error(msg).field(field))))
    };
    let Some(spec) = svc.value.spec.as_ref() else {
        return Ok(vec![IpFamily::IPv4]);
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Vec::new());
    }
    let policy = spec.ip_family_policy.as_deref().unwrap_or("SingleStack");
    if !matches!(
        policy,
        "SingleStack" | "PreferDualStack" | "RequireDualStack"
    ) {
        return err(
            "spec.ipFamilyPolicy".into(),
            format!(
                "unknown variant {policy:?}, expected one of SingleStack, PreferDualStack, RequireDualStack"
            ),
        );
    }
    let mut families: Vec<IpFamily> = Vec::new();
    let listed = spec.ip_families.as_deref().unwrap_or_default();
    for (i, f) in listed.iter().enumerate() {
        let Some(family) = IpFamily::parse(f) else {
            return err(
                format!("spec.ipFamilies[{i}]"),
                format!("unknown variant {f:?}, expected one of IPv4, IPv6"),
            );
        };
        if families.contains(&family) {
            return err(
                format!("spec.ipFamilies[{i}]"),
                format!("duplicate family {f}"),
            );
        }
        families.push(family);
    }
    if families.len() > 2 {
        return err(
            "spec.ipFamilies".into(),
            format!("at most two families allowed, found {}", families.len()),
        );
    }
    let mut source = "spec.ipFamilies";
    if families.is_empty() {
        let (field, ips): (&str, Vec<&str>) = match spec.cluster_ips.as_deref() {
            Some(ips) if !ips.is_empty() => {
                ("spec.clusterIPs", ips.iter().map(String::as_str).collect())
            }
            _ => (
                "spec.clusterIP",
                spec.cluster_ip.as_deref().into_iter().collect(),
            ),
        };
        for (i, ip) in ips.iter().enumerate() {
            if ip.is_empty() || *ip == "None" {
                continue;
            }
            let Ok(addr) = ip.parse::<IpAddr>() else {
                let field = if field == "spec.clusterIPs" {
                    format!("{field}[{i}]")
                } else {
                    field.to_owned()
                };
                return err(field, format!("{ip:?} is not an IP address"));
            };
            let family = IpFamily::of(addr);
            if !families.contains(&family) {
                families.push(family);
            }
        }
        source = field;
        if families.is_empty() {
            families.push(IpFamily::IPv4);
        }
    }
    match policy {
        "SingleStack" => families.truncate(1),
        "RequireDualStack" if families.len() < 2 => {
            let have: Vec<String> = families.iter().map(|f| format!("{f:?}")).collect();
            return err(
                "spec.ipFamilies".into(),
                format!(
                    "ipFamilyPolicy RequireDualStack needs two IP families, {source} gives {}",
                    have.join(", ")
                ),
            );
        }
        _ => {}
    }
    Ok(families)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::raw::Origin;

    fn node(name: &str, zone: Option<&str>) -> Node {
        Node {
            name: name.to_owned(),
            zone: zone.map(str::to_owned),
            addresses: Vec::new(),
        }
    }

    fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Typed<T> {
        Typed {
            origin: Origin::file(PathBuf::from("t.yaml"), 0),
            value: crate::model::deserialize(v).expect("schema"),
        }
    }

    fn service(spec: serde_json::Value, annotations: serde_json::Value) -> Typed<Service> {
        typed(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "svc", "namespace": "ns", "annotations": annotations},
            "spec": spec,
        }))
    }

    fn slice(name: &str, body: serde_json::Value) -> Typed<EndpointSlice> {
        let mut doc = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "ns",
                         "labels": {SERVICE_NAME_LABEL: "svc"}},
        });
        for (k, v) in body.as_object().expect("object") {
            doc[k] = v.clone();
        }
        typed(doc)
    }

    fn port(name: Option<&str>, protocol: Option<&str>) -> ServicePort {
        ServicePort {
            name: name.map(str::to_owned),
            protocol: protocol.map(str::to_owned),
            port: 80,
            ..Default::default()
        }
    }

    /// A candidate from a compact description: address, node, conditions
    /// (`r` ready, `s` serving, `t` terminating; uppercase = true), zone hints.
    fn cand(addr: &str, node_name: &str, cond: &str, zones: &[&str]) -> Candidate {
        Candidate {
            addr: addr.parse().expect("addr"),
            node_name: (!node_name.is_empty()).then(|| node_name.to_owned()),
            zone: None,
            ready: cond.contains('R'),
            serving: cond.contains('S'),
            terminating: cond.contains('T'),
            for_zones: zones.iter().map(|z| (*z).to_owned()).collect(),
            for_nodes: Vec::new(),
        }
    }

    fn rules(policy: TrafficPolicy, topology: Topology, publish: bool) -> ServiceRules {
        ServiceRules {
            publish_not_ready: publish,
            internal_policy: policy,
            external_policy: TrafficPolicy::Cluster,
            topology,
            topology_field: None,
        }
    }

    fn addrs(s: &Selection) -> Vec<String> {
        s.endpoints.iter().map(Endpoint::key).collect()
    }

    #[test]
    fn choose_table() {
        use Topology::*;
        use TrafficPolicy::*;
        let a = cand("10.0.0.1:80", "n1", "RS", &["z1"]);
        let b = cand("10.0.0.2:80", "n2", "RS", &["z2"]);
        let c = cand("10.0.0.3:80", "n1", "rST", &["z1"]);
        let d = cand("10.0.0.4:80", "n2", "rST", &["z2"]);
        let e = cand("10.0.0.5:80", "n2", "rsT", &["z2"]);
        let f = cand("10.0.0.6:80", "n1", "rs", &[]);
        let unhinted = cand("10.0.0.7:80", "n3", "RS", &[]);
        let v6 = cand("[fd00::1]:80", "n2", "RS", &["z1"]);
        // (case, candidates, rules, node zone, expected, topology, terminating fallback)
        type Case<'a> = (
            &'a str,
            Vec<Candidate>,
            ServiceRules,
            Option<&'a str>,
            &'a [&'a str],
            Topology,
            bool,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "ready only",
                vec![a.clone(), b.clone(), c.clone(), f.clone()],
                rules(Cluster, Off, false),
                Some("z1"),
                &["10.0.0.1:80", "10.0.0.2:80"],
                Off,
                false,
            ),
            (
                "no ready: serving+terminating, not the non-serving terminating one",
                vec![c.clone(), d.clone(), e.clone(), f.clone()],
                rules(Cluster, Off, false),
                None,
                &["10.0.0.3:80", "10.0.0.4:80"],
                Off,
                true,
            ),
            (
                "nothing usable",
                vec![e.clone(), f.clone()],
                rules(Cluster, Off, false),
                None,
                &[],
                Off,
                false,
            ),
            (
                "publishNotReadyAddresses: every endpoint",
                vec![a.clone(), e.clone(), f.clone()],
                rules(Cluster, Off, true),
                None,
                &["10.0.0.1:80", "10.0.0.5:80", "10.0.0.6:80"],
                Off,
                false,
            ),
            (
                "Local: ready on this node",
                vec![a.clone(), b.clone(), c.clone()],
                rules(Local, Off, false),
                None,
                &["10.0.0.1:80"],
                Off,
                false,
            ),
            (
                "Local: terminating on this node while another node has ready ones",
                vec![b.clone(), c.clone()],
                rules(Local, Off, false),
                None,
                &["10.0.0.3:80"],
                Off,
                true,
            ),
            (
                "Local: nothing on this node means nothing",
                vec![b.clone(), d.clone()],
                rules(Local, Off, false),
                None,
                &[],
                Off,
                false,
            ),
            (
                "Local ignores topology",
                vec![a.clone(), b.clone()],
                rules(Local, SameZone, false),
                Some("z2"),
                &["10.0.0.1:80"],
                Off,
                false,
            ),
            (
                "zone hints match",
                vec![a.clone(), b.clone(), v6.clone()],
                rules(Cluster, SameZone, false),
                Some("z1"),
                &["10.0.0.1:80", "[fd00::1]:80"],
                SameZone,
                false,
            ),
            (
                "zone hints: no endpoint for this zone, all",
                vec![a.clone(), b.clone()],
                rules(Cluster, SameZone, false),
                Some("z9"),
                &["10.0.0.1:80", "10.0.0.2:80"],
                Off,
                false,
            ),
            (
                "zone hints: node has no zone, all",
                vec![a.clone(), b.clone()],
                rules(Cluster, SameZone, false),
                None,
                &["10.0.0.1:80", "10.0.0.2:80"],
                Off,
                false,
            ),
            (
                "zone hints: a ready endpoint without hints, all",
                vec![a.clone(), b.clone(), unhinted.clone()],
                rules(Cluster, SameZone, false),
                Some("z1"),
                &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.7:80"],
                Off,
                false,
            ),
            (
                "zone hints: unready endpoints without hints do not count",
                vec![a.clone(), b.clone(), f.clone()],
                rules(Cluster, SameZone, false),
                Some("z1"),
                &["10.0.0.1:80"],
                SameZone,
                false,
            ),
            (
                "hints present but the Service did not ask: all",
                vec![a.clone(), b.clone()],
                rules(Cluster, Off, false),
                Some("z1"),
                &["10.0.0.1:80", "10.0.0.2:80"],
                Off,
                false,
            ),
            (
                "zone hints with only terminating endpoints: all terminating",
                vec![c.clone(), d.clone()],
                rules(Cluster, SameZone, false),
                Some("z1"),
                &["10.0.0.3:80", "10.0.0.4:80"],
                Off,
                true,
            ),
            (
                "same node by nodeName",
                vec![a.clone(), b.clone(), unhinted.clone()],
                rules(Cluster, SameNode, false),
                Some("z2"),
                &["10.0.0.1:80"],
                SameNode,
                false,
            ),
            (
                "same node: none here, zone rule",
                vec![b.clone(), v6.clone()],
                rules(Cluster, SameNode, false),
                Some("z2"),
                &["10.0.0.2:80"],
                SameZone,
                false,
            ),
            (
                "same node: none here, no zone match, all",
                vec![b.clone(), v6.clone()],
                rules(Cluster, SameNode, false),
                Some("z9"),
                &["10.0.0.2:80", "[fd00::1]:80"],
                Off,
                false,
            ),
            (
                "dual-stack: both families kept",
                vec![a.clone(), v6.clone()],
                rules(Cluster, Off, false),
                None,
                &["10.0.0.1:80", "[fd00::1]:80"],
                Off,
                false,
            ),
        ];
        for (name, cands, rules, zone, want, topology, fallback) in cases {
            let s = choose(&cands, &rules, TrafficPath::Internal, &node("n1", zone));
            assert_eq!(addrs(&s), want, "{name}");
            assert_eq!(s.topology, topology, "{name}");
            assert_eq!(s.terminating_fallback, fallback, "{name}");
            assert_eq!(s.candidates, cands.len(), "{name}");
        }
    }

    #[test]
    fn same_node_prefers_node_hints_when_every_ready_endpoint_has_them() {
        let mut a = cand("10.0.0.1:80", "n1", "RS", &["z1"]);
        let mut b = cand("10.0.0.2:80", "n2", "RS", &["z1"]);
        // Hints say b serves n1 (whatever nodeName says): hints win.
        a.for_nodes = vec!["n1x".into()];
        b.for_nodes = vec!["n1".into()];
        let r = rules(TrafficPolicy::Cluster, Topology::SameNode, false);
        let s = choose(
            &[a.clone(), b.clone()],
            &r,
            TrafficPath::Internal,
            &node("n1", Some("z1")),
        );
        assert_eq!(addrs(&s), ["10.0.0.2:80"]);
        assert_eq!(s.topology, Topology::SameNode);
        // One ready endpoint without node hints: nodeName decides.
        b.for_nodes.clear();
        let s = choose(&[a, b], &r, TrafficPath::Internal, &node("n1", Some("z1")));
        assert_eq!(addrs(&s), ["10.0.0.1:80"]);
    }

    #[test]
    fn path_picks_the_policy() {
        let a = cand("10.0.0.1:80", "n1", "RS", &[]);
        let b = cand("10.0.0.2:80", "n2", "RS", &[]);
        let r = ServiceRules {
            internal_policy: TrafficPolicy::Cluster,
            external_policy: TrafficPolicy::Local,
            ..Default::default()
        };
        let n = node("n1", None);
        let internal = choose(&[a.clone(), b.clone()], &r, TrafficPath::Internal, &n);
        assert_eq!(addrs(&internal), ["10.0.0.1:80", "10.0.0.2:80"]);
        let external = choose(&[a, b], &r, TrafficPath::External, &n);
        assert_eq!(addrs(&external), ["10.0.0.1:80"]);
        assert_eq!(external.policy, TrafficPolicy::Local);
    }

    #[test]
    fn service_rules_table() {
        use serde_json::json;
        // (spec, annotations, topology, field)
        let cases = [
            (json!({}), json!({}), Topology::Off, None),
            (
                json!({}),
                json!({TOPOLOGY_MODE_ANNOTATION: "Auto"}),
                Topology::SameZone,
                Some("metadata.annotations[service.kubernetes.io/topology-mode]"),
            ),
            (
                json!({}),
                json!({TOPOLOGY_HINTS_ANNOTATION: "auto"}),
                Topology::SameZone,
                Some("metadata.annotations[service.kubernetes.io/topology-aware-hints]"),
            ),
            (
                json!({"trafficDistribution": "PreferClose"}),
                json!({}),
                Topology::SameZone,
                Some("spec.trafficDistribution"),
            ),
            (
                json!({"trafficDistribution": "PreferSameZone"}),
                json!({}),
                Topology::SameZone,
                Some("spec.trafficDistribution"),
            ),
            (
                json!({"trafficDistribution": "PreferSameNode"}),
                json!({}),
                Topology::SameNode,
                Some("spec.trafficDistribution"),
            ),
            (
                json!({"trafficDistribution": "PreferRegion"}),
                json!({}),
                Topology::Off,
                None,
            ),
            // The annotation wins over trafficDistribution, both ways.
            (
                json!({"trafficDistribution": "PreferSameNode"}),
                json!({TOPOLOGY_MODE_ANNOTATION: "Auto"}),
                Topology::SameZone,
                Some("metadata.annotations[service.kubernetes.io/topology-mode]"),
            ),
            (
                json!({"trafficDistribution": "PreferClose"}),
                json!({TOPOLOGY_MODE_ANNOTATION: "Disabled"}),
                Topology::Off,
                None,
            ),
            // topology-mode is read before the older annotation.
            (
                json!({}),
                json!({TOPOLOGY_MODE_ANNOTATION: "Disabled", TOPOLOGY_HINTS_ANNOTATION: "auto"}),
                Topology::Off,
                None,
            ),
        ];
        for (spec, ann, topology, field) in cases {
            let r = ServiceRules::from_service(&service(spec.clone(), ann.clone()).value);
            assert_eq!(r.topology, topology, "{spec} {ann}");
            assert_eq!(r.topology_field.as_deref(), field, "{spec} {ann}");
        }
        let r = ServiceRules::from_service(
            &service(
                json!({"internalTrafficPolicy": "Local", "externalTrafficPolicy": "Local",
                       "publishNotReadyAddresses": true}),
                json!({}),
            )
            .value,
        );
        assert_eq!(r.policy(TrafficPath::Internal), TrafficPolicy::Local);
        assert_eq!(r.policy(TrafficPath::External), TrafficPolicy::Local);
        assert!(r.publish_not_ready);
        assert_eq!(
            ServiceRules::from_service(&service(json!({}), json!({})).value),
            ServiceRules::default()
        );
    }

    fn gathered(
        slices: &[Typed<EndpointSlice>],
        p: &ServicePort,
        n: &Node,
    ) -> (Vec<Candidate>, Vec<Diagnostic>) {
        let refs: Vec<&Typed<EndpointSlice>> = slices.iter().collect();
        let mut findings = Findings::default();
        let c = gather(&refs, p, n, &mut findings);
        (c, findings.drain())
    }

    #[test]
    fn gather_matches_ports_by_name_and_protocol() {
        use serde_json::json;
        let slices = [
            slice(
                "a",
                json!({"addressType": "IPv4",
                       "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 53, "protocol": "UDP"}],
                       "endpoints": [{"addresses": ["10.0.0.1"]}]}),
            ),
            // The same port name on another number (a rolling targetPort change).
            slice(
                "b",
                json!({"addressType": "IPv4",
                       "ports": [{"name": "http", "port": 8081, "protocol": "TCP"}],
                       "endpoints": [{"addresses": ["10.0.0.2"]}]}),
            ),
            // Same name, other protocol: not the port.
            slice(
                "c",
                json!({"addressType": "IPv4",
                       "ports": [{"name": "http", "port": 9999, "protocol": "UDP"}],
                       "endpoints": [{"addresses": ["10.0.0.3"]}]}),
            ),
            // Unnamed port.
            slice(
                "d",
                json!({"addressType": "IPv4", "ports": [{"port": 7000}],
                       "endpoints": [{"addresses": ["10.0.0.4"]}]}),
            ),
            slice(
                "e",
                json!({"addressType": "IPv4", "ports": [{"name": "", "port": 7001}],
                       "endpoints": [{"addresses": ["10.0.0.5"]}]}),
            ),
        ];
        let n = node("n1", None);
        let keys = |c: &[Candidate]| c.iter().map(|c| c.addr.to_string()).collect::<Vec<_>>();
        // (port name, protocol, expected)
        let cases: &[(Option<&str>, Option<&str>, &[&str])] = &[
            (Some("http"), None, &["10.0.0.1:8080", "10.0.0.2:8081"]),
            (
                Some("http"),
                Some("TCP"),
                &["10.0.0.1:8080", "10.0.0.2:8081"],
            ),
            (Some("http"), Some("UDP"), &["10.0.0.3:9999"]),
            (Some("dns"), Some("UDP"), &["10.0.0.1:53"]),
            (Some("dns"), None, &[]),
            (None, None, &["10.0.0.4:7000", "10.0.0.5:7001"]),
            (Some(""), None, &["10.0.0.4:7000", "10.0.0.5:7001"]),
            (Some("grpc"), None, &[]),
        ];
        for (name, proto, want) in cases {
            let (c, d) = gathered(&slices, &port(*name, *proto), &n);
            assert_eq!(keys(&c), *want, "{name:?} {proto:?}");
            assert!(d.is_empty(), "{d:?}");
        }
    }

    #[test]
    fn gather_reads_conditions_hints_and_dedupes() {
        use serde_json::json;
        let slices = [
            slice(
                "a-v4",
                json!({"addressType": "IPv4", "ports": [{"port": 80}],
                "endpoints": [
                  {"addresses": ["10.0.0.1", "10.0.0.99"], "nodeName": "n2", "zone": "z2",
                   "conditions": {"ready": true}},
                  {"addresses": ["10.0.0.2"],
                   "conditions": {"ready": false, "serving": true, "terminating": true},
                   "hints": {"forZones": [{"name": "z1"}], "forNodes": [{"name": "n1"}]}},
                  {"addresses": ["10.0.0.3"], "conditions": {}},
                ]}),
            ),
            // Duplicate of 10.0.0.1 from another slice, on this node: it wins.
            slice(
                "b-v4",
                json!({"addressType": "IPv4", "ports": [{"port": 80}],
                       "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "n1",
                                      "conditions": {"ready": false}}]}),
            ),
            // Duplicate of 10.0.0.2, not local: the first copy stays.
            slice(
                "c-v4",
                json!({"addressType": "IPv4", "ports": [{"port": 80}],
                       "endpoints": [{"addresses": ["10.0.0.2"], "nodeName": "n3"}]}),
            ),
            slice(
                "d-v6",
                json!({"addressType": "IPv6", "ports": [{"port": 80}],
                       "endpoints": [{"addresses": ["fd00::1"]}]}),
            ),
        ];
        let (c, d) = gathered(&slices, &port(None, None), &node("n1", None));
        assert!(d.is_empty(), "{d:?}");
        let want = vec![
            Candidate {
                addr: "10.0.0.1:80".parse().unwrap(),
                node_name: Some("n1".into()),
                ready: false,
                serving: true,
                ..Default::default()
            },
            Candidate {
                addr: "10.0.0.2:80".parse().unwrap(),
                ready: false,
                serving: true,
                terminating: true,
                for_zones: vec!["z1".into()],
                for_nodes: vec!["n1".into()],
                ..Default::default()
            },
            Candidate {
                addr: "10.0.0.3:80".parse().unwrap(),
                ready: true,
                serving: true,
                ..Default::default()
            },
            Candidate {
                addr: "[fd00::1]:80".parse().unwrap(),
                ready: true,
                serving: true,
                ..Default::default()
            },
        ];
        assert_eq!(c, want);
        // Without a local copy the first slice's copy is kept.
        let (c, _) = gathered(&slices, &port(None, None), &node("n9", None));
        assert_eq!(c[0].node_name.as_deref(), Some("n2"));
        assert_eq!(c[0].zone.as_deref(), Some("z2"));
    }

    #[test]
    fn gather_skips_unusable_slices_with_one_warning_each() {
        use serde_json::json;
        let slices = [
            slice(
                "fqdn",
                json!({"addressType": "FQDN", "ports": [{"port": 80}],
                       "endpoints": [{"addresses": ["a.example.com"]}]}),
            ),
            slice(
                "no-port",
                json!({"addressType": "IPv4", "ports": [{"name": "http"}],
                       "endpoints": [{"addresses": ["10.0.0.1"]}]}),
            ),
            slice(
                "no-ports-at-all",
                json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.2"]}]}),
            ),
            slice(
                "ok",
                json!({"addressType": "IPv4", "ports": [{"name": "http", "port": 80}],
                       "endpoints": [{"addresses": ["10.0.0.3"]}]}),
            ),
        ];
        let refs: Vec<&Typed<EndpointSlice>> = slices.iter().collect();
        let mut findings = Findings::default();
        let n = node("n1", None);
        for _ in 0..2 {
            let c = gather(&refs, &port(Some("http"), None), &n, &mut findings);
            assert_eq!(c.len(), 1);
        }
        let d: Vec<String> = findings.drain().iter().map(ToString::to_string).collect();
        assert_eq!(
            d,
            [
                "warning: t.yaml doc 0: EndpointSlice ns/fqdn: addressType: FQDN endpoints are not supported; slice skipped",
                "warning: t.yaml doc 0: EndpointSlice ns/no-port: ports[0].port: no usable port number for Service port 80 (http); the slice's endpoints are not used for it",
            ]
        );
    }

    fn store(yaml: &str) -> Store {
        let (raws, diags) =
            crate::manifests::objects_from_str(yaml, std::path::Path::new("t.yaml"));
        assert!(diags.is_empty(), "{diags:?}");
        let (store, diags) = Store::build(&raws);
        assert!(diags.is_empty(), "{diags:?}");
        store
    }

    #[test]
    fn select_merges_slices_of_the_service_only_and_warns_for_local() {
        let s = store(
            r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  internalTrafficPolicy: Local
  externalTrafficPolicy: Cluster
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: ["10.0.0.1"], nodeName: n2}
- {addresses: ["10.0.0.2"], nodeName: n3}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-2, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: ["fd00::2"], nodeName: n2}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: other, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["10.9.9.9"], nodeName: n1}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: unlabelled, namespace: shop}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["10.8.8.8"], nodeName: n1}]
"#,
        );
        let index = SliceIndex::new(&s);
        assert_eq!(index.slices("shop", "web").len(), 2);
        assert_eq!(index.slices("other", "web").len(), 1);
        assert!(index.slices("shop", "nothere").is_empty());
        let Some(Object::Service(svc)) = s.find("Service", Some("shop"), "web") else {
            panic!("service");
        };
        let p = port(Some("http"), None);
        let mut findings = Findings::default();
        let n1 = node("n1", None);
        let internal = select(&index, svc, &p, TrafficPath::Internal, &n1, &mut findings);
        assert!(internal.endpoints.is_empty());
        let d: Vec<String> = findings.drain().iter().map(ToString::to_string).collect();
        assert_eq!(
            d,
            [
                "warning: t.yaml doc 0: Service shop/web: spec.internalTrafficPolicy: Local: no usable endpoint of port 80 (http) on node \"n1\" (3 on other nodes); requests get 503"
            ]
        );
        let external = select(&index, svc, &p, TrafficPath::External, &n1, &mut findings);
        assert_eq!(
            addrs(&external),
            ["10.0.0.1:8080", "10.0.0.2:8080", "[fd00::2]:8080"]
        );
        assert!(findings.drain().is_empty());
        let n2 = node("n2", None);
        let internal = select(&index, svc, &p, TrafficPath::Internal, &n2, &mut findings);
        assert_eq!(
            internal.endpoints,
            [
                Endpoint {
                    addr: "10.0.0.1:8080".parse().unwrap(),
                    node_name: Some("n2".into()),
                    zone: None
                },
                Endpoint {
                    addr: "[fd00::2]:8080".parse().unwrap(),
                    node_name: Some("n2".into()),
                    zone: None
                },
            ]
        );
        assert_eq!(internal.endpoints[1].key(), "[fd00::2]:8080");
    }

    #[test]
    fn select_warns_when_topology_cannot_match() {
        let s = store(
            r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations: {service.kubernetes.io/topology-mode: Auto}
spec:
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
- {addresses: ["10.0.0.1"], hints: {forZones: [{name: z1}]}}
- {addresses: ["10.0.0.2"], hints: {forZones: [{name: z2}]}}
"#,
        );
        let index = SliceIndex::new(&s);
        let Some(Object::Service(svc)) = s.find("Service", Some("default"), "web") else {
            panic!("service");
        };
        let mut findings = Findings::default();
        let p = port(None, None);
        let sel = select(
            &index,
            svc,
            &p,
            TrafficPath::Internal,
            &node("n", None),
            &mut findings,
        );
        assert_eq!(sel.endpoints.len(), 2);
        let d = findings.drain();
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].field.as_deref(),
            Some("metadata.annotations[service.kubernetes.io/topology-mode]")
        );
        let sel = select(
            &index,
            svc,
            &p,
            TrafficPath::Internal,
            &node("n", Some("z2")),
            &mut findings,
        );
        assert_eq!(addrs(&sel), ["10.0.0.2:8080"]);
        assert!(findings.drain().is_empty());
    }

    #[test]
    fn ip_families_table() {
        use IpFamily::*;
        use serde_json::json;
        // (spec, Ok(families) or Err(field))
        let cases: Vec<(serde_json::Value, Result<Vec<IpFamily>, &str>)> = vec![
            (json!({}), Ok(vec![IPv4])),
            (json!({"ipFamilies": ["IPv6"]}), Ok(vec![IPv6])),
            (
                json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6", "IPv4"]}),
                Ok(vec![IPv6]),
            ),
            (
                json!({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6", "IPv4"]}),
                Ok(vec![IPv6, IPv4]),
            ),
            (
                json!({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4"]}),
                Ok(vec![IPv4]),
            ),
            (json!({"ipFamilyPolicy": "PreferDualStack"}), Ok(vec![IPv4])),
            (
                json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}),
                Ok(vec![IPv4, IPv6]),
            ),
            (
                json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4"]}),
                Err("spec.ipFamilies"),
            ),
            (
                json!({"ipFamilyPolicy": "RequireDualStack"}),
                Err("spec.ipFamilies"),
            ),
            // Families from clusterIPs when ipFamilies is empty.
            (
                json!({"ipFamilyPolicy": "RequireDualStack", "clusterIPs": ["fd00::10", "10.96.0.10"]}),
                Ok(vec![IPv6, IPv4]),
            ),
            (json!({"clusterIP": "fd00::10"}), Ok(vec![IPv6])),
            (json!({"clusterIP": "None"}), Ok(vec![IPv4])),
            (
                json!({"clusterIPs": ["10.96.0.1", "bogus"]}),
                Err("spec.clusterIPs[1]"),
            ),
            (
                json!({"ipFamilyPolicy": "DualStack"}),
                Err("spec.ipFamilyPolicy"),
            ),
            (
                json!({"ipFamilies": ["IPv4", "IPX"]}),
                Err("spec.ipFamilies[1]"),
            ),
            (
                json!({"ipFamilies": ["IPv4", "IPv4"]}),
                Err("spec.ipFamilies[1]"),
            ),
            (
                json!({"type": "ExternalName", "externalName": "a.example.com"}),
                Ok(vec![]),
            ),
        ];
        for (spec, want) in cases {
            let got = ip_families(&service(spec.clone(), json!({})));
            match (got, want) {
                (Ok(f), Ok(w)) => assert_eq!(f, w, "{spec}"),
                (Err(d), Err(field)) => {
                    assert!(d.is_error(), "{spec}");
                    assert_eq!(d.field.as_deref(), Some(field), "{spec}");
                    assert_eq!(d.kind.as_deref(), Some("Service"), "{spec}");
                    assert_eq!(d.name.as_deref(), Some("svc"), "{spec}");
                }
                (got, want) => panic!("{spec}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(IpFamily::of("::1".parse().unwrap()), IPv6);
        assert_eq!(IpFamily::parse("IPv4"), Some(IPv4));
        assert_eq!(IpFamily::parse("ipv4"), None);
    }
}
