//! Object sources: where raw Kubernetes objects come from before they are
//! typed and validated. Each source produces [`RawObject`]s with their origin.

mod file_list;
pub mod files;
pub mod kube;

use std::path::PathBuf;

use serde::Serialize;

use crate::diag::Diagnostic;

/// Where an object was read from: a document of a manifest file, or the
/// Kubernetes API server (see [`Origin::kubernetes`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Origin {
    /// The manifest file.
    pub file: PathBuf,
    /// 0-based index of the YAML document in the file.
    pub document: usize,
}

/// The `file` of objects from the API server; their `document` is [`usize::MAX`].
pub const KUBERNETES_ORIGIN: &str = "kubernetes";

impl Origin {
    /// The origin of every object listed or watched from the Kubernetes API server.
    pub fn kubernetes() -> Self {
        Self {
            file: PathBuf::from(KUBERNETES_ORIGIN),
            document: usize::MAX,
        }
    }

    /// Whether the object came from the Kubernetes API server.
    pub fn is_kubernetes(&self) -> bool {
        self.document == usize::MAX && self.file.as_os_str() == KUBERNETES_ORIGIN
    }

    /// Locates `d` here: `FILE doc N`, or `kubernetes` (no document) for
    /// objects from the API server.
    pub fn locate(&self, d: Diagnostic) -> Diagnostic {
        if self.is_kubernetes() {
            d.at(KUBERNETES_ORIGIN, None)
        } else {
            d.at(self.file.clone(), Some(self.document))
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_kubernetes() {
            f.write_str(KUBERNETES_ORIGIN)
        } else {
            write!(f, "{} doc {}", self.file.display(), self.document)
        }
    }
}

/// An object as read, before typing and validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RawObject {
    /// `kind`.
    pub kind: String,
    /// `apiVersion`.
    pub api_version: String,
    /// `metadata.namespace` as written (not defaulted).
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
    /// The whole document, shared: a source hands out the same document for
    /// an object that did not change, so the store can tell without
    /// comparing it ([`std::sync::Arc::ptr_eq`]) and keep its typed version.
    pub value: std::sync::Arc<serde_json::Value>,
    /// Where it came from.
    pub origin: Origin,
}

impl RawObject {
    /// A diagnostic located at this object (file, document, kind, namespace, name).
    pub fn diagnostic(&self, d: Diagnostic) -> Diagnostic {
        self.origin.locate(d).object(
            self.kind.clone(),
            self.namespace.as_deref(),
            self.name.clone(),
        )
    }
}

/// The result of loading a source once.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Every object read, in a deterministic order.
    pub objects: Vec<RawObject>,
    /// Problems found while reading.
    pub diagnostics: Vec<Diagnostic>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_format_readably() {
        let file = Origin {
            file: PathBuf::from("m/a.yaml"),
            document: 2,
        };
        assert_eq!(file.to_string(), "m/a.yaml doc 2");
        assert!(!file.is_kubernetes());
        let api = Origin::kubernetes();
        assert!(api.is_kubernetes());
        assert_eq!(api.to_string(), "kubernetes");
        let raw = RawObject {
            kind: "Service".into(),
            api_version: "v1".into(),
            namespace: Some("default".into()),
            name: "web".into(),
            value: serde_json::Value::Null.into(),
            origin: api,
        };
        let d = raw.diagnostic(Diagnostic::error("no ports"));
        assert_eq!(
            d.to_string(),
            "error: kubernetes: Service default/web: no ports"
        );
        let d = RawObject {
            origin: file,
            ..raw
        }
        .diagnostic(Diagnostic::error("no ports"));
        assert_eq!(
            d.to_string(),
            "error: m/a.yaml doc 2: Service default/web: no ports"
        );
    }
}
