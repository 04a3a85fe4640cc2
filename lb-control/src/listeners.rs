//! The L4 listeners of the running workers: after each compile, addresses no
//! longer served are closed (connections already accepted carry on) and new
//! ones are bound, one SO_REUSEPORT socket per worker, and handed to the
//! workers while they run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use lb_core::listener::bind_per_worker;
use lb_core::runtime::ListenerCommand;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// The tag L4 listeners carry (HTTP listeners have `runtime::STATIC_TAG`).
pub const L4_TAG: u32 = 1;

/// The control thread's view of the workers' L4 listeners.
#[derive(Debug)]
pub struct L4Listeners {
    senders: Vec<UnboundedSender<ListenerCommand>>,
    active: BTreeMap<SocketAddr, u64>,
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

    /// Addresses currently listened on.
    pub fn addresses(&self) -> impl Iterator<Item = &SocketAddr> {
        self.active.keys()
    }

    /// Closes the listeners of addresses not in `wanted`.
    pub fn remove_stale(&mut self, wanted: &BTreeSet<SocketAddr>) {
        let stale: Vec<SocketAddr> = self
            .active
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for addr in stale {
            if let Some(id) = self.active.remove(&addr) {
                for tx in &self.senders {
                    let _ = tx.send(ListenerCommand::Remove { id });
                }
                tracing::info!(%addr, "L4 listener closed");
            }
        }
    }

    /// Binds and starts the listeners of addresses in `wanted` not yet
    /// listened on. Returns the addresses that could not be bound, with why.
    pub fn add_missing(&mut self, wanted: &BTreeSet<SocketAddr>) -> Vec<(SocketAddr, String)> {
        let mut failed = Vec::new();
        for addr in wanted {
            if self.active.contains_key(addr) {
                continue;
            }
            match bind_per_worker(&[*addr], self.senders.len()) {
                Ok(per_worker) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    for (tx, mut sockets) in self.senders.iter().zip(per_worker) {
                        if let Some(listener) = sockets.pop() {
                            let _ = tx.send(ListenerCommand::Add {
                                id,
                                tag: L4_TAG,
                                listener,
                            });
                        }
                    }
                    self.active.insert(*addr, id);
                    tracing::info!(%addr, "L4 listener open");
                }
                Err(e) => {
                    tracing::error!("{e}");
                    failed.push((*addr, e.to_string()));
                }
            }
        }
        failed
    }
}
