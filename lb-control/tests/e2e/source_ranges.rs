//! Source ranges through the real binary, with clients on two loopback
//! source addresses (curl `--interface`, a UDP socket bound before
//! sending): a LoadBalancer Service's `loadBalancerSourceRanges` (the
//! field winning over the annotation) for TCP and UDP, and a Gateway's
//! `lb.example.com/source-ranges`. Refusals are counted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use bench::echo::EchoServer;
use bench::udp_echo::UdpEchoServer;

use crate::gateway::unique_ip;
use crate::l4::l4_service;
use crate::support::{Lb, free_port};

const ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// `curl` from source address `from` to `http://addr/`: Ok((status, body))
/// or Err(curl's exit code) when the connection gave no response.
fn curl_from(from: &str, addr: SocketAddr) -> Result<(u16, String), i32> {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "--interface",
            from,
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("http://{addr}/"))
        .output()
        .expect("curl runs");
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

/// Waits until `addr` answers a client from `from` (lb opens new
/// addresses right after a load).
fn wait_served(from: &str, addr: SocketAddr) -> (u16, String) {
    let start = Instant::now();
    loop {
        match curl_from(from, addr) {
            Ok(r) => return r,
            Err(code) if start.elapsed() > Duration::from_secs(10) => {
                panic!("{addr} never answered {from}: curl exit {code}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn l4_tcp_source_ranges_admit_listed_clients_and_close_the_rest() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let (vip, vip2) = (unique_ip(), unique_ip());
    let (p1, p2) = (free_port(), free_port());
    // Field and annotation: the field wins (127.0.0.2 only).
    let field = l4_service(
        "field",
        "LoadBalancer",
        p1,
        &format!("  loadBalancerIP: {vip}\n  loadBalancerSourceRanges: [\"127.0.0.2/32\"]\n"),
        &[echo.local_addr()],
    )
    .replace(
        "metadata: {name: field, namespace: default}",
        &format!(
            "metadata: {{name: field, namespace: default, annotations: {{{ANNOTATION}: \"127.0.0.1/32\"}}}}"
        ),
    );
    // Annotation alone.
    let annotated = l4_service(
        "annotated",
        "LoadBalancer",
        p2,
        &format!("  loadBalancerIP: {vip2}\n"),
        &[echo.local_addr()],
    )
    .replace(
        "metadata: {name: annotated, namespace: default}",
        &format!(
            "metadata: {{name: annotated, namespace: default, annotations: {{{ANNOTATION}: \"127.0.0.2/32, 10.0.0.0/8\"}}}}"
        ),
    );
    let lb = Lb::start(
        "src-l4-tcp",
        &[("field.yaml", &field), ("annotated.yaml", &annotated)],
        &format!("[loadbalancer]\npools = [\"{vip}/32\", \"{vip2}/32\"]\n"),
    );
    for addr in [
        SocketAddr::new(IpAddr::V4(vip), p1),
        SocketAddr::new(IpAddr::V4(vip2), p2),
    ] {
        let (code, body) = wait_served("127.0.0.2", addr);
        assert_eq!(code, 200);
        assert!(body.contains("\"backend\":\"web\""), "{body}");
        for _ in 0..10 {
            let got = curl_from("127.0.0.1", addr);
            // 52: empty reply (closed at once), 56: reset.
            assert!(
                matches!(got, Err(52 | 56)),
                "127.0.0.1 must be refused at {addr}: {got:?}"
            );
        }
    }
    assert_eq!(
        lb.metric("lb_l4_source_refused_total{protocol=\"tcp\"}"),
        20
    );
    assert_eq!(
        lb.metric("lb_l4_connections_total"),
        2,
        "refused connections are not relayed"
    );
}

#[test]
fn l4_udp_source_ranges_make_no_flow_for_other_clients() {
    let port = free_port();
    let backend = UdpEchoServer::start("127.0.0.1:0".parse().unwrap(), "dns").expect("udp echo");
    let vip = unique_ip();
    let svc = l4_service(
        "dns",
        "LoadBalancer",
        port,
        &format!("  loadBalancerIP: {vip}\n  loadBalancerSourceRanges: [\"127.0.0.2/32\"]\n"),
        &[backend.local_addr()],
    )
    .replace("protocol: TCP", "protocol: UDP");
    let lb = Lb::start(
        "src-l4-udp",
        &[("dns.yaml", &svc)],
        &format!("[loadbalancer]\npools = [\"{vip}/32\"]\n"),
    );
    let to = SocketAddr::new(IpAddr::V4(vip), port);
    let socket = |from: [u8; 4]| {
        let s = UdpSocket::bind(SocketAddr::from((Ipv4Addr::from(from), 0))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    };
    // The allowed client: an answer from the VIP (retried while the
    // listener opens).
    let allowed = socket([127, 0, 0, 2]);
    let mut buf = [0u8; 512];
    let mut answered = false;
    for _ in 0..30 {
        allowed.send_to(b"hello", to).unwrap();
        if let Ok((n, from)) = allowed.recv_from(&mut buf) {
            assert_eq!(from, to);
            assert_eq!(&buf[..n], b"dns hello");
            answered = true;
            break;
        }
    }
    assert!(answered, "127.0.0.2 gets answers");
    let backend_seen = backend.datagrams();
    // The refused client: nothing reaches the endpoint, no flow is made.
    let refused = socket([127, 0, 0, 1]);
    for _ in 0..5 {
        refused.send_to(b"let me in", to).unwrap();
        assert!(
            refused.recv_from(&mut buf).is_err(),
            "no answer for 127.0.0.1"
        );
    }
    lb.wait_metric(
        "lb_l4_source_refused_total{protocol=\"udp\"}",
        5,
        Duration::from_secs(5),
    );
    assert_eq!(
        backend.datagrams(),
        backend_seen,
        "nothing relayed for 127.0.0.1"
    );
    assert_eq!(
        lb.metric("lb_l4_udp_flows"),
        1,
        "only the allowed client's flow"
    );
}

#[test]
fn gateway_source_ranges_close_other_clients_at_accept() {
    let ip = unique_ip();
    let port = free_port();
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: lb}}\nspec: {{controllerName: lb.example.com/gateway-controller}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: office\n  namespace: default\n  annotations: {{lb.example.com/source-ranges: \"127.0.0.2/32\"}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n"
    );
    let lb = Lb::start("src-gateway", &[("gw.yaml", &gateway)], "");
    let addr = SocketAddr::new(IpAddr::V4(ip), port);
    // No route: lb itself answers 404 to the allowed client.
    assert_eq!(wait_served("127.0.0.2", addr).0, 404);
    for _ in 0..10 {
        let got = curl_from("127.0.0.1", addr);
        assert!(
            matches!(got, Err(52 | 56)),
            "127.0.0.1 must be refused: {got:?}"
        );
    }
    assert_eq!(lb.metric("lb_gateway_source_refused_total"), 10);
}

/// `curl` from `from` to the HTTP listener `addr` with `Host: host` (over
/// h2c with prior knowledge when `h2`): the status code.
fn status_from(from: &str, addr: SocketAddr, host: &str, h2: bool) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            "--interface",
            from,
        ])
        .args(["-w", "%{http_code}", "-H"])
        .arg(format!("Host: {host}"))
        .arg(if h2 {
            "--http2-prior-knowledge"
        } else {
            "--http1.1"
        })
        .arg(format!("http://{addr}/"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn an_ingress_source_ranges_annotation_answers_403_to_other_clients() {
    let office = EchoServer::start("127.0.0.1:0".parse().unwrap(), "office").expect("echo");
    let public = EchoServer::start("127.0.0.1:0".parse().unwrap(), "public").expect("echo");
    let restricted = crate::support::ingress_named("office", "office.test", "office").replace(
        "metadata: {name: office, namespace: default}",
        "metadata: {name: office, namespace: default, annotations: {lb.example.com/source-ranges: \"127.0.0.2/32\"}}",
    );
    let manifests = [
        crate::support::service_yaml("default", "office", 80, None, &[office.local_addr()]),
        crate::support::service_yaml("default", "public", 80, None, &[public.local_addr()]),
        restricted,
        crate::support::ingress_named("public", "public.test", "public"),
    ]
    .join("---\n");
    let lb = Lb::start("src-ingress", &[("all.yaml", &manifests)], "");
    for h2 in [false, true] {
        assert_eq!(
            status_from("127.0.0.2", lb.http, "office.test", h2),
            200,
            "h2 {h2}"
        );
        assert_eq!(
            status_from("127.0.0.1", lb.http, "office.test", h2),
            403,
            "h2 {h2}"
        );
        // Another Ingress on the same listener is open to everyone.
        assert_eq!(
            status_from("127.0.0.1", lb.http, "public.test", h2),
            200,
            "h2 {h2}"
        );
    }
    assert_eq!(
        office.requests(),
        2,
        "refused requests never reach the backend"
    );
}
