//! The access log through the running binary: one JSON line per request with
//! the client, host, method, path, status, bytes, upstream and backend; off
//! by default.

use bench::echo::EchoServer;

use crate::support::{Lb, service_yaml};

#[test]
fn every_request_gets_one_json_line() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: default}\nspec:\n  ingressClassName: lb\n  rules:\n  - host: log.test\n    http:\n      paths:\n      - path: /app\n        pathType: Prefix\n        backend:\n          service: {name: web, port: {number: 80}}\n";
    let svc = service_yaml("default", "web", 80, None, &[echo.local_addr()]);
    let dir = crate::support::scratch_dir("access-log-file");
    let path = dir.join("access.log");
    let lb = Lb::start(
        "access-log",
        &[("svc.yaml", &svc), ("ing.yaml", ingress)],
        &format!("[access_log]\npath = \"{}\"\n", path.display()),
    );
    let mut c = lb.client();
    assert_eq!(c.get("log.test", "/app/x?y=1").status, 200);
    assert_eq!(c.get("log.test", "/bytes/1000").status, 404);
    let third = c.get("log.test", "/app/z");
    assert_eq!(third.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        if lines.len() >= 3 || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(lines.len(), 3, "{lines:?}");
    let ok = &lines[0];
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["host"], "log.test");
    assert_eq!(ok["path"], "/app/x?y=1");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["tls"], false);
    assert_eq!(ok["upstream"], echo.local_addr().to_string());
    assert_eq!(ok["backend"], "default/web:80");
    assert!(ok["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(ok["duration_ms"].as_f64().unwrap() >= ok["upstream_ms"].as_f64().unwrap());
    let missing = &lines[1];
    assert_eq!(missing["status"], 404);
    assert!(missing["upstream"].is_null());
    assert_eq!(lines[2]["bytes_sent"], third.text().len());
}
