//! Stable hashes for flows, client addresses and endpoint keys.
//!
//! Every function here is a fixed function of its input, the same in every
//! process, on every host and in every version of `lb` (test vectors pin it), so a
//! fleet of appliances behind ECMP picks the same backend for a flow without
//! sharing state. `std`'s `RandomState`/`DefaultHasher` is never used for this.
//!
//! The construction: the input is cut into 64-bit words, and each word is absorbed
//! as `h = mix64(h ^ word)` starting from a per-purpose seed, where [`mix64`] is
//! the MurmurHash3 64-bit finalizer (a bijection with full avalanche). Flows and
//! client addresses are encoded as fixed words (below); byte strings are read as
//! little-endian words, the last one zero-padded, with the length folded into the
//! seed. These hashes choose backends; they are not meant to resist an adversary
//! (hash-flooding defence belongs to the keyed maps that store flows).
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as seen on a dual-stack socket)
//! are treated as the IPv4 address they carry, and an IPv6 socket address's flow
//! label is ignored, so one client is one flow whichever socket saw it.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

/// Seed of [`flow_hash`].
pub const FLOW_SEED: u64 = 0x243f_6a88_85a3_08d3;
/// Seed of [`client_ip_hash`].
pub const CLIENT_IP_SEED: u64 = 0x1319_8a2e_0370_7344;

/// Multiplier folding a byte string's length into the seed of [`hash_bytes`].
const LENGTH_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// The MurmurHash3 64-bit finalizer: a bijection on `u64` whose every output bit
/// depends on every input bit.
#[inline]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Hashes a byte string with `seed`: `h = seed ^ len * 0x9e3779b97f4a7c15`, then
/// `h = mix64(h ^ w)` for each little-endian 8-byte word `w` (the last one
/// zero-padded), then `mix64(h)`.
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(LENGTH_MULTIPLIER);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = mix64(h ^ u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = mix64(h ^ u64::from_le_bytes(word));
    }
    mix64(h)
}

/// A transport protocol a Service port can carry, by IANA protocol number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Protocol {
    /// TCP (6).
    Tcp = 6,
    /// UDP (17).
    Udp = 17,
    /// SCTP (132).
    Sctp = 132,
}

impl Protocol {
    /// The IANA protocol number.
    pub const fn number(self) -> u8 {
        self as u8
    }
}

/// `ip` with an IPv4-mapped IPv6 address turned into its IPv4 address.
#[inline]
fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// `addr` with a canonical IP (see [`canonical_ip`]) and no IPv6 flow label.
#[inline]
fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => addr,
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, v6.scope_id())),
        },
    }
}

/// The address as a 128-bit number (an IPv4 address in the low 32 bits) and
/// whether it is IPv6.
#[inline]
fn ip_bits(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), false),
        IpAddr::V6(v6) => (u128::from(v6), true),
    }
}

/// Hashes a 5-tuple; stable across processes and hosts.
///
/// Encoding: the head word is `family | protocol << 8 | src_port << 16 |
/// dst_port << 32`, where `family` is 1 + 1 if the source is IPv6 + 2 if the
/// destination is IPv6. When both addresses are IPv4 one word
/// `src << 32 | dst` follows; otherwise four words follow: source high and low
/// 64 bits, destination high and low 64 bits (an IPv4 address as a number in the
/// low word). Words are absorbed from [`FLOW_SEED`] as described in the module
/// documentation.
#[inline]
pub fn flow_hash(src: SocketAddr, dst: SocketAddr, protocol: Protocol) -> u64 {
    let (s, s6) = ip_bits(canonical_ip(src.ip()));
    let (d, d6) = ip_bits(canonical_ip(dst.ip()));
    let family = 1 + u64::from(s6) + 2 * u64::from(d6);
    let head = family
        | u64::from(protocol.number()) << 8
        | u64::from(src.port()) << 16
        | u64::from(dst.port()) << 32;
    let h = mix64(FLOW_SEED ^ head);
    if !s6 && !d6 {
        return mix64(h ^ ((s as u64) << 32 | d as u64));
    }
    let h = mix64(h ^ (s >> 64) as u64);
    let h = mix64(h ^ s as u64);
    let h = mix64(h ^ (d >> 64) as u64);
    mix64(h ^ d as u64)
}

/// Hashes a client IP alone (for `sessionAffinity: ClientIP`); stable across
/// processes and hosts.
///
/// Encoding: a head word 4 (IPv4) or 6 (IPv6), then one word holding the IPv4
/// address, or the IPv6 address's high and low 64 bits, absorbed from
/// [`CLIENT_IP_SEED`].
#[inline]
pub fn client_ip_hash(ip: IpAddr) -> u64 {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => mix64(mix64(CLIENT_IP_SEED ^ 4) ^ u64::from(u32::from(v4))),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let h = mix64(CLIENT_IP_SEED ^ 6);
            let h = mix64(h ^ (bits >> 64) as u64);
            mix64(h ^ bits as u64)
        }
    }
}

/// A flow's 5-tuple, normalised (see the module documentation) so that it can key
/// a connection-tracking table and be hashed with [`flow_hash`].
///
/// Its `Hash` impl (for keyed maps such as the conntrack index) feeds the hasher
/// three words instead of a dozen small writes; that is several times faster
/// with std's SipHash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FiveTuple {
    src: SocketAddr,
    dst: SocketAddr,
    protocol: Protocol,
}

impl FiveTuple {
    /// The flow from `src` (the client) to `dst` (the address it connected to).
    pub fn new(src: SocketAddr, dst: SocketAddr, protocol: Protocol) -> Self {
        Self {
            src: canonical_addr(src),
            dst: canonical_addr(dst),
            protocol,
        }
    }

    /// The client's address.
    pub fn src(&self) -> SocketAddr {
        self.src
    }

    /// The address the client connected to (the Service's VIP and port).
    pub fn dst(&self) -> SocketAddr {
        self.dst
    }

    /// The transport protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// [`flow_hash`] of this tuple.
    #[inline]
    pub fn hash64(&self) -> u64 {
        flow_hash(self.src, self.dst, self.protocol)
    }
}

impl Hash for FiveTuple {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (s, s6) = ip_bits(self.src.ip());
        let (d, d6) = ip_bits(self.dst.ip());
        state.write_u128(s);
        state.write_u128(d);
        state.write_u64(
            u64::from(s6)
                | u64::from(d6) << 1
                | u64::from(self.protocol.number()) << 8
                | u64::from(self.src.port()) << 16
                | u64::from(self.dst.port()) << 32,
        );
    }
}

/// The key of a session-affinity entry: one client IP on one Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityKey {
    client: IpAddr,
    service: SocketAddr,
    protocol: Protocol,
}

impl AffinityKey {
    /// The affinity of `client` to whatever backend serves `service` (VIP and port).
    pub fn new(client: IpAddr, service: SocketAddr, protocol: Protocol) -> Self {
        Self {
            client: canonical_ip(client),
            service: canonical_addr(service),
            protocol,
        }
    }

    /// The client IP.
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// The Service address.
    pub fn service(&self) -> SocketAddr {
        self.service
    }

    /// The transport protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// [`client_ip_hash`] of the client: the hash a Maglev table is looked up with.
    #[inline]
    pub fn hash64(&self) -> u64 {
        client_ip_hash(self.client)
    }
}

impl Hash for AffinityKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (c, c6) = ip_bits(self.client);
        let (v, v6) = ip_bits(self.service.ip());
        state.write_u128(c);
        state.write_u128(v);
        state.write_u64(
            u64::from(c6)
                | u64::from(v6) << 1
                | u64::from(self.protocol.number()) << 8
                | u64::from(self.service.port()) << 16,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn mix64_is_the_murmur3_finalizer() {
        assert_eq!(mix64(0), 0);
        // fmix64(1), computed independently of this code.
        assert_eq!(mix64(1), 0xb456_bcfc_34c2_cb2c);
    }

    /// These values pin the algorithm: changing them re-routes every flow of a
    /// fleet that mixes old and new versions. They were computed with an
    /// independent implementation of the documented encoding (a Python script),
    /// not by running this code.
    #[test]
    fn pinned_values() {
        let v4 = flow_hash(
            addr("192.0.2.1:40000"),
            addr("198.51.100.7:80"),
            Protocol::Tcp,
        );
        let v6 = flow_hash(
            addr("[2001:db8::1]:40000"),
            addr("[2001:db8::80]:443"),
            Protocol::Udp,
        );
        let c4 = client_ip_hash(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let c6 = client_ip_hash("2001:db8::1".parse().expect("ip"));
        let b = hash_bytes(0, b"10.0.0.1:8080");
        let empty = hash_bytes(1, b"");
        assert_eq!(
            [v4, v6, c4, c6, b, empty],
            [
                0x709a_4a9b_d84f_e23e,
                0x7661_e6af_4f7d_b4f1,
                0x2068_2c6e_5b56_addd,
                0x983e_a519_c358_61d9,
                0x9994_091c_22b1_2113,
                0xb456_bcfc_34c2_cb2c,
            ],
            "{v4:#018x} {v6:#018x} {c4:#018x} {c6:#018x} {b:#018x} {empty:#018x}"
        );
    }

    #[test]
    fn every_field_matters() {
        let base = flow_hash(addr("10.1.1.1:1000"), addr("10.2.2.2:80"), Protocol::Tcp);
        let variants = [
            flow_hash(addr("10.1.1.2:1000"), addr("10.2.2.2:80"), Protocol::Tcp),
            flow_hash(addr("10.1.1.1:1001"), addr("10.2.2.2:80"), Protocol::Tcp),
            flow_hash(addr("10.1.1.1:1000"), addr("10.2.2.3:80"), Protocol::Tcp),
            flow_hash(addr("10.1.1.1:1000"), addr("10.2.2.2:81"), Protocol::Tcp),
            flow_hash(addr("10.1.1.1:1000"), addr("10.2.2.2:80"), Protocol::Udp),
            // Swapped direction is a different flow.
            flow_hash(addr("10.2.2.2:80"), addr("10.1.1.1:1000"), Protocol::Tcp),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let mapped = Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped();
        let v6 = SocketAddr::V6(SocketAddrV6::new(mapped, 5000, 7, 0));
        let v4 = addr("192.0.2.9:5000");
        let dst = addr("192.0.2.100:80");
        assert_eq!(
            flow_hash(v6, dst, Protocol::Tcp),
            flow_hash(v4, dst, Protocol::Tcp)
        );
        assert_eq!(
            FiveTuple::new(v6, dst, Protocol::Tcp),
            FiveTuple::new(v4, dst, Protocol::Tcp)
        );
        assert_eq!(client_ip_hash(IpAddr::V6(mapped)), client_ip_hash(v4.ip()));
        // The flow label does not split a flow.
        let a = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 0, 0));
        let b = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 99, 0));
        assert_eq!(
            FiveTuple::new(a, dst, Protocol::Udp),
            FiveTuple::new(b, dst, Protocol::Udp)
        );
    }

    #[test]
    fn byte_hash_depends_on_length_and_seed() {
        assert_ne!(hash_bytes(0, b"a"), hash_bytes(0, b"a\0"));
        assert_ne!(hash_bytes(0, b""), hash_bytes(0, b"\0"));
        assert_ne!(hash_bytes(0, b"abcdefgh"), hash_bytes(1, b"abcdefgh"));
        assert_ne!(hash_bytes(0, b"abcdefgh1"), hash_bytes(0, b"abcdefgh2"));
    }

    #[test]
    fn low_bits_are_spread() {
        // Sequential client ports must spread evenly over a small prime modulus.
        let dst = addr("10.0.0.1:80");
        let mut buckets = [0u32; 13];
        for port in 0..13_000u16 {
            let h = flow_hash(SocketAddr::new(dst.ip(), port), dst, Protocol::Tcp);
            buckets[(h % 13) as usize] += 1;
        }
        for b in buckets {
            assert!((850..1150).contains(&b), "{buckets:?}");
        }
    }
}
