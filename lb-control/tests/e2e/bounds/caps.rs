//! Connection caps at accept: per client address and per worker. Excess
//! connections are accepted, closed at once and counted.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use bench::echo::EchoServer;

use super::{manifests, refs};
use crate::support::{Client, Lb};

/// A connection to `to` from the loopback address 127.0.0.`last`.
fn connect_from(last: u8, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0);
    sock.bind(&from.into()).unwrap();
    sock.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap();
    sock.into()
}

/// A served request on `s` (keeps the connection open).
fn served(s: TcpStream) -> Client {
    let mut c = Client::from_stream(s);
    assert_eq!(c.get("bounds.test", "/fixed").status, 200);
    c
}

/// Whether lb closed `s` right away (end of stream or reset, nothing served).
fn closed_at_once(mut s: TcpStream) -> bool {
    use std::io::Write;
    let _ = s.write_all(b"GET /fixed HTTP/1.1\r\nHost: bounds.test\r\n\r\n");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_)) && !matches!(s.read(&mut buf), Ok(n) if n > 0)
}

const CLIENT_METRIC: &str = "lb_connections_refused_total{reason=\"max_connections_per_client\"}";
const WORKER_METRIC: &str = "lb_connections_refused_total{reason=\"max_connections\"}";

#[test]
fn connections_over_the_per_client_cap_are_closed_and_counted() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let files = manifests(echo.local_addr());
    let lb = Lb::start_runtime(
        "percap",
        &refs(&files),
        "workers = 1\nmax_connections_per_client = 3\n",
        "",
    );
    let mut held: Vec<Client> = (0..3).map(|_| served(connect_from(1, lb.http))).collect();
    assert!(
        closed_at_once(connect_from(1, lb.http)),
        "a 4th connection from 127.0.0.1 was served"
    );
    assert_eq!(lb.metric(CLIENT_METRIC), 1);
    // Another address is not affected.
    let _other = served(connect_from(2, lb.http));
    // A closed connection gives its place back.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(300));
    held.push(served(connect_from(1, lb.http)));
    assert_eq!(lb.metric(CLIENT_METRIC), 1);
    assert_eq!(lb.metric(WORKER_METRIC), 0);
}

#[test]
fn connections_over_the_per_worker_cap_are_closed_and_counted() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let files = manifests(echo.local_addr());
    let lb = Lb::start_runtime(
        "workercap",
        &refs(&files),
        "workers = 1\nmax_connections = 3\nmax_connections_per_client = 0\n",
        "",
    );
    let _held: Vec<Client> = (1..=3).map(|i| served(connect_from(i, lb.http))).collect();
    assert!(
        closed_at_once(connect_from(4, lb.http)),
        "a 4th connection was served"
    );
    assert_eq!(lb.metric(WORKER_METRIC), 1);
    assert_eq!(lb.metric(CLIENT_METRIC), 0);
}

#[test]
fn mirrors_over_the_in_flight_cap_are_dropped_and_counted() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    // The mirror backend never answers: each mirror stays in flight.
    let silent = super::Backend::start(super::Mode::Sink);
    let ip = crate::gateway::unique_ip();
    let ns = "mirrors";
    let manifests = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: lb}}\nspec: {{controllerName: {ctl}}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {ns}\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\nspec:\n  gatewayClassName: lb\n  addresses: [{{type: IPAddress, value: \"{ip}\"}}]\n  listeners:\n  - {{name: http, port: 8080, protocol: HTTP}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: mirrored, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - filters:\n    - type: RequestMirror\n      requestMirror: {{backendRef: {{name: silent, port: 8080}}}}\n    backendRefs: [{{name: web, port: 8080}}]\n---\n{web}---\n{mirror}",
        ctl = crate::gateway::CONTROLLER,
        web = crate::support::service_yaml(ns, "web", 8080, None, &[echo.local_addr()]),
        mirror = crate::support::service_yaml(ns, "silent", 8080, None, &[silent.addr]),
    );
    let lb = Lb::start_runtime(
        "mirrorcap",
        &[("gw.yaml", &manifests)],
        "workers = 1\n",
        "[http]\nmax_mirrors_in_flight = 2\n",
    );
    let gw = SocketAddr::new(ip.into(), 8080);
    for i in 0..5 {
        let r = crate::gateway::get(gw, "example.com", &format!("/m/{i}"));
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(lb.metric("lb_mirrors_dropped_total"), 3);
}
