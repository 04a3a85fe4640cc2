//! TLSRoute (TLS passthrough by SNI, to `openssl s_server` backends whose
//! own certificates reach the client), TCPRoute, and GRPCRoute with a tonic
//! client.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::uri::PathAndQuery;
use tonic_prost::ProstCodec;

use super::{
    INFRA, Infra, WEB, condition, eventually, expect_backend, get, object_status, served_cn,
};
use crate::h2::{GrpcServer, Msg, runtime};
use crate::support::certs::self_signed;
use crate::support::{free_port, scratch_dir, service_yaml};

/// `openssl s_server -www` on a free loopback port; killed on drop.
struct TlsServer {
    child: Child,
    addr: SocketAddr,
}

impl TlsServer {
    fn start(dir: &std::path::Path, cn: &str) -> TlsServer {
        let (crt, key) = self_signed(dir, cn, &[cn]);
        let (crt_path, key_path) = (
            dir.join(format!("{cn}.pem")),
            dir.join(format!("{cn}.key.pem")),
        );
        std::fs::write(&crt_path, crt).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let port = free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-www", "-accept", &port.to_string()])
            .arg("-cert")
            .arg(&crt_path)
            .arg("-key")
            .arg(&key_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server runs");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
                addr
            )
            .is_ok()),
            "s_server listening"
        );
        TlsServer { child, addr }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tls_route_passes_tls_through_by_sni() {
    let dir = scratch_dir("gw-passthrough-certs");
    let a = TlsServer::start(&dir, "a.passthrough.test");
    let b = TlsServer::start(&dir, "b.passthrough.test");
    let infra = Infra::start();
    let ip = infra.ip;
    let manifests = format!(
        "{}---\n{}---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: passthrough, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - name: tls\n    port: 9050\n    protocol: TLS\n    tls: {{mode: Passthrough}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {{name: route-a, namespace: {INFRA}}}\nspec:\n  parentRefs: [{{name: passthrough}}]\n  hostnames: [a.passthrough.test]\n  rules: [{{backendRefs: [{{name: tls-a, port: 443}}]}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {{name: route-b, namespace: {INFRA}}}\nspec:\n  parentRefs: [{{name: passthrough}}]\n  hostnames: [\"*.b.passthrough.test\", b.passthrough.test]\n  rules: [{{backendRefs: [{{name: tls-b, port: 443}}]}}]\n---\n",
        service_yaml(INFRA, "tls-a", 443, None, &[a.addr]),
        service_yaml(INFRA, "tls-b", 443, None, &[b.addr]),
    );
    let lb = infra.lb("gw-passthrough", &manifests);
    let gw = SocketAddr::new(ip.into(), 9050);
    assert_eq!(
        served_cn(gw, "a.passthrough.test").as_deref(),
        Some("a.passthrough.test")
    );
    assert_eq!(
        served_cn(gw, "b.passthrough.test").as_deref(),
        Some("b.passthrough.test")
    );
    assert_eq!(
        served_cn(gw, "x.b.passthrough.test").as_deref(),
        Some("b.passthrough.test")
    );
    assert_eq!(
        served_cn(gw, "c.passthrough.test"),
        None,
        "unknown SNI is closed"
    );
    // A real client completes requests through the passthrough.
    let out = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
        ])
        .arg(format!("a.passthrough.test:9050:{ip}"))
        .arg("https://a.passthrough.test:9050/")
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let st = object_status(&lb, "TLSRoute", INFRA, "route-a");
    let conds = super::route_parent_conditions(&st, "passthrough");
    assert_eq!(
        condition(&conds, "Accepted"),
        ("True".into(), "Accepted".into())
    );
}

#[test]
fn tcp_route_relays_to_its_backends() {
    let infra = Infra::start();
    let ip = infra.ip;
    let manifests = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: tcp, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - {{name: tcp, port: 9060, protocol: TCP}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: tcp, namespace: {INFRA}}}\nspec:\n  parentRefs: [{{name: tcp, sectionName: tcp}}]\n  rules: [{{backendRefs: [{{name: infra-backend-v2, port: 8080}}]}}]\n---\n"
    );
    let lb = infra.lb("gw-tcp", &manifests);
    let gw = SocketAddr::new(ip.into(), 9060);
    // Plain bytes relayed: the echo backend answers HTTP as it would directly.
    for _ in 0..3 {
        expect_backend(&get(gw, "anything", "/tcp"), "infra-backend-v2", "TCPRoute");
    }
    let st = object_status(&lb, "TCPRoute", INFRA, "tcp");
    let conds = super::route_parent_conditions(&st, "tcp");
    assert_eq!(
        condition(&conds, "Accepted"),
        ("True".into(), "Accepted".into())
    );
    let gw_status = object_status(&lb, "Gateway", INFRA, "tcp");
    assert_eq!(
        gw_status["listeners"][0]["attachedRoutes"], 1,
        "{gw_status:#}"
    );
}

fn grpc_service(name: &str, addr: SocketAddr) -> String {
    service_yaml(INFRA, name, 8080, None, &[addr]).replacen(
        "    protocol: TCP\n",
        "    protocol: TCP\n    appProtocol: kubernetes.io/h2c\n",
        1,
    )
}

#[test]
fn grpc_route_matches_service_method_and_headers() {
    let one = GrpcServer::named("grpc-one");
    let two = GrpcServer::named("grpc-two");
    let infra = Infra::start();
    let route = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: grpc, namespace: {INFRA}}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n  hostnames: [grpc.example.com]\n  rules:\n  - matches: [{{method: {{service: test.Echo, method: Unary}}}}]\n    backendRefs: [{{name: grpc-one, port: 8080}}]\n  - matches: [{{method: {{service: test.Other}}}}]\n    backendRefs: [{{name: grpc-two, port: 8080}}]\n  - matches: [{{method: {{service: test.Echo, method: Unary}}, headers: [{{name: x-tier, value: gold}}]}}]\n    backendRefs: [{{name: grpc-two, port: 8080}}]\n---\n"
    );
    let manifests = grpc_service("grpc-one", one.addr)
        + "---\n"
        + &grpc_service("grpc-two", two.addr)
        + "---\n"
        + &route;
    let lb = infra.lb("gw-grpc", &manifests);
    let gw = infra.gw("same-namespace");
    let backend = runtime().block_on(async {
        // Connect to lb; requests carry the route's hostname as authority.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{gw}"))
            .unwrap()
            .origin(
                format!("http://grpc.example.com:{}", gw.port())
                    .parse()
                    .unwrap(),
            )
            .connect()
            .await
            .expect("connect through lb");
        let mut client = tonic::client::Grpc::new(channel);
        let mut call = async |path: &'static str, gold: bool| {
            client.ready().await.unwrap();
            let mut req = tonic::Request::new(Msg {
                text: "hi".into(),
                n: 1,
            });
            if gold {
                req.metadata_mut().insert("x-tier", "gold".parse().unwrap());
            }
            let resp = client
                .unary(
                    req,
                    PathAndQuery::from_static(path),
                    ProstCodec::<Msg, Msg>::default(),
                )
                .await
                .expect("unary call");
            let who = resp
                .metadata()
                .get("x-backend")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            assert_eq!(resp.into_inner().n, 2);
            who
        };
        [
            call("/test.Echo/Unary", false).await,
            call("/test.Other/Unary", false).await,
            call("/test.Echo/Unary", true).await,
        ]
    });
    assert_eq!(backend, ["grpc-one", "grpc-two", "grpc-two"]);
    let st = object_status(&lb, "GRPCRoute", INFRA, "grpc");
    let conds = super::route_parent_conditions(&st, "same-namespace");
    assert_eq!(
        condition(&conds, "Accepted"),
        ("True".into(), "Accepted".into())
    );
}

/// A Gateway of class `lb` in the infra namespace on `ip`; `listeners` is
/// the YAML block list under `spec.listeners`.
fn stream_gateway(name: &str, ip: std::net::Ipv4Addr, listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {INFRA}}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n{listeners}---\n"
    )
}

/// A `kind` (TLSRoute or TCPRoute) in the infra namespace.
fn stream_route(
    kind: &str,
    name: &str,
    parent_refs: &str,
    extra: &str,
    backend_refs: &str,
) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: {kind}\nmetadata: {{name: {name}, namespace: {INFRA}}}\nspec:\n  parentRefs: {parent_refs}\n{extra}  rules: [{{backendRefs: {backend_refs}}}]\n---\n"
    )
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

/// TLSRouteInvalidReferenceGrant, TLSRouteInvalidNoMatchingListener,
/// TLSRouteListenerPassthroughSupportedKinds and HTTPRouteDisallowedKind:
/// the route and listener status of TLSRoutes that cannot attach or
/// resolve, and of an HTTPRoute aimed at a passthrough listener.
#[test]
fn tls_route_status_cases() {
    let infra = Infra::start();
    let ip = infra.ip;
    let dir = scratch_dir("gw-tls-route-status");
    let cert = self_signed(&dir, "tls.example.com", &["tls.example.com"]);
    let passthrough = |name: &str, port: u16, kinds: &str| {
        format!(
            "  - name: {name}\n    port: {port}\n    protocol: TLS\n    tls: {{mode: Passthrough}}\n    allowedRoutes: {{kinds: {kinds}}}\n"
        )
    };
    let manifests = [
        super::tls_secret_in(INFRA, "cert", &cert),
        stream_gateway(
            "gateway-tls",
            ip,
            &passthrough("tls", 9301, "[{kind: TLSRoute}]"),
        ),
        stream_gateway(
            "gateway-http",
            ip,
            "  - {name: http, port: 9302, protocol: HTTP}\n",
        ),
        stream_gateway(
            "gateway-https",
            ip,
            "  - name: https\n    port: 9303\n    protocol: HTTPS\n    tls: {certificateRefs: [{name: cert}]}\n",
        ),
        stream_gateway(
            "gateway-tls-http-kinds",
            ip,
            &passthrough("tls", 9304, "[{kind: HTTPRoute}]"),
        ),
        stream_gateway(
            "gateway-tls-tcp-kinds",
            ip,
            &passthrough("tls", 9305, "[{kind: TLSRoute}, {kind: TCPRoute}]"),
        ),
        // (a) A backend in another namespace without a ReferenceGrant.
        stream_route(
            "TLSRoute",
            "cross-namespace",
            "[{name: gateway-tls}]",
            "  hostnames: [tls.example.com]\n",
            &format!("[{{name: web-backend, namespace: {WEB}, port: 8080}}]"),
        ),
        // (b) Listeners that do not take TLSRoutes, and a missing section.
        stream_route(
            "TLSRoute",
            "to-http",
            "[{name: gateway-http}]",
            "",
            "[{name: infra-backend-v1, port: 8080}]",
        ),
        stream_route(
            "TLSRoute",
            "to-https",
            "[{name: gateway-https}]",
            "",
            "[{name: infra-backend-v1, port: 8080}]",
        ),
        stream_route(
            "TLSRoute",
            "to-http-kinds",
            "[{name: gateway-tls-http-kinds}]",
            "",
            "[{name: infra-backend-v1, port: 8080}]",
        ),
        stream_route(
            "TLSRoute",
            "bad-section",
            "[{name: gateway-tls, sectionName: nope}]",
            "",
            "[{name: infra-backend-v1, port: 8080}]",
        ),
        // (d) An HTTPRoute on a passthrough listener for TLSRoutes.
        super::conformance::http_route(
            INFRA,
            "disallowed-kind",
            &format!("{INFRA}/gateway-tls"),
            &[],
            "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
        ),
    ]
    .concat();
    let lb = infra.lb("gw-tls-route-status", &manifests);
    let route = |kind: &str, name: &str, gw: &str| {
        let st = object_status(&lb, kind, INFRA, name);
        let conds = super::route_parent_conditions(&st, gw);
        (
            condition(&conds, "Accepted"),
            condition(&conds, "ResolvedRefs"),
        )
    };
    assert_eq!(
        route("TLSRoute", "cross-namespace", "gateway-tls"),
        (pair("True", "Accepted"), pair("False", "RefNotPermitted"))
    );
    for (name, gw) in [
        ("to-http", "gateway-http"),
        ("to-https", "gateway-https"),
        ("to-http-kinds", "gateway-tls-http-kinds"),
    ] {
        assert_eq!(
            route("TLSRoute", name, gw).0,
            pair("False", "NotAllowedByListeners"),
            "{name}"
        );
    }
    assert_eq!(
        route("TLSRoute", "bad-section", "gateway-tls").0,
        pair("False", "NoMatchingParent")
    );
    assert_eq!(
        route("HTTPRoute", "disallowed-kind", "gateway-tls"),
        (
            pair("False", "NotAllowedByListeners"),
            pair("True", "ResolvedRefs")
        )
    );
    let gw_status = |name: &str| object_status(&lb, "Gateway", INFRA, name);
    for (gw, l, n) in [
        ("gateway-http", "http", 0),
        ("gateway-https", "https", 0),
        ("gateway-tls-http-kinds", "tls", 0),
        // Only the cross-namespace route attaches (its ref is unresolved).
        ("gateway-tls", "tls", 1),
    ] {
        assert_eq!(super::attached_routes(&gw_status(gw), l), n, "{gw}");
    }
    // (c) A passthrough listener supports TLSRoute only.
    let l = super::listener_of(&gw_status("gateway-tls-tcp-kinds"), "tls");
    assert_eq!(
        l["supportedKinds"],
        serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "TLSRoute"}])
    );
    assert_eq!(
        condition(&l["conditions"], "ResolvedRefs"),
        pair("False", "InvalidRouteKinds")
    );
    let l = super::listener_of(&gw_status("gateway-tls-http-kinds"), "tls");
    assert_eq!(l["supportedKinds"], serde_json::json!([]));
}

/// TCPRouteParentRefPortAndSectionName and TCPRouteParentRefAttachAll: a
/// TCPRoute attaches to the listener its parentRef names by port, by
/// sectionName or by both, and to every listener when it names neither.
#[test]
fn tcp_route_attaches_by_port_section_name_or_all() {
    let infra = Infra::start();
    let ip = infra.ip;
    let four = |first: u16| {
        ["one", "two", "three", "four"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "  - {{name: {n}, port: {}, protocol: TCP}}\n",
                    first + i as u16
                )
            })
            .collect::<String>()
    };
    let manifests = [
        stream_gateway("gateway-tcp", ip, &four(9311)),
        stream_gateway("gateway-tcp-all", ip, &four(9321)),
        stream_route(
            "TCPRoute",
            "by-port",
            "[{name: gateway-tcp, port: 9311}]",
            "",
            "[{name: infra-backend-v1, port: 8080}]",
        ),
        stream_route(
            "TCPRoute",
            "by-section",
            "[{name: gateway-tcp, sectionName: two}]",
            "",
            "[{name: infra-backend-v2, port: 8080}]",
        ),
        stream_route(
            "TCPRoute",
            "by-both",
            "[{name: gateway-tcp, sectionName: three, port: 9313}]",
            "",
            "[{name: infra-backend-v3, port: 8080}]",
        ),
        stream_route(
            "TCPRoute",
            "all",
            "[{name: gateway-tcp-all}]",
            "",
            "[{name: infra-backend-v1, port: 8080}]",
        ),
    ]
    .concat();
    let lb = infra.lb("gw-tcp-attach", &manifests);
    let at = |port: u16| SocketAddr::new(ip.into(), port);
    for (name, gw) in [
        ("by-port", "gateway-tcp"),
        ("by-section", "gateway-tcp"),
        ("by-both", "gateway-tcp"),
        ("all", "gateway-tcp-all"),
    ] {
        let st = object_status(&lb, "TCPRoute", INFRA, name);
        assert_eq!(
            condition(&super::route_parent_conditions(&st, gw), "Accepted"),
            pair("True", "Accepted"),
            "{name}"
        );
    }
    for (port, backend) in [
        (9311, "infra-backend-v1"),
        (9312, "infra-backend-v2"),
        (9313, "infra-backend-v3"),
    ] {
        expect_backend(&get(at(port), "tcp", "/"), backend, &format!("port {port}"));
    }
    let st = object_status(&lb, "Gateway", INFRA, "gateway-tcp");
    for (l, n) in [("one", 1), ("two", 1), ("three", 1), ("four", 0)] {
        assert_eq!(super::attached_routes(&st, l), n, "{l}");
    }
    let st = object_status(&lb, "Gateway", INFRA, "gateway-tcp-all");
    for (i, l) in ["one", "two", "three", "four"].iter().enumerate() {
        assert_eq!(super::attached_routes(&st, l), 1, "{l}");
        expect_backend(
            &get(at(9321 + i as u16), "tcp", "/"),
            "infra-backend-v1",
            &format!("all: {l}"),
        );
    }
}

/// TCPRouteReferenceGrant: a backend in another namespace is relayed while
/// a ReferenceGrant permits it; once the grant is removed the route reports
/// RefNotPermitted and nothing reaches that backend.
#[test]
fn tcp_route_reference_grant_added_and_removed() {
    let infra = Infra::start();
    let ip = infra.ip;
    let route = stream_gateway(
        "gateway-tcp",
        ip,
        "  - {name: tcp, port: 9331, protocol: TCP}\n",
    ) + &stream_route(
        "TCPRoute",
        "cross-namespace",
        "[{name: gateway-tcp}]",
        "",
        &format!("[{{name: web-backend, namespace: {WEB}, port: 8080}}]"),
    );
    let grant = format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: tcp, namespace: {WEB}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Service, name: web-backend}}]\n---\n"
    );
    let lb = infra.lb("gw-tcp-grant", &(route.clone() + &grant));
    let addr = SocketAddr::new(ip.into(), 9331);
    expect_backend(&get(addr, "tcp", "/"), "web-backend", "granted");
    let resolved = || {
        let st = object_status(&lb, "TCPRoute", INFRA, "cross-namespace");
        condition(
            &super::route_parent_conditions(&st, "gateway-tcp"),
            "ResolvedRefs",
        )
    };
    assert_eq!(resolved(), pair("True", "ResolvedRefs"));

    super::rewrite_test_yaml(&lb, &route);
    assert_eq!(resolved(), pair("False", "RefNotPermitted"));
    let relayed = crate::support::client::Client::try_connect(addr)
        .ok()
        .and_then(|mut c| c.request("GET", "tcp", "/", &[], None).ok())
        .is_some_and(|r| r.status == 200);
    assert!(!relayed, "no grant, nothing relayed");
}

/// TCPRouteWeightedRouting: backendRef weights 70/30 split new connections
/// 70/30 (1000 connections; ±5 %, wider than the suite's ±3 % over 500,
/// which a fair coin misses one time in ten).
#[test]
fn tcp_route_weights_split_connections() {
    let infra = Infra::start();
    let ip = infra.ip;
    let manifests = stream_gateway(
        "gateway-tcp",
        ip,
        "  - {name: tcp, port: 9341, protocol: TCP}\n",
    ) + &stream_route(
        "TCPRoute",
        "weighted",
        "[{name: gateway-tcp}]",
        "",
        "[{name: infra-backend-v1, port: 8080, weight: 70}, {name: infra-backend-v2, port: 8080, weight: 30}, {name: infra-backend-v3, port: 8080, weight: 0}]",
    );
    let _lb = infra.lb("gw-tcp-weights", &manifests);
    let addr = SocketAddr::new(ip.into(), 9341);
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..1000 {
        *counts.entry(get(addr, "tcp", "/").backend()).or_default() += 1;
    }
    let v1 = counts.get("infra-backend-v1").copied().unwrap_or(0);
    let v2 = counts.get("infra-backend-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 1000, "only weighted backends answer: {counts:?}");
    assert!((650..=750).contains(&v1), "70/30 split: {counts:?}");
}
