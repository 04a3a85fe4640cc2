//! Bounds on a worker's connections: how many it holds at once, in total and
//! per client address, and the send deadline every TCP socket gets.
//!
//! Admission happens right after accept: a connection over a cap is closed
//! at once (the kernel already completed the handshake, so closing it is the
//! cheapest answer) and counted by reason. Accounting is per worker, needs
//! no locks, and the per-client table holds only addresses with a
//! connection open (an entry goes when its last connection closes).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

/// Descriptors kept out of the connection budget for everything that is
/// not a downstream connection's pair: listeners, UDP sockets, the admin
/// API, Kubernetes watches, logs, health checks, pooled upstreams.
pub const RESERVED_FDS: u64 = 1024;
/// The smallest automatic per-worker cap, whatever the descriptor limit.
pub const MIN_AUTO_CONNECTIONS: usize = 64;
/// Longest send deadline accepted (TCP_USER_TIMEOUT is a 32-bit count of
/// milliseconds; a day is far beyond any useful value).
pub const MAX_SEND_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The limits every worker applies to the connections it accepts (the
/// default: no caps, the kernel's send deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnLimits {
    /// Most connections one worker holds at once (0: no cap).
    pub max_connections: usize,
    /// Most connections one worker holds at once from one client address
    /// (0: no cap).
    pub max_per_client: usize,
    /// Send deadline of every TCP socket (accepted and connected): data the
    /// peer does not acknowledge, or cannot take because its window is
    /// zero, for this long aborts the connection (TCP_USER_TIMEOUT).
    /// `None`: the kernel's default (retransmissions for about 15 minutes,
    /// zero-window probes forever).
    pub send_timeout: Option<Duration>,
}

/// Raises this process's soft descriptor limit to its hard limit and
/// returns the resulting soft limit (the limit as it was if it cannot be
/// raised or read; `None` if it cannot be read).
pub fn raise_nofile() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// The automatic per-worker connection cap for a descriptor limit of
/// `nofile` shared by `workers` workers: after [`RESERVED_FDS`], half of
/// the rest split among the workers (each downstream connection may hold
/// an upstream one), at least [`MIN_AUTO_CONNECTIONS`].
pub fn auto_max_connections(nofile: u64, workers: usize) -> usize {
    let budget = nofile.saturating_sub(RESERVED_FDS) / 2 / (workers.max(1) as u64);
    usize::try_from(budget)
        .unwrap_or(usize::MAX)
        .max(MIN_AUTO_CONNECTIONS)
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The worker holds `max_connections`.
    Worker = 0,
    /// The client address holds `max_per_client` on this worker.
    Client = 1,
}

impl Refusal {
    /// Every reason, in counter-index order.
    pub const ALL: [Refusal; 2] = [Refusal::Worker, Refusal::Client];

    /// The `reason` label of `lb_connections_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Worker => "max_connections",
            Refusal::Client => "max_connections_per_client",
        }
    }
}

/// One worker's count of open connections, in total and per client address.
#[derive(Debug)]
pub struct Admission {
    limits: ConnLimits,
    open: Cell<usize>,
    per_client: RefCell<HashMap<IpAddr, usize>>,
}

/// An admitted connection's place in the counts; dropping it gives the
/// place back.
#[derive(Debug)]
pub struct Ticket {
    admission: Rc<Admission>,
    client: Option<IpAddr>,
}

impl Admission {
    /// Counts for a worker applying `limits`.
    pub fn new(limits: ConnLimits) -> Rc<Self> {
        Rc::new(Self {
            limits,
            open: Cell::new(0),
            per_client: RefCell::new(HashMap::new()),
        })
    }

    /// Admits a connection from `client`, or says which cap it is over.
    pub fn admit(self: &Rc<Self>, client: IpAddr) -> Result<Ticket, Refusal> {
        let l = &self.limits;
        if l.max_connections > 0 && self.open.get() >= l.max_connections {
            return Err(Refusal::Worker);
        }
        let client = if l.max_per_client > 0 {
            let ip = client.to_canonical();
            let mut map = self.per_client.borrow_mut();
            let n = map.entry(ip).or_insert(0);
            if *n >= l.max_per_client {
                return Err(Refusal::Client);
            }
            *n += 1;
            Some(ip)
        } else {
            None
        };
        self.open.set(self.open.get() + 1);
        Ok(Ticket {
            admission: Rc::clone(self),
            client,
        })
    }

    /// Connections open on this worker.
    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// Client addresses with a connection open (the per-client table's size).
    pub fn clients(&self) -> usize {
        self.per_client.borrow().len()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let a = &self.admission;
        a.open.set(a.open.get().saturating_sub(1));
        if let Some(ip) = self.client {
            let mut map = a.per_client.borrow_mut();
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// A warning that is logged at most once per interval; the ones held back
/// are counted and reported with the next one.
#[derive(Debug)]
pub struct RateLimitedWarn {
    every: Duration,
    last: Cell<Option<std::time::Instant>>,
    held: Cell<u64>,
}

impl RateLimitedWarn {
    /// At most one warning per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Cell::new(None),
            held: Cell::new(0),
        }
    }

    /// Whether to log now; if so, also how many were held back since the
    /// last one logged.
    pub fn check(&self, now: std::time::Instant) -> Option<u64> {
        if self
            .last
            .get()
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.held.set(self.held.get() + 1);
            return None;
        }
        self.last.set(Some(now));
        Some(self.held.replace(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn per_client_cap_counts_each_address_and_forgets_closed_ones() {
        let a = Admission::new(ConnLimits {
            max_connections: 0,
            max_per_client: 2,
            send_timeout: None,
        });
        let t1 = a.admit(ip(1)).unwrap();
        let t2 = a.admit(ip(1)).unwrap();
        assert_eq!(a.admit(ip(1)).unwrap_err(), Refusal::Client);
        // A v4-mapped v6 address is the same client.
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(a.admit(mapped).unwrap_err(), Refusal::Client);
        let other = a.admit(ip(2)).unwrap();
        assert_eq!((a.open(), a.clients()), (3, 2));
        drop(t1);
        let t3 = a.admit(ip(1)).unwrap();
        drop((t2, t3, other));
        assert_eq!((a.open(), a.clients()), (0, 0));
    }

    #[test]
    fn worker_cap_refuses_past_the_total() {
        let a = Admission::new(ConnLimits {
            max_connections: 2,
            max_per_client: 0,
            send_timeout: None,
        });
        let held: Vec<_> = (1..=2).map(|i| a.admit(ip(i)).unwrap()).collect();
        assert_eq!(a.admit(ip(3)).unwrap_err(), Refusal::Worker);
        assert_eq!(a.clients(), 0, "no per-client table without that cap");
        drop(held);
        assert!(a.admit(ip(3)).is_ok());
    }

    #[test]
    fn automatic_cap_leaves_the_reserve_and_has_a_floor() {
        assert_eq!(auto_max_connections(1_048_576, 4), (1_048_576 - 1024) / 8);
        assert_eq!(auto_max_connections(20_000, 2), (20_000 - 1024) / 4);
        assert_eq!(auto_max_connections(1024, 2), MIN_AUTO_CONNECTIONS);
        assert_eq!(auto_max_connections(0, 0), MIN_AUTO_CONNECTIONS);
    }

    #[test]
    fn rate_limited_warning_holds_back_and_counts() {
        let w = RateLimitedWarn::new(Duration::from_secs(10));
        let t0 = std::time::Instant::now();
        assert_eq!(w.check(t0), Some(0));
        assert_eq!(w.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(w.check(t0 + Duration::from_secs(2)), None);
        assert_eq!(w.check(t0 + Duration::from_secs(11)), Some(2));
    }
}
