//! L4 Services on real loopback sockets: LoadBalancer VIPs (given or
//! allocated from a pool), externalIPs and NodePorts relay TCP to the
//! Service's endpoints, chosen by Maglev; connect failures fail over; ClientIP
//! affinity pins a client; half-close passes through; a config change leaves
//! established connections alone.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use bench::echo::EchoServer;

use crate::support::{Lb, admin_get, free_port};

/// A Service of `type` with one TCP port `port` (and `extra` spec lines)
/// whose EndpointSlice lists `endpoints` (all on `target_port`).
pub(crate) fn l4_service(
    name: &str,
    kind: &str,
    port: u16,
    extra: &str,
    endpoints: &[SocketAddr],
) -> String {
    let target = endpoints.first().map_or(1, SocketAddr::port);
    let addrs: Vec<String> = endpoints
        .iter()
        .map(|e| {
            format!(
                "{{addresses: [\"{}\"], conditions: {{ready: true}}}}",
                e.ip()
            )
        })
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  type: {kind}
{extra}  ports: [{{name: tcp, port: {port}, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: tcp, port: {target}, protocol: TCP}}]
endpoints: [{}]
",
        addrs.join(", ")
    )
}

/// One HTTP/1.0 request over a fresh TCP connection to `addr`; the name of
/// the echo backend that answered.
pub(crate) fn backend_via(addr: SocketAddr) -> Option<String> {
    backend_over(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?)
}

/// Sends one HTTP/1.0 request on `s` and returns the answering echo
/// backend's name.
fn backend_over(mut s: TcpStream) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: l4\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let at = out.find("\"backend\":\"")? + 11;
    Some(out[at..].split('"').next()?.to_owned())
}

/// Echo backends named `b0`.. on 127.0.0.2.. sharing one port.
fn backends(n: usize) -> (Vec<EchoServer>, Vec<SocketAddr>) {
    for _ in 0..10 {
        let port = free_port();
        let started: Result<Vec<EchoServer>, _> = (0..n)
            .map(|i| {
                let addr: SocketAddr = format!("127.0.0.{}:{port}", i + 2).parse().unwrap();
                EchoServer::start(addr, &format!("b{i}"))
            })
            .collect();
        if let Ok(servers) = started {
            let addrs = servers.iter().map(EchoServer::local_addr).collect();
            return (servers, addrs);
        }
    }
    panic!("no free port for the echo backends");
}

fn counts(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let b = backend_via(addr).expect("an answer through the L4 listener");
        *seen.entry(b).or_insert(0) += 1;
    }
    seen
}

#[test]
fn load_balancer_vip_external_ip_and_node_port_balance_over_endpoints() {
    let (_servers, eps) = backends(3);
    let port = free_port();
    let node_port = free_port();
    let svc = l4_service(
        "web",
        "LoadBalancer",
        port,
        "  loadBalancerIP: 127.0.77.1\n  externalIPs: [\"127.0.77.2\"]\n",
        &eps,
    )
    .replace(
        "protocol: TCP}]\n---",
        &format!("protocol: TCP, nodePort: {node_port}}}]\n---"),
    );
    let lb = Lb::start(
        "l4-vip",
        &[("web.yaml", &svc)],
        "[loadbalancer]\npools = [\"127.0.77.1/32\"]\nexternal_ips = [\"127.0.77.2/32\"]\n",
    );
    for addr in [
        SocketAddr::from(([127, 0, 77, 1], port)),
        SocketAddr::from(([127, 0, 77, 2], port)),
        SocketAddr::from(([127, 0, 0, 1], node_port)),
    ] {
        let seen = counts(addr, 300);
        assert_eq!(seen.len(), 3, "{addr}: every endpoint gets flows: {seen:?}");
        for (b, n) in &seen {
            // Maglev over random source ports: each of 3 gets about 100 of 300.
            assert!(
                (50..=160).contains(n),
                "{addr}: {b} got {n} of 300: {seen:?}"
            );
        }
    }
    let status = admin_get(lb.admin, "/status").unwrap().json();
    let svc = status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "Service")
        .expect("Service status");
    let ingress = &svc["status"]["loadBalancer"]["ingress"][0];
    assert_eq!(ingress["ip"], "127.0.77.1", "{svc}");
    assert_eq!(ingress["ipMode"], "VIP");
    assert_eq!(ingress["ports"][0]["port"], port);
}

#[test]
fn vip_from_pool_and_connect_failover() {
    let (_servers, mut eps) = backends(2);
    // A third endpoint where nothing listens: connects there fail over.
    eps.push(SocketAddr::new("127.0.0.9".parse().unwrap(), eps[0].port()));
    let port = free_port();
    let svc = l4_service("pooled", "LoadBalancer", port, "", &eps);
    let lb = Lb::start(
        "l4-pool",
        &[("svc.yaml", &svc)],
        "[loadbalancer]\npools = [\"127.0.78.0/29\"]\n",
    );
    let status = admin_get(lb.admin, "/status").unwrap().json();
    let ip = status[0]["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .expect("an allocated VIP")
        .to_owned();
    assert!(ip.starts_with("127.0.78."), "{ip}");
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let seen = counts(addr, 200);
    assert_eq!(
        seen.values().sum::<usize>(),
        200,
        "no connection lost: {seen:?}"
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The same Service gets the same VIP in another process.
    let again = Lb::start(
        "l4-pool-2",
        &[(
            "svc.yaml",
            &l4_service("pooled", "LoadBalancer", free_port(), "", &eps),
        )],
        "[loadbalancer]\npools = [\"127.0.78.0/29\"]\n",
    );
    let status = admin_get(again.admin, "/status").unwrap().json();
    assert_eq!(
        status[0]["status"]["loadBalancer"]["ingress"][0]["ip"],
        ip.as_str()
    );
}

#[test]
fn client_ip_affinity_pins_every_connection_to_one_endpoint() {
    let (_servers, eps) = backends(3);
    let port = free_port();
    let svc = l4_service(
        "sticky",
        "LoadBalancer",
        port,
        "  loadBalancerIP: 127.0.79.1\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n",
        &eps,
    );
    let lb = Lb::start(
        "l4-sticky",
        &[("svc.yaml", &svc)],
        "[loadbalancer]\npools = [\"127.0.79.1/32\"]\n",
    );
    let seen = counts(SocketAddr::from(([127, 0, 79, 1], port)), 60);
    assert_eq!(seen.len(), 1, "one client, one endpoint: {seen:?}");
    let metrics = admin_get(lb.admin, "/metrics").unwrap().text();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(value("lb_l4_connections_total"), 60, "{metrics}");
    assert_eq!(value("lb_l4_unserved_total"), 0);
    // One client address; each worker that served it remembers it once.
    let entries = value("lb_l4_affinity_entries");
    assert!((1..=2).contains(&entries), "{entries} affinity entries");
}

#[test]
fn half_close_passes_through_and_reload_keeps_established_connections() {
    let (_servers, eps) = backends(1);
    let port = free_port();
    let svc = l4_service(
        "hc",
        "LoadBalancer",
        port,
        "  loadBalancerIP: 127.0.80.1\n",
        &eps,
    );
    let lb = Lb::start(
        "l4-hc",
        &[("svc.yaml", &svc)],
        "[loadbalancer]\npools = [\"127.0.80.1/32\"]\n",
    );
    let addr = SocketAddr::from(([127, 0, 80, 1], port));

    // The client half-closes after its request; the answer still arrives whole.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /bytes/100000 HTTP/1.0\r\nHost: l4\r\n\r\n")
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let body = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(out.len() - body, 100_000);

    // A keep-alive connection established before the Service goes away keeps working.
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ask = |s: &mut TcpStream| {
        s.write_all(b"GET /fixed HTTP/1.1\r\nHost: l4\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(ask(&mut kept).starts_with("HTTP/1.1 200"));
    let generation = lb.generation();
    std::fs::remove_file(lb.manifest_path("svc.yaml")).unwrap();
    lb.wait_generation_above(generation, Duration::from_secs(10));
    assert!(
        lb.wait_log("L4 listener closed", Duration::from_secs(5)),
        "{}",
        lb.log_text()
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "new connections are refused"
    );
    for _ in 0..3 {
        assert!(
            ask(&mut kept).starts_with("HTTP/1.1 200"),
            "established connection dropped"
        );
    }
}

#[test]
fn ipv6_vip_reaches_ipv4_endpoints_and_a_connection_keeps_its_endpoint_when_one_is_added() {
    let (_servers, eps) = backends(3);
    let port = free_port();
    let svc = |n: usize| {
        l4_service(
            "dual",
            "LoadBalancer",
            port,
            "  loadBalancerIP: \"::1\"\n",
            &eps[..n],
        )
    };
    let lb = Lb::start(
        "l4-v6",
        &[("svc.yaml", &svc(1))],
        "[loadbalancer]\npools = [\"::1/128\"]\n",
    );
    let addr: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    assert_eq!(
        backend_via(addr).as_deref(),
        Some("b0"),
        "IPv6 client, IPv4 endpoint"
    );

    // A keep-alive connection to b0, then two more endpoints appear.
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let who = |s: &mut TcpStream| {
        s.write_all(b"GET / HTTP/1.1\r\nHost: l4\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        while !got.ends_with(b"}") && !got.ends_with(b"}\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let at = text.find("\"backend\":\"").unwrap() + 11;
        text[at..].split('"').next().unwrap().to_owned()
    };
    assert_eq!(who(&mut kept), "b0");
    let generation = lb.generation();
    std::fs::write(lb.manifest_path("svc.yaml"), svc(3)).unwrap();
    lb.wait_generation_above(generation, Duration::from_secs(10));
    for _ in 0..5 {
        assert_eq!(
            who(&mut kept),
            "b0",
            "an established connection keeps its endpoint"
        );
    }
    // New connections now spread over all three.
    assert_eq!(counts(addr, 150).len(), 3);
}

/// The echo backend that answers a request sent from source address `from`.
fn backend_from(from: std::net::IpAddr, addr: SocketAddr) -> Option<String> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    s.bind(&SocketAddr::new(from, 0).into()).ok()?;
    s.connect_timeout(&addr.into(), Duration::from_secs(5))
        .ok()?;
    backend_over(s.into())
}

#[test]
fn client_ip_affinity_lasts_its_timeout_then_the_hash_decides_again() {
    let (_servers, eps) = backends(3);
    let port = free_port();
    let svc = |n: usize| {
        l4_service(
            "expiring",
            "LoadBalancer",
            port,
            "  loadBalancerIP: 127.0.86.1\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 3}}\n",
            &eps[..n],
        )
    };
    let lb = Lb::start(
        "l4-affinity-timeout",
        &[("svc.yaml", &svc(1))],
        "[loadbalancer]\npools = [\"127.0.86.1/32\"]\n",
    );
    let vip = SocketAddr::from(([127, 0, 86, 1], port));
    let clients: Vec<std::net::IpAddr> = (20..32)
        .map(|i| std::net::IpAddr::from([127, 0, 0, i]))
        .collect();
    // Every client is remembered on b0 by both workers (many connections,
    // so the kernel's per-connection hash reaches each worker).
    for ip in &clients {
        for _ in 0..16 {
            assert_eq!(backend_from(*ip, vip).as_deref(), Some("b0"));
        }
    }
    let generation = lb.generation();
    std::fs::write(lb.manifest_path("svc.yaml"), svc(3)).unwrap();
    lb.wait_generation_above(generation, Duration::from_secs(10));
    // Within the timeout the remembered endpoint holds, though the hash of
    // the client address now spreads over three endpoints.
    for ip in &clients {
        for _ in 0..2 {
            assert_eq!(
                backend_from(*ip, vip).as_deref(),
                Some("b0"),
                "{ip} within the timeout"
            );
        }
    }
    std::thread::sleep(Duration::from_millis(3500));
    let after: Vec<String> = clients
        .iter()
        .map(|ip| backend_from(*ip, vip).expect("an answer"))
        .collect();
    assert!(
        after.iter().any(|b| b != "b0"),
        "after the timeout the hash decides again: {after:?}"
    );
    // And a new choice is remembered again.
    for (ip, first) in clients.iter().zip(&after) {
        assert_eq!(backend_from(*ip, vip).as_ref(), Some(first), "{ip}");
    }
}
