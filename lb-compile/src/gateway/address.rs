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

/// Seed of the allocation hash (fixed, so a Gateway keeps its address
/// across restarts and appliances).
const SEED: u64 = 0x6a09_e667_f3bc_c908;

/// Allocates an address for the Gateway `key` (`namespace/name`), avoiding
/// `taken`. `None` when the pools are empty or full.
pub(crate) fn allocate(pools: &[IpNet], key: &str, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    crate::vip_alloc::pick(pools, None, SEED, key, taken)
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
