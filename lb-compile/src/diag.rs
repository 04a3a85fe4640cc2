//! Diagnostics about configuration input: one line each, with file,
//! document, object and field.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object (or file) could not be used.
    Error,
    /// Something was ignored or looks wrong, but everything valid still applies.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding about the input, located as precisely as known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The manifest file, if the finding is about one.
    pub file: Option<PathBuf>,
    /// 0-based index of the YAML document in `file`.
    pub document: Option<usize>,
    /// Object kind, e.g. `Ingress`.
    pub kind: Option<String>,
    /// Object namespace (none for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// Field path inside the object, e.g. `spec.rules[0].http.paths[1].pathType`.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// An error diagnostic with only a message; add location with the builder methods.
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Severity::Error, message)
    }

    /// A warning diagnostic with only a message; add location with the builder methods.
    pub fn warning(message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, message)
    }

    fn new(severity: Severity, message: impl Into<String>) -> Self {
        Self {
            severity,
            file: None,
            document: None,
            kind: None,
            namespace: None,
            name: None,
            field: None,
            message: message.into(),
        }
    }

    /// Sets the file and document index.
    pub fn at(mut self, file: impl Into<PathBuf>, document: Option<usize>) -> Self {
        self.file = Some(file.into());
        self.document = document;
        self
    }

    /// Sets the object identity.
    pub fn object(
        mut self,
        kind: impl Into<String>,
        namespace: Option<&str>,
        name: impl Into<String>,
    ) -> Self {
        self.kind = Some(kind.into());
        self.namespace = namespace.map(str::to_owned);
        self.name = Some(name.into());
        self
    }

    /// Sets the field path (an empty path means the whole object).
    pub fn field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.field = (!field.is_empty()).then_some(field);
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity)?;
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(doc) = self.document {
                write!(f, " doc {doc}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(kind) = &self.kind {
            f.write_str(kind)?;
            match (&self.namespace, &self.name) {
                (Some(ns), Some(name)) => write!(f, " {ns}/{name}")?,
                (None, Some(name)) => write!(f, " {name}")?,
                _ => {}
            }
            f.write_str(": ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        // Keep it one line whatever the message holds.
        let mut first = true;
        for line in self
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            if !first {
                f.write_str("; ")?;
            }
            f.write_str(line)?;
            first = false;
        }
        Ok(())
    }
}

/// Counts errors and warnings in `diags`.
pub fn count(diags: &[Diagnostic]) -> (usize, usize) {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    (errors, diags.len() - errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_every_part() {
        let d = Diagnostic::error("unknown variant \"Foo\"\n  expected one of Exact, Prefix\n")
            .at("config/manifests/bad.yaml", Some(2))
            .object("Ingress", Some("default"), "broken")
            .field("spec.rules[0].http.paths[0].pathType");
        assert_eq!(
            d.to_string(),
            "error: config/manifests/bad.yaml doc 2: Ingress default/broken: \
             spec.rules[0].http.paths[0].pathType: unknown variant \"Foo\"; expected one of Exact, Prefix"
        );
        let w = Diagnostic::warning("x").object("IngressClass", None, "lb");
        assert_eq!(w.to_string(), "warning: IngressClass lb: x");
        assert_eq!(count(&[d, w]), (1, 1));
    }
}
