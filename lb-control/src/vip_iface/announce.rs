//! Announcing a VIP to the link: the Ethernet frames of a gratuitous ARP
//! (IPv4) and of an unsolicited neighbour advertisement (IPv6), and the
//! AF_PACKET socket they are sent on.
//!
//! Each announcement goes out [`REPEATS`] times: at once, then every
//! [`SPACING`] from a task on the control thread's runtime (a lost frame is
//! covered by the next one; nothing waits on the hot path).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, sendto, socket};

/// How many times each announcement is sent.
pub const REPEATS: usize = 3;
/// The time between two sends of one announcement.
pub const SPACING: Duration = Duration::from_millis(200);

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_OPT_TARGET_LL_ADDR: u8 = 2;
/// Override set, Solicited and Router clear.
const NA_FLAG_OVERRIDE: u8 = 0x20;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, capacity: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + capacity);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A gratuitous ARP request: sender and target IP both `ip`, sender MAC
/// `mac`, target MAC zero, broadcast (RFC 5227's ARP announcement).
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet([0xff; 6], mac, ETH_P_ARP, 28);
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.extend_from_slice(&[6, 4]); // address lengths
    f.extend_from_slice(&1u16.to_be_bytes()); // request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// The Internet checksum of the ICMPv6 `body` with the IPv6 pseudo-header.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + body.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(body.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
    pseudo.extend_from_slice(body);
    let mut sum: u32 = pseudo
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An unsolicited neighbour advertisement for `ip` from `ip` to all nodes
/// (ff02::1), hop limit 255, Override set, Solicited clear, with the
/// target link-layer address option `mac` (RFC 4861 7.2.6).
pub fn unsolicited_na_frame(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[ND_NEIGHBOR_ADVERT, 0, 0, 0]); // type, code, checksum
    icmp.extend_from_slice(&[NA_FLAG_OVERRIDE, 0, 0, 0]);
    icmp.extend_from_slice(&ip.octets());
    icmp.extend_from_slice(&[ND_OPT_TARGET_LL_ADDR, 1]); // length in units of 8 bytes
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(ip, ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = ethernet([0x33, 0x33, 0, 0, 0, 1], mac, ETH_P_IPV6, 40 + icmp.len());
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no traffic class or flow label
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[IPPROTO_ICMPV6, 255]);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The announcement frame for `ip`.
pub fn frame(mac: [u8; 6], ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => garp_frame(mac, v4),
        IpAddr::V6(v6) => unsolicited_na_frame(mac, v6),
    }
}

/// A non-blocking AF_PACKET raw socket that sends whole Ethernet frames out
/// of one interface (needs CAP_NET_RAW).
#[derive(Debug, Clone)]
pub(super) struct Announcer {
    fd: Arc<OwnedFd>,
    /// The interface's `sockaddr_ll` as `getifaddrs` reports it: its index
    /// names the interface to send on; protocol 0 lets the kernel read the
    /// EtherType from the frame.
    link: LinkAddr,
    mac: [u8; 6],
}

impl Announcer {
    /// A socket for the interface `link` with Ethernet address `mac`.
    pub(super) fn open(link: LinkAddr, mac: [u8; 6]) -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        Ok(Self {
            fd: Arc::new(fd),
            link,
            mac,
        })
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        sendto(self.fd.as_raw_fd(), frame, &self.link, MsgFlags::empty())?;
        Ok(())
    }

    /// Announces `ip`: sends its frame now and, on a tokio runtime, again
    /// [`REPEATS`]` - 1` times [`SPACING`] apart (without one, all at once).
    /// A failed first send is returned; failed repeats are logged.
    pub(super) fn announce(&self, ip: IpAddr) -> io::Result<()> {
        let frame = frame(self.mac, ip);
        self.send(&frame)?;
        let this = self.clone();
        let repeat = move || {
            if let Err(e) = this.send(&frame) {
                tracing::debug!(%ip, "VIP announcement not sent: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    for _ in 1..REPEATS {
                        tokio::time::sleep(SPACING).await;
                        repeat();
                    }
                });
            }
            Err(_) => (1..REPEATS).for_each(|_| repeat()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    #[test]
    fn gratuitous_arp_bytes() {
        let f = garp_frame(MAC, Ipv4Addr::new(10, 250, 0, 3));
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // broadcast
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, // from the interface
            0x08, 0x06, // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4, // Ethernet, IPv4
            0x00, 0x01, // request
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 10, 250, 0, 3, // sender
            0, 0, 0, 0, 0, 0, 10, 250, 0, 3, // target: the same IP
        ];
        assert_eq!(f, want);
    }

    #[test]
    fn unsolicited_na_bytes() {
        let ip: Ipv6Addr = "fd00:250::3".parse().unwrap();
        let f = unsolicited_na_frame(MAC, ip);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        let ip6 = &f[14..54];
        assert_eq!(&ip6[..4], &[0x60, 0, 0, 0]);
        assert_eq!(&ip6[4..6], &[0, 32]); // payload length
        assert_eq!(ip6[6], 58); // ICMPv6
        assert_eq!(ip6[7], 255); // hop limit
        assert_eq!(&ip6[8..24], &ip.octets());
        assert_eq!(&ip6[24..40], &ALL_NODES.octets());
        let icmp = &f[54..];
        assert_eq!(&icmp[..2], &[136, 0]);
        assert_eq!(&icmp[4..8], &[0x20, 0, 0, 0], "Override only");
        assert_eq!(&icmp[8..24], &ip.octets());
        assert_eq!(&icmp[24..26], &[2, 1], "target link-layer address option");
        assert_eq!(&icmp[26..32], &MAC);
        // The checksum verifies: summing with it in place gives 0xffff.
        assert_eq!(icmpv6_checksum(ip, ALL_NODES, icmp), 0);
        // And matches a value computed independently (a few lines of Python
        // summing the same pseudo-header and message).
        assert_eq!(u16::from_be_bytes([icmp[2], icmp[3]]), 0xef5e);
    }

    #[test]
    fn checksum_of_odd_length_pads_with_zero() {
        let a = icmpv6_checksum(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, &[1, 2, 3]);
        let b = icmpv6_checksum(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, &[1, 2, 3, 0]);
        // The length in the pseudo-header differs by one.
        assert_eq!(a.wrapping_sub(b), 1);
    }
}
