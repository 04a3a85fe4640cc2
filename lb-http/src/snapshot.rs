//! The HTTP part of a compiled configuration snapshot: route tables and the
//! backends they point at. Built by the control thread, never mutated after
//! publication.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use lb_core::l4::{HasL4, L4Snapshot};
use serde::Serialize;

use crate::balance::Policy;
use crate::gateway::GatewaySnapshot;
use crate::route::RouteTable;
use crate::tls::CertIndex;

/// Index of a [`Backend`] in [`ApplianceSnapshot::backends`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BackendId(pub u32);

/// A Service port resolved to its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// `namespace/service:port` as written in the referring object.
    pub name: String,
    /// Ready endpoints, in a deterministic order. Empty means 503.
    pub endpoints: Vec<SocketAddr>,
    /// The protocol spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// How a request's endpoint is chosen.
    pub policy: Policy,
    /// Active health check of the endpoints, when the Service asks for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
}

/// An active health check (Service annotation `lb.example.com/health-check`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct HealthCheck {
    /// `GET` this path and expect a 2xx or 3xx; `None`: a TCP connect.
    pub http_path: Option<String>,
    /// Time between probes of one endpoint, in milliseconds.
    pub interval_ms: u64,
    /// Time a probe may take, in milliseconds.
    pub timeout_ms: u64,
}

/// The protocol lb speaks to a backend, from the Service port's
/// `appProtocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default).
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (`appProtocol`
    /// `kubernetes.io/h2c`, `h2c` or `grpc`).
    H2c,
}

/// Everything the workers serve, compiled from one load: the Ingress
/// routes and backends, certificates and HTTPS redirects, the L4 Services
/// and the Gateway API listeners.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplianceSnapshot {
    /// Routes for the plain-HTTP Ingress listeners.
    pub routes: RouteTable,
    /// All backends referenced by `routes`, indexed by [`BackendId`].
    pub backends: Vec<Backend>,
    /// Certificates for the HTTPS listeners, by server name.
    #[serde(skip_serializing_if = "CertIndex::is_empty")]
    pub tls: CertIndex,
    /// Hosts (exact, or `*.`-wildcards) whose plain-HTTP requests are
    /// redirected to HTTPS.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub https_redirect: BTreeSet<String>,
    /// The port HTTPS redirects point at (omitted from the URL when 443).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_port: Option<u16>,
    /// Services served at L4, by listening address.
    #[serde(skip_serializing_if = "L4Snapshot::is_empty")]
    pub l4: L4Snapshot,
    /// Gateway API listeners and their routes.
    #[serde(skip_serializing_if = "GatewaySnapshot::is_empty")]
    pub gateway: GatewaySnapshot,
}

impl HasL4 for ApplianceSnapshot {
    fn l4(&self) -> &L4Snapshot {
        &self.l4
    }
}

impl ApplianceSnapshot {
    /// The backend with id `id`, if it exists.
    pub fn backend(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(id.0 as usize)
    }

    /// Whether a plain-HTTP request for normalised `host` is redirected to
    /// HTTPS (an exact entry, or a wildcard covering one label).
    pub fn redirects_to_https(&self, host: &str) -> bool {
        if self.https_redirect.is_empty() || self.https_port.is_none() {
            return false;
        }
        if self.https_redirect.contains(host) {
            return true;
        }
        crate::route::wildcard_suffix(host)
            .is_some_and(|parent| self.https_redirect.contains(&format!("*.{parent}")))
    }
}
