//! Gateways of our classes planned before routes attach: the address, each
//! Listener's protocol, hostname, certificates, allowed routes and its
//! `Accepted` / `ResolvedRefs` / `Conflicted` outcome.
//!
//! Conflicts: within one Gateway, every Listener that is not distinct is
//! Conflicted, as the spec requires ("ALL indistinct Listeners must not be
//! accepted"): Listeners sharing a port with different protocols
//! (`ProtocolConflict`; lb serves one protocol per port, so HTTP and HTTPS
//! cannot share either), or with the same protocol and hostname
//! (`HostnameConflict`; TCP has no hostname, so two TCP Listeners on a port
//! always clash). Gateways sharing an address are merged, which the spec
//! allows only for compatible Listeners: an older Gateway (creation time,
//! then namespace/name) keeps its port and the newer one's clashing
//! Listener is Conflicted, so adding a Gateway never breaks a serving one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use lb_http::BackendId;
use lb_http::gateway::{HostnameMatch, RouteEntry, SniRoute};
use lb_http::tls::Certificate;

use super::Ctx;
use super::address::allocate;
use super::refs::{GATEWAY_GROUP, certificate};
use super::status::Reason;
use crate::model::gateway::{Gateway, Listener};
use crate::model::{Object, Typed};
use crate::ownership::{Claim, OwnerKind, Transport, age_of, config_claims, resolve};
use crate::settings::Settings;

/// A Listener protocol lb serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Proto {
    /// `HTTP`.
    Http,
    /// `HTTPS` with `tls.mode: Terminate`.
    Https,
    /// `TLS` with `tls.mode: Passthrough`.
    Tls,
    /// `TCP`.
    Tcp,
}

impl Proto {
    /// The route kinds a Listener of this protocol accepts.
    pub(crate) fn kinds(self) -> &'static [&'static str] {
        match self {
            Proto::Http | Proto::Https => &["HTTPRoute", "GRPCRoute"],
            Proto::Tls => &["TLSRoute"],
            Proto::Tcp => &["TCPRoute"],
        }
    }
}

/// `allowedRoutes.namespaces.from`.
#[derive(Debug, Clone)]
pub(crate) enum FromNamespaces {
    /// Routes in the Gateway's namespace (the default).
    Same,
    /// Routes in any namespace.
    All,
    /// Routes in namespaces whose labels match (no selector: none).
    Selector(Option<LabelSelector>),
}

/// One Listener and what attaches to it.
#[derive(Debug)]
pub(crate) struct ListenerPlan {
    /// `spec.listeners[i].name`.
    pub name: String,
    /// Field path, for diagnostics.
    pub field: String,
    /// Port.
    pub port: u16,
    /// `None`: an unsupported protocol.
    pub proto: Option<Proto>,
    /// Hostname (never for TCP).
    pub hostname: Option<HostnameMatch>,
    /// The valid route kinds (`supportedKinds`).
    pub kinds: Vec<&'static str>,
    /// Which namespaces' routes may attach.
    pub from: FromNamespaces,
    /// The `Accepted` condition.
    pub accepted: Result<(), Reason>,
    /// The `ResolvedRefs` condition.
    pub resolved: Result<(), Reason>,
    /// `Conflicted=True` with this reason.
    pub conflicted: Option<Reason>,
    /// For HTTPS: the first valid certificate.
    pub cert: Option<Certificate>,
    /// `attachedRoutes`.
    pub attached: usize,
    /// HTTPRoute and GRPCRoute matches.
    pub entries: Vec<RouteEntry>,
    /// TLSRoute rules.
    pub sni: Vec<SniRoute>,
    /// TCPRoute backends with their `weight`.
    pub tcp: Vec<(BackendId, u32)>,
    /// `OverlappingTLSConfig=True` with this reason.
    pub overlapping: Option<Reason>,
    /// Whether the Listener serves traffic (set once the Gateway is planned).
    pub programmed: bool,
}

/// One Gateway of our classes.
#[derive(Debug)]
pub(crate) struct GatewayPlan<'a> {
    /// The object.
    pub obj: &'a Object,
    /// The typed Gateway.
    pub gw: &'a Typed<Gateway>,
    /// Namespace.
    pub ns: String,
    /// Name.
    pub name: String,
    /// Where its Listeners are bound.
    pub addr: Option<IpAddr>,
    /// `Err` when the Gateway is not Accepted (unsupported address,
    /// invalid parameters).
    pub accepted: Result<(), Reason>,
    /// Why a requested address cannot be used (`Programmed=False`,
    /// `AddressNotUsable`); `addr` is then `None`.
    pub address_error: Option<Reason>,
    /// Its Listeners, in spec order.
    pub listeners: Vec<ListenerPlan>,
}

/// Plans every Gateway whose class is in `classes`, oldest first.
pub(crate) fn plan_gateways<'a>(
    ctx: &mut Ctx<'a, '_>,
    classes: &BTreeSet<String>,
    l4: &[Claim],
) -> (Vec<GatewayPlan<'a>>, Vec<Option<String>>, usize) {
    let store = ctx.store;
    let mut plans: Vec<GatewayPlan<'a>> = store
        .of_kind("Gateway")
        .filter_map(|obj| match obj {
            Object::Gateway(gw) if classes.contains(&gw.value.spec.gateway_class_name) => {
                let key = obj.key();
                Some(GatewayPlan {
                    obj,
                    gw,
                    ns: key.namespace.unwrap_or_default(),
                    name: key.name,
                    addr: None,
                    accepted: invalid_parameters(gw),
                    address_error: None,
                    listeners: Vec::new(),
                })
            }
            _ => None,
        })
        .collect();
    assign_addresses(ctx, &mut plans, l4);
    for plan in &mut plans {
        let listeners = plan
            .gw
            .value
            .spec
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| plan_listener(ctx, &plan.ns, i, l))
            .collect();
        plan.listeners = listeners;
        conflicts_within(&mut plan.listeners);
        overlapping_tls(&mut plan.listeners);
    }
    plans.sort_by_cached_key(|p| p.obj.age_key());
    conflicts_across(&mut plans);
    let (l4_lost, gateway_lost) = ownership(ctx.cfg, &mut plans, l4);
    for plan in &mut plans {
        let (addr, ok) = (plan.addr.is_some(), plan.accepted.is_ok());
        for l in &mut plan.listeners {
            l.programmed = ok
                && addr
                && l.accepted.is_ok()
                && l.conflicted.is_none()
                && !l.kinds.is_empty()
                && (l.proto != Some(Proto::Https) || l.cert.is_some());
        }
    }
    (plans, l4_lost, gateway_lost)
}

/// Settles who owns each address and port between lb.toml's `[ingress]`
/// listeners, the Gateway listeners and the L4 Service claims (see
/// [`crate::ownership`]): a Gateway listener that loses is not Accepted
/// (`PortUnavailable`, naming the owner); returns, for each L4 claim, who
/// it lost to, and how many Gateway listeners lost.
fn ownership(
    cfg: &Settings,
    plans: &mut [GatewayPlan<'_>],
    l4: &[Claim],
) -> (Vec<Option<String>>, usize) {
    let mut claims = config_claims(&cfg.ingress.http, &cfg.ingress.https);
    let first_l4 = claims.len();
    claims.extend_from_slice(l4);
    let mut at = Vec::new();
    for (p, plan) in plans.iter().enumerate() {
        let Some(ip) = plan.addr else { continue };
        for (i, l) in plan.listeners.iter().enumerate() {
            if l.proto.is_none() || l.accepted.is_err() || l.conflicted.is_some() {
                continue;
            }
            at.push((p, i));
            claims.push(Claim {
                transport: Transport::Tcp,
                addr: SocketAddr::new(ip, l.port),
                kind: OwnerKind::Gateway,
                age: Some(age_of(plan.obj)),
                owner: format!("Gateway {}/{}", plan.ns, plan.name),
            });
        }
    }
    let lost = resolve(&claims);
    let first_gw = first_l4 + l4.len();
    let gateway_lost = lost[first_gw..].iter().filter(|w| w.is_some()).count();
    for ((p, i), lost) in at.into_iter().zip(&lost[first_gw..]) {
        if let Some(w) = lost {
            let l = &mut plans[p].listeners[i];
            let addr = SocketAddr::new(plans[p].addr.unwrap_or(IpAddr::from([0, 0, 0, 0])), l.port);
            l.accepted = Err(Reason::new(
                "PortUnavailable",
                format!(
                    "{addr} belongs to {} (one owner per address and port: lb.toml listeners first, then the older object)",
                    claims[*w].owner
                ),
            ));
        }
    }
    let l4_lost = lost[first_l4..first_gw]
        .iter()
        .map(|w| w.map(|w| claims[w].owner.clone()))
        .collect();
    (l4_lost, gateway_lost)
}

/// `Accepted=False`, reason `InvalidParameters`, for a Gateway with
/// `spec.infrastructure.parametersRef`: lb takes no infrastructure
/// parameters, so every referent is of an unsupported kind (the spec's
/// "cannot be found, refers to an unsupported kind" case).
fn invalid_parameters(gw: &Typed<Gateway>) -> Result<(), Reason> {
    let Some(r) = gw
        .value
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.get("parametersRef"))
    else {
        return Ok(());
    };
    let field = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    Err(Reason::new(
        "InvalidParameters",
        format!(
            "infrastructure.parametersRef {}/{} {:?}: lb supports no infrastructure parameters",
            field("group"),
            field("kind"),
            field("name")
        ),
    ))
}

/// Whether lb can bind `ip` on this host. Compilation is pure, so it cannot
/// try; the rule is: a loopback address (127.0.0.0/8, ::1), an address of
/// this node (`[node].addresses`) or one inside `[loadbalancer].pools` (the
/// addresses the operator routes to this appliance) is usable, anything
/// else is `AddressNotUsable`.
pub(crate) fn usable_address(cfg: &Settings, ip: IpAddr) -> bool {
    ip.is_loopback()
        || cfg.node.addresses.contains(&ip)
        || cfg.loadbalancer.pools.iter().any(|p| p.contains(&ip))
}

/// Addresses: every `spec.addresses[]` entry must be of type `IPAddress`
/// (else the Gateway is not Accepted: `UnsupportedAddress`) and every
/// requested IP must be [`usable_address`] (else it is not Programmed:
/// `AddressNotUsable`, and nothing is bound). The first requested IP is
/// bound; without one, a pool address is allocated (in namespace/name
/// order, the store's).
fn assign_addresses(ctx: &mut Ctx<'_, '_>, plans: &mut [GatewayPlan<'_>], l4: &[Claim]) {
    let mut taken: BTreeSet<IpAddr> = l4.iter().map(|c| c.addr.ip()).collect();
    let mut wanted = Vec::with_capacity(plans.len());
    for plan in plans.iter_mut() {
        let mut want: Option<IpAddr> = None;
        let mut unusable = Vec::new();
        for (i, a) in plan.gw.value.spec.addresses.iter().enumerate() {
            let ty = a.type_.as_deref().unwrap_or("IPAddress");
            if ty != "IPAddress" {
                if plan.accepted.is_ok() {
                    plan.accepted = Err(Reason::new(
                        "UnsupportedAddress",
                        format!("address type {ty} is not supported; lb assigns IP addresses"),
                    ));
                }
                continue;
            }
            match a.value.parse::<IpAddr>() {
                Ok(ip) if !usable_address(ctx.cfg, ip) => unusable.push(ip.to_string()),
                Ok(ip) => match want {
                    None => want = Some(ip),
                    Some(first) if first != ip => ctx.warn(
                        plan.obj,
                        &format!("spec.addresses[{i}]"),
                        format!("only the first address ({first}) is bound; {ip} is not"),
                    ),
                    Some(_) => {}
                },
                Err(_) => ctx.warn(
                    plan.obj,
                    &format!("spec.addresses[{i}].value"),
                    format!("{:?} is not an IP address; an address is allocated from [loadbalancer].pools", a.value),
                ),
            }
        }
        if !unusable.is_empty() {
            plan.address_error = Some(Reason::new(
                "AddressNotUsable",
                format!(
                    "{} cannot be bound here: lb binds loopback addresses, [node].addresses and addresses in [loadbalancer].pools",
                    unusable.join(", ")
                ),
            ));
            want = None;
        }
        if let Some(ip) = want {
            taken.insert(ip);
        }
        wanted.push(want);
    }
    // Without a request, the address in status (where an earlier lb put it)
    // is kept while it is in a pool and free; plans are in store order.
    let kept: Vec<Option<IpAddr>> = plans
        .iter()
        .zip(&wanted)
        .map(|(plan, want)| {
            if want.is_some() || plan.accepted.is_err() || plan.address_error.is_some() {
                return None;
            }
            let ip = status_address(plan.gw)?;
            let free =
                ctx.cfg.loadbalancer.pools.iter().any(|p| p.contains(&ip)) && !taken.contains(&ip);
            free.then(|| {
                taken.insert(ip);
                ip
            })
        })
        .collect();
    for ((plan, want), kept) in plans.iter_mut().zip(wanted).zip(kept) {
        if plan.accepted.is_err() || plan.address_error.is_some() {
            continue;
        }
        plan.addr = want.or(kept).or_else(|| {
            let ip = allocate(
                &ctx.cfg.loadbalancer.pools,
                &format!("{}/{}", plan.ns, plan.name),
                &taken,
            )?;
            taken.insert(ip);
            Some(ip)
        });
    }
}

/// The first IP address in a Gateway's `status.addresses`.
fn status_address(gw: &Typed<Gateway>) -> Option<IpAddr> {
    gw.value
        .status
        .as_ref()?
        .get("addresses")?
        .as_array()?
        .iter()
        .find_map(|a| a.get("value")?.as_str()?.parse().ok())
}

fn plan_listener(ctx: &mut Ctx<'_, '_>, gw_ns: &str, i: usize, l: &Listener) -> ListenerPlan {
    let mut plan = ListenerPlan {
        name: l.name.clone(),
        field: format!("spec.listeners[{i}]"),
        port: u16::try_from(l.port).unwrap_or(0),
        proto: None,
        hostname: None,
        kinds: Vec::new(),
        from: FromNamespaces::Same,
        accepted: Ok(()),
        resolved: Ok(()),
        conflicted: None,
        cert: None,
        attached: 0,
        entries: Vec::new(),
        sni: Vec::new(),
        tcp: Vec::new(),
        overlapping: None,
        programmed: false,
    };
    let tls_mode = l.tls.as_ref().and_then(|t| t.mode.as_deref());
    plan.proto = match l.protocol.as_str() {
        "HTTP" => Some(Proto::Http),
        "HTTPS" => Some(Proto::Https),
        "TLS" => Some(Proto::Tls),
        "TCP" => Some(Proto::Tcp),
        other => {
            plan.accepted = Err(Reason::new(
                "UnsupportedProtocol",
                format!("protocol {other} is not supported (HTTP, HTTPS, TLS and TCP are)"),
            ));
            return plan;
        }
    };
    match (plan.proto, tls_mode.unwrap_or("Terminate")) {
        (Some(Proto::Https), m) if m != "Terminate" => {
            plan.accepted = Err(Reason::new(
                "UnsupportedValue",
                format!("HTTPS listeners terminate TLS; tls.mode {m} is not supported"),
            ));
        }
        (Some(Proto::Tls), m) if m != "Passthrough" || tls_mode.is_none() => {
            plan.accepted = Err(Reason::new(
                "UnsupportedValue",
                format!("TLS listeners support tls.mode Passthrough only, not {m}"),
            ));
        }
        _ => {}
    }
    if plan.proto != Some(Proto::Tcp)
        && let Some(h) = l.hostname.as_deref().filter(|h| !h.is_empty())
    {
        match HostnameMatch::parse(h) {
            Ok(h) => plan.hostname = Some(h),
            Err(e) => plan.accepted = Err(Reason::new("UnsupportedValue", e.to_string())),
        }
    }
    if plan.proto == Some(Proto::Https) {
        let refs = l
            .tls
            .as_ref()
            .map(|t| t.certificate_refs.as_slice())
            .unwrap_or_default();
        if refs.is_empty() {
            plan.resolved = Err(Reason::new(
                "InvalidCertificateRef",
                "an HTTPS listener needs tls.certificateRefs",
            ));
        }
        for r in refs {
            match certificate(ctx.store, gw_ns, r) {
                Ok(c) => {
                    plan.cert.get_or_insert(c);
                }
                Err(e) => {
                    if plan.resolved.is_ok() {
                        plan.resolved = Err(e);
                    }
                }
            }
        }
    }
    let supported = plan.proto.map(Proto::kinds).unwrap_or_default();
    let allowed = l.allowed_routes.as_ref();
    match allowed
        .map(|a| a.kinds.as_slice())
        .filter(|k| !k.is_empty())
    {
        None => plan.kinds = supported.to_vec(),
        Some(kinds) => {
            let mut invalid = Vec::new();
            for k in kinds {
                let group = k.group.as_deref().unwrap_or(GATEWAY_GROUP);
                match supported.iter().find(|s| **s == k.kind) {
                    Some(s) if group == GATEWAY_GROUP => {
                        if !plan.kinds.contains(s) {
                            plan.kinds.push(s);
                        }
                    }
                    _ => invalid.push(format!("{group}/{}", k.kind)),
                }
            }
            if !invalid.is_empty() && plan.resolved.is_ok() {
                plan.resolved = Err(Reason::new(
                    "InvalidRouteKinds",
                    format!(
                        "route kinds {} are not supported on a {} listener",
                        invalid.join(", "),
                        l.protocol
                    ),
                ));
            }
        }
    }
    plan.from = match allowed.and_then(|a| a.namespaces.as_ref()) {
        Some(n) => match n.from.as_deref() {
            Some("All") => FromNamespaces::All,
            Some("Selector") => FromNamespaces::Selector(n.selector.clone()),
            _ => FromNamespaces::Same,
        },
        None => FromNamespaces::Same,
    };
    plan
}

/// Marks the indistinct Listeners of one Gateway Conflicted.
fn conflicts_within(listeners: &mut [ListenerPlan]) {
    let mut by_port: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if l.accepted.is_ok() && l.proto.is_some() {
            by_port.entry(l.port).or_default().push(i);
        }
    }
    for (port, group) in by_port {
        let protos: BTreeSet<Proto> = group.iter().filter_map(|&i| listeners[i].proto).collect();
        if protos.len() > 1 {
            for &i in &group {
                listeners[i].conflicted = Some(Reason::new(
                    "ProtocolConflict",
                    format!("port {port} is used with different protocols"),
                ));
            }
            continue;
        }
        for &i in &group {
            let clash = group.iter().any(|&j| {
                j != i
                    && (listeners[i].proto == Some(Proto::Tcp)
                        || listeners[j].hostname == listeners[i].hostname)
            });
            if clash {
                listeners[i].conflicted = Some(Reason::new(
                    "HostnameConflict",
                    format!("another listener on port {port} has the same protocol and hostname"),
                ));
            }
        }
    }
}

/// Marks HTTPS Listeners of one Gateway that share a port and whose
/// hostnames overlap (one is within the other, e.g. `*.example.com` and
/// `foo.example.com`) `OverlappingTLSConfig=True`, reason
/// `OverlappingHostnames`, on both, as the spec asks. Informational: both
/// stay Accepted and serve, the most specific hostname first. A Listener
/// without a hostname (the port's default certificate) overlaps nothing.
fn overlapping_tls(listeners: &mut [ListenerPlan]) {
    let https: Vec<usize> = (0..listeners.len())
        .filter(|&i| {
            let l = &listeners[i];
            l.proto == Some(Proto::Https)
                && l.accepted.is_ok()
                && l.conflicted.is_none()
                && l.hostname.is_some()
        })
        .collect();
    for &i in &https {
        let others: Vec<&str> = https
            .iter()
            .filter(|&&j| j != i && listeners[j].port == listeners[i].port)
            .filter(
                |&&j| match (&listeners[i].hostname, &listeners[j].hostname) {
                    (Some(a), Some(b)) => a.within(b) || b.within(a),
                    _ => false,
                },
            )
            .map(|&j| listeners[j].name.as_str())
            .collect();
        if !others.is_empty() {
            let message = format!(
                "hostname overlaps with listener(s) {} on port {}",
                others.join(", "),
                listeners[i].port
            );
            listeners[i].overlapping = Some(Reason::new("OverlappingHostnames", message));
        }
    }
}

/// Between Gateways on one address, the older keeps a clashing port.
fn conflicts_across(plans: &mut [GatewayPlan<'_>]) {
    let mut owners: BTreeMap<SocketAddr, (Proto, Vec<Option<HostnameMatch>>, String)> =
        BTreeMap::new();
    for plan in plans.iter_mut() {
        let Some(ip) = plan.addr else { continue };
        let me = format!("{}/{}", plan.ns, plan.name);
        for l in &mut plan.listeners {
            let Some(proto) = l.proto else { continue };
            if l.accepted.is_err() || l.conflicted.is_some() {
                continue;
            }
            let at = SocketAddr::new(ip, l.port);
            match owners.get_mut(&at) {
                None => {
                    owners.insert(at, (proto, vec![l.hostname.clone()], me.clone()));
                }
                Some((p, _, owner)) if *p != proto => {
                    l.conflicted = Some(Reason::new(
                        "ProtocolConflict",
                        format!("{at} is already served with another protocol by Gateway {owner}"),
                    ));
                }
                Some((_, hosts, owner))
                    if *owner != me && (proto == Proto::Tcp || hosts.contains(&l.hostname)) =>
                {
                    l.conflicted = Some(Reason::new(
                        "HostnameConflict",
                        format!("{at} already serves this hostname for Gateway {owner}"),
                    ));
                }
                Some((_, hosts, _)) => hosts.push(l.hostname.clone()),
            }
        }
    }
}
