//! Object sources: where raw Kubernetes objects come from before they are
//! typed and validated. Each source produces [`RawObject`]s with their origin.

mod file_list;
pub mod files;
pub mod kube;

use lb_compile::diag::Diagnostic;
use lb_compile::raw::RawObject;

/// The result of loading a source once.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Every object read, in a deterministic order.
    pub objects: Vec<RawObject>,
    /// Problems found while reading.
    pub diagnostics: Vec<Diagnostic>,
    /// Objects the source typed as it read them, by document id and
    /// origin: the store takes these instead of typing them again (the file
    /// source types each document right after parsing it, on all CPUs, so
    /// the parsed documents never all exist at once).
    pub typed: lb_compile::model::Pretyped,
}
