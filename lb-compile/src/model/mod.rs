//! Typed, validated Kubernetes objects: the kind registry (API groups,
//! scope), deserialization of raw objects into Kubernetes' own schemas with
//! field paths in every error, and the semantic checks that make an object
//! invalid. Submodules hold the kinds by API group.

pub mod core;
pub mod gateway;
pub mod ingress;
mod route_values;
pub mod validate;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::de::DeserializeOwned;

use crate::diag::{Diagnostic, Severity};
use crate::raw::{Origin, RawObject};

/// The namespace of namespaced objects that do not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// What lb knows about a kind: the one registry that the model (which
/// kinds and apiVersions a manifest may use), the store (scope) and the
/// Kubernetes API server source (what to list and watch, where) read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// The kind name, e.g. `Ingress`.
    pub kind: &'static str,
    /// API group, empty for the core group.
    pub group: &'static str,
    /// Versions lb reads, most preferred first: a manifest may use any of
    /// them; the API server source reads the first one the server serves.
    pub versions: &'static [&'static str],
    /// The resource's plural name in API URLs.
    pub plural: &'static str,
    /// Whether objects of this kind live in a namespace.
    pub namespaced: bool,
    /// Whether the API server source lists and watches the kind (Pods and
    /// NetworkPolicies are read from files only: nothing lb serves depends
    /// on them yet).
    pub watched: bool,
    /// A field selector for the API server's list and watch, if only some
    /// objects matter.
    pub fields: Option<&'static str>,
}

/// The Gateway API's group: its kinds are CRDs, served only where installed.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

impl KindInfo {
    /// `apiVersion` of the kind at `version`.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether `api_version` is one lb reads for this kind.
    pub fn accepts(&self, api_version: &str) -> bool {
        let version = if self.group.is_empty() {
            Some(api_version)
        } else {
            api_version
                .strip_prefix(self.group)
                .and_then(|v| v.strip_prefix('/'))
        };
        version.is_some_and(|v| self.versions.contains(&v))
    }

    /// Whether the kind is a CRD that a cluster may or may not serve (the
    /// API server source finds its versions by discovery); built-in kinds
    /// are always served.
    pub fn is_crd(&self) -> bool {
        self.group == GATEWAY_GROUP
    }
}

const V1: &[&str] = &["v1"];
/// Gateway API versions: each kind is read at any of them (a cluster
/// serves the ones its CRDs define).
const GATEWAY_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3", "v1alpha2"];

/// A built-in kind at `v1` (its group may be empty: the core group).
const fn builtin(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> KindInfo {
    KindInfo {
        kind,
        group,
        versions: V1,
        plural,
        namespaced,
        watched: true,
        fields: None,
    }
}

/// A Gateway API kind, at any of [`GATEWAY_VERSIONS`].
const fn gateway(kind: &'static str, plural: &'static str, namespaced: bool) -> KindInfo {
    KindInfo {
        versions: GATEWAY_VERSIONS,
        ..builtin(GATEWAY_GROUP, kind, plural, namespaced)
    }
}

/// Every kind lb reads.
pub const KINDS: &[KindInfo] = &[
    builtin("", "Namespace", "namespaces", false),
    KindInfo {
        watched: false,
        ..builtin("", "Pod", "pods", true)
    },
    KindInfo {
        fields: Some("type=kubernetes.io/tls"),
        ..builtin("", "Secret", "secrets", true)
    },
    builtin("", "Service", "services", true),
    builtin("discovery.k8s.io", "EndpointSlice", "endpointslices", true),
    builtin("networking.k8s.io", "Ingress", "ingresses", true),
    builtin("networking.k8s.io", "IngressClass", "ingressclasses", false),
    KindInfo {
        watched: false,
        ..builtin(
            "networking.k8s.io",
            "NetworkPolicy",
            "networkpolicies",
            true,
        )
    },
    gateway("GatewayClass", "gatewayclasses", false),
    gateway("Gateway", "gateways", true),
    gateway("HTTPRoute", "httproutes", true),
    gateway("GRPCRoute", "grpcroutes", true),
    gateway("TLSRoute", "tlsroutes", true),
    gateway("TCPRoute", "tcproutes", true),
    gateway("ReferenceGrant", "referencegrants", true),
];

/// Looks a kind up by name.
pub fn kind_info(kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// Identity of an object in the store; ordered kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjectKey {
    /// Kind.
    pub kind: String,
    /// Namespace (`None` for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// An [`ObjectKey`] seen through borrowed parts, so that the store can be
/// searched without building a key (`Store::find`).
pub trait KeyParts {
    /// Kind, namespace and name.
    fn parts(&self) -> (&str, Option<&str>, &str);
}

impl KeyParts for ObjectKey {
    fn parts(&self) -> (&str, Option<&str>, &str) {
        (&self.kind, self.namespace.as_deref(), &self.name)
    }
}

impl KeyParts for (&str, Option<&str>, &str) {
    fn parts(&self) -> (&str, Option<&str>, &str) {
        *self
    }
}

// Ordered as `ObjectKey` derives it (kind, namespace, name), as
// `Borrow` requires.
impl<'a> std::borrow::Borrow<dyn KeyParts + 'a> for ObjectKey {
    fn borrow(&self) -> &(dyn KeyParts + 'a) {
        self
    }
}

impl PartialEq for dyn KeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyParts + '_ {}

impl PartialOrd for dyn KeyParts + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn KeyParts + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A typed object and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Typed<T> {
    /// Where the object was read.
    pub origin: Origin,
    /// The object in its Kubernetes schema.
    pub value: T,
}

/// A validated object of one of the kinds lb reads.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // each variant is named after its kind
pub enum Object {
    Namespace(Box<Typed<Namespace>>),
    Pod(Box<Typed<Pod>>),
    Secret(Box<Typed<core::SecretObject>>),
    Service(Box<Typed<Service>>),
    EndpointSlice(Box<Typed<EndpointSlice>>),
    Ingress(Box<Typed<Ingress>>),
    IngressClass(Box<Typed<IngressClass>>),
    NetworkPolicy(Box<Typed<NetworkPolicy>>),
    GatewayClass(Box<Typed<gateway::GatewayClass>>),
    Gateway(Box<Typed<gateway::Gateway>>),
    HttpRoute(Box<Typed<gateway::HttpRoute>>),
    GrpcRoute(Box<Typed<gateway::GrpcRoute>>),
    TlsRoute(Box<Typed<gateway::TlsRoute>>),
    TcpRoute(Box<Typed<gateway::TcpRoute>>),
    ReferenceGrant(Box<Typed<gateway::ReferenceGrant>>),
}

macro_rules! each_object {
    ($obj:expr, $t:ident => $body:expr) => {
        match $obj {
            Object::Namespace($t) => $body,
            Object::Pod($t) => $body,
            Object::Secret($t) => $body,
            Object::Service($t) => $body,
            Object::EndpointSlice($t) => $body,
            Object::Ingress($t) => $body,
            Object::IngressClass($t) => $body,
            Object::NetworkPolicy($t) => $body,
            Object::GatewayClass($t) => $body,
            Object::Gateway($t) => $body,
            Object::HttpRoute($t) => $body,
            Object::GrpcRoute($t) => $body,
            Object::TlsRoute($t) => $body,
            Object::TcpRoute($t) => $body,
            Object::ReferenceGrant($t) => $body,
        }
    };
}

impl Object {
    /// The kind name as written in manifests.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
            Object::Secret(_) => "Secret",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Ingress(_) => "Ingress",
            Object::IngressClass(_) => "IngressClass",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::GatewayClass(_) => "GatewayClass",
            Object::Gateway(_) => "Gateway",
            Object::HttpRoute(_) => "HTTPRoute",
            Object::GrpcRoute(_) => "GRPCRoute",
            Object::TlsRoute(_) => "TLSRoute",
            Object::TcpRoute(_) => "TCPRoute",
            Object::ReferenceGrant(_) => "ReferenceGrant",
        }
    }

    /// The object's metadata (namespace already defaulted).
    pub fn meta(&self) -> &ObjectMeta {
        each_object!(self, t => &t.value.metadata)
    }

    /// Where the object was read.
    pub fn origin(&self) -> &Origin {
        each_object!(self, t => &t.origin)
    }

    /// Moves the object to document `index` of its file (a document typed
    /// before its place in the file was known).
    pub fn set_document(&mut self, index: usize) {
        each_object!(self, t => t.origin.set_document(index))
    }

    /// The store key.
    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        ObjectKey {
            kind: self.kind().to_owned(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// `metadata.creationTimestamp`, if set.
    pub fn creation_timestamp(&self) -> Option<&Time> {
        self.meta().creation_timestamp.as_ref()
    }

    /// Sort key for "the older object wins": creation time (objects without
    /// one after all that have one), then kind, namespace and name.
    pub fn age_key(&self) -> (bool, Option<&Time>, ObjectKey) {
        let created = self.creation_timestamp();
        (created.is_none(), created, self.key())
    }

    /// A diagnostic located at this object.
    pub fn diagnostic(&self, d: Diagnostic) -> Diagnostic {
        let meta = self.meta();
        let origin = self.origin();
        origin.locate(d).object(
            self.kind(),
            meta.namespace.as_deref(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

/// One problem found in an object, at a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Error makes the object invalid; Warning does not.
    pub severity: Severity,
    /// Field path, e.g. `spec.rules[0].host` (empty: the whole object).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Problems collected while validating one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Issues(pub Vec<Issue>);

impl Issues {
    /// Records an error (the object becomes invalid).
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            severity: Severity::Error,
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records a warning.
    pub fn warning(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            severity: Severity::Warning,
            field: field.into(),
            message: message.into(),
        });
    }

    /// Whether any error was recorded.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|i| i.severity == Severity::Error)
    }
}

/// The result of typing one raw object.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The object, when valid (and of a known kind).
    pub object: Option<Object>,
    /// Every problem found, located at the object.
    pub diagnostics: Vec<Diagnostic>,
    /// True when the object was of a known kind but invalid.
    pub invalid: bool,
    /// The typed object when it parsed but failed validation (for status
    /// reporting only: it is never served).
    pub rejected: Option<Object>,
}

/// Objects a source typed as it read them, by document id and origin.
pub type Pretyped = std::collections::HashMap<(u64, Origin), Parsed>;

impl Parsed {
    /// Moves everything located at document 0 of `file` to document
    /// `index` (see [`Object::set_document`]).
    pub fn set_document(&mut self, file: &std::path::Path, index: usize) {
        for o in self.object.iter_mut().chain(self.rejected.iter_mut()) {
            o.set_document(index);
        }
        for d in &mut self.diagnostics {
            if d.file.as_deref() == Some(file) {
                d.document = Some(index);
            }
        }
    }
}

/// Deserializes `raw` into its Kubernetes schema and validates it.
/// Unknown kinds give a warning and no object; invalid objects give errors and no object.
pub fn parse(raw: &RawObject) -> Parsed {
    let Some(info) = kind_info(&raw.kind) else {
        tracing::debug!(kind = %raw.kind, name = %raw.name, origin = %raw.origin, "unknown kind skipped");
        return Parsed {
            object: None,
            diagnostics: vec![raw.diagnostic(Diagnostic::warning(format!(
                "unknown kind {:?} ({}), skipped",
                raw.kind, raw.api_version
            )))],
            invalid: false,
            rejected: None,
        };
    };
    let fail = |issues: Issues| {
        let diagnostics = issues
            .0
            .into_iter()
            .map(|i| to_diagnostic(raw, info, i))
            .collect();
        Parsed {
            object: None,
            diagnostics,
            invalid: true,
            rejected: None,
        }
    };
    if !info.accepts(&raw.api_version) {
        let mut issues = Issues::default();
        issues.error(
            "apiVersion",
            format!(
                "apiVersion {:?} is not valid for kind {}; expected {}",
                raw.api_version,
                info.kind,
                info.versions
                    .iter()
                    .map(|v| info.api_version(v))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        );
        return fail(issues);
    }
    let mut value = match raw.doc.to_value() {
        Ok(v) => v,
        Err(e) => {
            let mut issues = Issues::default();
            issues.error("", e);
            return fail(issues);
        }
    };
    // Default the namespace in the document itself, so typed metadata agrees with the key.
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        if info.namespaced {
            let ns = raw
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
            meta.insert("namespace".into(), serde_json::Value::String(ns));
        } else {
            meta.remove("namespace");
        }
    }
    let mut issues = Issues::default();
    let object = match typed_object(info.kind, value, &raw.origin, &mut issues) {
        Ok(o) => o,
        Err(issue) => {
            issues.0.insert(0, issue);
            return fail(issues);
        }
    };
    if issues.has_errors() {
        let mut parsed = fail(issues);
        parsed.rejected = Some(object);
        return parsed;
    }
    Parsed {
        object: Some(object),
        diagnostics: issues
            .0
            .into_iter()
            .map(|i| to_diagnostic(raw, info, i))
            .collect(),
        invalid: false,
        rejected: None,
    }
}

fn to_diagnostic(raw: &RawObject, info: &KindInfo, issue: Issue) -> Diagnostic {
    let namespace = if info.namespaced {
        Some(raw.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE))
    } else {
        None
    };
    let d = match issue.severity {
        Severity::Error => Diagnostic::error(issue.message),
        Severity::Warning => Diagnostic::warning(issue.message),
    };
    raw.origin
        .locate(d)
        .object(raw.kind.clone(), namespace, raw.name.clone())
        .field(issue.field)
}

/// Deserializes with the failing field's path in the error.
pub fn deserialize<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Issue> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        Issue {
            severity: Severity::Error,
            field: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

fn typed_object(
    kind: &str,
    value: serde_json::Value,
    origin: &Origin,
    issues: &mut Issues,
) -> Result<Object, Issue> {
    fn wrap<T>(origin: &Origin, value: T) -> Box<Typed<T>> {
        Box::new(Typed {
            origin: origin.clone(),
            value,
        })
    }
    Ok(match kind {
        "Namespace" => Object::Namespace(wrap(origin, deserialize(value)?)),
        "Pod" => Object::Pod(wrap(origin, deserialize(value)?)),
        "Secret" => {
            let v = deserialize(value)?;
            Object::Secret(wrap(origin, core::SecretObject::new(v, issues)))
        }
        "Service" => {
            let v = deserialize(value)?;
            core::validate_service(&v, issues);
            Object::Service(wrap(origin, v))
        }
        "EndpointSlice" => {
            let v = deserialize(value)?;
            core::validate_endpoint_slice(&v, issues);
            Object::EndpointSlice(wrap(origin, v))
        }
        "Ingress" => {
            let v = deserialize(value)?;
            ingress::validate_ingress(&v, issues);
            Object::Ingress(wrap(origin, v))
        }
        "IngressClass" => Object::IngressClass(wrap(origin, deserialize(value)?)),
        "NetworkPolicy" => Object::NetworkPolicy(wrap(origin, deserialize(value)?)),
        "GatewayClass" => Object::GatewayClass(wrap(origin, deserialize(value)?)),
        "Gateway" => {
            let v = deserialize(value)?;
            gateway::validate_gateway(&v, issues);
            Object::Gateway(wrap(origin, v))
        }
        "HTTPRoute" => {
            let v = deserialize(value)?;
            gateway::validate_http_route(&v, issues);
            Object::HttpRoute(wrap(origin, v))
        }
        "GRPCRoute" => {
            let v = deserialize(value)?;
            gateway::validate_grpc_route(&v, issues);
            Object::GrpcRoute(wrap(origin, v))
        }
        "TLSRoute" => Object::TlsRoute(wrap(origin, deserialize(value)?)),
        "TCPRoute" => Object::TcpRoute(wrap(origin, deserialize(value)?)),
        "ReferenceGrant" => Object::ReferenceGrant(wrap(origin, deserialize(value)?)),
        other => {
            return Err(Issue {
                severity: Severity::Error,
                field: "kind".into(),
                message: format!("kind {other} is registered but has no schema"),
            });
        }
    })
}

/// Parses a YAML document into a [`RawObject`] for tests.
#[cfg(test)]
pub(crate) fn raw_from_yaml(yaml: &str) -> RawObject {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).expect("test YAML");
    let value: serde_json::Value = serde_json::to_value(&v).expect("json");
    let s = |p: &str| value.pointer(p).and_then(|v| v.as_str()).map(str::to_owned);
    RawObject {
        kind: s("/kind").unwrap_or_default(),
        api_version: s("/apiVersion").unwrap_or_default(),
        namespace: s("/metadata/namespace"),
        name: s("/metadata/name").unwrap_or_default(),
        origin: Origin::file("test.yaml", 0),
        doc: crate::raw::Document::from_value(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_and_defaults_namespace() {
        let docs = [
            ("v1", "Namespace", "{}"),
            ("v1", "Pod", "{spec: {containers: [{name: c}]}}"),
            ("v1", "Secret", "{type: Opaque, stringData: {a: b}}"),
            ("v1", "Service", "{spec: {ports: [{port: 80}]}}"),
            (
                "discovery.k8s.io/v1",
                "EndpointSlice",
                "{addressType: IPv4, endpoints: []}",
            ),
            ("networking.k8s.io/v1", "Ingress", "{spec: {}}"),
            (
                "networking.k8s.io/v1",
                "IngressClass",
                "{spec: {controller: x}}",
            ),
            (
                "networking.k8s.io/v1",
                "NetworkPolicy",
                "{spec: {podSelector: {}}}",
            ),
            (
                "gateway.networking.k8s.io/v1",
                "GatewayClass",
                "{spec: {controllerName: x}}",
            ),
            (
                "gateway.networking.k8s.io/v1",
                "Gateway",
                "{spec: {gatewayClassName: x, listeners: []}}",
            ),
            ("gateway.networking.k8s.io/v1", "HTTPRoute", "{spec: {}}"),
            ("gateway.networking.k8s.io/v1", "GRPCRoute", "{spec: {}}"),
            (
                "gateway.networking.k8s.io/v1alpha2",
                "TLSRoute",
                "{spec: {}}",
            ),
            (
                "gateway.networking.k8s.io/v1alpha2",
                "TCPRoute",
                "{spec: {}}",
            ),
            (
                "gateway.networking.k8s.io/v1beta1",
                "ReferenceGrant",
                "{spec: {from: [], to: []}}",
            ),
        ];
        for (api, kind, rest) in docs {
            let mut raw = raw_from_yaml(rest);
            raw.api_version = api.into();
            raw.kind = kind.into();
            raw.name = "x".into();
            let mut value = raw.doc.to_value().unwrap();
            let obj = value.as_object_mut().unwrap();
            obj.insert("apiVersion".into(), api.into());
            obj.insert("kind".into(), kind.into());
            obj.insert(
                "metadata".into(),
                serde_json::json!({"name": "x", "namespace": "ns"}),
            );
            raw.doc = crate::raw::Document::from_value(value);
            raw.namespace = Some("ns".into());
            let parsed = parse(&raw);
            assert!(
                parsed.diagnostics.is_empty(),
                "{kind}: {:?}",
                parsed.diagnostics
            );
            let o = parsed.object.expect(kind);
            assert_eq!(o.kind(), kind);
            let namespaced = kind_info(kind).unwrap().namespaced;
            assert_eq!(o.key().namespace.is_some(), namespaced, "{kind}");
        }
    }

    #[test]
    fn namespace_defaults_to_default() {
        let raw = raw_from_yaml("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {}\n");
        let o = parse(&raw).object.unwrap();
        assert_eq!(o.key().namespace.as_deref(), Some("default"));
    }

    #[test]
    fn unknown_kind_is_a_warning() {
        let raw = raw_from_yaml("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n");
        let p = parse(&raw);
        assert!(p.object.is_none() && !p.invalid);
        assert_eq!(p.diagnostics.len(), 1);
        assert_eq!(p.diagnostics[0].severity, Severity::Warning);
        assert!(p.diagnostics[0].message.contains("Widget"));
    }

    #[test]
    fn api_version_must_match_kind() {
        let raw = raw_from_yaml("apiVersion: v1\nkind: Ingress\nmetadata: {name: i}\nspec: {}\n");
        let p = parse(&raw);
        assert!(p.object.is_none() && p.invalid);
        assert_eq!(p.diagnostics[0].field.as_deref(), Some("apiVersion"));
        assert_eq!(p.diagnostics[0].namespace.as_deref(), Some("default"));
    }

    #[test]
    fn schema_errors_carry_the_field_path() {
        let raw = raw_from_yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - port: eighty\n",
        );
        let p = parse(&raw);
        assert!(p.invalid);
        assert_eq!(
            p.diagnostics[0].field.as_deref(),
            Some("spec.ports[0].port")
        );
    }
}
