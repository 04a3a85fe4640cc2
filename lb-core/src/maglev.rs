//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016).
//!
//! A [`MaglevTable`] maps a flow hash to an endpoint with one array read:
//! `slots[hash % M]`, where `M` is a prime table size (default 65537). The table is
//! built on the control thread and is immutable afterwards, so it can sit in a
//! published snapshot and be read by every worker without synchronisation.
//!
//! Each endpoint has a stable key (its canonical address such as
//! `10.0.0.1:8080`, or a caller-supplied name) and a weight. From the key, two
//! fixed hashes ([`hash_bytes`] with the seeds
//! [`OFFSET_SEED`] and [`SKIP_SEED`]) give `offset = h1 % M` and
//! `skip = h2 % (M - 1) + 1`; the endpoint's preference list is
//! `offset, offset + skip, offset + 2·skip, …` (mod `M`), which visits every slot
//! because `M` is prime. Endpoints are sorted by key before building, so the
//! caller's order does not matter, and nothing depends on the process: the same
//! endpoint set and size give a byte-identical table ([`MaglevTable::table_bytes`])
//! on every host.
//!
//! Population follows the paper: endpoints take turns, and on its turn an
//! endpoint claims the first still-empty slot of its preference list, until the
//! table is full. The paper gives every endpoint one turn per round. For weights,
//! endpoint `i`'s `k`-th turn (from 0) is due at virtual time `(2k + 1) / (2·wᵢ)`
//! and turns are taken in due order (ties by key order): a stride schedule in which
//! every endpoint receives within about one turn of its weighted share `M·wᵢ/W` of
//! the `M` turns, whatever the weights. With equal weights this is exactly the
//! paper's round-robin. Each turn fills one slot, so slot counts follow the same
//! bound.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::net::SocketAddr;

use crate::flowhash::hash_bytes;

/// The default table size, the paper's 65537 (prime).
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// The largest accepted table size (2²⁴; the largest prime below it is 16777213).
pub const MAX_TABLE_SIZE: u32 = 1 << 24;
/// The most endpoints one table can hold (slots store `u16` indices).
pub const MAX_ENDPOINTS: usize = u16::MAX as usize;
/// Seed of the hash giving an endpoint's offset in the table.
pub const OFFSET_SEED: u64 = 0xa409_3822_299f_31d0;
/// Seed of the hash giving an endpoint's skip (step) through the table.
pub const SKIP_SEED: u64 = 0x082e_fa98_ec4e_6c89;
/// Seed of [`MaglevTable::digest`].
pub const DIGEST_SEED: u64 = 0x4528_21e6_38d0_1377;

/// Marks an unfilled slot while building (never a valid index: see [`MAX_ENDPOINTS`]).
const EMPTY: u16 = u16::MAX;

/// Why a Maglev table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The table size is not prime, so preference lists would not cover the table.
    #[error("Maglev table size {size} is not prime")]
    NotPrime {
        /// The requested size.
        size: u32,
    },
    /// The table size exceeds [`MAX_TABLE_SIZE`].
    #[error("Maglev table size {size} exceeds the maximum {max}")]
    TooLarge {
        /// The requested size.
        size: u32,
        /// [`MAX_TABLE_SIZE`].
        max: u32,
    },
    /// The table has fewer than two slots per endpoint.
    #[error(
        "Maglev table size {size} is too small for {endpoints} endpoints (at least {min} needed)"
    )]
    TooSmall {
        /// The requested size.
        size: u32,
        /// The number of endpoints with a non-zero weight.
        endpoints: usize,
        /// The smallest acceptable size, `2 × endpoints`.
        min: u64,
    },
    /// More endpoints than [`MAX_ENDPOINTS`].
    #[error("{count} endpoints exceed the maximum of {max} per Maglev table")]
    TooManyEndpoints {
        /// The number of endpoints with a non-zero weight.
        count: usize,
        /// [`MAX_ENDPOINTS`].
        max: usize,
    },
    /// Two endpoints share a key.
    #[error("duplicate Maglev endpoint key {key:?}")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// An endpoint key is empty.
    #[error("empty Maglev endpoint key")]
    EmptyKey,
}

/// One endpoint of a table: a stable key, a weight and a caller value (for
/// example the address to connect to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevEndpoint<T> {
    key: String,
    weight: u32,
    value: T,
}

impl<T> MaglevEndpoint<T> {
    /// An endpoint identified by `key` with `weight` (0 keeps it out of the table).
    pub fn new(key: impl Into<String>, weight: u32, value: T) -> Self {
        Self {
            key: key.into(),
            weight,
            value,
        }
    }

    /// The stable key the endpoint's preference list is derived from.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The caller's value.
    pub fn value(&self) -> &T {
        &self.value
    }
}

impl MaglevEndpoint<SocketAddr> {
    /// An endpoint keyed by its canonical address text (`10.0.0.1:8080`,
    /// `[2001:db8::1]:8080`).
    pub fn from_addr(addr: SocketAddr, weight: u32) -> Self {
        Self::new(addr.to_string(), weight, addr)
    }
}

/// An immutable Maglev lookup table over a set of weighted endpoints.
#[derive(Clone)]
pub struct MaglevTable<T> {
    size: u32,
    endpoints: Box<[MaglevEndpoint<T>]>,
    slots: Box<[u16]>,
}

impl<T> fmt::Debug for MaglevTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.size)
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|e| (&*e.key, e.weight))
                    .collect::<Vec<_>>(),
            )
            .field("digest", &format_args!("{:#018x}", self.digest()))
            .finish()
    }
}

/// The next turn of one endpoint in the weighted schedule: due at
/// `numerator / (2 · weight)`, with `numerator = 2k + 1` for the `k`-th turn.
#[derive(Clone, Copy, Debug)]
struct Turn {
    numerator: u64,
    weight: u32,
    index: u16,
}

impl Ord for Turn {
    /// Reversed (a later turn is smaller) so that `BinaryHeap` pops the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        let mine = u128::from(self.numerator) * u128::from(other.weight);
        let theirs = u128::from(other.numerator) * u128::from(self.weight);
        theirs.cmp(&mine).then(other.index.cmp(&self.index))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Turn {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Turn {}

/// Whether `n` is prime (trial division; `n` is at most a few million here).
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut d = 5u64;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// A table size for `endpoints` endpoints: the smallest prime that is at least
/// [`DEFAULT_TABLE_SIZE`] and at least 100 slots per endpoint (the paper's
/// `M ≫ N` for balance), capped at [`MAX_TABLE_SIZE`].
pub fn suggested_table_size(endpoints: usize) -> u32 {
    let want = (endpoints as u64)
        .saturating_mul(100)
        .clamp(u64::from(DEFAULT_TABLE_SIZE), u64::from(MAX_TABLE_SIZE));
    let mut n = want as u32;
    while n < MAX_TABLE_SIZE && !is_prime(n) {
        n += 1;
    }
    // Past the cap: the largest prime below it.
    while !is_prime(n) {
        n -= 1;
    }
    n
}

impl<T> MaglevTable<T> {
    /// Builds the table of `size` slots for `endpoints`, in any order.
    ///
    /// Endpoints of weight 0 are left out. `size` must be prime, at most
    /// [`MAX_TABLE_SIZE`] and at least twice the number of remaining endpoints
    /// (for good balance use [`suggested_table_size`]). An empty endpoint set gives
    /// an empty table, whose lookups return `None`. An endpoint whose weighted
    /// share `M·w/W` is below one slot may own no slot at all.
    pub fn new(
        endpoints: impl IntoIterator<Item = MaglevEndpoint<T>>,
        size: u32,
    ) -> Result<Self, MaglevError> {
        if size > MAX_TABLE_SIZE {
            return Err(MaglevError::TooLarge {
                size,
                max: MAX_TABLE_SIZE,
            });
        }
        if !is_prime(size) {
            return Err(MaglevError::NotPrime { size });
        }
        let mut endpoints: Vec<MaglevEndpoint<T>> = endpoints.into_iter().collect();
        endpoints.sort_by(|a, b| a.key.cmp(&b.key));
        for pair in endpoints.windows(2) {
            if pair[0].key == pair[1].key {
                return Err(MaglevError::DuplicateKey {
                    key: pair[0].key.clone(),
                });
            }
        }
        if endpoints.first().is_some_and(|e| e.key.is_empty()) {
            return Err(MaglevError::EmptyKey);
        }
        endpoints.retain(|e| e.weight > 0);
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(MaglevError::TooManyEndpoints {
                count: endpoints.len(),
                max: MAX_ENDPOINTS,
            });
        }
        let min = 2 * endpoints.len() as u64;
        if u64::from(size) < min {
            return Err(MaglevError::TooSmall {
                size,
                endpoints: endpoints.len(),
                min,
            });
        }
        let slots = populate(&endpoints, size);
        Ok(Self {
            size,
            endpoints: endpoints.into_boxed_slice(),
            slots,
        })
    }

    /// Builds the table with [`DEFAULT_TABLE_SIZE`] slots.
    pub fn with_default_size(
        endpoints: impl IntoIterator<Item = MaglevEndpoint<T>>,
    ) -> Result<Self, MaglevError> {
        Self::new(endpoints, DEFAULT_TABLE_SIZE)
    }

    /// The table size `M`.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The endpoints in the table, sorted by key; slot values index this slice.
    pub fn endpoints(&self) -> &[MaglevEndpoint<T>] {
        &self.endpoints
    }

    /// Whether the table has no endpoint (every lookup returns `None`).
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The index (into [`endpoints`](Self::endpoints)) of the endpoint for a flow
    /// hash: `slots[hash % M]`.
    #[inline]
    pub fn index(&self, hash: u64) -> Option<usize> {
        let slot = (hash % u64::from(self.size)) as usize;
        self.slots.get(slot).map(|&i| usize::from(i))
    }

    /// The endpoint for a flow hash.
    #[inline]
    pub fn get(&self, hash: u64) -> Option<&MaglevEndpoint<T>> {
        self.index(hash).and_then(|i| self.endpoints.get(i))
    }

    /// The index of the endpoint with `key`, if it is in the table.
    pub fn position(&self, key: &str) -> Option<usize> {
        self.endpoints
            .binary_search_by(|e| e.key.as_str().cmp(key))
            .ok()
    }

    /// The slots: endpoint indices, `M` of them (none for an empty table).
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }

    /// How many slots each endpoint owns, by endpoint index.
    pub fn shares(&self) -> Vec<u32> {
        let mut shares = vec![0u32; self.endpoints.len()];
        for &i in self.slots.iter() {
            shares[usize::from(i)] += 1;
        }
        shares
    }

    /// The canonical serialisation, identical for identical tables on any host:
    /// `M` (u32 LE), the endpoint count (u32 LE), then per endpoint in key order
    /// the key length (u32 LE), the key bytes and the weight (u32 LE), then the
    /// slots (u16 LE each). Caller values are not included.
    pub fn table_bytes(&self) -> Vec<u8> {
        let keys: usize = self.endpoints.iter().map(|e| e.key.len() + 8).sum();
        let mut out = Vec::with_capacity(8 + keys + 2 * self.slots.len());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&(self.endpoints.len() as u32).to_le_bytes());
        for e in self.endpoints.iter() {
            out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
            out.extend_from_slice(e.key.as_bytes());
            out.extend_from_slice(&e.weight.to_le_bytes());
        }
        for &s in self.slots.iter() {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    /// A 64-bit digest of [`table_bytes`](Self::table_bytes)
    /// (`hash_bytes(DIGEST_SEED, ·)`), to compare tables across processes cheaply.
    pub fn digest(&self) -> u64 {
        hash_bytes(DIGEST_SEED, &self.table_bytes())
    }
}

/// Fills a table of `size` slots for `endpoints` (sorted, non-empty keys, non-zero
/// weights, at most [`MAX_ENDPOINTS`], `size` prime and `>= 2 · len`).
fn populate<T>(endpoints: &[MaglevEndpoint<T>], size: u32) -> Box<[u16]> {
    if endpoints.is_empty() {
        return Box::default();
    }
    // Per endpoint: the next candidate slot of its preference list, and its step.
    let mut walk: Vec<(u32, u32)> = endpoints
        .iter()
        .map(|e| {
            let key = e.key.as_bytes();
            let offset = (hash_bytes(OFFSET_SEED, key) % u64::from(size)) as u32;
            let skip = (hash_bytes(SKIP_SEED, key) % u64::from(size - 1)) as u32 + 1;
            (offset, skip)
        })
        .collect();
    let mut turns: BinaryHeap<Turn> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| Turn {
            numerator: 1,
            weight: e.weight,
            index: i as u16,
        })
        .collect();
    let mut slots = vec![EMPTY; size as usize];
    let mut filled = 0u32;
    while filled < size {
        let Some(mut turn) = turns.peek_mut() else {
            break;
        };
        let (next, skip) = &mut walk[usize::from(turn.index)];
        // A preference list visits every slot (`size` is prime) and one is still
        // empty, so this loop ends within `size` steps.
        loop {
            let candidate = *next as usize;
            *next += *skip;
            if *next >= size {
                *next -= size;
            }
            if slots[candidate] == EMPTY {
                slots[candidate] = turn.index;
                break;
            }
        }
        filled += 1;
        turn.numerator += 2;
    }
    slots.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: usize) -> Vec<MaglevEndpoint<()>> {
        (0..n)
            .map(|i| MaglevEndpoint::new(format!("10.0.{}.{}:8080", i / 250, i % 250 + 1), 1, ()))
            .collect()
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65_537));
        assert!(is_prime(655_373));
        assert!(is_prime(16_777_213));
        assert!(!is_prime(65_535));
        assert!(!is_prime(65_539 * 3));
        assert!(!is_prime(u32::MAX));
        assert_eq!(suggested_table_size(10), 65_537);
        assert_eq!(suggested_table_size(1000), 100_003);
        assert_eq!(suggested_table_size(MAX_ENDPOINTS), 6_553_511);
        assert_eq!(suggested_table_size(usize::MAX), 16_777_213);
    }

    #[test]
    fn validation() {
        assert_eq!(
            MaglevTable::new(eps(3), 65_536).unwrap_err(),
            MaglevError::NotPrime { size: 65_536 }
        );
        assert_eq!(
            MaglevTable::new(eps(3), 1).unwrap_err(),
            MaglevError::NotPrime { size: 1 }
        );
        assert_eq!(
            MaglevTable::new(eps(3), MAX_TABLE_SIZE + 1).unwrap_err(),
            MaglevError::TooLarge {
                size: MAX_TABLE_SIZE + 1,
                max: MAX_TABLE_SIZE
            }
        );
        assert_eq!(
            MaglevTable::new(eps(10), 19).unwrap_err(),
            MaglevError::TooSmall {
                size: 19,
                endpoints: 10,
                min: 20
            }
        );
        assert!(MaglevTable::new(eps(10), 23).is_ok());
        let mut dup = eps(3);
        dup.push(MaglevEndpoint::new("10.0.0.2:8080", 5, ()));
        assert_eq!(
            MaglevTable::new(dup, 65_537).unwrap_err(),
            MaglevError::DuplicateKey {
                key: "10.0.0.2:8080".into()
            }
        );
        let mut empty_key = eps(3);
        empty_key.push(MaglevEndpoint::new("", 1, ()));
        assert_eq!(
            MaglevTable::new(empty_key, 65_537).unwrap_err(),
            MaglevError::EmptyKey
        );
        let err = MaglevTable::new(eps(10), 19).unwrap_err().to_string();
        assert_eq!(
            err,
            "Maglev table size 19 is too small for 10 endpoints (at least 20 needed)"
        );
    }

    #[test]
    fn empty_and_zero_weight() {
        let t = MaglevTable::<()>::new(Vec::new(), 65_537).expect("empty table");
        assert!(t.is_empty());
        assert_eq!(t.index(12_345), None);
        assert!(t.get(0).is_none());
        let mut e = eps(2);
        e.push(MaglevEndpoint::new("10.9.9.9:1", 0, ()));
        let t = MaglevTable::new(e, 5).expect("zero weight left out");
        assert_eq!(t.endpoints().len(), 2);
        assert_eq!(t.position("10.9.9.9:1"), None);
        let shares = t.shares();
        assert_eq!(shares.iter().sum::<u32>(), 5);
        assert!(shares.iter().all(|&s| s >= 2));
    }

    #[test]
    fn lookup_is_slot_of_hash_mod_size() {
        let t = MaglevTable::new(eps(7), 65_537).expect("table");
        for h in [0u64, 1, 65_536, 65_537, u64::MAX, 0xdead_beef_cafe] {
            let i = t.index(h).expect("non-empty");
            assert_eq!(i, usize::from(t.slots()[(h % 65_537) as usize]));
            assert_eq!(t.get(h).map(|e| e.key()), Some(t.endpoints()[i].key()));
        }
        assert_eq!(t.position(t.endpoints()[3].key()), Some(3));
    }

    #[test]
    fn single_endpoint_owns_everything() {
        let t = MaglevTable::new(eps(1), 7).expect("table");
        assert_eq!(t.slots(), &[0; 7]);
    }

    #[test]
    fn equal_weights_are_round_robin() {
        // Scaling every weight leaves the schedule, hence the slots, unchanged.
        let a = MaglevTable::new(eps(5), 65_537).expect("table");
        let scaled = eps(5)
            .into_iter()
            .map(|e| MaglevEndpoint::new(e.key().to_owned(), 1000, ()));
        let b = MaglevTable::new(scaled, 65_537).expect("table");
        assert_eq!(a.slots(), b.slots());
        let shares = a.shares();
        assert!(
            shares.iter().all(|&s| s == 13_107 || s == 13_108),
            "{shares:?}"
        );
    }

    #[test]
    fn send_sync() {
        fn check<X: Send + Sync>() {}
        check::<MaglevTable<SocketAddr>>();
        check::<MaglevError>();
    }

    #[test]
    fn keys_from_addresses() {
        let a = MaglevEndpoint::from_addr("[2001:db8::1]:8080".parse().expect("addr"), 1);
        assert_eq!(a.key(), "[2001:db8::1]:8080");
        let b = MaglevEndpoint::from_addr("10.0.0.1:80".parse().expect("addr"), 2);
        assert_eq!((b.key(), b.weight()), ("10.0.0.1:80", 2));
        assert_eq!(b.value().port(), 80);
    }
}
