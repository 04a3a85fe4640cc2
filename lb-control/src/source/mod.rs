//! Object sources: where raw Kubernetes objects come from before they are
//! typed and validated. Each source produces [`RawObject`]s with their origin.

pub mod files;

use std::path::PathBuf;

use serde::Serialize;

use crate::diag::Diagnostic;

/// Where an object was read from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Origin {
    /// The manifest file.
    pub file: PathBuf,
    /// 0-based index of the YAML document in the file.
    pub document: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} doc {}", self.file.display(), self.document)
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
    /// The whole document.
    pub value: serde_json::Value,
    /// Where it came from.
    pub origin: Origin,
}

impl RawObject {
    /// A diagnostic located at this object (file, document, kind, namespace, name).
    pub fn diagnostic(&self, d: Diagnostic) -> Diagnostic {
        d.at(self.origin.file.clone(), Some(self.origin.document))
            .object(
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
