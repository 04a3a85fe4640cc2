//! What the compile reads of lb's configuration: the node, the Ingress
//! class and listeners, the Gateway controller name and the L4 load
//! balancer's pools and limits. The `lb.toml` sections `[ingress]`,
//! `[gateway]` and `[loadbalancer]` are these types; `[node]` is converted
//! by the appliance (its default name is the host's name).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Everything the compile needs besides the objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// This node.
    pub node: Node,
    /// Ingress class and listeners.
    pub ingress: Ingress,
    /// Gateway API controller identity.
    pub gateway: Gateway,
    /// Addresses for type=LoadBalancer Services and Gateways.
    pub loadbalancer: LoadBalancer,
}

/// Who this appliance is in the cluster's topology. Endpoint selection
/// compares `name` with EndpointSlice `nodeName` (traffic policy `Local`,
/// `PreferSameNode`) and `zone` with `hints.forZones`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Node {
    /// Node name, matched against EndpointSlice `nodeName`.
    pub name: String,
    /// Zone, matched against topology hints (`hints.forZones`); none: zone hints never match.
    pub zone: Option<String>,
    /// This node's addresses, where NodePort listeners bind.
    pub addresses: Vec<IpAddr>,
}

impl Default for Node {
    /// Named `lb`, no zone, at 127.0.0.1.
    fn default() -> Self {
        Self {
            name: "lb".to_owned(),
            zone: None,
            addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        }
    }
}

/// `[ingress]`: the Ingress class served and the Ingress listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ingress {
    /// The `ingressClassName` served.
    pub class: String,
    /// IngressClass `spec.controller` value that marks a class as ours.
    pub controller: String,
    /// Plain-HTTP listen addresses.
    pub http: Vec<SocketAddr>,
    /// HTTPS listen addresses.
    pub https: Vec<SocketAddr>,
    /// `namespace/name` of the `kubernetes.io/tls` Secret served to clients
    /// whose server name matches no Ingress TLS host (or who send none).
    pub default_certificate: Option<String>,
}

impl Default for Ingress {
    fn default() -> Self {
        Self {
            class: "lb".to_owned(),
            controller: "lb.example.com/ingress-controller".to_owned(),
            http: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            https: Vec::new(),
            default_certificate: None,
        }
    }
}

/// `[gateway]`: the Gateway API controller identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gateway {
    /// GatewayClass `spec.controllerName` that marks a class as ours.
    pub controller_name: String,
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            controller_name: "lb.example.com/gateway-controller".to_owned(),
        }
    }
}

/// `[loadbalancer]`: Services of `type: LoadBalancer` served at L4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadBalancer {
    /// Address pools for LoadBalancer VIPs.
    pub pools: Vec<IpNet>,
    /// `spec.loadBalancerClass` served.
    pub class: String,
    /// Also serve LoadBalancer Services that name no class.
    pub default: bool,
    /// Upstream connect timeout of an L4 connection (each endpoint tried).
    #[serde(with = "duration_serde")]
    pub connect_timeout: Duration,
    /// An L4 connection with no bytes either way for this long is closed.
    #[serde(with = "duration_serde")]
    pub idle_timeout: Duration,
    /// Maglev lookup table size per Service port (a prime).
    pub maglev_table_size: u32,
    /// A UDP flow with no datagram either way for this long ends.
    #[serde(with = "duration_serde")]
    pub udp_idle_timeout: Duration,
    /// UDP flows tracked per worker and Service address (LRU beyond).
    pub udp_flows: usize,
    /// UDP flows (each a socket) one worker holds over all its Service
    /// addresses: each address gets an equal share (at most `udp_flows`).
    pub udp_flow_sockets: usize,
    /// How long a UDP flow keeps an endpoint that left its Service.
    #[serde(with = "duration_serde")]
    pub endpoint_grace: Duration,
    /// The network interface lb adds the VIPs it serves to (and removes them
    /// from) over netlink, announcing each with gratuitous ARP / unsolicited
    /// neighbour advertisement. None: the addresses reach the host by other
    /// means (listeners bind with IP_FREEBIND either way).
    pub interface: Option<String>,
    /// CIDRs inside which a Service's `spec.externalIPs` are honoured
    /// (bound); entries outside every one are ignored with a diagnostic.
    /// Empty (the default): none are honoured.
    pub external_ips: Vec<IpNet>,
}

impl Default for LoadBalancer {
    fn default() -> Self {
        Self {
            pools: Vec::new(),
            class: "lb.example.com/lb".into(),
            default: true,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(3600),
            maglev_table_size: lb_core::maglev::DEFAULT_TABLE_SIZE,
            udp_idle_timeout: Duration::from_secs(60),
            udp_flows: 65_536,
            udp_flow_sockets: 65_536,
            endpoint_grace: Duration::from_secs(10),
            interface: None,
            external_ips: Vec::new(),
        }
    }
}

/// Parses a duration such as `250ms`, `30s`, `5m`, `1h` or `1m30s`; `0` alone is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("invalid duration {s:?}: expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => n
                .checked_mul(60)
                .map(Duration::from_secs)
                .unwrap_or(Duration::MAX),
            "h" => n
                .checked_mul(3600)
                .map(Duration::from_secs)
                .unwrap_or(Duration::MAX),
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (ms, s, m, h)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {other:?} (use ms, s, m, h)"
                ));
            }
        };
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it, in the largest exact unit.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `#[serde(with)]` for durations written as `"250ms"`, `"30s"`, `"5m"`, `"1h"`.
pub mod duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as [`super::format_duration`] does.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// Reads a duration as [`super::parse_duration`] does.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}
