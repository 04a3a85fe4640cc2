//! HTTP semantics at the edge (issue 15 item 5), with curl: an absolute-form
//! target's authority becomes the Host the backend sees, `Connection` cannot
//! remove Host, an `Upgrade: h2c` is never relayed, and the HTTPS redirect
//! decides on the same authority routing uses.

use std::process::Command;

use bench::echo::EchoServer;

use crate::support::certs::{self_signed, tls_secret};
use crate::support::{Lb, ingress_named, scratch_dir, service_yaml};

/// lb with Ingresses `a.test` -> echo `a` and `b.test` -> echo `b`.
fn start(tag: &str, a: &EchoServer, b: &EchoServer) -> Lb {
    let manifests = [
        (
            "a.yaml",
            service_yaml("default", "a", 80, None, &[a.local_addr()]),
        ),
        (
            "b.yaml",
            service_yaml("default", "b", 80, None, &[b.local_addr()]),
        ),
        ("ia.yaml", ingress_named("ia", "a.test", "a")),
        ("ib.yaml", ingress_named("ib", "b.test", "b")),
    ];
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, b)| (*n, b.as_str())).collect();
    Lb::start(tag, &refs, "")
}

/// Runs curl with `args` (plus `-sS -v`), returns (body, verbose stderr).
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "curl {args:?}: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// The echo backend's report: its name and the (name, value) headers it saw.
fn report(body: &str) -> (String, Vec<(String, String)>) {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not an echo report ({e}): {body}"));
    let headers = v["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h[0].as_str().unwrap_or_default().to_ascii_lowercase(),
                        h[1].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (
        v["backend"].as_str().unwrap_or_default().to_owned(),
        headers,
    )
}

fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn absolute_form_authority_is_the_host_the_backend_sees() {
    let a = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").unwrap();
    let b = EchoServer::start("127.0.0.1:0".parse().unwrap(), "b").unwrap();
    let lb = start("edge-absolute", &a, &b);
    let (body, _) = curl(&[
        "--request-target",
        "http://a.test/x?y=1",
        "-H",
        "Host: b.test",
        &format!("http://{}/", lb.http),
    ]);
    let (backend, headers) = report(&body);
    assert_eq!(backend, "a", "routed by the target's authority: {body}");
    assert_eq!(values(&headers, "host"), ["a.test"], "{body}");
}

#[test]
fn connection_cannot_remove_host() {
    let a = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").unwrap();
    let b = EchoServer::start("127.0.0.1:0".parse().unwrap(), "b").unwrap();
    let lb = start("edge-connection-host", &a, &b);
    let (body, _) = curl(&[
        "-H",
        "Host: a.test",
        "-H",
        "Connection: Host, X-Drop",
        "-H",
        "X-Drop: 1",
        &format!("http://{}/", lb.http),
    ]);
    let (backend, headers) = report(&body);
    assert_eq!(backend, "a");
    assert_eq!(values(&headers, "host"), ["a.test"], "{body}");
    assert!(
        values(&headers, "x-drop").is_empty(),
        "listed field kept: {body}"
    );
}

#[test]
fn h2c_upgrade_is_served_as_a_plain_request() {
    let a = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").unwrap();
    let b = EchoServer::start("127.0.0.1:0".parse().unwrap(), "b").unwrap();
    let lb = start("edge-h2c", &a, &b);
    // curl --http2 on http:// asks for `Upgrade: h2c` with HTTP2-Settings.
    let (body, verbose) = curl(&[
        "--http2",
        "-H",
        "Host: a.test",
        &format!("http://{}/", lb.http),
    ]);
    assert!(
        verbose.to_ascii_lowercase().contains("upgrade: h2c"),
        "curl did not offer h2c: {verbose}"
    );
    assert!(verbose.contains("< HTTP/1.1 200"), "{verbose}");
    let (backend, headers) = report(&body);
    assert_eq!(backend, "a");
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(
            values(&headers, name).is_empty(),
            "{name} reached the backend: {body}"
        );
    }
}

#[test]
fn https_redirect_uses_the_absolute_form_authority_and_keeps_the_path() {
    let dir = scratch_dir("edge-redirect");
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let cert = self_signed(&dir, "site", &["secure.test"]);
    let tls_ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: secure, namespace: default}\nspec:\n  ingressClassName: lb\n  tls:\n  - hosts: [secure.test]\n    secretName: site\n  rules:\n  - host: secure.test\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n";
    let manifests = [
        ("class.yaml", "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: lb}\nspec: {controller: lb.example.com/ingress-controller}\n".to_owned()),
        ("svc.yaml", service_yaml("default", "web", 80, None, &[echo.local_addr()])),
        ("s.yaml", tls_secret("site", &cert)),
        ("secure.yaml", tls_ingress.to_owned()),
        ("open.yaml", ingress_named("open", "open.test", "web")),
    ];
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let lb = Lb::start("edge-redirect", &refs, "");
    let (_, verbose) = curl(&[
        "--request-target",
        "http://secure.test/a/b?c=d",
        "-H",
        "Host: open.test",
        &format!("http://{}/", lb.http),
    ]);
    assert!(
        verbose.contains("< HTTP/1.1 308"),
        "served over plain HTTP: {verbose}"
    );
    let want = format!(
        "< Location: https://secure.test:{}/a/b?c=d",
        lb.https.port()
    );
    assert!(
        verbose
            .lines()
            .any(|l| l.trim_end().eq_ignore_ascii_case(&want)),
        "want {want}: {verbose}"
    );
}

/// lb with one Ingress for `a.test`: `/public` to echo `public`,
/// `/internal` to echo `internal`.
fn start_paths(tag: &str, public: &EchoServer, internal: &EchoServer) -> Lb {
    let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: paths, namespace: default}\nspec:\n  ingressClassName: lb\n  rules:\n  - host: a.test\n    http:\n      paths:\n      - {path: /public, pathType: Prefix, backend: {service: {name: public, port: {number: 80}}}}\n      - {path: /internal, pathType: Prefix, backend: {service: {name: internal, port: {number: 80}}}}\n";
    let manifests = [
        (
            "p.yaml",
            service_yaml("default", "public", 80, None, &[public.local_addr()]),
        ),
        (
            "i.yaml",
            service_yaml("default", "internal", 80, None, &[internal.local_addr()]),
        ),
        ("ing.yaml", ingress.to_owned()),
    ];
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, b)| (*n, b.as_str())).collect();
    Lb::start(tag, &refs, "")
}

#[test]
fn dot_segments_and_escapes_cannot_cross_a_route_boundary() {
    let public = EchoServer::start("127.0.0.1:0".parse().unwrap(), "public").unwrap();
    let internal = EchoServer::start("127.0.0.1:0".parse().unwrap(), "internal").unwrap();
    let lb = start_paths("edge-paths", &public, &internal);
    let url = |path: &str| format!("http://{}{path}", lb.http);
    for http in ["--http1.1", "--http2-prior-knowledge"] {
        for (path, backend, seen) in [
            ("/public/../internal/x", "internal", "/internal/x"),
            ("/public/%2e%2e/internal/x", "internal", "/internal/x"),
            (
                "/public/.%2E/internal/x?q=/../y",
                "internal",
                "/internal/x?q=/../y",
            ),
            ("//internal/x", "internal", "/internal/x"),
            ("/public/./a//b/%7Ec", "public", "/public/a/b/~c"),
        ] {
            let (body, _) = curl(&[http, "--path-as-is", "-H", "Host: a.test", &url(path)]);
            let v: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{http} {path}: {e}: {body}"));
            assert_eq!(v["backend"], backend, "{http} {path}: {body}");
            assert_eq!(v["path"], seen, "{http} {path}: {body}");
        }
        for path in [
            "/public%2F..%2Finternal/x",
            "/public/%zz",
            "/public/..%5Cinternal",
        ] {
            let before = (public.requests(), internal.requests());
            let (_, verbose) = curl(&[http, "--path-as-is", "-H", "Host: a.test", &url(path)]);
            assert!(
                verbose.contains("< HTTP/1.1 400") || verbose.contains("< HTTP/2 400"),
                "{http} {path}: {verbose}"
            );
            assert_eq!(
                (public.requests(), internal.requests()),
                before,
                "{path} reached a backend"
            );
        }
    }
}

/// HTTP/2 `:path *` belongs to a server-wide OPTIONS only (RFC 9113 8.3.1):
/// with another method it is refused with 400 instead of being forwarded as
/// an asterisk-form request no HTTP/1.1 server accepts (found by the
/// h2_to_h1 fuzz target).
#[test]
fn h2_asterisk_path_is_only_for_options() {
    let a = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").unwrap();
    let b = EchoServer::start("127.0.0.1:0".parse().unwrap(), "b").unwrap();
    let lb = start("edge-asterisk", &a, &b);
    let url = format!("http://{}/", lb.http);
    let (_, verbose) = curl(&[
        "--http2-prior-knowledge",
        "-X",
        "GET",
        "--request-target",
        "*",
        "-H",
        "Host: a.test",
        &url,
    ]);
    assert!(
        verbose.contains(":path: *") || verbose.contains("GET * "),
        "curl did not send :path *: {verbose}"
    );
    assert!(verbose.contains("< HTTP/2 400"), "{verbose}");
}
