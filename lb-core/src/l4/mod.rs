//! L4 (TCP) load balancing of Kubernetes Services: the compiled L4 part of a
//! snapshot ([`L4Snapshot`]: one [`L4Service`] per listening address with its
//! Maglev table), the per-worker connection handler ([`L4Proxy`]) and the
//! byte relay ([`relay`]).

mod proxy;
pub mod relay;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::maglev::MaglevTable;

pub use proxy::L4Proxy;

/// One Service port served at L4 on one address.
#[derive(Debug, Clone, Serialize)]
pub struct L4Service {
    /// `namespace/name:port`.
    pub name: String,
    /// Why this address serves the Service: `loadBalancer`, `externalIP` or `nodePort`.
    pub via: &'static str,
    /// The endpoints, in the table's (sorted) order.
    pub endpoints: Vec<SocketAddr>,
    /// Consistent-hash table over `endpoints` (Maglev).
    #[serde(skip)]
    pub table: MaglevTable<SocketAddr>,
    /// `sessionAffinity: ClientIP` timeout, when set.
    pub affinity: Option<Duration>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Idle timeout of a relayed connection (no bytes either way).
    pub idle_timeout: Duration,
}

/// The L4 part of a snapshot: what each listening address serves.
#[derive(Debug, Clone, Default, Serialize)]
pub struct L4Snapshot {
    /// Services by the exact address they listen on.
    pub services: BTreeMap<SocketAddr, L4Service>,
}

impl L4Snapshot {
    /// Whether no address is served.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// Access to the L4 part of a larger snapshot type.
pub trait HasL4: Send + Sync + 'static {
    /// The L4 services.
    fn l4(&self) -> &L4Snapshot;
}

impl HasL4 for L4Snapshot {
    fn l4(&self) -> &L4Snapshot {
        self
    }
}

/// How many endpoints a connection tries before it gives up.
pub const CONNECT_ATTEMPTS: usize = 3;

/// Candidate endpoints for a flow hash: the Maglev choice first, then the
/// next distinct endpoints in table order (bounded), for connect failover.
pub fn candidates(service: &L4Service, hash: u64) -> Vec<SocketAddr> {
    let eps = service.table.endpoints();
    let Some(first) = service.table.index(hash) else {
        return Vec::new();
    };
    (0..eps.len().min(CONNECT_ATTEMPTS))
        .map(|i| *eps[(first + i) % eps.len()].value())
        .collect()
}
