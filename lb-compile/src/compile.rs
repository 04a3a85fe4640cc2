//! Compilation: a pure, deterministic function from the object store and the
//! configuration to the HTTP snapshot the workers serve, with diagnostics, a
//! summary and Kubernetes status for the objects served. No I/O.
//!
//! Ingress v1 semantics: class selection (ingressClassName, IngressClass
//! controller, the legacy annotation and the default class), oldest Ingress
//! wins a conflicting host+path, backends are Service ports resolved by
//! number or name, whose endpoints [`crate::endpoints`] selects for the
//! ClusterIP path (readiness, `internalTrafficPolicy`, topology).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::networking::v1::{
    IngressBackend, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressPortStatus,
    IngressStatus,
};
use lb_http::balance::{HashOn, Policy};
use lb_http::route::RouteOrigin;
use lb_http::{
    ApplianceSnapshot, Backend, BackendId, HostMatch, PathKind, RouteTableBuilder, RouteTarget,
};
use serde::Serialize;

use crate::diag::Diagnostic;
use crate::endpoints::{Findings, SliceIndex, TrafficPath};
use crate::model::{Object, Typed};
use crate::settings::Settings;
use crate::store::Store;
use crate::vip_alloc::Vips;

/// Annotation that marks an IngressClass as the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The pre-IngressClass annotation naming an Ingress's class.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Ingress annotation choosing how an endpoint is picked per request.
pub const LOAD_BALANCE_ANNOTATION: &str = "lb.example.com/load-balance";
pub use crate::endpoints::SERVICE_NAME_LABEL;

/// Everything one compilation produces.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// The snapshot to publish.
    pub snapshot: ApplianceSnapshot,
    /// Findings (compile-time only from [`compile`]; all of them from
    /// [`crate::check::load_and_compile`]).
    pub diagnostics: Vec<Diagnostic>,
    /// Counts for humans and logs.
    pub summary: Summary,
    /// Kubernetes-style status of each served object.
    pub status: Vec<serde_json::Value>,
    /// LoadBalancer Service VIPs, for the next compile's [`compile_with`].
    pub vips: Vips,
}

/// Counts describing a compiled configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Valid objects by kind.
    pub objects: BTreeMap<String, usize>,
    /// Objects dropped as invalid.
    pub invalid: usize,
    /// Ingresses of our class.
    pub ingresses_served: usize,
    /// Ingresses of other classes.
    pub ingresses_ignored: usize,
    /// Routes in the table (path rules, plus the default backend if any).
    pub routes: usize,
    /// Distinct Service ports routed to.
    pub backends: usize,
    /// Selected endpoints over all backends.
    pub endpoints: usize,
    /// Claims not bound because another owner has the address, protocol
    /// and port, by claimant kind (`service`, `gateway`; see
    /// [`crate::ownership`]).
    pub conflicts: BTreeMap<&'static str, usize>,
}

impl Summary {
    /// A one-line summary for logs.
    pub fn one_line(&self) -> String {
        let objects: usize = self.objects.values().sum();
        format!(
            "{objects} objects ({} invalid), {} ingresses served ({} ignored), {} routes, {} backends, {} endpoints",
            self.invalid,
            self.ingresses_served,
            self.ingresses_ignored,
            self.routes,
            self.backends,
            self.endpoints
        )
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "objects:")?;
        if self.objects.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for (kind, n) in &self.objects {
            writeln!(f, "  {kind:<16} {n:>6}")?;
        }
        writeln!(f, "  {:<16} {:>6}", "(invalid)", self.invalid)?;
        writeln!(f, "ingresses:")?;
        writeln!(f, "  {:<16} {:>6}", "served", self.ingresses_served)?;
        writeln!(f, "  {:<16} {:>6}", "ignored", self.ingresses_ignored)?;
        writeln!(f, "routing:")?;
        writeln!(f, "  {:<16} {:>6}", "routes", self.routes)?;
        writeln!(f, "  {:<16} {:>6}", "services", self.backends)?;
        writeln!(f, "  {:<16} {:>6}", "endpoints", self.endpoints)
    }
}

/// Which Ingresses are ours, derived from the config and the IngressClasses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassSelection {
    /// `[ingress].class`.
    pub class: String,
    /// IngressClass names whose `spec.controller` is ours.
    pub controller_classes: BTreeSet<String>,
    /// Whether one of our IngressClasses is marked as the default class.
    pub default: bool,
}

impl ClassSelection {
    /// Builds the selection from the IngressClasses in `store`.
    pub fn new(store: &Store, cfg: &Settings) -> Self {
        let mut sel = ClassSelection {
            class: cfg.ingress.class.clone(),
            ..Default::default()
        };
        for obj in store.of_kind("IngressClass") {
            let Object::IngressClass(ic) = obj else {
                continue;
            };
            let name = ic.value.metadata.name.clone().unwrap_or_default();
            let controller = ic.value.spec.as_ref().and_then(|s| s.controller.as_deref());
            let by_controller = controller == Some(cfg.ingress.controller.as_str());
            if !(by_controller || name == cfg.ingress.class) {
                continue;
            }
            let is_default = ic
                .value
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            sel.default |= is_default;
            if by_controller {
                sel.controller_classes.insert(name);
            }
        }
        sel
    }

    fn ours(&self, class: &str) -> bool {
        class == self.class || self.controller_classes.contains(class)
    }

    /// Whether an Ingress with this `ingressClassName` and legacy annotation is served.
    pub fn serves(&self, class_name: Option<&str>, legacy_annotation: Option<&str>) -> bool {
        match (class_name.filter(|c| !c.is_empty()), legacy_annotation) {
            (Some(class), _) => self.ours(class),
            (None, Some(annotated)) => self.ours(annotated),
            (None, None) => self.default,
        }
    }
}

/// A Service port as an Ingress backend writes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum PortRef {
    Number(i32),
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// Identity of a backend: namespace, Service, and the resolved port number
/// (or the port as written when it could not be resolved).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct BackendKey {
    namespace: String,
    service: String,
    port: PortRef,
    /// From the Ingress annotation (or the Service's session affinity).
    policy: Policy,
}

impl BackendKey {
    fn name(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// The (namespace, Service) pairs the backends refer to.
fn backends_services<V>(backends: &BTreeMap<BackendKey, V>) -> BTreeSet<(String, String)> {
    backends
        .keys()
        .map(|k| (k.namespace.clone(), k.service.clone()))
        .collect()
}

/// A route (or the default backend) planned before backend ids are assigned.
struct Planned<'a> {
    ingress: &'a Object,
    /// `None` for `spec.defaultBackend`.
    rule: Option<(HostMatch, String, PathKind)>,
    field: String,
    source: String,
    /// `pathType` as written (`None` for `spec.defaultBackend`).
    path_type: Option<String>,
    backend: BackendKey,
    /// Whether the Ingress chose the policy (else Service affinity may).
    policy_set: bool,
    /// The Ingress's source ranges annotation (`None`: everyone).
    source_ranges: Option<lb_core::l4::SourceRanges>,
}

/// Finds the Service port an Ingress backend names; when a number is used
/// for both TCP and UDP (DNS), the TCP one.
fn find_service_port<'a>(svc: &'a Service, port: &PortRef) -> Option<&'a ServicePort> {
    let ports = svc.spec.as_ref()?.ports.as_deref()?;
    let named = |p: &&ServicePort| match port {
        PortRef::Number(n) => p.port == *n,
        PortRef::Name(n) => p.name.as_deref() == Some(n.as_str()),
    };
    let tcp = |p: &&ServicePort| p.protocol.as_deref().unwrap_or("TCP") == "TCP";
    ports
        .iter()
        .filter(named)
        .find(tcp)
        .or_else(|| ports.iter().find(named))
}

fn port_ref(backend: &IngressBackend) -> Option<(String, PortRef)> {
    let svc = backend.service.as_ref()?;
    let port = svc.port.as_ref()?;
    let port = match (port.number, port.name.as_deref()) {
        (Some(n), _) => PortRef::Number(n),
        (None, Some(name)) => PortRef::Name(name.to_owned()),
        (None, None) => return None,
    };
    Some((svc.name.clone(), port))
}

fn kind_name(kind: PathKind) -> &'static str {
    match kind {
        PathKind::Exact => "Exact",
        PathKind::Prefix => "Prefix",
    }
}

/// Compiles the store into a snapshot. Pure and deterministic.
pub fn compile(store: &Store, cfg: &Settings) -> Compiled {
    compile_with(store, cfg, &Vips::default())
}

/// [`compile`] with the previous compile's VIP allocations (and whether this
/// lb may allocate new ones): addresses stay where they are across compiles.
pub fn compile_with(store: &Store, cfg: &Settings, prior: &Vips) -> Compiled {
    let mut diags = Vec::new();
    let classes = ClassSelection::new(store, cfg);

    // Served Ingresses, oldest first.
    let mut served = Vec::new();
    let mut ignored = 0usize;
    for obj in store.of_kind("Ingress") {
        let Object::Ingress(ing) = obj else { continue };
        let class_name = ing
            .value
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref());
        let legacy = ing
            .value
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
            .map(String::as_str);
        if classes.serves(class_name, legacy) {
            served.push((obj, ing));
        } else {
            ignored += 1;
        }
    }
    served.sort_by_cached_key(|&(a, _)| a.age_key());

    // Plan every route and resolve its backend.
    let mut planned = Vec::new();
    for (obj, ing) in &served {
        plan_ingress(obj, ing, &mut planned, &mut diags);
    }
    let mut backends: BTreeMap<BackendKey, Vec<SocketAddr>> = BTreeMap::new();
    let slices = SliceIndex::new(store);
    let mut findings = Findings::default();
    for p in &mut planned {
        let (service, port) = (p.backend.service.clone(), p.backend.port.clone());
        let ns = p.backend.namespace.clone();
        let svc = match store.find("Service", Some(&ns), &service) {
            Some(Object::Service(s)) => Some(s),
            _ => None,
        };
        let warning = match svc {
            None => Diagnostic::warning(format!(
                "Service {ns}/{service} not found; requests get 503"
            ))
            .field(format!("{}.service.name", p.field_backend())),
            Some(s) => match find_service_port(&s.value, &port) {
                Some(sp) if sp.protocol.as_deref().is_some_and(|p| p != "TCP") => {
                    p.backend.port = PortRef::Number(sp.port);
                    Diagnostic::warning(format!(
                        "Service {ns}/{service} port {port} is {}; HTTP needs TCP; requests get 503",
                        sp.protocol.as_deref().unwrap_or_default()
                    ))
                    .field(format!("{}.service.port", p.field_backend()))
                }
                Some(sp) => {
                    p.backend.port = PortRef::Number(sp.port);
                    if !p.policy_set
                        && s.value
                            .spec
                            .as_ref()
                            .and_then(|x| x.session_affinity.as_deref())
                            == Some("ClientIP")
                    {
                        p.backend.policy = Policy::Hash(HashOn::ClientIp);
                    }
                    if !backends.contains_key(&p.backend) {
                        // Ingress (and Gateway) routing is ClusterIP traffic.
                        let selection = crate::endpoints::select(
                            &slices,
                            s,
                            sp,
                            TrafficPath::Internal,
                            &cfg.node,
                            &mut findings,
                        );
                        diags.extend(findings.drain());
                        backends.insert(p.backend.clone(), selection.addrs());
                    }
                    continue;
                }
                None => Diagnostic::warning(format!(
                    "Service {ns}/{service} has no port {port}; requests get 503"
                ))
                .field(format!("{}.service.port", p.field_backend())),
            },
        };
        diags.push(p.ingress.diagnostic(warning));
        backends.entry(p.backend.clone()).or_default();
    }
    let ids: HashMap<&BackendKey, BackendId> = backends
        .keys()
        .enumerate()
        .map(|(i, k)| (k, BackendId(i as u32)))
        .collect();

    // Build the route table in precedence order.
    let mut builder = RouteTableBuilder::with_capacity(planned.len());
    // The identity of the Ingress the last rule came from, shared by its rules.
    let mut names: Option<(*const Object, [Arc<str>; 3])> = None;
    for p in &planned {
        let Some(&backend) = ids.get(&p.backend) else {
            continue;
        };
        let target = RouteTarget {
            backend,
            source: p.source.as_str().into(),
            source_ranges: p.source_ranges.clone(),
        };
        let [kind, namespace, name] = match &names {
            Some((at, names)) if std::ptr::eq(*at, p.ingress) => names.clone(),
            _ => {
                let key = p.ingress.key();
                let fresh: [Arc<str>; 3] = [
                    key.kind.into(),
                    key.namespace.unwrap_or_default().into(),
                    key.name.into(),
                ];
                names = Some((p.ingress, fresh.clone()));
                fresh
            }
        };
        let origin = Some(RouteOrigin {
            kind,
            namespace,
            name,
            field: p.field.clone(),
            path_type: p.path_type.clone(),
        });
        let result = match &p.rule {
            Some((host, path, kind)) => {
                builder.add_with_origin(host.clone(), path, *kind, target, origin)
            }
            None => builder.set_default_with_origin(target, origin),
        };
        if let Err(conflict) = result {
            let what = match &p.rule {
                Some((host, path, kind)) => {
                    let host = match host {
                        HostMatch::Any => "*".to_owned(),
                        HostMatch::Exact(h) => h.clone(),
                        HostMatch::Wildcard(s) => format!("*.{s}"),
                    };
                    format!("host {host} path {path:?} ({})", kind_name(*kind))
                }
                None => "the default backend".to_owned(),
            };
            diags.push(
                p.ingress.diagnostic(
                    Diagnostic::warning(format!(
                        "{what} is already routed by older {}; ignored",
                        conflict.existing.source
                    ))
                    .field(p.field.clone()),
                ),
            );
        }
    }
    let routes = builder.build();
    let health_checks =
        crate::health_spec::checks(store, &backends_services(&backends), &mut diags);
    let mut backends: Vec<Backend> = backends
        .into_iter()
        .map(|(k, endpoints)| {
            // appProtocol of the Service port: h2c (gRPC) or HTTP/1.1.
            let app_protocol = match store.find("Service", Some(&k.namespace), &k.service) {
                Some(Object::Service(s)) => {
                    find_service_port(&s.value, &k.port).and_then(|sp| sp.app_protocol.clone())
                }
                _ => None,
            };
            let protocol = match app_protocol.as_deref() {
                Some("kubernetes.io/h2c" | "h2c" | "grpc") => {
                    lb_http::snapshot::UpstreamProtocol::H2c
                }
                _ => lb_http::snapshot::UpstreamProtocol::Http1,
            };
            Backend {
                name: k.name(),
                endpoints,
                protocol,
                policy: k.policy.clone(),
                health: health_checks
                    .get(&(k.namespace.clone(), k.service.clone()))
                    .cloned(),
            }
        })
        .collect();

    let mut l4 = crate::l4::compile_l4(store, cfg, &slices, prior);
    // Gateway API: shares the backends (and their ids) with Ingress, adds
    // TCP Listeners to the L4 services, settles who owns each address and
    // port.
    let mut gateway = crate::gateway::compile_gateway(
        store,
        cfg,
        &slices,
        &mut backends,
        &mut l4.snapshot,
        &l4.claims,
    );
    l4.finish(&gateway.l4_lost);
    let conflicts = BTreeMap::from([
        ("gateway", gateway.conflicts),
        (
            "service",
            gateway.l4_lost.iter().filter(|w| w.is_some()).count(),
        ),
    ]);
    diags.append(&mut l4.diagnostics);
    diags.append(&mut gateway.diagnostics);

    let mut status_of: Vec<_> = served.iter().map(|(o, _)| o.key()).collect();
    status_of.sort();
    let served_refs: Vec<(&Object, &Typed<k8s_openapi::api::networking::v1::Ingress>)> =
        served.iter().map(|(o, i)| (*o, &***i)).collect();
    let mut tls = crate::tls::compile_tls(store, cfg, &served_refs);
    diags.append(&mut tls.diagnostics);
    let lb_status = load_balancer_status(cfg);
    let mut status: Vec<serde_json::Value> = status_of
        .into_iter()
        .map(|k| {
            serde_json::json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"namespace": k.namespace, "name": k.name},
                "status": lb_status,
            })
        })
        .collect();
    status.extend(l4.status);
    status.extend(gateway.status);

    let summary = Summary {
        objects: store.counts(),
        invalid: store.invalid(),
        ingresses_served: served.len(),
        ingresses_ignored: ignored,
        routes: routes.rules().len() + usize::from(routes.default_target().is_some()),
        backends: backends.len(),
        endpoints: backends.iter().map(|b| b.endpoints.len()).sum(),
        conflicts,
    };
    Compiled {
        snapshot: ApplianceSnapshot {
            routes,
            backends,
            tls: tls.certs,
            https_redirect: tls.redirect,
            https_port: tls.https_port,
            l4: l4.snapshot,
            gateway: gateway.snapshot,
        },
        diagnostics: diags,
        summary,
        status,
        vips: Vips {
            by_service: l4.vips,
            follower: prior.follower,
        },
    }
}

impl Planned<'_> {
    fn field_backend(&self) -> String {
        if self.rule.is_some() {
            format!("{}.backend", self.field)
        } else {
            self.field.clone()
        }
    }
}

fn plan_ingress<'a>(
    obj: &'a Object,
    ing: &Typed<k8s_openapi::api::networking::v1::Ingress>,
    out: &mut Vec<Planned<'a>>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(spec) = &ing.value.spec else { return };
    let ns = ing.value.metadata.namespace.clone().unwrap_or_default();
    let name = ing.value.metadata.name.clone().unwrap_or_default();
    let annotation = ing
        .value
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LOAD_BALANCE_ANNOTATION));
    let policy = match annotation.map(|v| Policy::parse(v)) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            diags.push(
                obj.diagnostic(
                    Diagnostic::warning(format!("{e}; round robin is used"))
                        .field(format!("metadata.annotations[{LOAD_BALANCE_ANNOTATION}]")),
                ),
            );
            None
        }
    };
    let policy_set = policy.is_some();
    let policy = policy.unwrap_or_default();
    let source_ranges =
        crate::source_ranges::annotated(obj, crate::source_ranges::ANNOTATION, diags);
    for (r, rule) in spec.rules.as_deref().unwrap_or_default().iter().enumerate() {
        let Some(http) = &rule.http else { continue };
        let host = HostMatch::parse(rule.host.as_deref().unwrap_or(""));
        for (p, path) in http.paths.iter().enumerate() {
            let Some((service, port)) = port_ref(&path.backend) else {
                continue;
            };
            let kind = if path.path_type == "Exact" {
                PathKind::Exact
            } else {
                PathKind::Prefix
            };
            let value = path
                .path
                .as_deref()
                .filter(|v| !v.is_empty())
                .unwrap_or("/");
            out.push(Planned {
                ingress: obj,
                rule: Some((host.clone(), value.to_owned(), kind)),
                field: format!("spec.rules[{r}].http.paths[{p}]"),
                source: format!("Ingress {ns}/{name} rule {r} path {p}"),
                path_type: Some(path.path_type.clone()),
                backend: BackendKey {
                    namespace: ns.clone(),
                    service,
                    port,
                    policy: policy.clone(),
                },
                policy_set,
                source_ranges: source_ranges.clone(),
            });
        }
    }
    if let Some((service, port)) = spec.default_backend.as_ref().and_then(port_ref) {
        out.push(Planned {
            ingress: obj,
            rule: None,
            field: "spec.defaultBackend".into(),
            source: format!("Ingress {ns}/{name} defaultBackend"),
            path_type: None,
            backend: BackendKey {
                namespace: ns,
                service,
                port,
                policy,
            },
            policy_set,
            source_ranges,
        });
    }
}

/// Compiles manifests given as YAML text (each string one file's worth of
/// documents) through the same parse, store and compile steps as the
/// appliance's load path, without reading files: for the fuzz targets in
/// `fuzz/` and tests. Diagnostics name the files `<manifest N>`.
pub fn compile_yaml(cfg: &Settings, texts: &[&str]) -> Compiled {
    let mut objects = Vec::new();
    let mut all = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let file = std::path::PathBuf::from(format!("<manifest {i}>"));
        let (objs, diags) = crate::manifests::objects_from_str(text, &file);
        objects.extend(objs);
        all.extend(diags);
    }
    let (store, store_diags) = Store::build(&objects);
    let mut compiled = compile_with(&store, cfg, &Vips::default());
    all.extend(store_diags);
    all.append(&mut compiled.diagnostics);
    compiled.diagnostics = all;
    compiled
}

/// `status` of a served Ingress: one entry per address clients reach it on,
/// with the HTTP and HTTPS ports there. A wildcard listener (`0.0.0.0`,
/// `[::]`, bound IPv6-only) stands for the node's addresses of its family
/// (`[node] addresses`): a wildcard is never an address to publish.
fn load_balancer_status(cfg: &Settings) -> serde_json::Value {
    let mut by_ip: Vec<(IpAddr, Vec<u16>)> = Vec::new();
    for addr in cfg.ingress.http.iter().chain(&cfg.ingress.https) {
        let ips: Vec<IpAddr> = if addr.ip().is_unspecified() {
            cfg.node
                .addresses
                .iter()
                .filter(|ip| ip.is_ipv4() == addr.is_ipv4() && !ip.is_unspecified())
                .copied()
                .collect()
        } else {
            vec![addr.ip()]
        };
        for ip in ips {
            match by_ip.iter_mut().find(|(have, _)| *have == ip) {
                Some((_, ports)) => {
                    if !ports.contains(&addr.port()) {
                        ports.push(addr.port());
                    }
                }
                None => by_ip.push((ip, vec![addr.port()])),
            }
        }
    }
    let ingress = by_ip
        .into_iter()
        .map(|(ip, ports)| IngressLoadBalancerIngress {
            ip: Some(ip.to_string()),
            hostname: None,
            ports: Some(
                ports
                    .into_iter()
                    .map(|port| IngressPortStatus {
                        port: i32::from(port),
                        protocol: "TCP".into(),
                        error: None,
                    })
                    .collect(),
            ),
        })
        .collect();
    let status = IngressStatus {
        load_balancer: Some(IngressLoadBalancerStatus {
            ingress: Some(ingress),
        }),
    };
    serde_json::to_value(status).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::diag::Severity;
    use crate::manifests::objects_from_str;

    fn cfg() -> Settings {
        toml::from_str::<Settings>("[node]\nname = \"edge-1\"\nzone = \"zone-a\"\n[ingress]\nhttp = [\"127.0.0.1:8080\", \"127.0.0.1:8081\", \"[::1]:8080\"]\n[loadbalancer]\npools = [\"192.0.2.10/32\"]\nexternal_ips = [\"192.0.2.16/28\"]\n")
        .expect("config")
    }

    /// Builds a store from multi-document YAML, asserting it loads cleanly.
    fn store(yaml: &str) -> (Store, Vec<Diagnostic>) {
        let (raws, mut diags) = objects_from_str(yaml, Path::new("t.yaml"));
        let (store, more) = Store::build(&raws);
        diags.extend(more);
        (store, diags)
    }

    fn compiled(yaml: &str) -> Compiled {
        let (s, diags) = store(yaml);
        assert!(diags.is_empty(), "{diags:?}");
        compile(&s, &cfg())
    }

    fn route(c: &Compiled, host: &str, path: &str) -> Option<(String, Vec<SocketAddr>)> {
        let t = c.snapshot.routes.lookup(host, path)?;
        let b = c.snapshot.backend(t.backend)?;
        Some((b.name.clone(), b.endpoints.clone()))
    }

    fn ingress(
        name: &str,
        class: Option<&str>,
        annotation: Option<&str>,
        ts: Option<&str>,
        path: &str,
        svc: &str,
    ) -> String {
        let mut meta = format!("  name: {name}\n");
        if let Some(ts) = ts {
            meta.push_str(&format!("  creationTimestamp: \"{ts}\"\n"));
        }
        if let Some(a) = annotation {
            meta.push_str(&format!(
                "  annotations:\n    kubernetes.io/ingress.class: {a}\n"
            ));
        }
        let class = class
            .map(|c| format!("  ingressClassName: {c}\n"))
            .unwrap_or_default();
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n{meta}spec:\n{class}  rules:\n  - http:\n      paths:\n      - path: {path}\n        pathType: Prefix\n        backend:\n          service: {{name: {svc}, port: {{number: 80}}}}\n"
        )
    }

    const SVC: &str =
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n";

    fn class(name: &str, controller: &str, default: bool) -> String {
        let ann = if default {
            "  annotations:\n    ingressclass.kubernetes.io/is-default-class: \"true\"\n"
        } else {
            ""
        };
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: {name}\n{ann}spec:\n  controller: {controller}\n"
        )
    }

    #[test]
    fn class_selection_table() {
        const OURS: &str = "lb.example.com/ingress-controller";
        // (classes, ingressClassName, legacy annotation, served)
        type Case<'a> = (
            &'a [(&'a str, &'a str, bool)],
            Option<&'a str>,
            Option<&'a str>,
            bool,
        );
        let cases: &[Case<'_>] = &[
            (&[], Some("lb"), None, true),
            (&[], Some("other"), None, false),
            (&[], None, None, false),
            (&[("lb", "x/y", true)], None, None, true),
            (&[("mine", OURS, true)], None, None, true),
            (&[("mine", OURS, false)], None, None, false),
            (&[("mine", OURS, false)], Some("mine"), None, true),
            (&[("theirs", "x/y", true)], None, None, false),
            (&[("theirs", "x/y", false)], Some("theirs"), None, false),
            (&[], None, Some("lb"), true),
            (&[("lb", OURS, true)], None, Some("nginx"), false),
            (&[("mine", OURS, false)], None, Some("mine"), true),
            // ingressClassName wins over the annotation.
            (&[], Some("nginx"), Some("lb"), false),
        ];
        for (classes, name, annotation, served) in cases {
            let mut yaml = String::from(SVC);
            for (n, c, d) in *classes {
                yaml.push_str(&class(n, c, *d));
            }
            yaml.push_str(&ingress("i", *name, *annotation, None, "/", "s"));
            let c = compiled(&yaml);
            assert_eq!(
                c.summary.ingresses_served == 1,
                *served,
                "{classes:?} {name:?} {annotation:?}"
            );
            assert_eq!(c.summary.ingresses_ignored, usize::from(!*served));
            assert_eq!(c.status.len(), usize::from(*served));
        }
    }

    const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: metrics, port: 9090}
---
apiVersion: v1
kind: Service
metadata: {name: single}
spec:
  ports:
  - {port: 80, targetPort: 8000}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: metrics, port: 9090}]
endpoints:
- addresses: ["10.0.0.2"]
- addresses: ["10.0.0.1"]
  conditions: {ready: true}
- addresses: ["10.0.0.9"]
  conditions: {ready: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-other-ns
  namespace: elsewhere
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["10.9.9.9"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: single-1
  labels: {kubernetes.io/service-name: single}
addressType: IPv4
ports: [{port: 8000}]
endpoints: [{addresses: ["10.0.1.1"]}, {addresses: ["10.0.1.1"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: single-fqdn
  labels: {kubernetes.io/service-name: single}
addressType: FQDN
ports: [{port: 8000}]
endpoints: [{addresses: ["a.example.com"]}]
"#;

    fn with_backend(service: &str, port: &str) -> Compiled {
        let yaml = format!(
            "{WEB}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i}}\nspec:\n  ingressClassName: lb\n  rules:\n  - http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service: {{name: {service}, port: {port}}}\n"
        );
        compiled(&yaml)
    }

    #[test]
    fn port_and_endpoint_resolution_table() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        // (service, port, backend name, endpoints, warnings)
        let cases: Vec<(&str, &str, &str, Vec<SocketAddr>, usize)> = vec![
            (
                "web",
                "{number: 80}",
                "default/web:80",
                vec![a("10.0.0.1:8080"), a("10.0.0.2:8080")],
                0,
            ),
            (
                "web",
                "{name: http}",
                "default/web:80",
                vec![a("10.0.0.1:8080"), a("10.0.0.2:8080")],
                0,
            ),
            (
                "web",
                "{name: metrics}",
                "default/web:9090",
                vec![a("10.0.0.1:9090"), a("10.0.0.2:9090")],
                0,
            ),
            ("web", "{number: 81}", "default/web:81", vec![], 1),
            ("web", "{name: grpc}", "default/web:grpc", vec![], 1),
            ("nothere", "{number: 80}", "default/nothere:80", vec![], 1),
            // Unnamed port; duplicate address deduped; FQDN slice skipped with a warning.
            (
                "single",
                "{number: 80}",
                "default/single:80",
                vec![a("10.0.1.1:8000")],
                1,
            ),
        ];
        for (svc, port, name, endpoints, warnings) in cases {
            let c = with_backend(svc, port);
            assert_eq!(
                route(&c, "any", "/x"),
                Some((name.to_owned(), endpoints)),
                "{svc} {port}"
            );
            assert_eq!(
                c.diagnostics.len(),
                warnings,
                "{svc} {port}: {:?}",
                c.diagnostics
            );
            assert!(
                c.diagnostics
                    .iter()
                    .all(|d| d.severity == Severity::Warning)
            );
        }
        let c = with_backend("nothere", "{number: 80}");
        assert_eq!(
            c.diagnostics[0].field.as_deref(),
            Some("spec.rules[0].http.paths[0].backend.service.name")
        );
        let c = with_backend("web", "{name: grpc}");
        assert_eq!(
            c.diagnostics[0].field.as_deref(),
            Some("spec.rules[0].http.paths[0].backend.service.port")
        );
    }

    #[test]
    fn older_ingress_keeps_a_conflicting_path() {
        let yaml = format!(
            "{SVC}{}{}{}",
            ingress(
                "young",
                Some("lb"),
                None,
                Some("2024-02-01T00:00:00Z"),
                "/a",
                "s"
            ),
            ingress(
                "old",
                Some("lb"),
                None,
                Some("2024-01-01T00:00:00Z"),
                "/a",
                "s"
            ),
            ingress("undated", Some("lb"), None, None, "/a", "s"),
        );
        let c = compiled(&yaml);
        let t = c.snapshot.routes.lookup("h", "/a").unwrap();
        assert_eq!(&*t.source, "Ingress default/old rule 0 path 0");
        let losers: Vec<_> = c
            .diagnostics
            .iter()
            .map(|d| d.name.clone().unwrap())
            .collect();
        assert_eq!(losers, ["young", "undated"]);
        let d = &c.diagnostics[0];
        assert_eq!(d.severity, Severity::Warning);
        assert_eq!(d.field.as_deref(), Some("spec.rules[0].http.paths[0]"));
        assert!(d.message.contains("Ingress default/old"), "{}", d.message);
        // Same age: namespace/name order decides.
        let yaml = format!(
            "{SVC}{}{}",
            ingress("b", Some("lb"), None, None, "/a", "s"),
            ingress("a", Some("lb"), None, None, "/a", "s"),
        );
        let c = compiled(&yaml);
        assert_eq!(
            &*c.snapshot.routes.lookup("h", "/a").unwrap().source,
            "Ingress default/a rule 0 path 0"
        );
    }

    #[test]
    fn status_lists_each_listen_ip_once() {
        let c = compiled(&format!(
            "{SVC}{}",
            ingress("i", Some("lb"), None, None, "/", "s")
        ));
        assert_eq!(
            c.status,
            [serde_json::json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"namespace": "default", "name": "i"},
                "status": {"loadBalancer": {"ingress": [
                    {"ip": "127.0.0.1", "ports": [{"port": 8080, "protocol": "TCP"}, {"port": 8081, "protocol": "TCP"}]},
                    {"ip": "::1", "ports": [{"port": 8080, "protocol": "TCP"}]},
                ]}}
            })]
        );
    }

    #[test]
    fn status_lists_https_ports_and_node_addresses_for_wildcards() {
        let cfg = toml::from_str::<Settings>("[node]\naddresses = [\"192.0.2.10\", \"2001:db8::10\"]\n[ingress]\nhttp = [\"0.0.0.0:80\", \"[::]:80\"]\nhttps = [\"0.0.0.0:443\", \"127.0.0.1:8443\"]\n")
        .unwrap();
        let text = format!("{SVC}{}", ingress("i", Some("lb"), None, None, "/", "s"));
        let (s, _) = store(&text);
        let c = compile(&s, &cfg);
        assert_eq!(
            c.status[0]["status"],
            serde_json::json!({"loadBalancer": {"ingress": [
                {"ip": "192.0.2.10", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]},
                {"ip": "2001:db8::10", "ports": [{"port": 80, "protocol": "TCP"}]},
                {"ip": "127.0.0.1", "ports": [{"port": 8443, "protocol": "TCP"}]},
            ]}})
        );
        assert!(!c.status[0].to_string().contains("0.0.0.0"));
    }

    #[test]
    fn compile_is_deterministic() {
        let text = std::fs::read_to_string(golden_dir().join("ingress.yaml")).unwrap();
        let (s, _) = store(&text);
        let a = serde_json::to_string(&dump(&compile(&s, &cfg()))).unwrap();
        let b = serde_json::to_string(&dump(&compile(&s, &cfg()))).unwrap();
        assert_eq!(a, b);
    }

    fn golden_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
    }

    fn dump(c: &Compiled) -> serde_json::Value {
        serde_json::json!({
            "summary": c.summary,
            "snapshot": c.snapshot,
            "status": c.status,
            "diagnostics": c.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    }

    /// Compiles every `tests/golden/*.yaml` and compares the JSON dump with the
    /// `.json` beside it. `LB_BLESS=1` rewrites the expected files.
    #[test]
    fn golden() {
        let dir = golden_dir();
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty());
        for input in inputs {
            let text = std::fs::read_to_string(&input).unwrap();
            let rel = Path::new("tests/golden").join(input.file_name().unwrap());
            let (raws, mut diags) = objects_from_str(&text, &rel);
            let (s, more) = Store::build(&raws);
            diags.extend(more);
            let mut c = compile(&s, &cfg());
            diags.append(&mut c.diagnostics);
            c.diagnostics = diags;
            let mut got = serde_json::to_string_pretty(&dump(&c)).unwrap();
            got.push('\n');
            let expected_path = input.with_extension("json");
            if std::env::var_os("LB_BLESS").is_some() {
                std::fs::write(&expected_path, &got).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
                panic!("{} missing; run with LB_BLESS=1", expected_path.display())
            });
            assert!(
                expected == got,
                "{} differs from the compiled output (LB_BLESS=1 regenerates):\n{got}",
                expected_path.display()
            );
        }
    }
}
