//! The HTTP part of a compiled configuration snapshot: route tables and the
//! backends they point at. Built by the control thread, never mutated after
//! publication.

use std::net::SocketAddr;

use lb_core::l4::{HasL4, L4Snapshot};
use serde::Serialize;

use crate::route::RouteTable;

/// Index of a [`Backend`] in [`HttpSnapshot::backends`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BackendId(pub u32);

/// A Service port resolved to its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// `namespace/service:port` as written in the referring object.
    pub name: String,
    /// Ready endpoints, in a deterministic order. Empty means 503.
    pub endpoints: Vec<SocketAddr>,
}

/// The compiled HTTP configuration served by every worker.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HttpSnapshot {
    /// Routes for the plain-HTTP Ingress listeners.
    pub routes: RouteTable,
    /// All backends referenced by `routes`, indexed by [`BackendId`].
    pub backends: Vec<Backend>,
    /// Services served at L4, by listening address.
    #[serde(skip_serializing_if = "L4Snapshot::is_empty")]
    pub l4: L4Snapshot,
}

impl HasL4 for HttpSnapshot {
    fn l4(&self) -> &L4Snapshot {
        &self.l4
    }
}

impl HttpSnapshot {
    /// The backend with id `id`, if it exists.
    pub fn backend(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(id.0 as usize)
    }
}
