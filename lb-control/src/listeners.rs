//! The listeners that follow the configuration (L4 Service addresses and
//! Gateway ports): after each compile, addresses no longer served are closed
//! (TCP connections already accepted carry on; UDP flows end with their
//! socket) and new ones are bound, one SO_REUSEPORT socket per worker, and
//! handed to the workers while they run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use lb_core::flowhash::Protocol;
use lb_core::l4::L4Snapshot;
use lb_core::listener::{bind_per_worker, bind_udp_per_worker};
use lb_core::runtime::ListenerCommand;
use lb_http::gateway::GatewaySnapshot;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// The tag L4 listeners carry (HTTP listeners have `runtime::STATIC_TAG`).
pub const L4_TAG: u32 = 1;
/// The tag Gateway API listeners carry.
pub const GATEWAY_TAG: u32 = 2;

/// A listener the configuration asks for: protocol, address and the tag its
/// connections carry (which tells the worker who serves them).
pub type Wanted = (Protocol, SocketAddr, u32);

/// The control thread's view of the workers' dynamic listeners.
#[derive(Debug)]
pub struct L4Listeners {
    senders: Vec<UnboundedSender<ListenerCommand>>,
    active: BTreeMap<Wanted, u64>,
    next_id: u64,
}

impl L4Listeners {
    /// A manager for `workers` workers and the receivers to put in their plan.
    pub fn new(workers: usize) -> (Self, Vec<UnboundedReceiver<ListenerCommand>>) {
        let (senders, receivers) = (0..workers).map(|_| unbounded_channel()).unzip();
        (
            Self {
                senders,
                active: BTreeMap::new(),
                next_id: 1,
            },
            receivers,
        )
    }

    /// Listeners currently open.
    pub fn addresses(&self) -> impl Iterator<Item = &Wanted> {
        self.active.keys()
    }

    /// The listeners a snapshot serves: L4 Service addresses (TCP and UDP)
    /// and Gateway ports. A Gateway port on an address an L4 Service also
    /// uses is left out (the compiler reports the conflict).
    pub fn wanted(l4: &L4Snapshot, gateway: &GatewaySnapshot) -> BTreeSet<Wanted> {
        let tcp = l4.services.keys().map(|a| (Protocol::Tcp, *a, L4_TAG));
        let udp = l4.udp.keys().map(|a| (Protocol::Udp, *a, L4_TAG));
        let gw = gateway
            .ports
            .keys()
            .filter(|a| !l4.services.contains_key(a))
            .map(|a| (Protocol::Tcp, *a, GATEWAY_TAG));
        tcp.chain(udp).chain(gw).collect()
    }

    /// Closes the listeners not in `wanted`.
    pub fn remove_stale(&mut self, wanted: &BTreeSet<Wanted>) {
        let stale: Vec<Wanted> = self
            .active
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for key in stale {
            if let Some(id) = self.active.remove(&key) {
                for tx in &self.senders {
                    let _ = tx.send(ListenerCommand::Remove { id });
                }
                let (protocol, addr, tag) = key;
                tracing::info!(%addr, ?protocol, "{} listener closed", kind(tag));
            }
        }
    }

    /// Binds and starts the listeners of addresses in `wanted` not yet
    /// listened on. Returns the addresses that could not be bound, with why.
    pub fn add_missing(
        &mut self,
        wanted: &BTreeSet<Wanted>,
    ) -> Vec<(Protocol, SocketAddr, String)> {
        let mut failed = Vec::new();
        for &(protocol, addr, tag) in wanted {
            if self.active.contains_key(&(protocol, addr, tag)) {
                continue;
            }
            let id = self.next_id;
            let commands: Result<Vec<ListenerCommand>, _> = match protocol {
                Protocol::Udp => bind_udp_per_worker(addr, self.senders.len()).map(|sockets| {
                    sockets
                        .into_iter()
                        .map(|socket| ListenerCommand::AddDatagram { id, tag, socket })
                        .collect()
                }),
                _ => bind_per_worker(&[addr], self.senders.len()).map(|per_worker| {
                    per_worker
                        .into_iter()
                        .flatten()
                        .map(|listener| ListenerCommand::Add { id, tag, listener })
                        .collect()
                }),
            };
            match commands {
                Ok(commands) => {
                    self.next_id += 1;
                    for (tx, command) in self.senders.iter().zip(commands) {
                        let _ = tx.send(command);
                    }
                    self.active.insert((protocol, addr, tag), id);
                    tracing::info!(%addr, ?protocol, "{} listener open", kind(tag));
                }
                Err(e) => {
                    tracing::error!("{e}");
                    failed.push((protocol, addr, e.to_string()));
                }
            }
        }
        failed
    }
}

/// What a listener tag serves, for logs.
fn kind(tag: u32) -> &'static str {
    if tag == GATEWAY_TAG { "gateway" } else { "L4" }
}
