//! The L4 listeners of the running workers: after each compile, addresses no
//! longer served are closed (TCP connections already accepted carry on; UDP
//! flows end with their socket) and new ones are bound, one SO_REUSEPORT
//! socket per worker, and handed to the workers while they run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use lb_core::flowhash::Protocol;
use lb_core::l4::L4Snapshot;
use lb_core::listener::{bind_per_worker, bind_udp_per_worker};
use lb_core::runtime::ListenerCommand;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// The tag L4 listeners carry (HTTP listeners have `runtime::STATIC_TAG`).
pub const L4_TAG: u32 = 1;

/// The control thread's view of the workers' L4 listeners.
#[derive(Debug)]
pub struct L4Listeners {
    senders: Vec<UnboundedSender<ListenerCommand>>,
    active: BTreeMap<(Protocol, SocketAddr), u64>,
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

    /// Protocols and addresses currently listened on.
    pub fn addresses(&self) -> impl Iterator<Item = &(Protocol, SocketAddr)> {
        self.active.keys()
    }

    /// The protocols and addresses an L4 snapshot serves.
    pub fn wanted(l4: &L4Snapshot) -> BTreeSet<(Protocol, SocketAddr)> {
        let tcp = l4.services.keys().map(|a| (Protocol::Tcp, *a));
        let udp = l4.udp.keys().map(|a| (Protocol::Udp, *a));
        tcp.chain(udp).collect()
    }

    /// Closes the listeners of addresses not in `wanted`.
    pub fn remove_stale(&mut self, wanted: &BTreeSet<(Protocol, SocketAddr)>) {
        let stale: Vec<(Protocol, SocketAddr)> = self
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
                let (protocol, addr) = key;
                tracing::info!(%addr, ?protocol, "L4 listener closed");
            }
        }
    }

    /// Binds and starts the listeners of addresses in `wanted` not yet
    /// listened on. Returns the addresses that could not be bound, with why.
    pub fn add_missing(
        &mut self,
        wanted: &BTreeSet<(Protocol, SocketAddr)>,
    ) -> Vec<(Protocol, SocketAddr, String)> {
        let mut failed = Vec::new();
        for &(protocol, addr) in wanted {
            if self.active.contains_key(&(protocol, addr)) {
                continue;
            }
            let id = self.next_id;
            let commands: Result<Vec<ListenerCommand>, _> = match protocol {
                Protocol::Udp => bind_udp_per_worker(addr, self.senders.len()).map(|sockets| {
                    sockets
                        .into_iter()
                        .map(|socket| ListenerCommand::AddDatagram {
                            id,
                            tag: L4_TAG,
                            socket,
                        })
                        .collect()
                }),
                _ => bind_per_worker(&[addr], self.senders.len()).map(|per_worker| {
                    per_worker
                        .into_iter()
                        .flatten()
                        .map(|listener| ListenerCommand::Add {
                            id,
                            tag: L4_TAG,
                            listener,
                        })
                        .collect()
                }),
            };
            match commands {
                Ok(commands) => {
                    self.next_id += 1;
                    for (tx, command) in self.senders.iter().zip(commands) {
                        let _ = tx.send(command);
                    }
                    self.active.insert((protocol, addr), id);
                    tracing::info!(%addr, ?protocol, "L4 listener open");
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
