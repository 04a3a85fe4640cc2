//! The kinds lb reads from the API server: where each lives (group, plural,
//! scope), which versions lb understands (most preferred first), how its
//! objects become [`RawObject`]s, and which changes matter to a compile.

use kube::api::{ApiResource, DynamicObject};

use crate::source::{Document, Origin, RawObject};

/// The Gateway API's group: its kinds are CRDs, served only where installed.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// One kind lb reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSpec {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// `kind`.
    pub kind: &'static str,
    /// The resource's plural name in URLs.
    pub plural: &'static str,
    /// Versions lb reads, most preferred first. Built-in kinds have one.
    pub versions: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// A field selector, if only some objects matter.
    pub fields: Option<&'static str>,
}

impl KindSpec {
    /// Whether the kind is a CRD that a cluster may or may not serve (its
    /// versions are found by discovery); built-in kinds are always served.
    pub fn discovered(&self) -> bool {
        self.group == GATEWAY_GROUP
    }

    /// `apiVersion` of the kind at `version`.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The kind's resource at `version`, for a dynamic `Api`.
    pub fn resource(&self, version: &str) -> ApiResource {
        ApiResource {
            group: self.group.to_owned(),
            version: version.to_owned(),
            api_version: self.api_version(version),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }
}

const V1: &[&str] = &["v1"];

const fn builtin(group: &'static str, kind: &'static str, plural: &'static str) -> KindSpec {
    KindSpec {
        group,
        kind,
        plural,
        versions: V1,
        namespaced: true,
        fields: None,
    }
}

const fn gateway(
    kind: &'static str,
    plural: &'static str,
    versions: &'static [&'static str],
) -> KindSpec {
    KindSpec {
        group: GATEWAY_GROUP,
        kind,
        plural,
        versions,
        namespaced: true,
        fields: None,
    }
}

/// Every kind lb reads from the API server. Pods and NetworkPolicies are not
/// among them: nothing lb serves depends on them yet.
pub const KINDS: &[KindSpec] = &[
    KindSpec {
        namespaced: false,
        ..builtin("", "Namespace", "namespaces")
    },
    builtin("", "Service", "services"),
    builtin("discovery.k8s.io", "EndpointSlice", "endpointslices"),
    KindSpec {
        fields: Some("type=kubernetes.io/tls"),
        ..builtin("", "Secret", "secrets")
    },
    KindSpec {
        namespaced: false,
        ..builtin("networking.k8s.io", "IngressClass", "ingressclasses")
    },
    builtin("networking.k8s.io", "Ingress", "ingresses"),
    KindSpec {
        namespaced: false,
        ..gateway("GatewayClass", "gatewayclasses", &["v1", "v1beta1"])
    },
    gateway("Gateway", "gateways", &["v1", "v1beta1"]),
    gateway("HTTPRoute", "httproutes", &["v1", "v1beta1"]),
    gateway("GRPCRoute", "grpcroutes", &["v1"]),
    gateway("ReferenceGrant", "referencegrants", &["v1", "v1beta1"]),
    gateway("TLSRoute", "tlsroutes", &["v1", "v1alpha3", "v1alpha2"]),
    gateway("TCPRoute", "tcproutes", &["v1", "v1alpha2"]),
];

/// The spec of `kind`, if lb reads it from the API server.
pub fn spec_of(kind: &str) -> Option<&'static KindSpec> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// A watched object as a [`RawObject`]: kind and apiVersion filled in (list
/// items carry neither), managedFields dropped.
pub fn raw_object(spec: &KindSpec, version: &str, obj: DynamicObject) -> Option<RawObject> {
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
    fn every_kind_is_one_the_model_reads_and_pods_are_not_watched() {
        for spec in KINDS {
            let info = lb_compile::model::kind_info(spec.kind).expect(spec.kind);
            assert_eq!(info.namespaced, spec.namespaced, "{}", spec.kind);
            for v in spec.versions {
                assert!(
                    info.api_versions.contains(&spec.api_version(v).as_str()),
                    "{} {v}",
                    spec.kind
                );
            }
        }
        assert!(spec_of("Pod").is_none() && spec_of("NetworkPolicy").is_none());
        assert!(spec_of("Secret").unwrap().fields == Some("type=kubernetes.io/tls"));
        assert!(spec_of("TCPRoute").unwrap().discovered());
        assert!(!spec_of("Ingress").unwrap().discovered());
    }
}
