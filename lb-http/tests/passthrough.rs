//! End-to-end tests of TLS passthrough on a Gateway `TLS` port: a real
//! rustls client, lb on the worker runtime, and two rustls echo backends
//! with their own self-signed certificates (made with the openssl command).
//! The certificate the client sees proves which backend answered, and that
//! lb did not terminate the session.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lb_http::gateway::{
    GatewayListener, GatewayPort, GatewayRouteTable, HostnameMatch, PortProtocol, RouteRef,
    RuleAction, SniRoute, TargetId, WeightedBackend,
};
use lb_http::tls::CertIndex;
use lb_http::{ApplianceSnapshot, Backend, BackendId, ProxySettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use support::Proxy;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A self-signed certificate for `name`: (certificate DER, key PEM).
fn self_signed(dir: &Path, name: &str) -> (CertificateDer<'static>, Vec<u8>) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success(), "openssl req failed");
    let cert = CertificateDer::from_pem_file(&crt).unwrap();
    (cert, std::fs::read(&key).unwrap())
}

/// An address on loopback nobody listens on.
fn dead_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A TLS echo server on loopback presenting `cert`.
fn tls_echo(cert: CertificateDer<'static>, key_pem: &[u8]) -> SocketAddr {
    let key = PrivateKeyDer::from_pem_slice(key_pem).unwrap();
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                let conn = ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut buf = [0u8; 16384];
                while let Ok(n @ 1..) = tls.read(&mut buf) {
                    if tls.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The snapshot: a TLS passthrough port at `at` with one Listener per name,
/// each with one TLSRoute to its own backend.
fn snapshot(at: SocketAddr, backends: &[(&str, Vec<SocketAddr>)]) -> ApplianceSnapshot {
    let mut snap = ApplianceSnapshot::default();
    let mut listeners = Vec::new();
    for (i, (name, endpoints)) in backends.iter().enumerate() {
        snap.backends.push(Backend {
            name: format!("default/{name}:443"),
            endpoints: endpoints.clone(),
            protocol: Default::default(),
            policy: Default::default(),
            health: None,
        });
        snap.gateway.actions.push(RuleAction {
            name: format!("TLSRoute default/{name} rule 0"),
            backends: vec![WeightedBackend {
                backend: Some(BackendId(i as u32)),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        });
        let hostname = HostnameMatch::parse(name).unwrap();
        listeners.push(GatewayListener {
            name: format!("default/gw/{name}"),
            hostname: Some(hostname.clone()),
            routes: GatewayRouteTable::build(Vec::new()),
            sni_routes: vec![SniRoute {
                hostnames: vec![hostname],
                route: RouteRef {
                    namespace: "default".into(),
                    name: (*name).into(),
                    rule_index: 0,
                    match_index: 0,
                    created: 0,
                },
                target: TargetId(i as u32),
            }],
        });
    }
    snap.gateway.ports.insert(
        at,
        GatewayPort {
            protocol: PortProtocol::TlsPassthrough,
            tls: CertIndex::default(),
            listeners,
            source_ranges: None,
        },
    );
    snap
}

/// A TLS client trusting `roots`, connected through lb with server name
/// `name`.
fn tls_client(
    lb: SocketAddr,
    roots: &[CertificateDer<'static>],
    name: &str,
) -> rustls::StreamOwned<ClientConnection, TcpStream> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let server = ServerName::try_from(name.to_owned()).unwrap();
    let conn = ClientConnection::new(Arc::new(config), server).unwrap();
    let tcp = TcpStream::connect(lb).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Sends `data` in pieces and reads each echoed back.
fn echo_round_trip(tls: &mut rustls::StreamOwned<ClientConnection, TcpStream>, data: &[u8]) {
    for piece in data.chunks(16 * 1024) {
        tls.write_all(piece).unwrap();
        let mut back = vec![0u8; piece.len()];
        tls.read_exact(&mut back).unwrap();
        assert_eq!(back, piece);
    }
}

struct Setup {
    proxy: Proxy,
    certs: Vec<CertificateDer<'static>>,
}

/// Backends for `a.example.com` (with `dead_a` unreachable endpoints
/// first) and `b.example.com`, and lb in front.
fn setup(tag: &str, dead_a: usize) -> Setup {
    let dir = std::env::temp_dir().join(format!("lb-passthrough-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = self_signed(&dir, "a.example.com");
    let b = self_signed(&dir, "b.example.com");
    let _ = std::fs::remove_dir_all(&dir);
    let a_addr = tls_echo(a.0.clone(), &a.1);
    let b_addr = tls_echo(b.0.clone(), &b.1);
    let proxy = Proxy::start_gateway(
        |at| {
            snapshot(
                at,
                &[
                    (
                        "a.example.com",
                        (0..dead_a).map(|_| dead_addr()).chain([a_addr]).collect(),
                    ),
                    ("b.example.com", vec![b_addr]),
                ],
            )
        },
        ProxySettings::default(),
    );
    Setup {
        proxy,
        certs: vec![a.0, b.0],
    }
}

#[test]
fn sni_picks_the_backend_and_bytes_round_trip() {
    let s = setup("route", 0);
    for (i, name) in ["a.example.com", "b.example.com"].iter().enumerate() {
        let mut tls = tls_client(s.proxy.addr, &s.certs, name);
        echo_round_trip(&mut tls, format!("hello {name}").as_bytes());
        let seen = tls.conn.peer_certificates().unwrap();
        assert_eq!(seen[0], s.certs[i], "{name} is answered by its own backend");
        let data = support::pattern(256 * 1024);
        echo_round_trip(&mut tls, &data);
        tls.conn.send_close_notify();
        let _ = tls.flush();
    }
    let k = s.proxy.counters.worker(0);
    assert_eq!(k.l4_connections.get(), 2);
    assert_eq!(k.accepted_connections.get(), 2);
    s.proxy.stop();
}

#[test]
fn unknown_or_missing_sni_and_garbage_are_closed() {
    let s = setup("closed", 0);
    // Unknown name, and an IP address (no SNI at all).
    for name in ["c.example.com", "127.0.0.1"] {
        let mut tls = tls_client(s.proxy.addr, &s.certs, name);
        let r = tls.write_all(b"x").and_then(|()| tls.read(&mut [0u8; 16]));
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "{name}: connection closed, got {r:?}"
        );
        assert!(
            tls.conn.peer_certificates().is_none(),
            "{name}: no server spoke"
        );
    }
    // Plain HTTP on a TLS port.
    let mut tcp = TcpStream::connect(s.proxy.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
        .unwrap();
    assert!(matches!(tcp.read(&mut [0u8; 16]), Ok(0) | Err(_)));
    let k = s.proxy.counters.worker(0);
    assert_eq!(k.l4_unserved.get(), 1, "unknown SNI");
    assert_eq!(k.tls_handshake_errors.get(), 2, "no SNI, not TLS");
    assert_eq!(k.l4_connections.get(), 0);
    // Every connection closed: the gauge is back to zero.
    for _ in 0..100 {
        if k.active_connections.get() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(k.active_connections.get(), 0);
    s.proxy.stop();
}

#[test]
fn a_relayed_connection_survives_drain() {
    let s = setup("drain", 0);
    let mut tls = tls_client(s.proxy.addr, &s.certs, "a.example.com");
    echo_round_trip(&mut tls, b"before");
    s.proxy.drain.drain();
    std::thread::sleep(Duration::from_millis(100));
    echo_round_trip(&mut tls, b"after drain began");
    drop(tls);
    for h in s.proxy.handles {
        let _ = h.join();
    }
}

#[test]
fn connect_failures_move_on_to_the_next_endpoint() {
    let s = setup("failover", 1);
    for i in 0..4 {
        let mut tls = tls_client(s.proxy.addr, &s.certs, "a.example.com");
        echo_round_trip(&mut tls, format!("try {i}").as_bytes());
        assert_eq!(tls.conn.peer_certificates().unwrap()[0], s.certs[0]);
    }
    let k = s.proxy.counters.worker(0);
    assert!(k.upstream_errors.get() >= 1, "the dead endpoint was tried");
    assert_eq!(k.l4_connections.get(), 4);
    assert_eq!(k.l4_unserved.get(), 0);
    s.proxy.stop();
}
