//! TLSRoute (TLS passthrough by SNI, to `openssl s_server` backends whose
//! own certificates reach the client), TCPRoute, and GRPCRoute with a tonic
//! client.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::uri::PathAndQuery;
use tonic_prost::ProstCodec;

use super::{INFRA, Infra, condition, eventually, expect_backend, get, object_status};
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

/// The subject CN the client sees at `addr` for server name `sni`.
fn served_cn(addr: SocketAddr, sni: &str) -> Option<String> {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            sni,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .and_then(|s| s.rsplit("CN").next())
        .map(|s| s.trim_start_matches([' ', '=']).trim().to_owned())
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
