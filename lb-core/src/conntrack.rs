//! Per-worker connection tracking: a bounded LRU map from a flow key to the
//! backend chosen for it, so that an established flow keeps its backend when the
//! endpoint set (and so the Maglev table) changes, until that backend has left the
//! endpoint set and a grace period has passed.
//!
//! The same structure keyed by client IP ([`AffinityKey`](crate::flowhash::AffinityKey))
//! with the affinity timeout as idle timeout and no grace implements Service
//! `sessionAffinity: ClientIP` ([`ConnTrackConfig::session_affinity`]).
//!
//! One table belongs to one worker thread: no locks, no atomics. Time is an
//! [`Instant`] passed in by the caller. Every operation is O(1) except the sweeps,
//! which cost O(entries removed) ([`ConnTrack::expire`]) or O(distinct backends)
//! ([`ConnTrack::update_endpoints`]). Entries live in a `Vec` slab linked by `u32`
//! indices into two intrusive doubly-linked lists: the LRU list (most recently
//! used first, which is also last-seen order while `now` does not go backwards,
//! so idle entries are found at its tail) and one list per backend (so a departed
//! backend's entries are dropped without a scan). The key index is a std
//! `HashMap` with its randomly keyed SipHash, since flow keys come from clients.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::flowhash::{AffinityKey, FiveTuple};

/// The default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10_800);
/// The largest capacity (entries are addressed by `u32`).
pub const MAX_CAPACITY: usize = (u32::MAX - 1) as usize;

/// End of a list.
const NIL: u32 = u32::MAX;

/// Sizing and timing of a [`ConnTrack`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnTrackConfig {
    /// The most entries kept; inserting into a full table evicts the least
    /// recently used entry. 0 disables tracking (every lookup chooses afresh).
    /// Values above [`MAX_CAPACITY`] are clamped to it.
    pub capacity: usize,
    /// An entry not used for this long is expired.
    pub idle_timeout: Duration,
    /// How long entries keep a backend that has left the endpoint set.
    pub grace: Duration,
}

impl ConnTrackConfig {
    /// A flow table: `capacity` entries, expired after `idle_timeout`, keeping a
    /// departed backend's flows for `grace`.
    pub fn flows(capacity: usize, idle_timeout: Duration, grace: Duration) -> Self {
        Self {
            capacity,
            idle_timeout,
            grace,
        }
    }

    /// A session-affinity table: `capacity` client entries, each kept for
    /// `timeout` after its last use (Kubernetes default:
    /// [`DEFAULT_AFFINITY_TIMEOUT`]) and dropped as soon as its backend leaves
    /// the endpoint set.
    pub fn session_affinity(capacity: usize, timeout: Duration) -> Self {
        Self {
            capacity,
            idle_timeout: timeout,
            grace: Duration::ZERO,
        }
    }
}

/// Counters of a [`ConnTrack`] since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnTrackStats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that had to choose a backend.
    pub misses: u64,
    /// Entries evicted to make room (capacity reached).
    pub evicted: u64,
    /// Entries removed after their idle timeout.
    pub expired: u64,
    /// Entries removed because their backend left and its grace period ended.
    pub drained: u64,
}

/// One tracked flow.
#[derive(Debug)]
struct Entry<K, B> {
    key: K,
    backend: B,
    last_seen: Instant,
}

/// A slab slot: its links and, when occupied, its entry. A vacant slot's `next`
/// links the free list.
#[derive(Debug)]
struct Node<K, B> {
    prev: u32,
    next: u32,
    backend_prev: u32,
    backend_next: u32,
    entry: Option<Entry<K, B>>,
}

/// What the table knows about one backend that entries point to.
#[derive(Debug)]
struct BackendState {
    /// First entry of this backend's list.
    head: u32,
    /// Entries pointing to this backend.
    count: u32,
    /// When the backend was seen missing from the endpoint set.
    gone_since: Option<Instant>,
    /// Whether the backend is in the `draining` queue.
    queued: bool,
}

/// Whether a found entry may be used.
enum Liveness {
    Live,
    Idle,
    Drained,
}

/// A flow table keyed by 5-tuple.
pub type FlowTable<B> = ConnTrack<FiveTuple, B>;
/// A `sessionAffinity: ClientIP` table keyed by client IP and Service port.
pub type AffinityTable<B> = ConnTrack<AffinityKey, B>;

/// A bounded, per-worker LRU map from flow key `K` to backend identity `B`.
#[derive(Debug)]
pub struct ConnTrack<K, B> {
    config: ConnTrackConfig,
    index: HashMap<K, u32>,
    nodes: Vec<Node<K, B>>,
    free: u32,
    head: u32,
    tail: u32,
    backends: HashMap<B, BackendState>,
    draining: Vec<B>,
    stats: ConnTrackStats,
    /// Keys the table dropped by itself (evicted, expired, drained), kept
    /// for [`ConnTrack::drain_dropped`] when recording is on.
    dropped: Option<Vec<K>>,
}

impl<K: Hash + Eq + Clone, B: Hash + Eq + Clone> ConnTrack<K, B> {
    /// An empty table.
    pub fn new(config: ConnTrackConfig) -> Self {
        let config = ConnTrackConfig {
            capacity: config.capacity.min(MAX_CAPACITY),
            ..config
        };
        Self {
            config,
            index: HashMap::new(),
            nodes: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            backends: HashMap::new(),
            draining: Vec::new(),
            stats: ConnTrackStats::default(),
            dropped: None,
        }
    }

    /// Makes the table remember the keys it drops by itself (LRU eviction,
    /// idle expiry, drained backends), so a caller keeping per-flow state
    /// beside the table (a UDP flow's socket) can release it.
    pub fn record_dropped(mut self) -> Self {
        self.dropped = Some(Vec::new());
        self
    }

    /// Takes the keys dropped since the last call (empty unless
    /// [`ConnTrack::record_dropped`] was set). Keys removed by the caller
    /// ([`ConnTrack::remove`], [`ConnTrack::clear`]) are not included.
    pub fn drain_dropped(&mut self) -> Vec<K> {
        self.dropped
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Changes timeouts and capacity in place, keeping the entries (the
    /// least recently used are dropped while over a smaller capacity).
    pub fn reconfigure(&mut self, config: ConnTrackConfig) {
        self.config = ConnTrackConfig {
            capacity: config.capacity.min(MAX_CAPACITY),
            ..config
        };
        while self.index.len() > self.config.capacity && self.tail != NIL {
            self.stats.evicted += 1;
            self.remove_node(self.tail);
        }
    }

    /// The configuration (capacity clamped to [`MAX_CAPACITY`]).
    pub fn config(&self) -> &ConnTrackConfig {
        &self.config
    }

    /// The number of entries (for the conntrack-entries gauge). It may include
    /// entries already idle or drained that no sweep has removed yet.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> ConnTrackStats {
        self.stats
    }

    /// The backend of flow `key`: the tracked one if its entry is live (the entry
    /// is then marked used at `now`), otherwise `choose()`'s answer, which is
    /// tracked from `now` on (evicting the least recently used entry if the table
    /// is full). `None` if there is no live entry and `choose` returns `None`.
    pub fn lookup_or_insert(
        &mut self,
        key: K,
        now: Instant,
        choose: impl FnOnce() -> Option<B>,
    ) -> Option<B> {
        if let Some(&i) = self.index.get(&key) {
            match self.liveness(i, now) {
                Liveness::Live => {
                    self.stats.hits += 1;
                    self.mark_used(i, now);
                    return self.entry(i).map(|e| e.backend.clone());
                }
                Liveness::Idle => {
                    self.stats.expired += 1;
                    self.remove_node(i);
                }
                Liveness::Drained => {
                    self.stats.drained += 1;
                    self.remove_node(i);
                }
            }
        }
        self.stats.misses += 1;
        let backend = choose()?;
        if self.config.capacity == 0 {
            return Some(backend);
        }
        if self.index.len() >= self.config.capacity && self.tail != NIL {
            self.stats.evicted += 1;
            self.remove_node(self.tail);
        }
        self.insert_node(key, backend.clone(), now);
        Some(backend)
    }

    /// The backend of flow `key` if its entry is live at `now`, without marking
    /// it used.
    pub fn get(&self, key: &K, now: Instant) -> Option<&B> {
        let &i = self.index.get(key)?;
        match self.liveness(i, now) {
            Liveness::Live => self.entry(i).map(|e| &e.backend),
            Liveness::Idle | Liveness::Drained => None,
        }
    }

    /// Marks flow `key` used at `now` (traffic seen). Returns `false`, removing
    /// the entry, if it was idle past its timeout or drained; `false` if absent.
    pub fn touch(&mut self, key: &K, now: Instant) -> bool {
        let Some(&i) = self.index.get(key) else {
            return false;
        };
        match self.liveness(i, now) {
            Liveness::Live => {
                self.mark_used(i, now);
                true
            }
            Liveness::Idle => {
                self.stats.expired += 1;
                self.remove_node(i);
                false
            }
            Liveness::Drained => {
                self.stats.drained += 1;
                self.remove_node(i);
                false
            }
        }
    }

    /// Forgets flow `key` (connection closed) and returns its backend.
    pub fn remove(&mut self, key: &K) -> Option<B> {
        let &i = self.index.get(key)?;
        let entry = self.unlink_entry(i)?;
        Some(entry.backend)
    }

    /// Tells the table which backends are in the current endpoint set (call when
    /// a new snapshot is picked up). A tracked backend for which `is_current`
    /// is false is considered gone from `now` (or from when it was first seen
    /// gone); its entries are dropped once the grace period has passed. A backend
    /// that is current again keeps its entries. Costs O(distinct tracked backends).
    pub fn update_endpoints(&mut self, now: Instant, is_current: impl Fn(&B) -> bool) {
        for (backend, state) in self.backends.iter_mut() {
            if is_current(backend) {
                state.gone_since = None;
            } else if state.gone_since.is_none() {
                state.gone_since = Some(now);
                if !state.queued {
                    state.queued = true;
                    self.draining.push(backend.clone());
                }
            }
        }
        self.backends
            .retain(|_, state| state.count > 0 || state.gone_since.is_some());
    }

    /// Removes entries idle for at least the idle timeout and entries of backends
    /// gone for at least the grace period; returns how many were removed. Call
    /// once per loop tick: the cost is O(entries removed + backends draining).
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while self.tail != NIL {
            let idle = match self.entry(self.tail) {
                Some(e) => now.saturating_duration_since(e.last_seen) >= self.config.idle_timeout,
                None => false,
            };
            if !idle {
                break;
            }
            self.stats.expired += 1;
            removed += 1;
            self.remove_node(self.tail);
        }
        let mut k = 0;
        while k < self.draining.len() {
            let due = match self.backends.get_mut(&self.draining[k]) {
                Some(state) => match state.gone_since {
                    Some(since) => now.saturating_duration_since(since) >= self.config.grace,
                    None => {
                        // Came back: stop draining it.
                        state.queued = false;
                        self.draining.swap_remove(k);
                        continue;
                    }
                },
                None => {
                    self.draining.swap_remove(k);
                    continue;
                }
            };
            if !due {
                k += 1;
                continue;
            }
            let backend = self.draining.swap_remove(k);
            while let Some(head) = self
                .backends
                .get(&backend)
                .map(|s| s.head)
                .filter(|&h| h != NIL)
            {
                self.stats.drained += 1;
                removed += 1;
                self.remove_node(head);
            }
            self.backends.remove(&backend);
        }
        removed
    }

    /// How many entries point to `backend`.
    pub fn connections_to(&self, backend: &B) -> usize {
        self.backends.get(backend).map_or(0, |s| s.count as usize)
    }

    /// Removes every entry (counters are kept).
    pub fn clear(&mut self) {
        self.index.clear();
        self.nodes.clear();
        self.backends.clear();
        self.draining.clear();
        if let Some(dropped) = self.dropped.as_mut() {
            dropped.clear();
        }
        self.free = NIL;
        self.head = NIL;
        self.tail = NIL;
    }

    fn entry(&self, i: u32) -> Option<&Entry<K, B>> {
        self.nodes.get(i as usize).and_then(|n| n.entry.as_ref())
    }

    fn liveness(&self, i: u32, now: Instant) -> Liveness {
        let Some(entry) = self.entry(i) else {
            return Liveness::Idle;
        };
        if now.saturating_duration_since(entry.last_seen) >= self.config.idle_timeout {
            return Liveness::Idle;
        }
        if !self.draining.is_empty() {
            let gone = self
                .backends
                .get(&entry.backend)
                .and_then(|s| s.gone_since)
                .is_some_and(|since| now.saturating_duration_since(since) >= self.config.grace);
            if gone {
                return Liveness::Drained;
            }
        }
        Liveness::Live
    }

    /// Moves node `i` to the front of the LRU list and records `now`.
    fn mark_used(&mut self, i: u32, now: Instant) {
        if let Some(e) = self.nodes[i as usize].entry.as_mut() {
            e.last_seen = e.last_seen.max(now);
        }
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NIL;
            n.next = old;
        }
        match old {
            NIL => self.tail = i,
            o => self.nodes[o as usize].prev = i,
        }
        self.head = i;
    }

    fn insert_node(&mut self, key: K, backend: B, now: Instant) {
        let state = match self.backends.get_mut(&backend) {
            Some(state) => state,
            None => self
                .backends
                .entry(backend.clone())
                .or_insert(BackendState {
                    head: NIL,
                    count: 0,
                    gone_since: None,
                    queued: false,
                }),
        };
        let backend_next = state.head;
        let node = Node {
            prev: NIL,
            next: NIL,
            backend_prev: NIL,
            backend_next,
            entry: Some(Entry {
                key: key.clone(),
                backend,
                last_seen: now,
            }),
        };
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.nodes[i as usize].next;
            self.nodes[i as usize] = node;
            i
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        };
        state.head = i;
        state.count += 1;
        if backend_next != NIL {
            self.nodes[backend_next as usize].backend_prev = i;
        }
        self.index.insert(key, i);
        self.push_front(i);
    }

    /// Removes a node the table decided to drop, recording its key.
    fn remove_node(&mut self, i: u32) -> Option<Entry<K, B>> {
        let entry = self.unlink_entry(i)?;
        if let Some(dropped) = self.dropped.as_mut() {
            dropped.push(entry.key.clone());
        }
        Some(entry)
    }

    fn unlink_entry(&mut self, i: u32) -> Option<Entry<K, B>> {
        self.unlink(i);
        let node = &mut self.nodes[i as usize];
        let entry = node.entry.take()?;
        let (bprev, bnext) = (node.backend_prev, node.backend_next);
        node.next = self.free;
        node.prev = NIL;
        self.free = i;
        self.index.remove(&entry.key);
        if bnext != NIL {
            self.nodes[bnext as usize].backend_prev = bprev;
        }
        if bprev != NIL {
            self.nodes[bprev as usize].backend_next = bnext;
        }
        if let Some(state) = self.backends.get_mut(&entry.backend) {
            if bprev == NIL {
                state.head = bnext;
            }
            state.count -= 1;
            if state.count == 0 && state.gone_since.is_none() {
                self.backends.remove(&entry.backend);
            }
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowhash::Protocol;
    use std::net::{IpAddr, SocketAddr};

    const IDLE: Duration = Duration::from_secs(60);
    const GRACE: Duration = Duration::from_secs(30);

    fn secs(base: Instant, s: u64) -> Instant {
        base + Duration::from_secs(s)
    }

    fn flows(capacity: usize) -> ConnTrack<u32, &'static str> {
        ConnTrack::new(ConnTrackConfig::flows(capacity, IDLE, GRACE))
    }

    /// Checks the lists against the index: every entry once in the LRU list, in
    /// its backend's list, and the counts agree.
    fn check<K: Hash + Eq + Clone + std::fmt::Debug, B: Hash + Eq + Clone + std::fmt::Debug>(
        t: &ConnTrack<K, B>,
    ) {
        let mut seen = 0;
        let mut i = t.head;
        let mut prev = NIL;
        while i != NIL {
            let n = &t.nodes[i as usize];
            assert_eq!(n.prev, prev);
            let e = n.entry.as_ref().expect("linked node occupied");
            assert_eq!(t.index.get(&e.key), Some(&i));
            seen += 1;
            prev = i;
            i = n.next;
        }
        assert_eq!(t.tail, prev);
        assert_eq!(seen, t.index.len());
        let mut by_backend = 0;
        for (b, s) in &t.backends {
            let mut i = s.head;
            let mut count = 0;
            let mut prev = NIL;
            while i != NIL {
                let n = &t.nodes[i as usize];
                assert_eq!(n.backend_prev, prev);
                assert_eq!(&n.entry.as_ref().expect("occupied").backend, b);
                count += 1;
                prev = i;
                i = n.backend_next;
            }
            assert_eq!(count, s.count);
            by_backend += count as usize;
        }
        assert_eq!(by_backend, t.index.len());
    }

    #[test]
    fn keeps_the_first_choice() {
        let base = Instant::now();
        let mut t = flows(10);
        assert_eq!(t.lookup_or_insert(1, base, || Some("a")), Some("a"));
        assert_eq!(
            t.lookup_or_insert(1, secs(base, 1), || Some("b")),
            Some("a")
        );
        assert_eq!(t.lookup_or_insert(2, base, || None), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&1, secs(base, 2)), Some(&"a"));
        assert_eq!(
            t.stats(),
            ConnTrackStats {
                hits: 1,
                misses: 2,
                ..Default::default()
            }
        );
        assert_eq!(t.remove(&1), Some("a"));
        assert!(t.is_empty());
        check(&t);
    }

    #[test]
    fn lru_eviction() {
        let base = Instant::now();
        let mut t = flows(3);
        for k in 0..3 {
            t.lookup_or_insert(k, secs(base, k.into()), || Some("a"));
        }
        // Use 0 again, so 1 is now the least recently used.
        assert!(t.touch(&0, secs(base, 5)));
        t.lookup_or_insert(3, secs(base, 6), || Some("b"));
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(&1, secs(base, 6)), None);
        for k in [0, 2, 3] {
            assert!(t.get(&k, secs(base, 6)).is_some(), "{k}");
        }
        assert_eq!(t.stats().evicted, 1);
        // Evicted slots are reused: the slab does not grow past the capacity.
        for k in 10..100 {
            t.lookup_or_insert(k, secs(base, 7), || Some("c"));
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(t.connections_to(&"c"), 3);
        assert_eq!(t.connections_to(&"a"), 0);
        check(&t);
    }

    #[test]
    fn zero_capacity_tracks_nothing() {
        let base = Instant::now();
        let mut t = flows(0);
        assert_eq!(t.lookup_or_insert(1, base, || Some("a")), Some("a"));
        assert_eq!(t.lookup_or_insert(1, base, || Some("b")), Some("b"));
        assert!(t.is_empty());
    }

    #[test]
    fn idle_expiry() {
        let base = Instant::now();
        let mut t = flows(100);
        t.lookup_or_insert(1, base, || Some("a"));
        t.lookup_or_insert(2, secs(base, 10), || Some("a"));
        t.lookup_or_insert(3, secs(base, 20), || Some("b"));
        // 1 is refreshed at 50, so at 70 only 2 has been idle for 60 s.
        assert!(t.touch(&1, secs(base, 50)));
        assert_eq!(t.expire(secs(base, 70)), 1);
        assert_eq!(t.get(&2, secs(base, 70)), None);
        assert_eq!(t.len(), 2);
        // A lookup past the timeout chooses again even before a sweep.
        assert_eq!(
            t.lookup_or_insert(3, secs(base, 80), || Some("c")),
            Some("c")
        );
        assert_eq!(t.stats().expired, 2);
        // Time going backwards never makes an entry older.
        assert!(t.touch(&3, secs(base, 1)));
        assert!(t.get(&3, secs(base, 139)).is_some());
        assert_eq!(t.expire(secs(base, 200)), 2);
        assert!(t.is_empty());
        check(&t);
    }

    #[test]
    fn departed_backend_keeps_flows_for_the_grace_period() {
        let base = Instant::now();
        let mut t = flows(100);
        for k in 0..10 {
            let b = if k % 2 == 0 { "a" } else { "b" };
            t.lookup_or_insert(k, base, || Some(b));
        }
        // "b" leaves the endpoint set at 5 s.
        t.update_endpoints(secs(base, 5), |b| *b == "a");
        // Within the grace period flows keep "b".
        assert_eq!(
            t.lookup_or_insert(1, secs(base, 20), || Some("a")),
            Some("b")
        );
        assert_eq!(t.expire(secs(base, 34)), 0);
        assert_eq!(t.connections_to(&"b"), 5);
        // A later snapshot still without "b" does not restart the grace period.
        t.update_endpoints(secs(base, 30), |b| *b == "a");
        // After it, they are dropped: lazily on lookup, or by the sweep.
        assert_eq!(
            t.lookup_or_insert(3, secs(base, 35), || Some("a")),
            Some("a")
        );
        assert_eq!(t.expire(secs(base, 35)), 4);
        assert_eq!(t.connections_to(&"b"), 0);
        assert_eq!(t.len(), 6);
        assert!(t.draining.is_empty());
        assert!(!t.backends.contains_key("b"));
        assert_eq!(t.stats().drained, 5);
        check(&t);
    }

    #[test]
    fn returning_backend_keeps_its_flows() {
        let base = Instant::now();
        let mut t = flows(100);
        t.lookup_or_insert(1, base, || Some("a"));
        t.update_endpoints(secs(base, 1), |_| false);
        t.update_endpoints(secs(base, 2), |_| true);
        t.update_endpoints(secs(base, 3), |_| false);
        t.update_endpoints(secs(base, 4), |_| true);
        assert_eq!(t.draining.len(), 1, "queued once");
        assert_eq!(t.expire(secs(base, 59)), 0);
        assert!(t.draining.is_empty());
        assert_eq!(
            t.lookup_or_insert(1, secs(base, 59), || Some("b")),
            Some("a")
        );
        check(&t);
    }

    #[test]
    fn session_affinity_by_client_ip() {
        let base = Instant::now();
        let svc: SocketAddr = "10.96.0.10:80".parse().expect("addr");
        let b1: SocketAddr = "10.0.0.1:8080".parse().expect("addr");
        let b2: SocketAddr = "10.0.0.2:8080".parse().expect("addr");
        let client: IpAddr = "192.0.2.7".parse().expect("ip");
        let mut t: AffinityTable<SocketAddr> = ConnTrack::new(ConnTrackConfig::session_affinity(
            1000,
            DEFAULT_AFFINITY_TIMEOUT,
        ));
        let key = AffinityKey::new(client, svc, Protocol::Tcp);
        assert_eq!(t.lookup_or_insert(key, base, || Some(b1)), Some(b1));
        // Every new connection from the client within the timeout gets b1.
        let later = base + DEFAULT_AFFINITY_TIMEOUT - Duration::from_secs(1);
        assert_eq!(t.lookup_or_insert(key, later, || Some(b2)), Some(b1));
        // The timeout counts from the last use.
        let idle = later + DEFAULT_AFFINITY_TIMEOUT;
        assert_eq!(t.lookup_or_insert(key, idle, || Some(b2)), Some(b2));
        // A backend leaving the set ends the affinity at once (no grace).
        t.update_endpoints(idle, |b| *b == b1);
        assert_eq!(t.lookup_or_insert(key, idle, || Some(b1)), Some(b1));
        check(&t);
    }

    #[test]
    fn five_tuple_keys() {
        let base = Instant::now();
        let mut t: FlowTable<SocketAddr> = ConnTrack::new(ConnTrackConfig::flows(4, IDLE, GRACE));
        let dst: SocketAddr = "[2001:db8::10]:443".parse().expect("addr");
        let backend: SocketAddr = "[2001:db8::99]:8443".parse().expect("addr");
        for port in 0..8u16 {
            let src = SocketAddr::new("2001:db8::1".parse().expect("ip"), 40_000 + port);
            let key = FiveTuple::new(src, dst, Protocol::Tcp);
            assert_eq!(
                t.lookup_or_insert(key, base, || Some(backend)),
                Some(backend)
            );
        }
        assert_eq!(t.len(), 4);
        assert_eq!(t.stats().evicted, 4);
        check(&t);
    }

    /// A random workload against a plain LRU list model, checking the lists too.
    #[test]
    fn matches_a_model() {
        let base = Instant::now();
        let mut t = flows(16);
        // (key, backend, last use), most recently used first; idle ones included
        // until a lookup or a sweep removes them, as in the table.
        let mut model: Vec<(u32, &'static str, u64)> = Vec::new();
        let backends = ["a", "b", "c"];
        let mut x: u64 = 0x1234_5678;
        let mut now = 0u64;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += x % 3;
            let key = (x >> 8) as u32 % 40;
            let at = secs(base, now);
            let idle = |last: u64| now - last >= IDLE.as_secs();
            if x.is_multiple_of(4) {
                let expected = model
                    .iter()
                    .position(|m| m.0 == key)
                    .map(|p| model.remove(p).1);
                assert_eq!(t.remove(&key), expected);
            } else {
                let b = backends[(x >> 40) as usize % 3];
                let got = t.lookup_or_insert(key, at, || Some(b));
                let found = model
                    .iter()
                    .position(|m| m.0 == key)
                    .map(|p| model.remove(p));
                let kept = found.filter(|m| !idle(m.2)).map(|m| m.1);
                assert_eq!(got, Some(kept.unwrap_or(b)));
                if kept.is_none() && model.len() == 16 {
                    model.pop();
                }
                model.insert(0, (key, kept.unwrap_or(b), now));
            }
            if step % 7 == 0 {
                let before = model.len();
                model.retain(|m| !idle(m.2));
                assert_eq!(t.expire(at), before - model.len());
            }
            assert_eq!(t.len(), model.len());
        }
        check(&t);
    }

    #[test]
    fn dropped_keys_are_recorded_but_not_caller_removals() {
        let t0 = Instant::now();
        let mut t = flows(2).record_dropped();
        t.lookup_or_insert(1, t0, || Some("a"));
        t.lookup_or_insert(2, t0, || Some("b"));
        // Full: inserting 3 evicts the least recently used (1).
        t.lookup_or_insert(3, secs(t0, 1), || Some("a"));
        assert_eq!(t.drain_dropped(), vec![1]);
        t.remove(&2);
        assert!(
            t.drain_dropped().is_empty(),
            "caller removals are not recorded"
        );
        // Idle expiry is recorded.
        t.expire(secs(t0, 1) + IDLE);
        assert_eq!(t.drain_dropped(), vec![3]);
        // Drained backends are recorded once the grace period is over.
        t.lookup_or_insert(4, t0, || Some("gone"));
        t.update_endpoints(t0, |b| *b != "gone");
        t.expire(t0 + GRACE);
        assert_eq!(t.drain_dropped(), vec![4]);
        check(&t);
        // Without recording nothing is kept.
        let mut plain = flows(1);
        plain.lookup_or_insert(1, t0, || Some("a"));
        plain.lookup_or_insert(2, t0, || Some("a"));
        assert!(plain.drain_dropped().is_empty());
    }

    #[test]
    fn reconfigure_shrinks_from_the_least_recently_used_end() {
        let t0 = Instant::now();
        let mut t = flows(4).record_dropped();
        for k in 1..=4 {
            t.lookup_or_insert(k, secs(t0, u64::from(k)), || Some("a"));
        }
        t.reconfigure(ConnTrackConfig::flows(2, IDLE, GRACE));
        assert_eq!(t.len(), 2);
        assert_eq!(t.drain_dropped(), vec![1, 2]);
        assert_eq!(t.get(&4, secs(t0, 5)), Some(&"a"));
        check(&t);
    }
}
