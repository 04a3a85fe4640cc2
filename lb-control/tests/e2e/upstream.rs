//! Upstream resilience and endpoint choice through the running binary: a
//! killed backend costs no request (connect failover, one retry of an
//! idempotent request on another endpoint, outlier ejection); the
//! `lb.example.com/load-balance` annotation picks round robin, least
//! request or a consistent hash of a header, a cookie or the client address;
//! Service `sessionAffinity: ClientIP` holds at L7.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bench::echo::EchoServer;

use crate::support::{Client, Lb, lb_check, service_yaml};

fn ingress(name: &str, host: &str, service: &str, annotation: Option<&str>) -> String {
    let annotations = annotation
        .map(|a| format!("  annotations:\n    lb.example.com/load-balance: \"{a}\"\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n{annotations}spec:\n  ingressClassName: lb\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service: {{name: {service}, port: {{number: 80}}}}\n"
    )
}

const CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: lb}\nspec: {controller: lb.example.com/ingress-controller}\n";

fn echo_backends(n: usize) -> Vec<EchoServer> {
    (0..n)
        .map(|i| EchoServer::start("127.0.0.1:0".parse().unwrap(), &format!("b{i}")).unwrap())
        .collect()
}

#[test]
fn killing_one_of_three_backends_costs_no_request() {
    let mut servers: Vec<Option<EchoServer>> = echo_backends(3).into_iter().map(Some).collect();
    let addrs: Vec<SocketAddr> = servers
        .iter()
        .flatten()
        .map(EchoServer::local_addr)
        .collect();
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        ("svc.yaml", service_yaml("default", "web", 80, None, &addrs)),
        ("ing.yaml", ingress("web", "web.test", "web", None)),
    ];
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let lb = Lb::start("upstream-kill", &refs, "");
    let http = lb.http;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut client = Client::connect(http);
                let mut statuses = Vec::new();
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(20) {
                    let path = format!("/c{c}/{}", statuses.len());
                    match client.request("GET", "web.test", &path, &[], None) {
                        Ok(r) => statuses.push(r.status),
                        Err(e) => panic!("client {c}: request failed: {e}"),
                    }
                }
                statuses
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    servers[1].take().unwrap().stop();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let statuses = c.join().unwrap();
        total += statuses.len();
        let bad: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
        assert!(bad.is_empty(), "non-200 while a backend died: {bad:?}");
    }
    assert!(total > 200, "the load kept going ({total} requests)");
    assert!(
        lb.wait_log("endpoint ejected", Duration::from_secs(5)),
        "the dead endpoint is ejected:\n{}",
        lb.log_text()
    );
    // Later requests all go to the two live backends, without errors.
    let mut c = lb.client();
    for i in 0..30 {
        let r = c.get("web.test", &format!("/after/{i}"));
        assert_eq!(r.status, 200);
        assert_ne!(r.backend(), "b1");
    }
}

#[test]
fn annotations_and_session_affinity_choose_the_endpoint() {
    let servers = echo_backends(3);
    let addrs: Vec<SocketAddr> = servers.iter().map(EchoServer::local_addr).collect();
    let sticky_svc = service_yaml("default", "sticky", 80, None, &addrs).replacen(
        "spec:\n",
        "spec:\n  sessionAffinity: ClientIP\n",
        1,
    );
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        ("svc.yaml", service_yaml("default", "web", 80, None, &addrs)),
        ("sticky.yaml", sticky_svc),
        ("rr.yaml", ingress("rr", "rr.test", "web", None)),
        (
            "lr.yaml",
            ingress("lr", "lr.test", "web", Some("least-request")),
        ),
        (
            "hdr.yaml",
            ingress("hdr", "hdr.test", "web", Some("hash-header:X-User")),
        ),
        (
            "ck.yaml",
            ingress("ck", "ck.test", "web", Some("hash-cookie:session")),
        ),
        ("ip.yaml", ingress("ip", "ip.test", "sticky", None)),
        (
            "bad.yaml",
            ingress("bad", "bad.test", "web", Some("fastest")),
        ),
    ];
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let lb = Lb::start("upstream-policy", &refs, "");
    let mut c = lb.client();
    let mut via = |host: &str, headers: &[(&str, &str)]| {
        let r = c.request("GET", host, "/", headers, None).unwrap();
        assert_eq!(r.status, 200, "{host}");
        r.backend()
    };
    // Round robin (also the fallback of an unknown policy) and least request
    // visit every endpoint.
    for host in ["rr.test", "lr.test", "bad.test"] {
        let seen: BTreeSet<String> = (0..30).map(|_| via(host, &[])).collect();
        assert_eq!(seen.len(), 3, "{host}: {seen:?}");
    }
    // A header value keeps its endpoint; different values spread.
    let mut per_user = BTreeSet::new();
    for u in 0..30 {
        let user = format!("user-{u}");
        let first = via("hdr.test", &[("X-User", &user)]);
        for _ in 0..3 {
            assert_eq!(via("hdr.test", &[("X-User", &user)]), first, "{user}");
        }
        per_user.insert(first);
    }
    assert!(per_user.len() >= 2, "{per_user:?}");
    // Likewise a cookie.
    let mut per_session = BTreeSet::new();
    for s in 0..30 {
        let cookie = format!("theme=dark; session=s{s}");
        let first = via("ck.test", &[("Cookie", &cookie)]);
        assert_eq!(via("ck.test", &[("Cookie", &cookie)]), first);
        per_session.insert(first);
    }
    assert!(per_session.len() >= 2, "{per_session:?}");
    // sessionAffinity: ClientIP on the Service: one client, one endpoint,
    // across connections.
    let seen: BTreeSet<String> = (0..20)
        .map(|_| {
            let mut fresh = lb.client();
            fresh.get("ip.test", "/").backend()
        })
        .collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    // The unknown policy is reported.
    let (_, report) = lb_check(&lb.config_path());
    assert!(report.contains("fastest"), "{report}");
}

/// A backend named `flaky` answering `/healthz` with 200 or 503 as `healthy`
/// says, and anything else with 200 and `{"backend":"flaky"}`; one request
/// per connection. Runs until the test process ends.
fn flaky_backend(healthy: Arc<AtomicBool>) -> SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let healthy = Arc::clone(&healthy);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                loop {
                    let mut h = String::new();
                    match reader.read_line(&mut h) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if h == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let (status, body) = if path == "/healthz" {
                    if healthy.load(Ordering::Relaxed) {
                        ("200 OK", "ok".to_owned())
                    } else {
                        ("503 Service Unavailable", "down".to_owned())
                    }
                } else {
                    ("200 OK", r#"{"backend":"flaky"}"#.to_owned())
                };
                let _ = (&stream).write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    addr
}

#[test]
fn active_health_checks_take_a_failing_endpoint_out_and_bring_it_back() {
    let steady = EchoServer::start("127.0.0.1:0".parse().unwrap(), "steady").unwrap();
    let healthy = Arc::new(AtomicBool::new(true));
    let flaky = flaky_backend(Arc::clone(&healthy));
    let svc = service_yaml("default", "web", 80, None, &[steady.local_addr(), flaky]).replacen(
        "metadata:\n  namespace: default\n  name: web\n",
        "metadata:\n  namespace: default\n  name: web\n  annotations:\n    lb.example.com/health-check: \"http:/healthz\"\n    lb.example.com/health-check-interval: \"200ms\"\n",
        1,
    );
    assert!(svc.contains("health-check-interval"), "{svc}");
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        ("svc.yaml", svc),
        ("ing.yaml", ingress("web", "web.test", "web", None)),
    ];
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let lb = Lb::start("upstream-health", &refs, "");
    let seen = |n: usize| -> BTreeSet<String> {
        let mut c = lb.client();
        (0..n)
            .map(|i| {
                let r = c
                    .request("GET", "web.test", &format!("/r{i}"), &[], None)
                    .unwrap_or_else(|_| {
                        c = lb.client();
                        c.request("GET", "web.test", "/", &[], None).unwrap()
                    });
                assert_eq!(r.status, 200);
                r.backend()
            })
            .collect()
    };
    assert_eq!(seen(20).len(), 2, "both endpoints serve while healthy");
    healthy.store(false, Ordering::Relaxed);
    assert!(
        lb.wait_log("endpoint down (health check)", Duration::from_secs(5)),
        "{}",
        lb.log_text()
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        seen(30),
        BTreeSet::from(["steady".to_owned()]),
        "the failing endpoint gets no request"
    );
    healthy.store(true, Ordering::Relaxed);
    assert!(
        lb.wait_log("endpoint up (health check)", Duration::from_secs(5)),
        "{}",
        lb.log_text()
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(seen(20).len(), 2, "back in service");
}
