//! Gateway Listeners: HTTPS termination with certificateRefs and
//! ReferenceGrants, listener isolation on a merged port, invalid route
//! kinds, unsupported protocols and conflicts, addresses from the pool.

use std::net::SocketAddr;
use std::process::Command;

use super::conformance::http_route;
use super::{INFRA, Infra, WEB, condition, expect_backend, get, object_status, served_cn};
use crate::support::certs::self_signed;
use crate::support::{Lb, scratch_dir};

/// A `kubernetes.io/tls` Secret in `ns`.
fn secret(ns: &str, name: &str, (crt, key): &(String, String)) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
        indent(crt),
        indent(key)
    )
}

/// `curl` over HTTPS to `host` at `addr`, trusting any certificate:
/// (status, `x-backend`, HTTP version).
fn curl_https(addr: SocketAddr, host: &str, path: &str, h2: bool) -> (u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "--resolve",
        ])
        .arg(format!("{host}:{}:{}", addr.port(), addr.ip()))
        .arg(if h2 { "--http2" } else { "--http1.1" })
        .args(["-w", "%{http_code} %{http_version}"])
        .arg(format!("https://{host}:{}{path}", addr.port()))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let backend = text
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("x-backend")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let last = text.lines().last().unwrap_or_default();
    let (code, version) = last.split_once(' ').unwrap_or(("0", ""));
    (code.parse().unwrap_or(0), backend, version.to_owned())
}

fn listener_conditions(status: &serde_json::Value, listener: &str) -> serde_json::Value {
    status["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == listener).cloned())
        .unwrap_or_else(|| panic!("no listener {listener} in {status:#}"))
}

#[test]
fn https_listener_terminates_with_certificate_refs_and_reference_grants() {
    let infra = Infra::start();
    let ip = infra.ip;
    let dir = scratch_dir("gw-https-certs");
    let local = self_signed(&dir, "local.example.org", &["example.org"]);
    let granted = self_signed(&dir, "granted.example.org", &["granted.example.org"]);
    let denied = self_signed(&dir, "denied.example.org", &["denied.example.org"]);
    let wild = self_signed(&dir, "wild.example.org", &["*.wild.example.org"]);
    let gateway = |name: &str, port: u16, hostname: &str, ns: &str, secret: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - name: https\n    port: {port}\n    protocol: HTTPS\n    hostname: {hostname}\n    tls:\n      certificateRefs: [{{kind: Secret, group: \"\", name: {secret}, namespace: {ns}}}]\n---\n"
        )
    };
    let manifests = [
        secret(INFRA, "local-cert", &local),
        secret(WEB, "granted-cert", &granted),
        secret(WEB, "denied-cert", &denied),
        secret(INFRA, "wild-cert", &wild),
        gateway(
            "https-wild",
            9447,
            "\"*.wild.example.org\"",
            INFRA,
            "wild-cert",
        ),
        gateway("https-local", 9443, "example.org", INFRA, "local-cert"),
        gateway("https-granted", 9444, "granted.example.org", WEB, "granted-cert"),
        gateway("https-denied", 9445, "denied.example.org", WEB, "denied-cert"),
        gateway("https-missing", 9446, "missing.example.org", INFRA, "no-such-secret"),
        format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: certs, namespace: {WEB}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Secret, name: granted-cert}}]\n---\n"
        ),
        http_route(INFRA, "https-local", &format!("{INFRA}/https-local"), &[], "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n"),
        http_route(INFRA, "https-granted", &format!("{INFRA}/https-granted"), &[], "  - backendRefs: [{name: infra-backend-v2, port: 8080}]\n"),
    ]
    .concat();
    let lb = infra.lb("gw-https", &manifests);
    let at = |port| SocketAddr::new(ip.into(), port);
    assert_eq!(
        curl_https(at(9443), "example.org", "/", false),
        (200, "infra-backend-v1".into(), "1.1".into())
    );
    assert_eq!(
        curl_https(at(9443), "example.org", "/", true),
        (200, "infra-backend-v1".into(), "2".into())
    );
    assert_eq!(
        served_cn(at(9443), "example.org").as_deref(),
        Some("local.example.org")
    );
    assert_eq!(
        curl_https(at(9444), "granted.example.org", "/", false).1,
        "infra-backend-v2"
    );
    assert_eq!(
        served_cn(at(9444), "granted.example.org").as_deref(),
        Some("granted.example.org")
    );

    // A Listener wildcard covers any number of labels, for certificates too.
    assert_eq!(
        served_cn(at(9447), "a.b.wild.example.org").as_deref(),
        Some("wild.example.org")
    );
    let resolved = |gw: &str| {
        let st = object_status(&lb, "Gateway", INFRA, gw);
        condition(
            &listener_conditions(&st, "https")["conditions"],
            "ResolvedRefs",
        )
    };
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(resolved("https-local"), pair("True", "ResolvedRefs"));
    assert_eq!(resolved("https-granted"), pair("True", "ResolvedRefs"));
    assert_eq!(resolved("https-denied"), pair("False", "RefNotPermitted"));
    assert_eq!(
        resolved("https-missing"),
        pair("False", "InvalidCertificateRef")
    );
    // A listener whose certificate is not usable serves nothing.
    assert_ne!(
        served_cn(at(9445), "denied.example.org").as_deref(),
        Some("denied.example.org")
    );
}

#[test]
fn gateway_http_listener_isolation() {
    let infra = Infra::start();
    let ip = infra.ip;
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: isolation, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - {{name: empty-hostname, port: 9010, protocol: HTTP}}\n  - {{name: wildcard-example-com, port: 9010, protocol: HTTP, hostname: \"*.example.com\"}}\n  - {{name: wildcard-foo-example-com, port: 9010, protocol: HTTP, hostname: \"*.foo.example.com\"}}\n  - {{name: abc-foo-example-com, port: 9010, protocol: HTTP, hostname: abc.foo.example.com}}\n---\n"
    );
    let routes: String = [
        ("empty-hostname", "infra-backend-v1"),
        ("wildcard-example-com", "infra-backend-v2"),
        ("wildcard-foo-example-com", "infra-backend-v3"),
        ("abc-foo-example-com", "app-backend-v1"),
    ]
    .iter()
    .map(|(l, svc)| {
        let ns = if svc.starts_with("app") { super::APP } else { INFRA };
        let grant = if ns == INFRA { "" } else { ", namespace: gateway-conformance-app-backend" };
        http_route(
            INFRA,
            l,
            &format!("{INFRA}/isolation/{l}"),
            &[],
            &format!("  - matches: [{{path: {{type: PathPrefix, value: /{l}}}}}]\n    backendRefs: [{{name: {svc}, port: 8080{grant}}}]\n"),
        )
    })
    .collect();
    let grant = format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: app, namespace: {}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Service}}]\n---\n",
        super::APP
    );
    let _lb = infra.lb("gw-isolation", &(gateway + &routes + &grant));
    let gw = SocketAddr::new(ip.into(), 9010);
    for (host, path, want) in [
        ("bar.com", "/empty-hostname", Some("infra-backend-v1")),
        ("bar.com", "/wildcard-example-com", None),
        ("bar.com", "/wildcard-foo-example-com", None),
        ("bar.com", "/abc-foo-example-com", None),
        (
            "bar.example.com",
            "/wildcard-example-com",
            Some("infra-backend-v2"),
        ),
        ("bar.example.com", "/empty-hostname", None),
        ("bar.example.com", "/wildcard-foo-example-com", None),
        (
            "bar.foo.example.com",
            "/wildcard-foo-example-com",
            Some("infra-backend-v3"),
        ),
        ("bar.foo.example.com", "/wildcard-example-com", None),
        ("bar.foo.example.com", "/empty-hostname", None),
        (
            "abc.foo.example.com",
            "/abc-foo-example-com",
            Some("app-backend-v1"),
        ),
        ("abc.foo.example.com", "/wildcard-foo-example-com", None),
        ("abc.foo.example.com", "/empty-hostname", None),
    ] {
        let r = get(gw, host, path);
        match want {
            Some(b) => expect_backend(&r, b, &format!("{host}{path}")),
            None => assert_eq!(r.status, 404, "{host}{path}: {}", r.text()),
        }
    }
}

#[test]
fn invalid_listeners_get_the_spec_conditions() {
    let infra = Infra::start();
    let ip = infra.ip;
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: odd-listeners, namespace: {INFRA}, generation: 3}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - name: only-invalid-kind\n    port: 9020\n    protocol: HTTP\n    hostname: a.example.com\n    allowedRoutes: {{kinds: [{{kind: FooRoute}}]}}\n  - name: some-invalid-kind\n    port: 9020\n    protocol: HTTP\n    hostname: b.example.com\n    allowedRoutes: {{kinds: [{{kind: HTTPRoute}}, {{kind: FooRoute}}]}}\n  - {{name: udp, port: 9021, protocol: UDP}}\n  - {{name: dup-1, port: 9022, protocol: HTTP, hostname: dup.example.com}}\n  - {{name: dup-2, port: 9022, protocol: HTTP, hostname: dup.example.com}}\n  - {{name: proto-http, port: 9023, protocol: HTTP}}\n  - {{name: proto-tcp, port: 9023, protocol: TCP}}\n  - {{name: fine, port: 9024, protocol: HTTP}}\n---\n"
    );
    let lb = infra.lb("gw-odd", &gateway);
    let st = object_status(&lb, "Gateway", INFRA, "odd-listeners");
    let cond = |l: &str, t: &str| condition(&listener_conditions(&st, l)["conditions"], t);
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        cond("only-invalid-kind", "ResolvedRefs"),
        pair("False", "InvalidRouteKinds")
    );
    assert_eq!(
        listener_conditions(&st, "only-invalid-kind")["supportedKinds"],
        serde_json::json!([])
    );
    assert_eq!(
        cond("some-invalid-kind", "ResolvedRefs"),
        pair("False", "InvalidRouteKinds")
    );
    assert_eq!(
        listener_conditions(&st, "some-invalid-kind")["supportedKinds"],
        serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}])
    );
    assert_eq!(
        cond("udp", "Accepted"),
        pair("False", "UnsupportedProtocol")
    );
    assert_eq!(
        cond("dup-1", "Conflicted"),
        pair("True", "HostnameConflict")
    );
    assert_eq!(
        cond("dup-2", "Conflicted"),
        pair("True", "HostnameConflict")
    );
    assert_eq!(
        cond("proto-http", "Conflicted"),
        pair("True", "ProtocolConflict")
    );
    assert_eq!(
        cond("proto-tcp", "Conflicted"),
        pair("True", "ProtocolConflict")
    );
    assert_eq!(cond("fine", "Conflicted"), pair("False", "NoConflicts"));
    assert_eq!(cond("fine", "Accepted"), pair("True", "Accepted"));
    assert_eq!(cond("fine", "Programmed"), pair("True", "Programmed"));
    // Conditions carry the generation they describe.
    let accepted = st["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Accepted"))
        .cloned()
        .expect("Gateway Accepted");
    assert_eq!(accepted["observedGeneration"], 3, "{st:#}");
    // The valid listener serves; the conflicted port does not.
    assert_eq!(get(SocketAddr::new(ip.into(), 9024), "x", "/").status, 404);
}

#[test]
fn addresses_come_from_the_pool_or_are_reported_missing() {
    let infra = Infra::start();
    let pool_ip = super::unique_ip();
    let gateways = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: pooled, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  listeners: [{{name: http, port: 9030, protocol: HTTP}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: hostname-address, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{type: Hostname, value: gw.example.com}}]\n  listeners: [{{name: http, port: 9031, protocol: HTTP}}]\n---\n"
    ) + &http_route(
        INFRA,
        "pooled",
        &format!("{INFRA}/pooled"),
        &[],
        "  - backendRefs: [{name: infra-backend-v3, port: 8080}]\n",
    );
    let extra = format!("[loadbalancer]\npools = [\"{pool_ip}/32\"]\n");
    let lb = Lb::start(
        "gw-pool",
        &[("base.yaml", &infra.base()), ("test.yaml", &gateways)],
        &extra,
    );
    let st = object_status(&lb, "Gateway", INFRA, "pooled");
    assert_eq!(
        st["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": pool_ip.to_string()}]),
        "{st:#}"
    );
    assert_eq!(
        condition(&st["conditions"], "Programmed"),
        ("True".into(), "Programmed".into())
    );
    expect_backend(
        &get(SocketAddr::new(pool_ip.into(), 9030), "x", "/"),
        "infra-backend-v3",
        "pool address",
    );
    let st = object_status(&lb, "Gateway", INFRA, "hostname-address");
    assert_eq!(
        condition(&st["conditions"], "Accepted"),
        ("False".into(), "UnsupportedAddress".into()),
        "{st:#}"
    );
    // The base Gateways asked for their address and keep it.
    let base = object_status(&lb, "Gateway", INFRA, "same-namespace");
    assert_eq!(base["addresses"][0]["value"], infra.ip.to_string());
}

#[test]
fn https_listener_selection_by_sni_and_host() {
    // HTTPRouteHTTPSListener: a listener without a hostname and one with,
    // a route with hostnames attached to the Gateway and a route without
    // hostnames attached to the named listener only.
    let infra = Infra::start();
    let ip = infra.ip;
    let dir = scratch_dir("gw-https-select");
    let cert = self_signed(
        &dir,
        "https-select",
        &["example.org", "second-example.org", "unknown-example.org"],
    );
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: same-namespace-with-https-listener, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - name: https\n    port: 9448\n    protocol: HTTPS\n    tls: {{certificateRefs: [{{name: select-cert}}]}}\n  - name: https-with-hostname\n    port: 9448\n    protocol: HTTPS\n    hostname: second-example.org\n    tls: {{certificateRefs: [{{name: select-cert}}]}}\n---\n"
    );
    let backend = "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n";
    let parent = format!("{INFRA}/same-namespace-with-https-listener");
    let manifests = super::tls_secret_in(INFRA, "select-cert", &cert)
        + &gateway
        + &http_route(
            INFRA,
            "https-with-hostnames",
            &parent,
            &["example.org"],
            backend,
        )
        + &http_route(
            INFRA,
            "https-no-hostnames",
            &format!("{parent}/https-with-hostname"),
            &[],
            backend,
        );
    let lb = infra.lb("gw-https-select", &manifests);
    let at = SocketAddr::new(ip.into(), 9448);
    let mut wrong = Vec::new();
    for (sni, host, want) in [
        ("example.org", "example.org", Some("infra-backend-v1")),
        ("unknown-example.org", "second-example.org", None),
        (
            "second-example.org",
            "second-example.org",
            Some("infra-backend-v1"),
        ),
        ("unknown-example.org", "unknown-example.org", None),
    ] {
        for h2 in [false, true] {
            let r = super::curl_tls_as(at, sni, host, "/", h2);
            let got = (r.status, r.header("x-backend").map(str::to_owned));
            let ok = match want {
                Some(b) => got == (200, Some(b.to_owned())),
                None => got == (404, None),
            };
            if !ok {
                wrong.push(format!(
                    "SNI {sni} Host {host} (h2 {h2}): want {want:?}, got {got:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let st = object_status(&lb, "Gateway", INFRA, "same-namespace-with-https-listener");
    assert_eq!(super::attached_routes(&st, "https"), 1, "{st:#}");
    assert_eq!(
        super::attached_routes(&st, "https-with-hostname"),
        1,
        "{st:#}"
    );
}

#[test]
fn gateway_http_listener_isolation_with_route_hostnames() {
    // GatewayHTTPListenerIsolation, second part: every route also lists
    // hostnames that a more specific listener owns; isolation still keeps
    // each request on the most specific listener.
    let infra = Infra::start();
    let ip = infra.ip;
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: isolation-hostnames, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - {{name: empty-hostname, port: 9011, protocol: HTTP}}\n  - {{name: wildcard-example-com, port: 9011, protocol: HTTP, hostname: \"*.example.com\"}}\n  - {{name: wildcard-foo-example-com, port: 9011, protocol: HTTP, hostname: \"*.foo.example.com\"}}\n  - {{name: abc-foo-example-com, port: 9011, protocol: HTTP, hostname: abc.foo.example.com}}\n---\n"
    );
    let listeners = [
        ("empty-hostname", "infra-backend-v1"),
        ("wildcard-example-com", "infra-backend-v2"),
        ("wildcard-foo-example-com", "infra-backend-v3"),
        ("abc-foo-example-com", "app-backend-v1"),
    ];
    let routes: String = listeners
        .iter()
        .map(|(l, svc)| {
            let ns = if svc.starts_with("app") {
                format!(", namespace: {}", super::APP)
            } else {
                String::new()
            };
            http_route(
                INFRA,
                l,
                &format!("{INFRA}/isolation-hostnames/{l}"),
                &[
                    "bar.com",
                    "\"*.example.com\"",
                    "\"*.foo.example.com\"",
                    "abc.foo.example.com",
                ],
                &format!("  - matches: [{{path: {{type: PathPrefix, value: /{l}}}}}]\n    backendRefs: [{{name: {svc}, port: 8080{ns}}}]\n"),
            )
        })
        .collect();
    let grant = format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: app, namespace: {}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Service}}]\n---\n",
        super::APP
    );
    let _lb = infra.lb("gw-isolation-hosts", &(gateway + &routes + &grant));
    let gw = SocketAddr::new(ip.into(), 9011);
    let mut wrong = Vec::new();
    for (host, owner) in [
        ("bar.com", 0),
        ("bar.example.com", 1),
        ("bar.foo.example.com", 2),
        ("abc.foo.example.com", 3),
    ] {
        for (i, (path, svc)) in listeners.iter().enumerate() {
            let r = get(gw, host, &format!("/{path}"));
            let got = (r.status, r.header("x-backend").map(str::to_owned));
            let want = if i == owner {
                (200, Some((*svc).to_owned()))
            } else {
                (404, None)
            };
            if got != want {
                wrong.push(format!("{host}/{path}: want {want:?}, got {got:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
