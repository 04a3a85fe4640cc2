//! L4 (TCP and UDP) load balancing of Kubernetes Services: the compiled L4
//! part of a snapshot ([`L4Snapshot`]: one [`L4Service`] per listening address
//! and protocol with its Maglev table), the per-worker handler ([`L4Proxy`]),
//! the TCP byte relay ([`relay`]) and the UDP flow relay (`udp`).

mod proxy;
pub mod relay;
mod source;
mod udp;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::maglev::MaglevTable;

pub use proxy::L4Proxy;
pub use source::{SourceRanges, source_allowed};

/// One Service port served at L4 on one address.
#[derive(Debug, Clone, Serialize)]
pub struct L4Service {
    /// `namespace/name:port`.
    pub name: String,
    /// Why this address serves the Service: `loadBalancer`, `externalIP` or `nodePort`.
    pub via: &'static str,
    /// The endpoints, sorted by address.
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
    /// The client networks allowed (`loadBalancerSourceRanges`); `None`:
    /// everyone. Others are refused at accept (TCP) or before any flow is
    /// made (UDP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ranges: Option<SourceRanges>,
}

impl L4Service {
    /// Whether `addr` is one of the endpoints (they are sorted).
    pub fn has_endpoint(&self, addr: &SocketAddr) -> bool {
        self.endpoints.binary_search(addr).is_ok()
    }
}

/// The L4 part of a snapshot: what each listening address serves.
#[derive(Debug, Clone, Default, Serialize)]
pub struct L4Snapshot {
    /// TCP Services by the exact address they listen on.
    pub services: BTreeMap<SocketAddr, L4Service>,
    /// UDP Services by the exact address they listen on.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub udp: BTreeMap<SocketAddr, L4Service>,
    /// UDP flow tracking: entries per worker and address, and how long a
    /// flow keeps an endpoint that left its Service.
    #[serde(skip)]
    pub flows: FlowSettings,
}

/// Sizing of the per-worker UDP flow tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSettings {
    /// Flows tracked per worker and address; the least recently used flow
    /// is dropped to make room.
    pub capacity: usize,
    /// How long a flow keeps an endpoint that left the Service.
    pub grace: Duration,
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            grace: Duration::from_secs(10),
        }
    }
}

impl L4Snapshot {
    /// Whether no address is served.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.udp.is_empty()
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
