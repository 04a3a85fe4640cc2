//! TLS termination through the running binary with real clients: openssl
//! s_client (SNI, ALPN, TLS 1.2 and 1.3) and curl (`--resolve`). Exact names
//! win over wildcards, the default certificate covers the rest, HTTP is
//! redirected to HTTPS unless the Ingress opts out, a certificate rotates
//! under load with no failed request, and an invalid Secret leaves the
//! previous certificate serving.

use std::process::{Command, Stdio};
use std::time::Duration;

use bench::echo::EchoServer;

use crate::support::certs::{self_signed, tls_secret};
use crate::support::{Lb, scratch_dir, service_yaml};

fn secret(name: &str, cert: &(String, String)) -> String {
    tls_secret(name, cert)
}

/// An Ingress routing `hosts` to Service `svc` with one TLS entry per
/// (hosts, secret), and extra metadata lines.
fn ingress(name: &str, rule_hosts: &[&str], tls: &[(&[&str], &str)], annotations: &str) -> String {
    let rules: String = rule_hosts
        .iter()
        .map(|h| {
            format!(
                "  - host: \"{h}\"\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service: {{name: web, port: {{number: 80}}}}\n"
            )
        })
        .collect();
    let tls: String = tls
        .iter()
        .map(|(hosts, secret)| {
            let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
            format!(
                "  - hosts: [{}]\n    secretName: {secret}\n",
                hosts.join(", ")
            )
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n{annotations}spec:\n  ingressClassName: lb\n  tls:\n{tls}  rules:\n{rules}"
    )
}

/// The subject CN and the ALPN protocol `openssl s_client` sees, connecting
/// to `lb`'s HTTPS listener with server name `sni` (none when `None`).
fn s_client(lb: &Lb, sni: Option<&str>, extra: &[&str]) -> (Option<String>, Option<String>) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &lb.https.to_string()]);
    match sni {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    cmd.args(extra);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let cn = text
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .and_then(|s| s.rsplit("CN").next())
        .map(|s| s.trim_start_matches([' ', '=']).trim().to_owned());
    let alpn = text
        .lines()
        .find_map(|l| l.strip_prefix("ALPN protocol: "))
        .map(str::to_owned);
    (cn, alpn)
}

/// `curl` over HTTPS to `host` (resolved to lb), trusting any certificate:
/// (status, body).
fn curl_https(lb: &Lb, host: &str, path: &str) -> (u16, String) {
    let port = lb.https.port();
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "10", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

const CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: lb}\nspec: {controller: lb.example.com/ingress-controller}\n";

#[test]
fn sni_picks_exact_then_wildcard_then_default_over_tls_1_2_and_1_3() {
    let dir = scratch_dir("tls-certs");
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let exact = self_signed(&dir, "exact", &["a.w.example.test"]);
    let wild = self_signed(&dir, "wild", &["*.w.example.test"]);
    let fallback = self_signed(&dir, "fallback", &["fallback.test"]);
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        (
            "svc.yaml",
            service_yaml("default", "web", 80, None, &[echo.local_addr()]),
        ),
        ("s1.yaml", secret("exact", &exact)),
        ("s2.yaml", secret("wild", &wild)),
        ("s3.yaml", secret("fallback", &fallback)),
        (
            "ing.yaml",
            ingress(
                "site",
                &["a.w.example.test", "*.w.example.test"],
                &[
                    (&["*.w.example.test"], "wild"),
                    (&["a.w.example.test"], "exact"),
                ],
                "",
            ),
        ),
    ];
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let lb = Lb::start_with(
        "tls-sni",
        &refs,
        "",
        "default_certificate = \"default/fallback\"",
    );
    assert_eq!(
        s_client(&lb, Some("a.w.example.test"), &[]).0.as_deref(),
        Some("exact")
    );
    assert_eq!(
        s_client(&lb, Some("B.w.example.test"), &[]).0.as_deref(),
        Some("wild")
    );
    assert_eq!(
        s_client(&lb, Some("other.test"), &[]).0.as_deref(),
        Some("fallback")
    );
    assert_eq!(s_client(&lb, None, &[]).0.as_deref(), Some("fallback"));
    // A wildcard covers one label only.
    assert_eq!(
        s_client(&lb, Some("x.y.w.example.test"), &[]).0.as_deref(),
        Some("fallback")
    );
    for version in ["-tls1_2", "-tls1_3"] {
        let (cn, alpn) = s_client(
            &lb,
            Some("a.w.example.test"),
            &[version, "-alpn", "http/1.1"],
        );
        assert_eq!(cn.as_deref(), Some("exact"), "{version}");
        assert_eq!(alpn.as_deref(), Some("http/1.1"), "{version}");
    }
    // Requests over TLS reach the backend, marked as HTTPS.
    let (code, body) = curl_https(&lb, "b.w.example.test", "/hello");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"backend\":\"web\""), "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains(r#"["x-forwarded-proto","https"]"#),
        "{body}"
    );
}

#[test]
fn no_certificate_for_the_name_fails_the_handshake_and_counts_it() {
    let dir = scratch_dir("tls-none");
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let only = self_signed(&dir, "only", &["only.example.test"]);
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        (
            "svc.yaml",
            service_yaml("default", "web", 80, None, &[echo.local_addr()]),
        ),
        ("s.yaml", secret("only", &only)),
        (
            "ing.yaml",
            ingress(
                "site",
                &["only.example.test"],
                &[(&["only.example.test"], "only")],
                "",
            ),
        ),
    ];
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let lb = Lb::start("tls-none", &refs, "");
    assert_eq!(
        s_client(&lb, Some("only.example.test"), &[]).0.as_deref(),
        Some("only")
    );
    assert_eq!(s_client(&lb, Some("unknown.test"), &[]).0, None);
    assert!(lb.metric("lb_tls_handshake_errors_total") >= 1);
}

#[test]
fn plain_http_redirects_to_https_unless_the_ingress_opts_out() {
    let dir = scratch_dir("tls-redirect");
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let cert = self_signed(&dir, "site", &["secure.example.test", "open.example.test"]);
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        (
            "svc.yaml",
            service_yaml("default", "web", 80, None, &[echo.local_addr()]),
        ),
        ("s.yaml", secret("site", &cert)),
        (
            "a.yaml",
            ingress(
                "secure",
                &["secure.example.test"],
                &[(&["secure.example.test"], "site")],
                "",
            ),
        ),
        (
            "b.yaml",
            ingress(
                "open",
                &["open.example.test"],
                &[(&["open.example.test"], "site")],
                "  annotations:\n    lb.example.com/ssl-redirect: \"false\"\n",
            ),
        ),
    ];
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let lb = Lb::start("tls-redirect", &refs, "");
    let r = lb.get("secure.example.test:8080", "/a/b?c=d");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://secure.example.test:{}/a/b?c=d", lb.https.port()).as_str())
    );
    let r = lb.get("open.example.test", "/x");
    assert_eq!(r.status, 200, "opted out: served over plain HTTP");
    assert_eq!(curl_https(&lb, "secure.example.test", "/").0, 200);
}

#[test]
fn a_certificate_rotates_under_load_and_an_invalid_secret_keeps_the_last_good_one() {
    let dir = scratch_dir("tls-rotate");
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let host = "rot.example.test";
    let gens: Vec<(String, String)> = (0..4)
        .map(|i| self_signed(&dir, &format!("gen-{i}"), &[host]))
        .collect();
    let manifests = [
        ("class.yaml", CLASS.to_owned()),
        (
            "svc.yaml",
            service_yaml("default", "web", 80, None, &[echo.local_addr()]),
        ),
        ("s.yaml", secret("rot", &gens[0])),
        ("ing.yaml", ingress("rot", &[host], &[(&[host], "rot")], "")),
    ];
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let lb = Lb::start("tls-rotate", &refs, "");
    assert_eq!(s_client(&lb, Some(host), &[]).0.as_deref(), Some("gen-0"));

    // curl runs of 100 requests, each on a new connection (so a new
    // handshake), back to back while the certificate changes three times;
    // the load stops once the rotations are done (50 runs at most).
    let port = lb.https.port();
    let url = format!("https://{host}:{port}/");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = std::sync::Arc::clone(&stop);
    let load = std::thread::spawn(move || {
        let mut codes = String::new();
        for _ in 0..50 {
            if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            let mut cmd = Command::new("curl");
            cmd.args(["-sk", "--max-time", "60", "--resolve"])
                .arg(format!("{host}:{port}:127.0.0.1"))
                .args(["-H", "Connection: close", "-w", "%{http_code}\n"]);
            for _ in 0..100 {
                cmd.args(["-o", "/dev/null"]).arg(&url);
            }
            codes.push_str(&String::from_utf8_lossy(
                &cmd.output().expect("curl").stdout,
            ));
        }
        codes
    });
    std::thread::sleep(Duration::from_millis(100));
    for g in &gens[1..] {
        let generation = lb.generation();
        std::fs::write(lb.manifest_path("s.yaml"), secret("rot", g)).unwrap();
        lb.wait_generation_above(generation, Duration::from_secs(10));
        assert!(!load.is_finished(), "the rotation happened under load");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let codes = load.join().unwrap();
    let codes: Vec<&str> = codes.lines().collect();
    assert!(
        codes.len() >= 200 && codes.len().is_multiple_of(100),
        "{} requests",
        codes.len()
    );
    assert!(
        codes.iter().all(|c| *c == "200"),
        "failed requests during rotation: {codes:?}"
    );
    assert_eq!(s_client(&lb, Some(host), &[]).0.as_deref(), Some("gen-3"));

    // A broken Secret: a diagnostic, and the last good certificate keeps serving.
    let generation = lb.generation();
    let broken = (gens[0].0.replace("MII", "XXX"), gens[0].1.clone());
    std::fs::write(lb.manifest_path("s.yaml"), secret("rot", &broken)).unwrap();
    lb.wait_generation_above(generation, Duration::from_secs(10));
    assert_eq!(s_client(&lb, Some(host), &[]).0.as_deref(), Some("gen-3"));
    let mismatched = (gens[1].0.clone(), gens[2].1.clone());
    let generation = lb.generation();
    std::fs::write(lb.manifest_path("s.yaml"), secret("rot", &mismatched)).unwrap();
    lb.wait_generation_above(generation, Duration::from_secs(10));
    assert_eq!(s_client(&lb, Some(host), &[]).0.as_deref(), Some("gen-3"));
    let log = lb.log_text();
    assert!(
        log.contains("Secret default/rot"),
        "the bad Secret is reported:\n{log}"
    );
}
