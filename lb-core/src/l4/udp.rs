//! UDP Services: datagrams balanced per flow. A flow is one client address
//! and port talking to one Service address; its first datagram picks an
//! endpoint (Maglev over the 5-tuple, or the client IP with session
//! affinity), and the flow table (a bounded LRU [`ConnTrack`]) keeps that
//! choice while the flow is active, also when endpoints are added, and when
//! its endpoint leaves the Service until the grace period is over.
//!
//! Each flow has its own socket connected to its endpoint, so replies are
//! told apart by socket; they are sent back to the client from the Service
//! address's own socket, so the client sees them come from the VIP. A flow
//! ends after its idle timeout (no datagram either way) or when the table
//! drops it; its socket closes then. The kernel's SO_REUSEPORT hash sends
//! one client's datagrams to the same worker, whose table holds the flow.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conntrack::{ConnTrack, ConnTrackConfig};
use crate::counters::CounterSet;
use crate::datagram::Datagram;
use crate::flowhash::Protocol;

use super::{HasL4, L4Proxy, L4Service};

/// The largest datagram relayed (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams handled before the loop yields to other tasks.
const BURST: usize = 64;
/// How often idle flows are swept.
const SWEEP: Duration = Duration::from_secs(1);

/// One flow's state beside its table entry. Dropping it ends the reply task,
/// which closes the flow's socket.
struct Flow {
    backend: SocketAddr,
    up: Rc<Datagram>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One UDP Service address on one worker.
struct Listener {
    local: SocketAddr,
    down: Datagram,
    track: RefCell<ConnTrack<SocketAddr, SocketAddr>>,
    flows: RefCell<HashMap<SocketAddr, Flow>>,
    /// Shared by every reply task of this address (never held across an await).
    reply_buf: RefCell<Box<[u8]>>,
    counters: Arc<CounterSet>,
    worker: usize,
    /// This address's share of the worker's flow gauge.
    reported: Cell<usize>,
}

impl Listener {
    /// Releases the flows the table dropped and brings the flow gauge up to
    /// date.
    fn sync_flows(&self) {
        let mut track = self.track.borrow_mut();
        let dropped = track.drain_dropped();
        if !dropped.is_empty() {
            let mut flows = self.flows.borrow_mut();
            for key in dropped {
                flows.remove(&key);
            }
        }
        let len = track.len();
        let gauge = &self.counters.worker(self.worker).l4_udp_flows;
        gauge.add((len as u64).wrapping_sub(self.reported.replace(len) as u64));
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let gauge = &self.counters.worker(self.worker).l4_udp_flows;
        gauge.add(0u64.wrapping_sub(self.reported.get() as u64));
        // Flows end with their address: dropping them aborts the reply tasks.
        self.flows.get_mut().clear();
    }
}

fn flow_config<S: HasL4>(snapshot: &S, service: &L4Service) -> ConnTrackConfig {
    let settings = snapshot.l4().flows;
    ConnTrackConfig::flows(settings.capacity, service.idle_timeout, settings.grace)
}

/// Serves one worker's UDP socket of one Service address until dropped.
pub(super) async fn serve<S: HasL4>(proxy: Rc<L4Proxy<S>>, down: Datagram) {
    let local = match down.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "UDP socket without a local address");
            return;
        }
    };
    let first = proxy.snapshot.current();
    let config = first
        .value
        .l4()
        .udp
        .get(&local)
        .map_or(ConnTrackConfig::flows(0, SWEEP, SWEEP), |s| {
            flow_config(&first.value, s)
        });
    let mut generation = first.generation;
    drop(first);
    let listener = Rc::new(Listener {
        local,
        down,
        track: RefCell::new(ConnTrack::new(config).record_dropped()),
        flows: RefCell::new(HashMap::new()),
        reply_buf: RefCell::new(vec![0u8; MAX_DATAGRAM].into_boxed_slice()),
        counters: Arc::clone(&proxy.counters),
        worker: proxy.worker,
        reported: Cell::new(0),
    });
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut handled = 0;
        loop {
            match listener.down.try_recv_from(&mut buf) {
                Ok((n, client)) => {
                    forward(&proxy, &listener, &mut generation, client, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(%local, error = %e, "UDP receive failed");
                    break;
                }
            }
            handled += 1;
            if handled == BURST {
                handled = 0;
                tokio::task::yield_now().await;
            }
        }
        tokio::select! {
            r = listener.down.readable() => {
                if let Err(e) = r {
                    tracing::warn!(%local, error = %e, "UDP socket failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            _ = sweep.tick() => {
                listener.track.borrow_mut().expire(Instant::now());
                listener.sync_flows();
            }
        }
    }
}

/// Relays one client datagram to its flow's endpoint, making the flow first
/// when it is new (or its endpoint changed).
fn forward<S: HasL4>(
    proxy: &L4Proxy<S>,
    listener: &Rc<Listener>,
    generation: &mut u64,
    client: SocketAddr,
    data: &[u8],
) {
    let counters = proxy.counters.worker(proxy.worker);
    let snapshot = proxy.snapshot.current();
    let Some(service) = snapshot.value.l4().udp.get(&listener.local) else {
        counters.l4_datagrams_dropped.inc();
        return;
    };
    if !super::source_allowed(service.source_ranges.as_ref(), client.ip()) {
        // No flow is looked up or made for a refused source.
        counters.l4_source_refused_udp.inc();
        return;
    }
    let now = Instant::now();
    {
        let mut track = listener.track.borrow_mut();
        if snapshot.generation != *generation {
            *generation = snapshot.generation;
            let config = flow_config(&snapshot.value, service);
            if *track.config() != config {
                track.reconfigure(config);
            }
            track.update_endpoints(now, |b| service.has_endpoint(b));
        }
    }
    let chosen = listener
        .track
        .borrow_mut()
        .lookup_or_insert(client, now, || {
            proxy
                .choose(service, client, listener.local, Protocol::Udp)
                .first()
                .copied()
        });
    listener.sync_flows();
    let Some(backend) = chosen else {
        counters.l4_unserved.inc();
        counters.l4_datagrams_dropped.inc();
        return;
    };
    let up = {
        let flows = listener.flows.borrow();
        flows
            .get(&client)
            .filter(|f| f.backend == backend)
            .map(|f| Rc::clone(&f.up))
    };
    let up = match up {
        Some(up) => up,
        None => match open_flow(listener, client, backend) {
            Ok(up) => up,
            Err(e) => {
                tracing::debug!(service = %service.name, endpoint = %backend, error = %e, "cannot open a UDP flow");
                counters.upstream_errors.inc();
                counters.l4_datagrams_dropped.inc();
                return;
            }
        },
    };
    match up.try_send(data) {
        Ok(_) => counters.l4_datagrams.inc(),
        Err(e) => {
            tracing::debug!(service = %service.name, endpoint = %backend, error = %e, "UDP send failed");
            counters.l4_datagrams_dropped.inc();
        }
    }
}

/// Opens the socket of a new flow and starts relaying its replies.
fn open_flow(
    listener: &Rc<Listener>,
    client: SocketAddr,
    backend: SocketAddr,
) -> io::Result<Rc<Datagram>> {
    let up = Rc::new(Datagram::connected(backend)?);
    let task = tokio::task::spawn_local(replies(Rc::downgrade(listener), Rc::clone(&up), client));
    let flow = Flow {
        backend,
        up: Rc::clone(&up),
        task,
    };
    listener.flows.borrow_mut().insert(client, flow);
    Ok(up)
}

/// Sends an endpoint's replies back to the client from the Service address.
async fn replies(listener: Weak<Listener>, up: Rc<Datagram>, client: SocketAddr) {
    loop {
        if up.readable().await.is_err() {
            return;
        }
        let Some(l) = listener.upgrade() else {
            return;
        };
        let counters = l.counters.worker(l.worker);
        let mut handled = 0;
        loop {
            let mut buf = l.reply_buf.borrow_mut();
            match up.try_recv(&mut buf) {
                Ok(n) => {
                    match l.down.try_send_to(&buf[..n], client) {
                        Ok(_) => counters.l4_datagrams.inc(),
                        Err(_) => counters.l4_datagrams_dropped.inc(),
                    }
                    drop(buf);
                    if !l.track.borrow_mut().touch(&client, Instant::now()) {
                        // The flow expired or was dropped: this task ends
                        // once the listener releases it.
                        l.sync_flows();
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // An ICMP error from the endpoint (port unreachable): the
                // flow stays, later datagrams may succeed.
                Err(_) => counters.upstream_errors.inc(),
            }
            handled += 1;
            if handled == BURST {
                break;
            }
        }
    }
}
