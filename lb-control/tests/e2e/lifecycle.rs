//! Process lifecycle: readiness, SIGTERM drain of in-flight requests.

use std::time::{Duration, Instant};

use bench::echo::EchoServer;

use crate::support::{Client, Lb, admin_get, service_yaml};

fn slow_lb(tag: &str, echo: &EchoServer) -> Lb {
    let ingress = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: slow}
spec:
  ingressClassName: lb
  defaultBackend:
    service: {name: slow, port: {number: 80}}
";
    let svc = service_yaml("default", "slow", 80, None, &[echo.local_addr()]);
    Lb::start(tag, &[("svc.yaml", &svc), ("ing.yaml", ingress)], "")
}

#[test]
fn health_and_readiness() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "slow").expect("echo");
    let lb = slow_lb("ready", &echo);
    assert_eq!(admin_get(lb.admin, "/healthz").unwrap().status, 200);
    assert_eq!(admin_get(lb.admin, "/readyz").unwrap().status, 200);
    let config = admin_get(lb.admin, "/config").unwrap().json();
    assert!(config["generation"].as_u64().unwrap() >= 1, "{config}");
    let status = admin_get(lb.admin, "/status").unwrap().json();
    let first = &status[0];
    assert_eq!(first["kind"], "Ingress");
    assert_eq!(first["metadata"]["name"], "slow");
    assert_eq!(
        first["status"]["loadBalancer"]["ingress"][0]["ip"],
        "127.0.0.1"
    );
    assert_eq!(admin_get(lb.admin, "/nope").unwrap().status, 404);
}

#[test]
fn readyz_answers_200_only_once_listeners_are_bound() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "slow").expect("echo");
    let svc = service_yaml("default", "slow", 80, None, &[echo.local_addr()]);
    let lb = Lb::spawn_unready("ready-early", &[("svc.yaml", &svc)], "");
    // Poll from the moment of spawn: every answer is 503 until the HTTP
    // listener accepts, and whenever /readyz says 200 the listener accepts.
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never ready: {seen:?}\n{}",
            lb.log_text()
        );
        match admin_get(lb.admin, "/readyz").map(|r| r.status) {
            Some(200) => {
                assert!(
                    Client::try_connect(lb.http).is_ok(),
                    "ready but the listener is not accepting"
                );
                break;
            }
            Some(other) => {
                assert_eq!(other, 503, "unexpected /readyz status");
                seen.push(other);
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "slow").expect("echo");
    let mut lb = slow_lb("drain", &echo);
    let mut idle = lb.client();
    assert_eq!(idle.get("any", "/fixed").status, 200);
    let http = lb.http;
    let slow = std::thread::spawn(move || {
        let mut c = Client::connect(http);
        let started = Instant::now();
        let resp = c.get("any", "/sleep/1500");
        (resp, started.elapsed(), c.is_closed())
    });
    std::thread::sleep(Duration::from_millis(300));
    lb.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // Draining: not ready, not accepting, idle keep-alive connections closed.
    assert_eq!(admin_get(lb.admin, "/readyz").map(|r| r.status), Some(503));
    assert!(
        Client::try_connect(lb.http).is_err(),
        "still accepting while draining"
    );
    assert!(
        idle.is_closed(),
        "idle keep-alive connection left open while draining"
    );
    let (resp, took, closed) = slow.join().expect("slow client");
    assert_eq!(resp.status, 200, "in-flight request was not finished");
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert_eq!(
        resp.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close")
    );
    assert!(closed, "connection not closed after the drained request");
    let status = lb.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
}
