//! The per-worker L4 connection handler: finds the Service of the address a
//! connection arrived on, picks its endpoint by consistent hash (Maglev over
//! the flow's 5-tuple, or over the client address alone with
//! `sessionAffinity: ClientIP`), connects (trying the next endpoints when a
//! connect fails) and relays bytes until both sides are done.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::conntrack::{ConnTrack, ConnTrackConfig};
use crate::counters::CounterSet;
use crate::datagram::Datagram;
use crate::flowhash::{Protocol, client_ip_hash, flow_hash};
use crate::runtime::{Accepted, ConnectionHandler, Drain};
use crate::snapshot::{LocalSnapshot, SnapshotCell};
use crate::stream::Stream;

use super::relay::{RelayEnd, relay};
use super::{HasL4, L4Service, candidates, source_allowed};

/// Client-IP affinity entries kept per worker.
const AFFINITY_ENTRIES: usize = 65_536;

/// One worker's L4 handler.
pub struct L4Proxy<S: HasL4> {
    pub(super) snapshot: LocalSnapshot<S>,
    pub(super) counters: Arc<CounterSet>,
    pub(super) worker: usize,
    /// `sessionAffinity: ClientIP`: per service address and protocol, client
    /// IP -> endpoint.
    affinity: RefCell<HashMap<(SocketAddr, Protocol), ConnTrack<IpAddr, SocketAddr>>>,
}

impl<S: HasL4> std::fmt::Debug for L4Proxy<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L4Proxy")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl<S: HasL4> L4Proxy<S> {
    /// The handler of worker `worker`.
    pub fn new(cell: Arc<SnapshotCell<S>>, counters: Arc<CounterSet>, worker: usize) -> Self {
        Self {
            snapshot: LocalSnapshot::new(cell),
            counters,
            worker,
            affinity: RefCell::new(HashMap::new()),
        }
    }

    /// The endpoints to try for a flow from `peer` to `local`.
    pub(super) fn choose(
        &self,
        service: &L4Service,
        peer: SocketAddr,
        local: SocketAddr,
        protocol: Protocol,
    ) -> Vec<SocketAddr> {
        match service.affinity {
            None => candidates(service, flow_hash(peer, local, protocol)),
            Some(timeout) => {
                let now = Instant::now();
                let mut tables = self.affinity.borrow_mut();
                let config = ConnTrackConfig::session_affinity(AFFINITY_ENTRIES, timeout);
                let table = tables
                    .entry((local, protocol))
                    .or_insert_with(|| ConnTrack::new(config));
                if *table.config() != config {
                    *table = ConnTrack::new(config);
                }
                let ip = peer.ip();
                // A remembered endpoint that left the Service is forgotten.
                if table
                    .get(&ip, now)
                    .is_some_and(|b| !service.has_endpoint(b))
                {
                    table.remove(&ip);
                }
                let mut list = candidates(service, client_ip_hash(ip));
                let first = table.lookup_or_insert(ip, now, || list.first().copied());
                if let Some(first) = first {
                    list.retain(|a| *a != first);
                    list.insert(0, first);
                }
                let entries: usize = tables.values().map(ConnTrack::len).sum();
                self.counters
                    .worker(self.worker)
                    .l4_affinity_entries
                    .set(entries as u64);
                list
            }
        }
    }
}

impl<S: HasL4> ConnectionHandler for L4Proxy<S> {
    async fn serve(self: Rc<Self>, conn: Accepted, drain: Drain) {
        let _ = drain;
        let counters = self.counters.worker(self.worker);
        counters.accepted_connections.inc();
        counters.active_connections.inc();
        let snapshot = self.snapshot.current();
        let Some(service) = snapshot.value.l4().services.get(&conn.local) else {
            counters.active_connections.dec();
            return;
        };
        if !source_allowed(service.source_ranges.as_ref(), conn.peer.ip()) {
            // Closed at once: the stream drops here, nothing is connected.
            counters.l4_source_refused_tcp.inc();
            counters.active_connections.dec();
            return;
        }
        let mut client = conn.stream;
        let mut upstream = None;
        for addr in self.choose(service, conn.peer, conn.local, Protocol::Tcp) {
            match Stream::connect(addr, service.connect_timeout).await {
                Ok(s) => {
                    upstream = Some(s);
                    break;
                }
                Err(e) => {
                    counters.upstream_errors.inc();
                    tracing::debug!(service = %service.name, endpoint = %addr, error = %e, "connect failed, trying the next endpoint");
                }
            }
        }
        if upstream.is_none() {
            counters.l4_unserved.inc();
        }
        if let Some(mut up) = upstream {
            counters.l4_connections.inc();
            match relay(&mut client, &mut up, service.idle_timeout).await {
                Ok(_) => {}
                Err(RelayEnd::Idle(_)) => {
                    tracing::debug!(service = %service.name, "idle timeout");
                }
                Err(RelayEnd::Error(e, _)) => {
                    tracing::debug!(service = %service.name, error = %e, "relay ended");
                }
            }
        }
        counters.active_connections.dec();
    }

    fn serve_datagrams(
        self: Rc<Self>,
        socket: Datagram,
        _tag: u32,
    ) -> impl Future<Output = ()> + 'static {
        super::udp::serve(self, socket)
    }
}
