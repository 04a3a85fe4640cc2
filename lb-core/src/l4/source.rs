//! Source ranges (`loadBalancerSourceRanges`): the client networks a
//! listener accepts. Checked once per TCP connection at accept and once per
//! UDP datagram before any flow is looked up or made; the check allocates
//! nothing and scans a short list of prefixes kept sorted and without
//! prefixes another one already covers.

use std::net::IpAddr;

use serde::{Serialize, Serializer};

/// The networks allowed to connect. An empty list allows no one (a list
/// whose every entry was invalid stays closed); "no restriction" is the
/// absence of a `SourceRanges` (`Option::None`) where it is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceRanges {
    /// IPv4 networks: (network address, prefix length), sorted.
    v4: Vec<(u32, u8)>,
    /// IPv6 networks, sorted.
    v6: Vec<(u128, u8)>,
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl SourceRanges {
    /// From (address, prefix length) pairs; host bits are cleared, prefix
    /// lengths beyond the family's width are clamped to it.
    pub fn new(nets: impl IntoIterator<Item = (IpAddr, u8)>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (ip, len) in nets {
            match ip.to_canonical() {
                IpAddr::V4(a) => {
                    let len = len.min(32);
                    v4.push((u32::from(a) & mask4(len), len));
                }
                IpAddr::V6(a) => {
                    let len = len.min(128);
                    v6.push((u128::from(a) & mask6(len), len));
                }
            }
        }
        v4.sort_unstable();
        v4.dedup();
        v6.sort_unstable();
        v6.dedup();
        // Drop networks inside another (shorter) one.
        let v4c = v4.clone();
        v4.retain(|&(n, l)| !v4c.iter().any(|&(m, k)| k < l && n & mask4(k) == m));
        let v6c = v6.clone();
        v6.retain(|&(n, l)| !v6c.iter().any(|&(m, k)| k < l && n & mask6(k) == m));
        Self { v4, v6 }
    }

    /// The networks of both lists (a client either allows is allowed).
    pub fn union(&self, other: &SourceRanges) -> SourceRanges {
        let v4 = self
            .v4
            .iter()
            .chain(&other.v4)
            .map(|&(n, l)| (IpAddr::from(n.to_be_bytes()), l));
        let v6 = self
            .v6
            .iter()
            .chain(&other.v6)
            .map(|&(n, l)| (IpAddr::from(n.to_be_bytes()), l));
        SourceRanges::new(v4.chain(v6))
    }

    /// Whether a client at `ip` may connect.
    #[inline]
    pub fn allows(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(n, l)| a & mask4(l) == n)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(n, l)| a & mask6(l) == n)
            }
        }
    }

    /// The networks, as `address/length` text.
    pub fn to_strings(&self) -> Vec<String> {
        let v4 = self
            .v4
            .iter()
            .map(|&(n, l)| format!("{}/{l}", std::net::Ipv4Addr::from(n)));
        let v6 = self
            .v6
            .iter()
            .map(|&(n, l)| format!("{}/{l}", std::net::Ipv6Addr::from(n)));
        v4.chain(v6).collect()
    }
}

impl Serialize for SourceRanges {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        self.to_strings().serialize(s)
    }
}

/// Whether `ranges` (none: no restriction) lets a client at `ip` in.
#[inline]
pub fn source_allowed(ranges: Option<&SourceRanges>, ip: IpAddr) -> bool {
    ranges.is_none_or(|r| r.allows(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_match_by_family_and_host_bits_are_ignored() {
        let r = SourceRanges::new([
            (ip("10.1.2.3"), 16),
            (ip("127.0.0.2"), 32),
            (ip("fd00::1"), 64),
        ]);
        assert_eq!(r.to_strings(), ["10.1.0.0/16", "127.0.0.2/32", "fd00::/64"]);
        assert!(r.allows(ip("10.1.255.9")));
        assert!(!r.allows(ip("10.2.0.1")));
        assert!(r.allows(ip("127.0.0.2")));
        assert!(!r.allows(ip("127.0.0.1")));
        assert!(r.allows(ip("fd00::ffff")));
        assert!(!r.allows(ip("fd01::1")));
        // An IPv4-mapped IPv6 peer is matched as IPv4.
        assert!(r.allows(ip("::ffff:127.0.0.2")));
    }

    #[test]
    fn empty_allows_no_one_and_none_allows_everyone() {
        let empty = SourceRanges::new([]);
        assert!(!empty.allows(ip("127.0.0.1")));
        assert!(!source_allowed(Some(&empty), ip("::1")));
        assert!(source_allowed(None, ip("192.0.2.1")));
        let all = SourceRanges::new([(ip("0.0.0.0"), 0)]);
        assert!(all.allows(ip("192.0.2.1")));
        assert!(!all.allows(ip("::1")), "0.0.0.0/0 is IPv4 only");
    }

    #[test]
    fn covered_networks_are_dropped_and_lengths_clamped() {
        let r = SourceRanges::new([
            (ip("10.0.0.0"), 8),
            (ip("10.5.0.0"), 16),
            (ip("10.0.0.0"), 8),
            (ip("192.0.2.7"), 40),
        ]);
        assert_eq!(r.to_strings(), ["10.0.0.0/8", "192.0.2.7/32"]);
        let u = r.union(&SourceRanges::new([
            (ip("10.9.0.0"), 16),
            (ip("fd00::"), 8),
        ]));
        assert_eq!(u.to_strings(), ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]);
    }
}
