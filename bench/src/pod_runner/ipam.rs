//! Pod IP allocation from the `--pod-cidr` range.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The pod IPs in use. Addresses are handed out round robin (the one after the last
/// given, wrapping around), so a freed IP is not reused at once; the network address,
/// the first address and the broadcast address are never given.
#[derive(Debug)]
pub struct Ipam {
    /// First address handed out.
    first: u32,
    /// Last address handed out.
    last: u32,
    /// Where the next search starts.
    next: u32,
    used: BTreeSet<Ipv4Addr>,
}

impl Ipam {
    /// An allocator over `net` (at most a /30).
    pub fn new(net: Ipv4Net) -> Ipam {
        let network = u32::from(net.network());
        let broadcast = u32::from(net.broadcast());
        let first = network.saturating_add(2);
        let last = broadcast.saturating_sub(1);
        Ipam {
            first,
            last,
            next: first,
            used: BTreeSet::new(),
        }
    }

    /// How many addresses can be handed out at all.
    pub fn capacity(&self) -> u32 {
        if self.last < self.first {
            0
        } else {
            self.last - self.first + 1
        }
    }

    /// How many addresses are in use.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    /// Whether `ip` may be handed out (in range).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }

    /// Hands out an address for which `usable` holds: `preferred` if it is in range, free
    /// and usable (a pod adopted after a restart keeps its IP), else the next free usable
    /// one. `None` when every address is used or unusable.
    pub fn allocate(
        &mut self,
        preferred: Option<Ipv4Addr>,
        mut usable: impl FnMut(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        if let Some(ip) = preferred
            && self.contains(ip)
            && !self.used.contains(&ip)
            && usable(ip)
        {
            self.used.insert(ip);
            return Some(ip);
        }
        let capacity = self.capacity();
        let mut candidate = self.next;
        for _ in 0..capacity {
            if candidate > self.last || candidate < self.first {
                candidate = self.first;
            }
            let ip = Ipv4Addr::from(candidate);
            candidate += 1;
            if self.used.contains(&ip) || !usable(ip) {
                continue;
            }
            self.used.insert(ip);
            self.next = candidate;
            return Some(ip);
        }
        None
    }

    /// Returns `ip` to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn skips_network_first_and_broadcast() {
        let mut ipam = Ipam::new("127.77.0.0/29".parse().unwrap());
        assert_eq!(ipam.capacity(), 5);
        let got: Vec<_> = std::iter::from_fn(|| ipam.allocate(None, |_| true)).collect();
        assert_eq!(
            got,
            [
                "127.77.0.2",
                "127.77.0.3",
                "127.77.0.4",
                "127.77.0.5",
                "127.77.0.6"
            ]
            .map(ip)
        );
        assert_eq!(ipam.in_use(), 5);
        assert_eq!(ipam.allocate(None, |_| true), None);
    }

    #[test]
    fn round_robin_after_release() {
        let mut ipam = Ipam::new("127.77.0.0/29".parse().unwrap());
        let a = ipam.allocate(None, |_| true).unwrap();
        let b = ipam.allocate(None, |_| true).unwrap();
        ipam.release(a);
        // The freed address comes back only after the others.
        assert_eq!(ipam.allocate(None, |_| true), Some(ip("127.77.0.4")));
        assert_eq!(ipam.allocate(None, |_| true), Some(ip("127.77.0.5")));
        assert_eq!(ipam.allocate(None, |_| true), Some(ip("127.77.0.6")));
        assert_eq!(ipam.allocate(None, |_| true), Some(a));
        assert_ne!(a, b);
        assert_eq!(ipam.allocate(None, |_| true), None);
    }

    #[test]
    fn unusable_addresses_are_skipped() {
        let mut ipam = Ipam::new("127.77.0.0/24".parse().unwrap());
        let bad = [ip("127.77.0.2"), ip("127.77.0.3")];
        assert_eq!(
            ipam.allocate(None, |a| !bad.contains(&a)),
            Some(ip("127.77.0.4"))
        );
        // Unusable addresses stay free for later.
        assert_eq!(ipam.in_use(), 1);
        assert_eq!(ipam.allocate(None, |_| false), None);
    }

    #[test]
    fn preferred_address() {
        let mut ipam = Ipam::new("127.77.0.0/24".parse().unwrap());
        assert_eq!(
            ipam.allocate(Some(ip("127.77.0.40")), |_| true),
            Some(ip("127.77.0.40"))
        );
        // Taken, out of range or unusable: the next free one instead.
        assert_eq!(
            ipam.allocate(Some(ip("127.77.0.40")), |_| true),
            Some(ip("127.77.0.2"))
        );
        assert_eq!(
            ipam.allocate(Some(ip("127.78.0.9")), |_| true),
            Some(ip("127.77.0.3"))
        );
        assert_eq!(
            ipam.allocate(Some(ip("127.77.0.1")), |_| true),
            Some(ip("127.77.0.4"))
        );
        assert!(!ipam.contains(ip("127.77.0.255")));
        assert!(!ipam.contains(ip("127.77.0.0")));
    }
}
