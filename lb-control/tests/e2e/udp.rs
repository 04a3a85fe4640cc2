//! UDP Services on real loopback sockets: datagrams balanced per flow over
//! LoadBalancer VIPs, externalIPs and NodePorts, replies coming back from the
//! address the client sent to; the flow table keeps a flow's endpoint when
//! endpoints are added, and when its endpoint leaves until the grace period
//! is over; idle flows expire; ClientIP affinity; IPv6 VIP to IPv4
//! endpoints; TCP and UDP on the same port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bench::echo::EchoServer;
use bench::udp_echo::UdpEchoServer;

use crate::l4::l4_service;
use crate::support::{Lb, free_port};

/// UDP echo backends `b0`.. on 127.0.0.2.. sharing one port, with TCP echo
/// backends of the same names on the same addresses.
fn backends(n: usize) -> (Vec<UdpEchoServer>, Vec<EchoServer>, Vec<SocketAddr>) {
    for _ in 0..10 {
        let port = free_port();
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| format!("127.0.0.{}:{port}", i + 2).parse().unwrap())
            .collect();
        let udp: Result<Vec<_>, _> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| UdpEchoServer::start(*a, &format!("b{i}")))
            .collect();
        let tcp: Result<Vec<_>, _> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| EchoServer::start(*a, &format!("b{i}")))
            .collect();
        if let (Ok(udp), Ok(tcp)) = (udp, tcp) {
            return (udp, tcp, addrs);
        }
    }
    panic!("no free port for the UDP echo backends");
}

/// A Service like [`l4_service`] whose port is UDP.
fn udp_service(name: &str, kind: &str, port: u16, extra: &str, eps: &[SocketAddr]) -> String {
    l4_service(name, kind, port, extra, eps).replace("protocol: TCP", "protocol: UDP")
}

/// A client socket (its own source port: its own flow) of `family_of`'s family.
fn client(family_of: SocketAddr) -> UdpSocket {
    let bind = if family_of.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let s = UdpSocket::bind(bind).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// Sends `msg` from `sock` to `to` and returns the name of the endpoint
/// that answered, checking the answer came from `to` and echoes `msg`.
/// Retries a few times: the first datagrams may arrive before the workers
/// have opened a newly added address.
fn ask(sock: &UdpSocket, to: SocketAddr, msg: &str) -> String {
    let mut buf = [0u8; 2048];
    for _ in 0..10 {
        sock.send_to(msg.as_bytes(), to).unwrap();
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                break;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            // A late answer to an earlier try carries the same payload.
            if let Some((name, echoed)) = text.split_once(' ')
                && echoed == msg
            {
                assert_eq!(from, to, "the reply comes from the address asked");
                return name.to_owned();
            }
        }
    }
    panic!("no answer from {to} for {msg:?}");
}

fn tally<'a>(names: impl Iterator<Item = &'a String>) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for n in names {
        *seen.entry(n.clone()).or_insert(0) += 1;
    }
    seen
}

#[test]
fn udp_flows_balance_over_vip_external_ip_and_node_port_with_tcp_on_the_same_port() {
    let (_udp, _tcp, eps) = backends(3);
    let port = eps[0].port();
    let node_port = free_port();
    let svc = l4_service(
        "dns",
        "LoadBalancer",
        port,
        "  loadBalancerIP: 127.0.81.1\n  externalIPs: [\"127.0.81.2\"]\n",
        &eps,
    )
    .replace(
        "ports: [{name: tcp, port: PORT, protocol: TCP}]\n---".replace("PORT", &port.to_string()).as_str(),
        &format!("ports: [{{name: tcp, port: {port}, protocol: TCP}}, {{name: udp, port: {port}, protocol: UDP, nodePort: {node_port}}}]\n---"),
    )
    .replace(
        &format!("ports: [{{name: tcp, port: {port}, protocol: TCP}}]\nendpoints"),
        &format!("ports: [{{name: tcp, port: {port}, protocol: TCP}}, {{name: udp, port: {port}, protocol: UDP}}]\nendpoints"),
    );
    assert!(svc.contains("protocol: UDP, nodePort"), "{svc}");
    let lb = Lb::start(
        "udp-vip",
        &[("dns.yaml", &svc)],
        "[loadbalancer]\npools = [\"127.0.81.1/32\"]\nexternal_ips = [\"127.0.81.2/32\"]\n",
    );
    for addr in [
        SocketAddr::from(([127, 0, 81, 1], port)),
        SocketAddr::from(([127, 0, 81, 2], port)),
        SocketAddr::from(([127, 0, 0, 1], node_port)),
    ] {
        let clients: Vec<UdpSocket> = (0..90).map(|_| client(addr)).collect();
        let names: Vec<String> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| ask(c, addr, &format!("hello {i}")))
            .collect();
        let seen = tally(names.iter());
        assert_eq!(seen.len(), 3, "{addr}: every endpoint gets flows: {seen:?}");
        for (b, n) in &seen {
            assert!((12..=55).contains(n), "{addr}: {b} got {n} of 90: {seen:?}");
        }
        // Every later datagram of a flow goes where its first went.
        for (i, c) in clients.iter().enumerate().take(30) {
            assert_eq!(ask(c, addr, &format!("again {i}")), names[i], "{addr}");
        }
    }
    // TCP on the same VIP and port reaches the TCP echo servers.
    let mut s =
        std::net::TcpStream::connect((std::net::Ipv4Addr::new(127, 0, 81, 1), port)).unwrap();
    use std::io::{Read, Write};
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: l4\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
        "{out}"
    );
    assert!(lb.metric("lb_l4_datagrams_total") >= 2 * 3 * 120);
    assert_eq!(lb.metric("lb_l4_datagrams_dropped_total"), 0);
}

#[test]
fn a_flow_keeps_its_endpoint_when_endpoints_are_added_until_it_goes_idle() {
    let (_udp, _tcp, eps) = backends(3);
    let port = eps[0].port();
    let vip = SocketAddr::from(([127, 0, 82, 1], port));
    let svc = |n: usize| {
        udp_service(
            "flows",
            "LoadBalancer",
            port,
            "  loadBalancerIP: 127.0.82.1\n",
            &eps[..n],
        )
    };
    let lb = Lb::start(
        "udp-flows",
        &[("svc.yaml", &svc(1))],
        "[loadbalancer]\npools = [\"127.0.82.1/32\"]\nudp_idle_timeout = \"2s\"\n",
    );
    let clients: Vec<UdpSocket> = (0..24).map(|_| client(vip)).collect();
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(ask(c, vip, &format!("m{i}")), "b0");
    }
    assert_eq!(
        lb.metric("lb_l4_udp_flows"),
        24,
        "one tracked flow per client"
    );
    let generation = lb.generation();
    std::fs::write(lb.manifest_path("svc.yaml"), svc(3)).unwrap();
    lb.wait_generation_above(generation, Duration::from_secs(10));
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(
            ask(c, vip, &format!("n{i}")),
            "b0",
            "flow {i} kept its endpoint"
        );
    }
    // Idle past the timeout: the flows end and their sockets close.
    let start = Instant::now();
    while lb.metric("lb_l4_udp_flows") > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "flows never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "expired too early"
    );
    // The same clients now start new flows, spread over all endpoints.
    let names: Vec<String> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| ask(c, vip, &format!("o{i}")))
        .collect();
    assert!(tally(names.iter()).len() >= 2, "{names:?}");
}

#[test]
fn a_flow_keeps_a_removed_endpoint_for_the_grace_period_only() {
    let (_udp, _tcp, eps) = backends(2);
    let port = eps[0].port();
    let vip = SocketAddr::from(([127, 0, 83, 1], port));
    let svc = |e: &[SocketAddr]| {
        udp_service(
            "grace",
            "LoadBalancer",
            port,
            "  loadBalancerIP: 127.0.83.1\n",
            e,
        )
    };
    let lb = Lb::start(
        "udp-grace",
        &[("svc.yaml", &svc(&eps))],
        "[loadbalancer]\npools = [\"127.0.83.1/32\"]\nendpoint_grace = \"3s\"\n",
    );
    let clients: Vec<UdpSocket> = (0..24).map(|_| client(vip)).collect();
    let on_b0: Vec<&UdpSocket> = clients
        .iter()
        .enumerate()
        .filter(|(i, c)| ask(c, vip, &format!("m{i}")) == "b0")
        .map(|(_, c)| c)
        .collect();
    assert!(!on_b0.is_empty(), "some flows land on b0");
    let generation = lb.generation();
    std::fs::write(lb.manifest_path("svc.yaml"), svc(&eps[1..])).unwrap();
    let removed_at = Instant::now();
    lb.wait_generation_above(generation, Duration::from_secs(10));
    for (i, c) in on_b0.iter().enumerate() {
        assert_eq!(
            ask(c, vip, &format!("n{i}")),
            "b0",
            "within the grace period"
        );
    }
    assert!(
        removed_at.elapsed() < Duration::from_secs(3),
        "test too slow to check the grace period"
    );
    // New flows never go to the removed endpoint.
    let fresh = client(vip);
    assert_eq!(ask(&fresh, vip, "new"), "b1");
    std::thread::sleep(
        Duration::from_secs(3).saturating_sub(removed_at.elapsed()) + Duration::from_millis(500),
    );
    for (i, c) in on_b0.iter().enumerate() {
        assert_eq!(
            ask(c, vip, &format!("o{i}")),
            "b1",
            "after the grace period"
        );
    }
}

#[test]
fn client_ip_affinity_and_an_ipv6_vip_for_ipv4_endpoints() {
    let (_udp, _tcp, eps) = backends(3);
    let port = eps[0].port();
    let sticky = udp_service(
        "sticky",
        "LoadBalancer",
        port,
        "  loadBalancerIP: 127.0.84.1\n  sessionAffinity: ClientIP\n",
        &eps,
    );
    let v6 = udp_service(
        "v6",
        "LoadBalancer",
        port,
        "  loadBalancerIP: \"::1\"\n",
        &eps,
    );
    let lb = Lb::start(
        "udp-sticky",
        &[("sticky.yaml", &sticky), ("v6.yaml", &v6)],
        "[loadbalancer]\npools = [\"127.0.84.1/32\", \"::1/128\"]\n",
    );
    let vip = SocketAddr::from(([127, 0, 84, 1], port));
    let names: BTreeSet<String> = (0..30)
        .map(|i| ask(&client(vip), vip, &format!("s{i}")))
        .collect();
    assert_eq!(
        names.len(),
        1,
        "one client address, one endpoint: {names:?}"
    );

    let vip6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let names: Vec<String> = (0..30)
        .map(|i| ask(&client(vip6), vip6, &format!("v{i}")))
        .collect();
    assert!(
        tally(names.iter()).len() >= 2,
        "IPv6 clients spread over IPv4 endpoints: {names:?}"
    );
    drop(lb);
}

/// lb's open descriptors.
fn open_fds(lb: &Lb) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", lb.pid())).map_or(0, |d| d.count())
}

#[test]
fn many_sources_cannot_open_more_flow_sockets_than_the_budget() {
    let (_udp, _tcp, eps) = backends(1);
    let port = eps[0].port();
    let svc = udp_service(
        "flood",
        "LoadBalancer",
        port,
        "  loadBalancerIP: 127.0.82.1\n",
        &eps,
    );
    // 2 workers, 6 flow sockets each over the one UDP address.
    let lb = Lb::start(
        "udp-budget",
        &[("flood.yaml", &svc)],
        "[loadbalancer]\npools = [\"127.0.82.1/32\"]\nudp_flow_sockets = 6\n",
    );
    let vip = SocketAddr::from(([127, 0, 82, 1], port));
    let before = open_fds(&lb);
    // 120 sources (the spoofed-flood shape: every datagram a new flow), each
    // still answered: the oldest flow makes room.
    let clients: Vec<UdpSocket> = (0..120).map(|_| client(vip)).collect();
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(ask(c, vip, &format!("x {i}")), "b0");
    }
    let grown = open_fds(&lb).saturating_sub(before);
    assert!(
        grown <= 2 * 6 + 4,
        "120 flows opened {grown} descriptors with a budget of 6 per worker"
    );
    assert!(lb.metric("lb_l4_udp_flows") <= 12);
}
