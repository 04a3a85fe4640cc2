//! The README quick start: the shipped `config/lb.toml` and example manifests,
//! echo backends on the example endpoints, and curl with the example Host.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench::echo::EchoServer;

use crate::support::{admin_get, lb_bin};

#[test]
fn shipped_example_answers_curl_from_both_ready_endpoints() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root")
        .to_path_buf();
    let backends: Vec<EchoServer> = ["127.0.0.1:9376", "127.0.0.2:9376", "127.0.0.3:9376"]
        .iter()
        .map(|a| EchoServer::start(a.parse().unwrap(), a).expect("example endpoint address free"))
        .collect();
    let mut child = Command::new(lb_bin())
        .args(["serve", "--config", "config/lb.toml"])
        .current_dir(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lb");
    let admin = "127.0.0.1:9901".parse().unwrap();
    let start = Instant::now();
    while admin_get(admin, "/readyz").map(|r| r.status) != Some(200) {
        assert!(start.elapsed() < Duration::from_secs(20), "lb not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "-D",
                "-",
                "-H",
                "Host: myapp.example.com",
                "http://127.0.0.1:8080/",
            ])
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        let backend = text
            .lines()
            .find_map(|l| l.strip_prefix("x-backend: "))
            .expect("x-backend")
            .trim()
            .to_owned();
        seen.insert(backend);
    }
    // The example Gateway got its address from the pool; its HTTPRoute
    // sends myapp.example.com to the same Service.
    let status = admin_get(admin, "/status").expect("/status").json();
    let gateway = status
        .as_array()
        .and_then(|a| a.iter().find(|o| o["kind"] == "Gateway"))
        .expect("Gateway status");
    let ip = gateway["status"]["addresses"][0]["value"]
        .as_str()
        .expect("Gateway address")
        .to_owned();
    let out = Command::new("curl")
        .args(["-sS", "--fail", "-D", "-", "-H", "Host: myapp.example.com"])
        .arg(format!("http://{ip}:8081/"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.contains("x-routed-by: my-gateway"), "{text}");
    assert!(
        text.contains("x-backend: 127.0.0.1:9376") || text.contains("x-backend: 127.0.0.2:9376"),
        "{text}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
    drop(backends);
    assert!(status.success(), "{status}");
    let want: std::collections::BTreeSet<String> = ["127.0.0.1:9376", "127.0.0.2:9376"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        seen, want,
        "round robin over the two ready endpoints, never the unready one"
    );
}
