//! The kinds lb reads from the API server (those of the model's registry,
//! [`lb_compile::model::KINDS`], that are watched), how their objects
//! become [`RawObject`]s, and which changes matter to a compile.

use kube::api::{ApiResource, DynamicObject};

use lb_compile::raw::{Document, Origin, RawObject};

pub use lb_compile::model::KindInfo;

/// Every kind lb reads from the API server: the model's kinds that are
/// [`KindInfo::watched`].
pub fn watched() -> impl Iterator<Item = &'static KindInfo> {
    lb_compile::model::KINDS.iter().filter(|k| k.watched)
}

/// The kind named `kind`, if lb reads it from the API server.
pub fn spec_of(kind: &str) -> Option<&'static KindInfo> {
    lb_compile::model::kind_info(kind).filter(|k| k.watched)
}

/// The kind's resource at `version`, for a dynamic `Api`.
pub fn resource(spec: &KindInfo, version: &str) -> ApiResource {
    ApiResource {
        group: spec.group.to_owned(),
        version: version.to_owned(),
        api_version: spec.api_version(version),
        kind: spec.kind.to_owned(),
        plural: spec.plural.to_owned(),
    }
}

/// A watched object as a [`RawObject`]: kind and apiVersion filled in (list
/// items carry neither), managedFields dropped.
pub fn raw_object(spec: &KindInfo, version: &str, obj: DynamicObject) -> Option<RawObject> {
    let mut value = serde_json::to_value(obj).ok()?;
    let map = value.as_object_mut()?;
    let api_version = spec.api_version(version);
    map.insert("kind".into(), spec.kind.into());
    map.insert("apiVersion".into(), api_version.clone().into());
    let metadata = map.get_mut("metadata")?.as_object_mut()?;
    metadata.remove("managedFields");
    let name = metadata.get("name")?.as_str()?.to_owned();
    let namespace = metadata
        .get("namespace")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    Some(RawObject {
        kind: spec.kind.to_owned(),
        api_version,
        namespace,
        name,
        doc: Document::from_value(value),
        origin: Origin::kubernetes(),
    })
}

/// Whether two versions of an object compile the same: they differ at most
/// in `metadata.resourceVersion` and, except for Services and Gateways
/// (whose status carries the addresses allocation reads back), in
/// `status`. lb's own status writes come back as such events and cause no
/// reload.
pub fn same_for_compile(a: &RawObject, b: &RawObject) -> bool {
    if a == b {
        return true;
    }
    let strip = |raw: &RawObject| {
        let mut v = raw.doc.value().cloned().unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            if raw.kind != "Service" && raw.kind != "Gateway" {
                map.remove("status");
            }
            if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                meta.remove("resourceVersion");
            }
        }
        v
    };
    a.kind == b.kind && a.origin == b.origin && strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: &str, rv: &str, status: &str) -> RawObject {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "namespace": "d", "resourceVersion": rv},
            "spec": {},
            "status": {"note": status}
        }))
        .unwrap();
        raw_object(spec_of(kind).unwrap(), "v1", obj).unwrap()
    }

    #[test]
    fn list_items_get_kind_and_api_version() {
        let spec = spec_of("TLSRoute").unwrap();
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "r", "namespace": "team", "managedFields": [{}], "resourceVersion": "7"},
            "spec": {"hostnames": ["a.example.com"]}
        }))
        .unwrap();
        let raw = raw_object(spec, "v1alpha2", obj).unwrap();
        assert_eq!(raw.kind, "TLSRoute");
        assert_eq!(raw.api_version, "gateway.networking.k8s.io/v1alpha2");
        assert_eq!(raw.namespace.as_deref(), Some("team"));
        assert_eq!(raw.name, "r");
        assert_eq!(raw.doc.value().unwrap()["kind"], "TLSRoute");
        assert_eq!(
            raw.doc.value().unwrap()["apiVersion"],
            "gateway.networking.k8s.io/v1alpha2"
        );
        assert!(
            raw.doc.value().unwrap()["metadata"]
                .get("managedFields")
                .is_none()
        );
        assert!(raw.origin.is_kubernetes());
    }

    #[test]
    fn status_only_changes_reload_nothing_except_on_services() {
        assert!(same_for_compile(
            &raw("Ingress", "1", "a"),
            &raw("Ingress", "2", "b")
        ));
        assert!(same_for_compile(
            &raw("Service", "1", "a"),
            &raw("Service", "2", "a")
        ));
        assert!(!same_for_compile(
            &raw("Service", "1", "a"),
            &raw("Service", "2", "b")
        ));
    }

    #[test]
    fn the_watched_kinds_are_the_models_but_pods_and_network_policies() {
        let names: Vec<&str> = watched().map(|k| k.kind).collect();
        assert_eq!(
            names,
            [
                "Namespace",
                "Secret",
                "Service",
                "EndpointSlice",
                "Ingress",
                "IngressClass",
                "GatewayClass",
                "Gateway",
                "HTTPRoute",
                "GRPCRoute",
                "TLSRoute",
                "TCPRoute",
                "ReferenceGrant"
            ]
        );
        for spec in watched() {
            for v in spec.versions {
                assert!(spec.accepts(&spec.api_version(v)), "{} {v}", spec.kind);
            }
        }
        assert!(spec_of("Pod").is_none() && spec_of("NetworkPolicy").is_none());
        assert!(spec_of("Secret").unwrap().fields == Some("type=kubernetes.io/tls"));
        assert!(spec_of("TCPRoute").unwrap().is_crd());
        assert!(!spec_of("Ingress").unwrap().is_crd());
        let r = resource(spec_of("EndpointSlice").unwrap(), "v1");
        assert_eq!(
            (r.api_version.as_str(), r.plural.as_str()),
            ("discovery.k8s.io/v1", "endpointslices")
        );
    }
}
