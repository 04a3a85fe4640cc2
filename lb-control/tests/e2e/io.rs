//! The I/O engine: the configured `[runtime] io` is what every worker runs
//! (shown in `/metrics` and `/config`), traffic flows on it, and a bad value
//! is a configuration error naming the key.

use bench::echo::EchoServer;

use crate::support::{Lb, admin_get, lb_check, scratch_dir, service_yaml, test_io};

#[test]
fn workers_run_the_configured_engine_and_serve() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "io").expect("echo");
    let ingress = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: io}
spec:
  ingressClassName: lb
  defaultBackend:
    service: {name: io, port: {number: 80}}
";
    let svc = service_yaml("default", "io", 80, None, &[echo.local_addr()]);
    let lb = Lb::start("io", &[("svc.yaml", &svc), ("ing.yaml", ingress)], "");
    let expected = match test_io() {
        "epoll" => "epoll",
        "uring" => "uring",
        _ if lb_core::uring::probe().is_ok() => "uring",
        _ => "epoll",
    };
    let metrics = admin_get(lb.admin, "/metrics").unwrap().text();
    for worker in 0..2 {
        let series = format!("lb_worker_info{{worker=\"{worker}\",io=\"{expected}\"}} 1");
        assert!(metrics.contains(&series), "missing {series} in:\n{metrics}");
    }
    let config = admin_get(lb.admin, "/config").unwrap().json();
    assert_eq!(config["workers"][0]["io"], expected, "{config}");
    let mut c = lb.client();
    for _ in 0..50 {
        assert_eq!(c.get("io.test", "/").status, 200);
    }
}

#[test]
fn unknown_io_engine_is_a_config_error() {
    let dir = scratch_dir("io-bad");
    let cfg = dir.join("lb.toml");
    std::fs::write(&cfg, "[runtime]\nio = \"kqueue\"\n").unwrap();
    let (code, text) = lb_check(&cfg);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("kqueue"), "value not named: {text}");
    assert!(text.contains("line 2"), "line not named: {text}");
}
