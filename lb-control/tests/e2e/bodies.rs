//! Keep-alive and streamed bodies through the running binary.

use std::io::Write;
use std::process::Command;

use bench::echo::EchoServer;

use crate::support::{Lb, service_yaml};

fn one_service(tag: &str, echo: &EchoServer) -> Lb {
    let ingress = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: lb
  rules:
  - host: body.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
";
    let svc = service_yaml("default", "web", 80, None, &[echo.local_addr()]);
    Lb::start(tag, &[("svc.yaml", &svc), ("ing.yaml", ingress)], "")
}

/// The echo backend's deterministic byte pattern.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn keep_alive_serves_many_requests_per_connection_both_sides() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let lb = one_service("keepalive", &echo);
    let before = echo.connections();
    let mut client = lb.client();
    for i in 0..2000 {
        let resp = client.get("body.test", &format!("/fixed?i={i}"));
        assert_eq!(resp.status, 200, "request {i}");
        assert_eq!(resp.body, b"ok\n");
    }
    let upstream = echo.connections() - before;
    assert!(
        upstream <= 2,
        "upstream keep-alive not reused: {upstream} connections for 2000 requests"
    );
}

#[test]
fn large_responses_stream_through_intact() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let lb = one_service("bigresp", &echo);
    let mut client = lb.client();
    let n = 3 * 1024 * 1024 + 17;
    let fixed = client.get("body.test", &format!("/bytes/{n}"));
    assert_eq!(fixed.status, 200);
    assert_eq!(fixed.body.len(), n);
    assert!(fixed.body == pattern(n), "Content-Length body corrupted");
    let chunked = client.get("body.test", &format!("/chunked/{n}"));
    assert_eq!(chunked.status, 200);
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert!(chunked.body == pattern(n), "chunked body corrupted");
}

#[test]
fn chunked_request_body_streams_both_ways() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let lb = one_service("bigreq", &echo);
    let body: Vec<u8> = (0..4 * 1024 * 1024 + 3)
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    let mut client = lb.client();
    let head = "POST /echo HTTP/1.1\r\nHost: body.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let writer = client.writer().try_clone().expect("clone");
    let sent = body.clone();
    // Write from another thread so the echoed body can flow back at the same time.
    let sender = std::thread::spawn(move || {
        let mut w = writer;
        w.write_all(head.as_bytes()).unwrap();
        let mut sizes = [1usize, 4096, 65536, 100_000, 7].iter().cycle();
        let mut off = 0;
        while off < sent.len() {
            let n = (*sizes.next().unwrap()).min(sent.len() - off);
            write!(w, "{n:x}\r\n").unwrap();
            w.write_all(&sent[off..off + n]).unwrap();
            w.write_all(b"\r\n").unwrap();
            off += n;
        }
        w.write_all(b"0\r\n\r\n").unwrap();
    });
    let resp = client.read_response(false).expect("response");
    sender.join().expect("sender");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), body.len());
    assert!(resp.body == body, "echoed body differs");
    // The connection stays usable.
    assert_eq!(client.get("body.test", "/fixed").status, 200);
}

#[test]
fn curl_uploads_a_chunked_body() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let lb = one_service("curl", &echo);
    let file = lb.dir.join("upload.bin");
    let body: Vec<u8> = (0..2 * 1024 * 1024).map(|i| (i % 13) as u8).collect();
    std::fs::write(&file, &body).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "-H",
            "Host: body.test",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{}/echo", lb.http))
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), body.len());
    assert!(out.stdout == body, "curl got a different body back");
}
