//! `[loadbalancer] interface`: the VIPs lb serves, put on a network
//! interface as host addresses (/32, /128) over rtnetlink and announced to
//! the link (gratuitous ARP, unsolicited neighbour advertisement), and taken
//! off again when no longer served and on drain.
//!
//! This module owns only the addresses it marks as lb's: every address lb
//! adds carries the netlink `IFA_PROTO` value [`IFA_PROTO_LB`] (kernel 6.1
//! or newer), and only addresses with that mark are ever removed, including
//! those an earlier lb process left behind when it crashed. Addresses that
//! were on the interface already (added by hand, DHCP, ...) are left alone
//! and not announced; loopback, unspecified and multicast addresses are
//! never touched. Listeners do not wait for any of this: they bind with
//! IP_FREEBIND.

mod announce;
mod netlink;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use lb_core::l4::L4Snapshot;
use lb_http::gateway::GatewaySnapshot;
use nix::ifaddrs::getifaddrs;

pub use announce::{REPEATS, SPACING, garp_frame, unsolicited_na_frame};

use crate::error::Error;
use announce::Announcer;
use netlink::{Netlink, Op};

/// The `IFA_PROTO` value that marks an interface address as lb's
/// (`ip address add ... proto 108` with iproute2 6.2 or newer). The kernel
/// uses 1 to 3 for its own addresses.
pub const IFA_PROTO_LB: u8 = 108;

/// ARPHRD_ETHER: the hardware type announcements are built for.
const ARPHRD_ETHER: u16 = 1;

/// Whether lb may add or remove `ip` on an interface: not loopback (127/8,
/// ::1), unspecified or multicast.
pub fn is_managed(ip: &IpAddr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
}

/// The VIPs a snapshot serves on the interface: the addresses of L4
/// Services that listen there as a LoadBalancer VIP (`via ==
/// "loadBalancer"`, TCP and UDP) and the Gateway listener addresses, less
/// the ones [`is_managed`] refuses and those outside every one of `pools`
/// (`[loadbalancer] pools`). The compiler already refuses requests outside
/// the pools; this is the second check, right where addresses go onto the
/// link: lb never adds or announces an address outside its pools.
pub fn wanted_vips(
    l4: &L4Snapshot,
    gateway: &GatewaySnapshot,
    pools: &[IpNet],
) -> BTreeSet<IpAddr> {
    let services = l4.services.iter().chain(&l4.udp);
    let vips = services
        .filter(|(_, s)| s.via == "loadBalancer")
        .map(|(addr, _)| addr.ip());
    let gateways = gateway.ports.keys().map(|addr| addr.ip());
    vips.chain(gateways)
        .filter(is_managed)
        .filter(|ip| {
            let inside = pools.iter().any(|p| p.contains(ip));
            if !inside {
                tracing::error!(%ip, "not put on the interface: outside every [loadbalancer] pool");
            }
            inside
        })
        .collect()
}

/// One interface whose VIPs lb manages.
#[derive(Debug)]
pub struct VipInterface {
    name: String,
    index: u32,
    netlink: Netlink,
    /// None when the interface has no Ethernet address or the packet
    /// socket could not be opened (no CAP_NET_RAW): addresses are still
    /// managed, not announced.
    announcer: Option<Announcer>,
}

impl VipInterface {
    /// Opens interface `name`: its index and Ethernet address, a netlink
    /// socket and a packet socket for announcements. A missing interface or
    /// a netlink socket that cannot be opened is an error; a packet socket
    /// that cannot be opened is logged, and addresses are then managed
    /// without announcements. Logs the addresses an earlier lb left.
    pub fn open(name: &str) -> Result<Self, Error> {
        let err = |source: io::Error| Error::VipInterface {
            name: name.to_owned(),
            source,
        };
        let link = getifaddrs()
            .map_err(|e| err(e.into()))?
            .filter(|a| a.interface_name == name)
            .find_map(|a| a.address.as_ref()?.as_link_addr().copied())
            .ok_or_else(|| err(io::Error::new(io::ErrorKind::NotFound, "no such interface")))?;
        let index = u32::try_from(link.ifindex()).map_err(|e| err(io::Error::other(e)))?;
        let netlink = Netlink::open().map_err(err)?;
        let announcer = match link.addr() {
            Some(mac) if link.hatype() == ARPHRD_ETHER && link.halen() == 6 => {
                match Announcer::open(link, mac) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        tracing::warn!(
                            interface = name,
                            "VIPs will not be announced: cannot open a packet socket: {e}"
                        );
                        None
                    }
                }
            }
            _ => {
                tracing::warn!(
                    interface = name,
                    "VIPs will not be announced: not an Ethernet interface"
                );
                None
            }
        };
        let mut this = Self {
            name: name.to_owned(),
            index,
            netlink,
            announcer,
        };
        let left: Vec<IpAddr> = this.lb_addresses()?.into_iter().collect();
        if !left.is_empty() {
            tracing::info!(interface = name, addresses = ?left, "lb's addresses from an earlier run found; those not served go at the first sync");
        }
        Ok(this)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn err(&self, source: io::Error) -> Error {
        Error::VipInterface {
            name: self.name.clone(),
            source,
        }
    }

    /// Every address on the interface and its `IFA_PROTO` mark.
    fn present(&mut self) -> Result<BTreeMap<IpAddr, u8>, Error> {
        match self.netlink.addresses(self.index) {
            Ok(list) => Ok(list.into_iter().map(|a| (a.addr, a.proto)).collect()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The addresses on the interface that carry lb's mark.
    fn lb_addresses(&mut self) -> Result<BTreeSet<IpAddr>, Error> {
        let present = self.present()?;
        Ok(present
            .into_iter()
            .filter(|(ip, proto)| *proto == IFA_PROTO_LB && is_managed(ip))
            .map(|(ip, _)| ip)
            .collect())
    }

    fn remove(&mut self, ip: IpAddr) {
        match self
            .netlink
            .address(Op::Delete, self.index, ip, IFA_PROTO_LB)
        {
            Ok(()) => tracing::info!(interface = %self.name, %ip, "VIP removed from the interface"),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => tracing::error!(interface = %self.name, %ip, "cannot remove VIP: {e}"),
        }
    }

    /// Brings the interface in line with `wanted`: removes lb's addresses
    /// not wanted, adds each wanted address not on the interface (marked as
    /// lb's, IPv6 without DAD) and announces it. Addresses lb does not own
    /// are left alone, wanted or not; [`is_managed`] ones only. A failed
    /// add or remove is logged and the rest goes on; an error means the
    /// interface's addresses could not be read.
    pub fn sync(&mut self, wanted: &BTreeSet<IpAddr>) -> Result<(), Error> {
        let present = self.present()?;
        let stale: Vec<IpAddr> = present
            .iter()
            .filter(|(ip, proto)| **proto == IFA_PROTO_LB && is_managed(ip) && !wanted.contains(ip))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in stale {
            self.remove(ip);
        }
        let missing: Vec<IpAddr> = wanted
            .iter()
            .filter(|ip| is_managed(ip) && !present.contains_key(ip))
            .copied()
            .collect();
        for ip in missing {
            match self.netlink.address(Op::Add, self.index, ip, IFA_PROTO_LB) {
                Ok(()) => {
                    tracing::info!(interface = %self.name, %ip, "VIP added to the interface");
                    if let Some(a) = &self.announcer
                        && let Err(e) = a.announce(ip)
                    {
                        tracing::warn!(interface = %self.name, %ip, "cannot announce VIP: {e}");
                    }
                }
                // Added by someone else since the dump: theirs.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => tracing::error!(interface = %self.name, %ip, "cannot add VIP: {e}"),
            }
        }
        Ok(())
    }

    /// Removes every address marked as lb's (the drain).
    pub fn remove_all(&mut self) -> Result<(), Error> {
        for ip in self.lb_addresses()? {
            self.remove(ip);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_unspecified_and_multicast_are_never_managed() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
        ] {
            assert!(!is_managed(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.250.0.1", "192.0.2.7", "fd00:250::1", "2001:db8::1"] {
            assert!(is_managed(&ip.parse().unwrap()), "{ip}");
        }
    }

    fn service(via: &'static str) -> lb_core::l4::L4Service {
        lb_core::l4::L4Service {
            name: "default/web:80".into(),
            via,
            endpoints: Vec::new(),
            table: lb_core::maglev::MaglevTable::new(Vec::new(), 7).unwrap(),
            affinity: None,
            connect_timeout: std::time::Duration::from_secs(1),
            idle_timeout: std::time::Duration::from_secs(1),
            source_ranges: None,
        }
    }

    #[test]
    fn wanted_vips_are_load_balancer_and_gateway_addresses_not_loopback() {
        let mut l4 = L4Snapshot::default();
        for (addr, via) in [
            ("10.0.0.1:80", "loadBalancer"),
            ("[fd00::1]:80", "loadBalancer"),
            ("127.0.77.1:80", "loadBalancer"),
            ("10.0.0.2:80", "externalIP"),
            ("0.0.0.0:30080", "nodePort"),
        ] {
            l4.services.insert(addr.parse().unwrap(), service(via));
        }
        l4.udp
            .insert("10.0.0.3:53".parse().unwrap(), service("loadBalancer"));
        let mut gateway = GatewaySnapshot::default();
        for addr in ["10.0.0.4:443", "0.0.0.0:8080", "[::1]:80"] {
            gateway.ports.insert(
                addr.parse().unwrap(),
                lb_http::gateway::GatewayPort {
                    protocol: lb_http::gateway::PortProtocol::Http,
                    tls: Default::default(),
                    listeners: Vec::new(),
                    source_ranges: None,
                },
            );
        }
        let want: BTreeSet<IpAddr> = ["10.0.0.1", "fd00::1", "10.0.0.3", "10.0.0.4"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let pools: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()];
        assert_eq!(wanted_vips(&l4, &gateway, &pools), want);
    }

    #[test]
    fn addresses_outside_the_pools_never_reach_the_interface() {
        // A snapshot that (by a compiler bug) serves the router's address
        // as a VIP and a Gateway on another host's address.
        let mut l4 = L4Snapshot::default();
        l4.services
            .insert("192.168.1.1:80".parse().unwrap(), service("loadBalancer"));
        l4.services
            .insert("10.0.0.9:80".parse().unwrap(), service("loadBalancer"));
        let mut gateway = GatewaySnapshot::default();
        gateway.ports.insert(
            "192.168.1.20:443".parse().unwrap(),
            lb_http::gateway::GatewayPort {
                protocol: lb_http::gateway::PortProtocol::Http,
                tls: Default::default(),
                listeners: Vec::new(),
                source_ranges: None,
            },
        );
        let pools: Vec<IpNet> = vec!["10.0.0.0/28".parse().unwrap()];
        let want: BTreeSet<IpAddr> = [IpAddr::from([10, 0, 0, 9])].into();
        assert_eq!(wanted_vips(&l4, &gateway, &pools), want);
        assert!(wanted_vips(&l4, &gateway, &[]).is_empty());
    }

    #[test]
    fn a_missing_interface_is_a_clear_error() {
        let err = VipInterface::open("lb-no-such0").unwrap_err().to_string();
        assert!(err.contains("loadbalancer.interface lb-no-such0"), "{err}");
        assert!(err.contains("no such interface"), "{err}");
    }
}
