//! Objects as read, before typing: a [`RawObject`] with its [`Origin`]
//! (a document of a manifest file, or the API server) and its
//! [`Document`], identified by a hash of its content. Sources produce
//! them; the model types them.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::diag::Diagnostic;

/// Where an object was read from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A document of a manifest file.
    File {
        /// The manifest file.
        file: PathBuf,
        /// 0-based index of the YAML document in the file.
        document: usize,
    },
    /// Listed or watched from the Kubernetes API server.
    Kubernetes,
}

/// How diagnostics and logs name the API server as an origin.
pub const KUBERNETES_ORIGIN: &str = "kubernetes";

impl Origin {
    /// Document `document` (0-based) of the manifest file `file`.
    pub fn file(file: impl Into<PathBuf>, document: usize) -> Self {
        Self::File {
            file: file.into(),
            document,
        }
    }

    /// The origin of every object listed or watched from the Kubernetes API server.
    pub fn kubernetes() -> Self {
        Self::Kubernetes
    }

    /// Whether the object came from the Kubernetes API server.
    pub fn is_kubernetes(&self) -> bool {
        matches!(self, Self::Kubernetes)
    }

    /// The document index within its file; `None` for the API server.
    pub fn document(&self) -> Option<usize> {
        match self {
            Self::File { document, .. } => Some(*document),
            Self::Kubernetes => None,
        }
    }

    /// Moves a file origin to document `index` of the same file (the API
    /// server's origin has no document and stays as it is).
    pub fn set_document(&mut self, index: usize) {
        if let Self::File { document, .. } = self {
            *document = index;
        }
    }

    /// Locates `d` here: `FILE doc N`, or `kubernetes` (no document) for
    /// objects from the API server.
    pub fn locate(&self, d: Diagnostic) -> Diagnostic {
        match self {
            Self::File { file, document } => d.at(file.clone(), Some(*document)),
            Self::Kubernetes => d.at(KUBERNETES_ORIGIN, None),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { file, document } => write!(f, "{} doc {document}", file.display()),
            Self::Kubernetes => f.write_str(KUBERNETES_ORIGIN),
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
    /// The whole document. A source hands out a document with the same
    /// [`Document::id`] for an object that did not change, so the store can
    /// tell without comparing it and keep its typed version.
    pub doc: Document,
    /// Where it came from.
    pub origin: Origin,
}

/// An object's document: parsed JSON, or (for a file document the store
/// has already typed) its YAML text, parsed again only if needed. Two
/// documents are equal when their ids are: the id is a hash of the content.
#[derive(Debug, Clone)]
pub struct Document {
    id: u64,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    Value(Arc<serde_json::Value>),
    Yaml(Arc<str>),
}

impl PartialEq for Document {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// A stable 64-bit hash of `bytes` (SipHash with fixed keys: the same in
/// every process and run).
pub fn content_id(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

impl Document {
    /// A parsed document; its id hashes its JSON text.
    pub fn from_value(value: serde_json::Value) -> Self {
        let id = content_id(&serde_json::to_vec(&value).unwrap_or_default());
        Self {
            id,
            body: Body::Value(Arc::new(value)),
        }
    }

    /// A document parsed from the YAML text `yaml`, whose id is `id` (the
    /// hash of that text and where it sits in its file).
    pub fn parsed_yaml(value: serde_json::Value, id: u64) -> Self {
        Self {
            id,
            body: Body::Value(Arc::new(value)),
        }
    }

    /// The same document held as its YAML text (one document) instead of
    /// its parsed form, which takes many times the memory.
    pub fn as_yaml(&self, yaml: Arc<str>) -> Self {
        Self {
            id: self.id,
            body: Body::Yaml(yaml),
        }
    }

    /// The content's identity.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The parsed document, when held parsed.
    pub fn value(&self) -> Option<&serde_json::Value> {
        match &self.body {
            Body::Value(v) => Some(v),
            Body::Yaml(_) => None,
        }
    }

    /// The document as JSON (parsing its YAML text when held as text).
    pub fn to_value(&self) -> Result<serde_json::Value, String> {
        match &self.body {
            Body::Value(v) => Ok((**v).clone()),
            Body::Yaml(text) => {
                use serde::Deserialize;
                let doc = serde_yaml_ng::Deserializer::from_str(text)
                    .next()
                    .ok_or("document is empty")?;
                serde_json::Value::deserialize(doc).map_err(|e| format!("not valid YAML: {e}"))
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_format_readably() {
        let file = Origin::file(PathBuf::from("m/a.yaml"), 2);
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
            doc: Document::from_value(serde_json::Value::Null),
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
