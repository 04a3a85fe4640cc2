//! References out of Gateway API objects: ReferenceGrant checks for
//! cross-namespace refs, route `backendRefs` resolved to Service ports and
//! then to shared [`Backend`]s, and Listener `certificateRefs` resolved to
//! certificates.

use k8s_openapi::api::core::v1::{Service, ServicePort};
use lb_http::balance::Policy;
use lb_http::snapshot::UpstreamProtocol;
use lb_http::tls::Certificate;
use lb_http::{Backend, BackendId};

use super::Ctx;
use super::status::Reason;
use crate::endpoints::TrafficPath;
use crate::model::gateway::{BackendRef, SecretObjectReference};
use crate::model::{Object, Typed};
use crate::store::Store;

/// The Gateway API group.
pub(crate) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Whether a ReferenceGrant in `to_ns` lets objects of `from_kind` in
/// `from_ns` refer to the `to_kind` object `to_name` (group `to_group`).
pub(crate) fn granted(
    store: &Store,
    from_kind: &str,
    from_ns: &str,
    to_group: &str,
    to_kind: &str,
    to_ns: &str,
    to_name: &str,
) -> bool {
    store.of_kind("ReferenceGrant").any(|o| {
        let Object::ReferenceGrant(g) = o else {
            return false;
        };
        g.value.metadata.namespace.as_deref() == Some(to_ns)
            && g.value
                .spec
                .from
                .iter()
                .any(|f| f.group == GATEWAY_GROUP && f.kind == from_kind && f.namespace == from_ns)
            && g.value.spec.to.iter().any(|t| {
                t.group == to_group
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == to_name)
            })
    })
}

/// A `backendRef` that names an existing, permitted Service port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServiceRef<'s> {
    svc: &'s Typed<Service>,
    port: &'s ServicePort,
}

/// Checks a `backendRef` of a `route_kind` in `route_ns`: kind, permission,
/// existence, port. The first failure decides the `ResolvedRefs` reason.
pub(crate) fn check_backend<'s>(
    store: &'s Store,
    route_kind: &str,
    route_ns: &str,
    r: &BackendRef,
) -> Result<ServiceRef<'s>, Reason> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err(Reason::new(
            "InvalidKind",
            format!(
                "backendRef {:?} is a {kind} of group {group:?}; lb routes to core Services only",
                r.name
            ),
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(route_ns);
    if ns != route_ns && !granted(store, route_kind, route_ns, "", "Service", ns, &r.name) {
        return Err(Reason::new(
            "RefNotPermitted",
            format!(
                "Service {ns}/{} is in another namespace and no ReferenceGrant there permits {route_kind}s from {route_ns}",
                r.name
            ),
        ));
    }
    let Some(Object::Service(svc)) = store.find("Service", Some(ns), &r.name) else {
        return Err(Reason::new(
            "BackendNotFound",
            format!("Service {ns}/{} not found", r.name),
        ));
    };
    let Some(number) = r.port else {
        return Err(Reason::new(
            "BackendNotFound",
            format!("backendRef to Service {ns}/{} has no port", r.name),
        ));
    };
    let ports = svc
        .value
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let tcp = |p: &&ServicePort| p.protocol.as_deref().unwrap_or("TCP") == "TCP";
    let Some(port) = ports.iter().filter(|p| p.port == number).find(tcp) else {
        return Err(Reason::new(
            "BackendNotFound",
            format!("Service {ns}/{} has no TCP port {number}", r.name),
        ));
    };
    Ok(ServiceRef { svc, port })
}

/// The shared backend for a checked ref: an existing one with the same
/// `namespace/service:port` name, protocol and round-robin policy, else a
/// new one with the Service port's endpoints (ClusterIP traffic path).
/// `grpc` makes the upstream protocol h2c whatever the `appProtocol` says.
pub(crate) fn backend_id(ctx: &mut Ctx<'_, '_>, r: ServiceRef<'_>, grpc: bool) -> BackendId {
    let meta = &r.svc.value.metadata;
    let name = format!(
        "{}/{}:{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        r.port.port
    );
    let protocol = match r.port.app_protocol.as_deref() {
        Some("kubernetes.io/h2c" | "h2c" | "grpc") => UpstreamProtocol::H2c,
        _ if grpc => UpstreamProtocol::H2c,
        _ => UpstreamProtocol::Http1,
    };
    if let Some(i) = ctx
        .backends
        .iter()
        .position(|b| b.name == name && b.protocol == protocol && b.policy == Policy::RoundRobin)
    {
        return BackendId(i as u32);
    }
    let selection = crate::endpoints::select(
        ctx.slices,
        r.svc,
        r.port,
        TrafficPath::Internal,
        &ctx.cfg.node,
        &mut ctx.findings,
    );
    ctx.diags.extend(ctx.findings.drain());
    ctx.backends.push(Backend {
        name,
        endpoints: selection.addrs(),
        protocol,
        policy: Policy::RoundRobin,
        health: None,
    });
    BackendId((ctx.backends.len() - 1) as u32)
}

/// Resolves one `certificateRef` of a Listener of the Gateway in `gw_ns`.
/// `RefNotPermitted` for an ungranted cross-namespace ref, else
/// `InvalidCertificateRef` for a wrong kind, a missing Secret or bad data.
pub(crate) fn certificate(
    store: &Store,
    gw_ns: &str,
    r: &SecretObjectReference,
) -> Result<Certificate, Reason> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return Err(Reason::new(
            "InvalidCertificateRef",
            format!(
                "certificateRef {:?} is a {kind} of group {group:?}; only Secrets are supported",
                r.name
            ),
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(gw_ns);
    let source = format!("{ns}/{}", r.name);
    if ns != gw_ns && !granted(store, "Gateway", gw_ns, "", "Secret", ns, &r.name) {
        return Err(Reason::new(
            "RefNotPermitted",
            format!(
                "Secret {source} is in another namespace and no ReferenceGrant there permits Gateways from {gw_ns}"
            ),
        ));
    }
    match store.find("Secret", Some(ns), &r.name) {
        Some(Object::Secret(s)) => s
            .value
            .certificate(&source)
            .map_err(|e| Reason::new("InvalidCertificateRef", e)),
        _ => Err(Reason::new(
            "InvalidCertificateRef",
            format!("Secret {source} not found"),
        )),
    }
}
