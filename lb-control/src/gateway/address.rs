//! Gateway addresses allocated from `[loadbalancer].pools` for Gateways
//! that request none (requested ones are checked in `listeners`).
//!
//! Allocation is deterministic: a hash of `namespace/name` picks the first
//! candidate over the pools (IPv4 pools before IPv6 ones, in configured
//! order), and taken addresses are skipped in order. Taken are the L4
//! Service addresses, every address a Gateway requests explicitly, and the
//! addresses allocated to Gateways earlier in namespace/name order.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use lb_core::flowhash::hash_bytes;

/// Seed of the allocation hash (fixed, so a Gateway keeps its address
/// across restarts and appliances).
const SEED: u64 = 0x6a09_e667_f3bc_c908;
/// At most this many candidates are probed.
const MAX_PROBES: u128 = 65_536;

/// Usable addresses of a pool: all but the network and broadcast (IPv4) or
/// the subnet-router anycast (IPv6) address when the pool has more than two.
fn usable(net: &IpNet) -> u128 {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
    let size = if bits >= 128 { u128::MAX } else { 1 << bits };
    match (net, size > 2) {
        (IpNet::V4(_), true) => size - 2,
        (IpNet::V6(_), true) => size - 1,
        _ => size,
    }
}

/// Usable address number `n` (< [`usable`]) of a pool.
fn nth(net: &IpNet, n: u128) -> IpAddr {
    match net {
        IpNet::V4(v4) => {
            let skip = u128::from(v4.prefix_len() < 31);
            let base = u128::from(u32::from(v4.network()));
            IpAddr::from(((base + skip + n) as u32).to_be_bytes())
        }
        IpNet::V6(v6) => {
            let skip = u128::from(v6.prefix_len() < 127);
            IpAddr::from((u128::from(v6.network()) + skip + n).to_be_bytes())
        }
    }
}

/// Allocates an address for the Gateway `key` (`namespace/name`), avoiding
/// `taken`. `None` when the pools are empty or full.
pub(crate) fn allocate(pools: &[IpNet], key: &str, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let mut ordered: Vec<&IpNet> = pools.iter().filter(|p| matches!(p, IpNet::V4(_))).collect();
    ordered.extend(pools.iter().filter(|p| matches!(p, IpNet::V6(_))));
    let total = ordered
        .iter()
        .map(|p| usable(p))
        .fold(0u128, u128::saturating_add);
    if total == 0 {
        return None;
    }
    let start = u128::from(hash_bytes(SEED, key.as_bytes())) % total;
    for i in 0..total.min(MAX_PROBES) {
        let mut n = (start + i) % total;
        for p in &ordered {
            let size = usable(p);
            if n < size {
                let ip = nth(p, n);
                if !taken.contains(&ip) {
                    return Some(ip);
                }
                break;
            }
            n -= size;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_stays_in_the_pool_and_skips_taken() {
        let pools: Vec<IpNet> = vec!["10.1.0.0/30".parse().unwrap()];
        let mut taken = BTreeSet::new();
        let a = allocate(&pools, "ns/a", &taken).unwrap();
        assert_eq!(Some(a), allocate(&pools, "ns/a", &taken));
        let usable: [IpAddr; 2] = ["10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap()];
        assert!(usable.contains(&a));
        taken.insert(a);
        let b = allocate(&pools, "ns/a", &taken).unwrap();
        assert!(usable.contains(&b) && b != a);
        taken.insert(b);
        assert_eq!(allocate(&pools, "ns/a", &taken), None);
        assert_eq!(allocate(&[], "ns/a", &BTreeSet::new()), None);
        let v6: Vec<IpNet> = vec!["fd00::/120".parse().unwrap()];
        let c = allocate(&v6, "ns/a", &BTreeSet::new()).unwrap();
        assert!(v6[0].contains(&c) && c != "fd00::".parse::<IpAddr>().unwrap());
    }
}
