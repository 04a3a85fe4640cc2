//! One owner per address, protocol and port, through the real binary: a
//! Service of another namespace cannot take connections of the `[ingress]`
//! listener with `externalIPs` (ignored outside `[loadbalancer]
//! external_ips`, and losing to lb.toml inside them); a Gateway listener
//! and an L4 Service on one address and port: the older object serves, the
//! other is reported; a requested VIP outside every pool gets no address.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use bench::echo::EchoServer;

use crate::gateway::{condition, object_status, unique_ip};
use crate::l4::l4_service;
use crate::support::{Lb, admin_get, free_port, ingress_to, lb_check, replace, service_yaml};

/// One `GET /` with `Host: host` over a fresh connection to `addr`: the
/// status code and the answering echo backend's name (empty for lb's own
/// answers).
fn ask(addr: SocketAddr, host: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let backend = out
        .find("\"backend\":\"")
        .map(|at| {
            out[at + 11..]
                .split('"')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default();
    (code, backend)
}

/// Who answered `n` connections to `addr`.
fn tally(addr: SocketAddr, host: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let (code, backend) = ask(addr, host);
        *seen.entry(format!("{code} {backend}")).or_insert(0) += 1;
    }
    seen
}

/// The diagnostics of the last load, from `/config`.
fn diagnostics(lb: &Lb) -> Vec<String> {
    let config = admin_get(lb.admin, "/config").expect("/config").json();
    config["diagnostics"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn has_diagnostic(lb: &Lb, needle: &str) -> bool {
    diagnostics(lb).iter().any(|d| d.contains(needle))
}

/// Adds the tenant's Service `steal(port)` on lb's Ingress listener port,
/// waits for the reload, and checks that all 200 connections still reach
/// the Ingress backend.
fn steal_and_count(lb: &Lb, steal: &dyn Fn(u16) -> String) {
    let gen_before = lb.generation();
    replace(&lb.manifest_path("steal.yaml"), &steal(lb.http.port()));
    lb.wait_generation_above(gen_before, Duration::from_secs(10));
    let seen = tally(lb.http, "app.test", 200);
    assert_eq!(
        seen,
        BTreeMap::from([("200 ingress".to_owned(), 200)]),
        "every connection reaches the Ingress backend"
    );
}

#[test]
fn external_ips_cannot_take_the_ingress_listeners_connections() {
    let web = EchoServer::start("127.0.0.1:0".parse().unwrap(), "ingress").expect("echo");
    let thief = EchoServer::start("127.0.0.1:0".parse().unwrap(), "thief").expect("echo");
    let base = format!(
        "{}---\n{}",
        service_yaml("default", "web", 80, None, &[web.local_addr()]),
        ingress_to("app.test", "web")
    );
    // The Ingress listener's port is only known once lb has it: start, then
    // add the tenant's Service on exactly that address and port.
    let lb = Lb::start("own-extip", &[("base.yaml", &base)], "");
    let steal = |port: u16| {
        l4_service(
            "steal",
            "ClusterIP",
            port,
            "  externalIPs: [\"127.0.0.1\"]\n",
            &[thief.local_addr()],
        )
        .replace("namespace: default", "namespace: tenant")
    };
    // Without [loadbalancer] external_ips the address is not honoured.
    steal_and_count(&lb, &steal);
    assert!(
        has_diagnostic(
            &lb,
            "externalIPs entry 127.0.0.1 is outside [loadbalancer] external_ips"
        ),
        "{:?}",
        diagnostics(&lb)
    );
    // With the address allowed, the Service still loses: lb.toml's
    // listeners always win, whatever the Service's age.
    drop(lb);
    let lb = Lb::start(
        "own-extip-allowed",
        &[("base.yaml", &base)],
        "[loadbalancer]\nexternal_ips = [\"127.0.0.0/8\"]\n",
    );
    steal_and_count(&lb, &steal);
    assert!(
        has_diagnostic(&lb, "belongs to the [ingress] http listener of lb.toml"),
        "{:?}",
        diagnostics(&lb)
    );
    assert_eq!(lb.metric("lb_listener_conflicts{kind=\"service\"}"), 1);
    // lb check reports the same loser.
    let (_, out) = lb_check(&lb.config_path());
    assert!(
        out.contains("belongs to the [ingress] http listener of lb.toml"),
        "{out}"
    );
}

/// A GatewayClass of lb's, and Gateway `gw` created at `created` asking for
/// `ip` with HTTP listeners on ports `a` and `b`.
fn gateway(ip: Ipv4Addr, a: u16, b: u16, created: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: lb}}\nspec: {{controllerName: lb.example.com/gateway-controller}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default, creationTimestamp: \"{created}\"}}\nspec:\n  gatewayClassName: lb\n  addresses: [{{value: \"{ip}\"}}]\n  listeners:\n  - {{name: contested, port: {a}, protocol: HTTP}}\n  - {{name: free, port: {b}, protocol: HTTP}}\n"
    )
}

/// A LoadBalancer Service `db` created at `created` asking for `ip`, port
/// `port`, endpoint `backend`.
fn lb_service(ip: Ipv4Addr, port: u16, created: &str, backend: SocketAddr) -> String {
    l4_service(
        "db",
        "LoadBalancer",
        port,
        &format!("  loadBalancerIP: {ip}\n"),
        &[backend],
    )
    .replacen(
        "metadata: {name: db, namespace: default}",
        &format!("metadata: {{name: db, namespace: default, creationTimestamp: \"{created}\"}}"),
        1,
    )
}

#[test]
fn a_gateway_listener_and_an_older_service_on_one_port_the_older_serves() {
    let svc_backend = EchoServer::start("127.0.0.1:0".parse().unwrap(), "svc").expect("echo");
    let ip = unique_ip();
    let (contested, free) = (free_port(), free_port());
    let at = |port| SocketAddr::new(IpAddr::V4(ip), port);
    const OLD: &str = "2020-01-01T00:00:00Z";
    const NEW: &str = "2025-01-01T00:00:00Z";
    let manifests = |svc_created: &str, gw_created: &str| {
        format!(
            "{}---\n{}",
            lb_service(ip, contested, svc_created, svc_backend.local_addr()),
            gateway(ip, contested, free, gw_created)
        )
    };
    let lb = Lb::start(
        "own-gw-svc",
        &[("test.yaml", &manifests(OLD, NEW))],
        &format!("[loadbalancer]\npools = [\"{ip}/32\"]\n"),
    );
    // The older Service keeps the port; the Gateway's listener is refused
    // with the spec's reason, its other listener serves.
    assert_eq!(
        tally(at(contested), "x", 20),
        BTreeMap::from([("200 svc".into(), 20)])
    );
    let st = object_status(&lb, "Gateway", "default", "gw");
    let listener = |name: &str| {
        st["listeners"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no listener {name}: {st:#}"))
    };
    assert_eq!(
        condition(&listener("contested")["conditions"], "Accepted"),
        ("False".into(), "PortUnavailable".into()),
        "{st:#}"
    );
    let message = listener("contested")["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted").cloned())
        .unwrap();
    assert!(
        message["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Service default/db"),
        "{message:#}"
    );
    assert_eq!(
        condition(&listener("free")["conditions"], "Programmed"),
        ("True".into(), "Programmed".into())
    );
    assert_eq!(
        ask(at(free), "x").0,
        404,
        "the Gateway's free listener serves"
    );
    // The Service's status lists the port it serves, without an error.
    let svc_ports = |lb: &Lb| {
        object_status(lb, "Service", "default", "db")["loadBalancer"]["ingress"][0]["ports"].clone()
    };
    assert_eq!(
        svc_ports(&lb),
        serde_json::json!([{"port": contested, "protocol": "TCP"}])
    );
    let first_conflicts = (
        lb.metric("lb_listener_conflicts{kind=\"gateway\"}"),
        lb.metric("lb_listener_conflicts{kind=\"service\"}"),
    );
    // The same objects, the Gateway now the older: it takes the port, the
    // Service is reported and no longer served there.
    let before = lb.generation();
    replace(&lb.manifest_path("test.yaml"), &manifests(NEW, OLD));
    lb.wait_generation_above(before, Duration::from_secs(10));
    let mut served = BTreeMap::new();
    for _ in 0..50 {
        served = tally(at(contested), "x", 20);
        if served == BTreeMap::from([("404 ".into(), 20)]) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        served,
        BTreeMap::from([("404 ".into(), 20)]),
        "the Gateway answers"
    );
    assert!(
        has_diagnostic(&lb, "belongs to Gateway default/gw"),
        "{:?}",
        diagnostics(&lb)
    );
    assert_eq!(
        first_conflicts,
        (1, 0),
        "(gateway, service) before the swap"
    );
    assert_eq!(lb.metric("lb_listener_conflicts{kind=\"service\"}"), 1);
    // The losing Service's status says so on the port (the Service API's
    // ports[].error).
    assert_eq!(
        svc_ports(&lb),
        serde_json::json!([{"port": contested, "protocol": "TCP", "error": "lb.example.com/PortConflict"}])
    );
    assert_eq!(lb.metric("lb_listener_conflicts{kind=\"gateway\"}"), 0);
    // The losing Service's status says so on the port (the Service API's
    // ports[].error).
    assert_eq!(
        svc_ports(&lb),
        serde_json::json!([{"port": contested, "protocol": "TCP", "error": "lb.example.com/PortConflict"}])
    );
}

#[test]
fn a_requested_vip_outside_every_pool_gets_no_address() {
    let backend = EchoServer::start("127.0.0.1:0".parse().unwrap(), "b").expect("echo");
    let port = free_port();
    let outside = unique_ip();
    let svc = l4_service(
        "hijack",
        "LoadBalancer",
        port,
        &format!("  loadBalancerIP: {outside}\n"),
        &[backend.local_addr()],
    );
    let pool = "127.0.101.0/29";
    let extra = format!("[loadbalancer]\npools = [\"{pool}\"]\n");
    let lb = Lb::start("own-outside-pool", &[("svc.yaml", &svc)], &extra);
    let addr = SocketAddr::new(IpAddr::V4(outside), port);
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "{addr} must not be served"
    );
    assert!(
        has_diagnostic(
            &lb,
            &format!("spec.loadBalancerIP: {outside} is outside every [loadbalancer] pool")
        ),
        "{:?}",
        diagnostics(&lb)
    );
    // No status grants it (the entry's diagnostics name it, its status does not).
    let status = admin_get(lb.admin, "/status").expect("/status").json();
    let granted: Vec<&serde_json::Value> = status
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e.get("status"))
        .collect();
    assert!(
        !serde_json::to_string(&granted)
            .unwrap()
            .contains(&outside.to_string()),
        "no status names the refused address: {status:#}"
    );
    // lb check reports it as an error.
    let (code, out) = lb_check(&lb.config_path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("outside every [loadbalancer] pool"), "{out}");
}
