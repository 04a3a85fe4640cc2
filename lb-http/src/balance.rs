//! Endpoint choice for L7 requests on one worker: a backend's load-balancing
//! policy (round robin, least request by the power of two choices, or a
//! consistent hash of a header, a cookie or the client address) and passive
//! outlier detection (consecutive failures eject an endpoint for a growing
//! interval, never more than half of a backend's endpoints at once).
//!
//! State is per worker (`Cell`/`RefCell`, never borrowed across an await):
//! in-flight counts, failure streaks and ejections are what this worker saw.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use lb_core::flowhash::hash_bytes;
use serde::Serialize;
use tokio::time::Instant;

use crate::snapshot::BackendId;

/// How a backend's endpoint is chosen for a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The less busy of two endpoints picked at random (by this worker's
    /// in-flight requests).
    LeastRequest,
    /// The same key goes to the same endpoint while it is available
    /// (rendezvous hashing, so few keys move when endpoints change).
    Hash(HashOn),
}

/// What a [`Policy::Hash`] hashes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashOn {
    /// A request header's value (name in lower case); requests without it
    /// fall back to round robin.
    Header(String),
    /// A cookie's value; requests without it fall back to round robin.
    Cookie(String),
    /// The client's IP address (also Service `sessionAffinity: ClientIP`).
    ClientIp,
}

/// Passive outlier detection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSettings {
    /// Consecutive failures (connect errors, 5xx) that eject an endpoint;
    /// 0 turns ejection off.
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection lasts n times as long.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
        }
    }
}

/// What this worker knows about one endpoint.
#[derive(Debug, Default, Clone, Copy)]
struct EndpointState {
    in_flight: u32,
    failures: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

impl EndpointState {
    fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| t > now)
    }
}

/// One worker's endpoint chooser.
#[derive(Debug)]
pub struct Balancer {
    settings: OutlierSettings,
    endpoints: RefCell<HashMap<SocketAddr, EndpointState>>,
    /// Endpoints with a failure streak or an ejection: while 0 (the usual
    /// case) choosing and recording skip the state map altogether.
    troubled: Cell<usize>,
    cursors: RefCell<Vec<usize>>,
    rng: Cell<u64>,
}

impl Balancer {
    /// A chooser for worker `worker` (round-robin cursors start at an
    /// offset per worker).
    pub fn new(worker: usize, settings: OutlierSettings) -> Self {
        Self {
            settings,
            endpoints: RefCell::new(HashMap::new()),
            troubled: Cell::new(0),
            cursors: RefCell::new(Vec::new()),
            rng: Cell::new(0x9e37_79b9_7f4a_7c15 ^ (worker as u64).wrapping_mul(0x2545_f491)),
        }
    }

    fn next_random(&self) -> u64 {
        // xorshift64*: quick and good enough for picking two endpoints.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Chooses an endpoint of backend `id` from `endpoints`, skipping
    /// `exclude` (endpoints already tried for this request) and ejected
    /// endpoints (unless every remaining one is ejected). `key` is the hash
    /// of the policy's key when the request has one.
    pub fn pick(
        &self,
        id: BackendId,
        endpoints: &[SocketAddr],
        policy: &Policy,
        key: Option<u64>,
        exclude: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let calm = self.troubled.get() == 0;
        let now = if calm { None } else { Some(Instant::now()) };
        let states = self.endpoints.borrow();
        let ejected =
            |a: &SocketAddr| now.is_some_and(|now| states.get(a).is_some_and(|s| s.ejected(now)));
        let open = |a: &&SocketAddr| !exclude.contains(a);
        let healthy = if calm {
            endpoints.len()
        } else {
            endpoints
                .iter()
                .filter(open)
                .filter(|a| !ejected(a))
                .count()
        };
        let eligible = |a: &&SocketAddr| open(a) && (healthy == 0 || !ejected(a));
        match (policy, key) {
            (Policy::Hash(_), Some(key)) => endpoints
                .iter()
                .filter(eligible)
                .max_by_key(|a| rendezvous(key, a))
                .copied(),
            (Policy::LeastRequest, _) => {
                let n = endpoints.iter().filter(eligible).count();
                if n == 0 {
                    return None;
                }
                let i = (self.next_random() % n as u64) as usize;
                let j = (self.next_random() % n as u64) as usize;
                let a = *endpoints.iter().filter(eligible).nth(i)?;
                let b = *endpoints.iter().filter(eligible).nth(j)?;
                let load = |x: &SocketAddr| states.get(x).map_or(0, |s| s.in_flight);
                Some(if load(&b) < load(&a) { b } else { a })
            }
            _ => {
                let n = endpoints.len();
                if n == 0 {
                    return None;
                }
                let mut cursors = self.cursors.borrow_mut();
                let i = id.0 as usize;
                if cursors.len() <= i {
                    let start = self.rng.get() as usize;
                    cursors.resize(i + 1, start);
                }
                for _ in 0..n {
                    let c = cursors[i];
                    cursors[i] = c.wrapping_add(1);
                    let a = &endpoints[c % n];
                    if eligible(&a) {
                        return Some(*a);
                    }
                }
                None
            }
        }
    }

    /// Marks a request to `addr` as started; the guard marks it finished.
    /// Only least-request needs the count (`tracked`); other policies get a
    /// guard that costs nothing.
    pub fn start(&self, addr: SocketAddr, tracked: bool) -> InFlight<'_> {
        if tracked {
            self.endpoints
                .borrow_mut()
                .entry(addr)
                .or_default()
                .in_flight += 1;
        }
        InFlight {
            balancer: self,
            addr,
            tracked,
        }
    }

    /// Records a success: the failure streak (and a past ejection) ends.
    pub fn success(&self, addr: SocketAddr) {
        if self.troubled.get() == 0 {
            return;
        }
        if let Some(s) = self.endpoints.borrow_mut().get_mut(&addr)
            && (s.failures > 0 || s.ejected_until.is_some())
        {
            s.failures = 0;
            s.ejected_until = None;
            self.troubled.set(self.troubled.get() - 1);
        }
    }

    /// Records a failure (connect error or 5xx) of `addr`, one of `backend`'s
    /// endpoints; ejects it when its streak reaches the threshold and at most
    /// half of `backend` would then be ejected. Returns whether it was ejected.
    pub fn failure(&self, addr: SocketAddr, backend: &[SocketAddr]) -> bool {
        let now = Instant::now();
        let mut states = self.endpoints.borrow_mut();
        let threshold = self.settings.consecutive_failures;
        let streak = {
            let s = states.entry(addr).or_default();
            if s.failures == 0 && s.ejected_until.is_none() {
                self.troubled.set(self.troubled.get() + 1);
            }
            s.failures += 1;
            s.failures
        };
        if threshold == 0 || streak < threshold {
            return false;
        }
        let ejected = backend
            .iter()
            .filter(|a| **a != addr && states.get(a).is_some_and(|s| s.ejected(now)))
            .count();
        if (ejected + 1) * 2 > backend.len() {
            return false;
        }
        let s = states.entry(addr).or_default();
        if s.ejected(now) {
            return false;
        }
        s.ejections += 1;
        s.failures = 0;
        let time = self
            .settings
            .base_ejection
            .saturating_mul(s.ejections)
            .min(self.settings.max_ejection);
        s.ejected_until = Some(now + time);
        tracing::info!(endpoint = %addr, seconds = time.as_secs(), "endpoint ejected after consecutive failures");
        true
    }

    /// Whether `addr` is ejected now.
    pub fn is_ejected(&self, addr: SocketAddr) -> bool {
        let now = Instant::now();
        self.endpoints
            .borrow()
            .get(&addr)
            .is_some_and(|s| s.ejected(now))
    }
}

/// A request in flight to one endpoint (for least-request).
#[derive(Debug)]
pub struct InFlight<'a> {
    balancer: &'a Balancer,
    addr: SocketAddr,
    tracked: bool,
}

impl InFlight<'_> {
    /// The endpoint.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.tracked {
            return;
        }
        if let Some(s) = self.balancer.endpoints.borrow_mut().get_mut(&self.addr) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }
}

/// The rendezvous weight of endpoint `addr` for `key`.
fn rendezvous(key: u64, addr: &SocketAddr) -> u64 {
    let mut bytes = [0u8; 26];
    bytes[..8].copy_from_slice(&key.to_le_bytes());
    match addr.ip() {
        std::net::IpAddr::V4(ip) => bytes[8..12].copy_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => bytes[8..24].copy_from_slice(&ip.octets()),
    }
    bytes[24..].copy_from_slice(&addr.port().to_le_bytes());
    hash_bytes(0x6c62_2d72_656e_6476, &bytes)
}

impl Policy {
    /// Parses the `lb.example.com/load-balance` annotation value:
    /// `round-robin`, `least-request`, `hash-header:<name>`,
    /// `hash-cookie:<name>` or `hash-client-ip`.
    pub fn parse(value: &str) -> Result<Policy, String> {
        let v = value.trim();
        let named = |prefix: &str| {
            v.strip_prefix(prefix)
                .map(str::trim)
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()))
        };
        Ok(match v {
            "round-robin" => Policy::RoundRobin,
            "least-request" => Policy::LeastRequest,
            "hash-client-ip" => Policy::Hash(HashOn::ClientIp),
            _ => {
                if let Some(h) = named("hash-header:") {
                    Policy::Hash(HashOn::Header(h.to_ascii_lowercase()))
                } else if let Some(c) = named("hash-cookie:") {
                    Policy::Hash(HashOn::Cookie(c.to_owned()))
                } else {
                    return Err(format!(
                        "{value:?} is not round-robin, least-request, hash-header:<name>, hash-cookie:<name> or hash-client-ip"
                    ));
                }
            }
        })
    }
}

impl Policy {
    /// The hash key of a request under this policy, if the request has one:
    /// the client address, a header's first value, or a cookie's value from
    /// any `Cookie` field. `headers` yields (name, value) pairs.
    pub fn request_key<'h>(
        &self,
        client_ip: &str,
        mut headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    ) -> Option<u64> {
        match self {
            Policy::Hash(HashOn::ClientIp) => Some(key_hash(client_ip.as_bytes())),
            Policy::Hash(HashOn::Header(name)) => headers
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| key_hash(v)),
            Policy::Hash(HashOn::Cookie(name)) => headers
                .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
                .find_map(|(_, v)| cookie_value(v, name))
                .map(key_hash),
            Policy::RoundRobin | Policy::LeastRequest => None,
        }
    }
}

/// The hash of a policy key (header value, cookie value, client address).
pub fn key_hash(bytes: &[u8]) -> u64 {
    hash_bytes(0x6c62_2d68_6173_686b, bytes)
}

/// The value of cookie `name` in a `Cookie` header value.
pub fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)))
            .collect()
    }

    #[test]
    fn round_robin_visits_every_endpoint_and_skips_excluded_ones() {
        let b = Balancer::new(0, OutlierSettings::default());
        let e = eps(3);
        let seen: Vec<_> = (0..6)
            .map(|_| {
                b.pick(BackendId(0), &e, &Policy::RoundRobin, None, &[])
                    .unwrap()
            })
            .collect();
        for a in &e {
            assert_eq!(seen.iter().filter(|x| *x == a).count(), 2);
        }
        for _ in 0..6 {
            let a = b
                .pick(BackendId(0), &e, &Policy::RoundRobin, None, &[e[1]])
                .unwrap();
            assert_ne!(a, e[1]);
        }
        assert_eq!(
            b.pick(BackendId(0), &e[..1], &Policy::RoundRobin, None, &e[..1]),
            None
        );
    }

    #[test]
    fn hashing_is_sticky_and_moves_few_keys_when_an_endpoint_leaves() {
        let b = Balancer::new(0, OutlierSettings::default());
        let e = eps(5);
        let p = Policy::Hash(HashOn::ClientIp);
        let pick = |k: u64, e: &[SocketAddr]| b.pick(BackendId(0), e, &p, Some(k), &[]).unwrap();
        let mut moved = 0;
        for k in 0..1000u64 {
            let key = key_hash(&k.to_le_bytes());
            let first = pick(key, &e);
            assert_eq!(first, pick(key, &e));
            let without: Vec<_> = e.iter().copied().filter(|a| *a != e[4]).collect();
            let after = pick(key, &without);
            if first != e[4] {
                assert_eq!(first, after, "only the removed endpoint's keys move");
            } else {
                moved += 1;
            }
        }
        assert!(
            (120..=280).contains(&moved),
            "{moved} of 1000 keys were on one of 5"
        );
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let b = Balancer::new(0, OutlierSettings::default());
        let e = eps(2);
        let _busy: Vec<_> = (0..10).map(|_| b.start(e[0], true)).collect();
        let picks: Vec<_> = (0..50)
            .map(|_| {
                b.pick(BackendId(0), &e, &Policy::LeastRequest, None, &[])
                    .unwrap()
            })
            .collect();
        assert!(picks.iter().filter(|a| **a == e[1]).count() > 25);
    }

    #[test]
    fn failures_eject_an_endpoint_but_never_more_than_half() {
        let b = Balancer::new(0, OutlierSettings::default());
        let e = eps(3);
        for _ in 0..4 {
            assert!(!b.failure(e[0], &e));
        }
        assert!(b.failure(e[0], &e), "the fifth consecutive failure ejects");
        assert!(b.is_ejected(e[0]));
        for _ in 0..20 {
            assert_ne!(
                b.pick(BackendId(0), &e, &Policy::RoundRobin, None, &[]),
                Some(e[0])
            );
        }
        // A second ejection would leave fewer than half serving.
        for _ in 0..10 {
            assert!(!b.failure(e[1], &e));
        }
        assert!(!b.is_ejected(e[1]));
        // A success ends a streak.
        b.success(e[2]);
        for _ in 0..4 {
            b.failure(e[2], &e);
        }
        b.success(e[2]);
        assert!(!b.failure(e[2], &e));
    }

    #[test]
    fn all_ejected_falls_back_to_every_endpoint() {
        let b = Balancer::new(
            0,
            OutlierSettings {
                consecutive_failures: 1,
                ..OutlierSettings::default()
            },
        );
        let e = eps(2);
        assert!(b.failure(e[0], &e));
        // e[1] is the only healthy one; excluding it leaves the ejected one.
        assert_eq!(
            b.pick(BackendId(0), &e, &Policy::RoundRobin, None, &[e[1]]),
            Some(e[0])
        );
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = b"a=1; session=xyz ; b=2";
        assert_eq!(cookie_value(h, "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie_value(h, "b"), Some(&b"2"[..]));
        assert_eq!(cookie_value(h, "c"), None);
    }
}
