//! End-to-end tests of Gateway API routing in `HttpProxy::serve_gateway`
//! over real loopback sockets: weights, filters, redirects, rewrites, fixed
//! statuses, Listener selection, timeouts, mirrors and HTTP/2.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb_http::gateway::{
    GatewayListener, GatewayPort, GatewayRouteTable, GatewaySnapshot, HeaderModifier,
    HostnameMatch, PathMatch, PathModifier, PortProtocol, Redirect, Rewrite, RouteEntry,
    RouteMatch, RouteRef, RuleAction, TargetId, WeightedBackend,
};
use lb_http::tls::CertIndex;
use lb_http::{ApplianceSnapshot, Backend, BackendId, ProxySettings};
use support::{BackendMode, Proxy, TestBackend};

fn backend(name: &str, addr: SocketAddr) -> Backend {
    Backend {
        name: name.into(),
        endpoints: vec![addr],
        protocol: Default::default(),
        policy: Default::default(),
        health: None,
    }
}

/// A match on `path` for `hosts` (empty: any) going to action `target`.
fn entry(hosts: &[&str], path: PathMatch, target: u32) -> RouteEntry {
    RouteEntry {
        hostnames: hosts
            .iter()
            .map(|h| HostnameMatch::parse(h).unwrap())
            .collect(),
        rule_match: RouteMatch::new(path, None, Vec::new(), Vec::new()),
        route: RouteRef {
            namespace: "ns".into(),
            name: format!("route-{target}"),
            rule_index: target,
            match_index: 0,
            created: 0,
        },
        target: TargetId(target),
    }
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::PathPrefix(p.into())
}

fn to(backend: u32) -> RuleAction {
    weighted(&[(backend, 1)])
}

fn weighted(list: &[(u32, u32)]) -> RuleAction {
    RuleAction {
        name: "test".into(),
        backends: list
            .iter()
            .map(|&(b, weight)| WeightedBackend {
                backend: Some(BackendId(b)),
                weight,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn modifier(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderModifier {
    let pairs = |l: &[(&str, &str)]| {
        l.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    HeaderModifier {
        set: pairs(set),
        add: pairs(add),
        remove: remove.iter().map(|s| s.to_string()).collect(),
    }
}

/// One HTTP Gateway port on the proxy's address with `listeners`
/// (hostname, entries), most specific first.
fn snapshot(
    addr: SocketAddr,
    backends: Vec<Backend>,
    listeners: Vec<(Option<&str>, Vec<RouteEntry>)>,
    actions: Vec<RuleAction>,
) -> ApplianceSnapshot {
    let listeners = listeners
        .into_iter()
        .enumerate()
        .map(|(i, (host, entries))| GatewayListener {
            name: format!("ns/gw/l{i}"),
            hostname: host.map(|h| HostnameMatch::parse(h).unwrap()),
            routes: GatewayRouteTable::build(entries),
            sni_routes: Vec::new(),
        })
        .collect();
    let mut gateway = GatewaySnapshot {
        actions,
        ..Default::default()
    };
    gateway.ports.insert(
        addr,
        GatewayPort {
            protocol: PortProtocol::Http,
            tls: CertIndex::default(),
            listeners,
            source_ranges: None,
        },
    );
    ApplianceSnapshot {
        backends,
        gateway,
        ..ApplianceSnapshot::default()
    }
}

/// A proxy with one catch-all Listener whose entries are `(path, action)`.
fn simple(
    backends: Vec<Backend>,
    routes: Vec<(PathMatch, RuleAction)>,
    settings: ProxySettings,
) -> Proxy {
    Proxy::start_gateway(
        move |addr| {
            let mut entries = Vec::new();
            let mut actions = Vec::new();
            for (i, (path, action)) in routes.into_iter().enumerate() {
                entries.push(entry(&[], path, i as u32));
                actions.push(action);
            }
            snapshot(addr, backends, vec![(None, entries)], actions)
        },
        settings,
    )
}

fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
fn weights_split_requests_and_weight_zero_gets_none() {
    let (a, b, c) = (
        TestBackend::start(BackendMode::default()),
        TestBackend::start(BackendMode::default()),
        TestBackend::start(BackendMode::default()),
    );
    let backends = vec![
        backend("a", a.addr),
        backend("b", b.addr),
        backend("c", c.addr),
    ];
    let proxy = simple(
        backends,
        vec![(prefix("/"), weighted(&[(0, 3), (1, 1), (2, 0)]))],
        ProxySettings::default(),
    );
    let mut client = proxy.connect();
    for i in 0..400 {
        let r = client.request(format!("GET /w{i} HTTP/1.1\r\nHost: w.test\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "request {i}");
    }
    // Binomial(400, 0.75): mean 300, sd ~8.7; five sd either way.
    let (na, nb) = (a.requests(), b.requests());
    assert_eq!(na + nb, 400);
    assert!((257..=343).contains(&na), "a got {na}, b got {nb}");
    assert_eq!(c.requests(), 0, "weight 0 is never chosen");
    proxy.stop();
}

#[test]
fn header_modifiers_reach_backend_and_client() {
    let app = TestBackend::start(BackendMode::default());
    let mut action = to(0);
    action.request_headers = modifier(
        &[("x-header-set", "set-overwrites-values")],
        &[("x-header-add-append", "header-val-2")],
        &["x-header-remove"],
    );
    action.backends[0].request_headers = modifier(&[("x-backend", "b1")], &[], &[]);
    action.response_headers = modifier(&[("x-kept", "changed")], &[("x-added", "r")], &[]);
    action.backends[0].response_headers = modifier(&[], &[], &["x-added"]);
    let mut second = to(0);
    second.response_headers = modifier(&[], &[("x-added", "only")], &[]);
    let proxy = simple(
        vec![backend("app", app.addr)],
        vec![
            (PathMatch::Exact("/headers".into()), action),
            (prefix("/"), second),
        ],
        ProxySettings::default(),
    );
    let mut c = proxy.connect();
    let r = c.request(
        b"GET /headers HTTP/1.1\r\nHost: h.test\r\nX-Header-Set: set-val\r\n\
X-Header-Remove: remove-val\r\nX-Header-Add-Append: append-val-1\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
    assert!(
        seen.contains("\r\nx-header-set: set-overwrites-values\r\n"),
        "{seen}"
    );
    assert!(!seen.contains("set-val\r\n"), "{seen}");
    assert!(!seen.contains("x-header-remove"), "{seen}");
    assert!(
        seen.contains("\r\nx-header-add-append: append-val-1\r\n"),
        "{seen}"
    );
    assert!(
        seen.contains("\r\nx-header-add-append: header-val-2\r\n"),
        "{seen}"
    );
    assert!(seen.contains("\r\nx-backend: b1\r\n"), "{seen}");
    // Response: rule sets and adds, the backend's filter removes the add.
    assert_eq!(r.header("x-kept"), Some("changed"));
    assert_eq!(r.header("x-added"), None);
    let r = c.request(b"GET /other HTTP/1.1\r\nHost: h.test\r\n\r\n");
    assert_eq!((r.status, r.header("x-added")), (200, Some("only")));
    proxy.stop();
}

#[test]
fn redirects_answer_with_exact_locations() {
    let redirect = |scheme: Option<&str>, host: Option<&str>, path, status| RuleAction {
        redirect: Some(Redirect {
            scheme: scheme.map(Into::into),
            hostname: host.map(Into::into),
            port: None,
            path,
            status,
        }),
        ..Default::default()
    };
    let proxy = simple(
        Vec::new(),
        vec![
            (
                prefix("/original-prefix"),
                redirect(
                    None,
                    None,
                    Some(PathModifier::ReplacePrefixMatch(
                        "/replacement-prefix".into(),
                    )),
                    302,
                ),
            ),
            (
                prefix("/secure"),
                redirect(Some("https"), Some("example.org"), None, 301),
            ),
        ],
        ProxySettings::default(),
    );
    let port = proxy.addr.port();
    let mut c = proxy.connect();
    let r = c.request(b"GET /original-prefix/lemon?x=1 HTTP/1.1\r\nHost: r.test:9999\r\n\r\n");
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").unwrap(),
        format!("http://r.test:{port}/replacement-prefix/lemon?x=1")
    );
    let r = c.request(b"GET /secure/a HTTP/1.1\r\nHost: r.test\r\n\r\n");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://example.org/secure/a"));
    assert!(r.body.is_empty());
    proxy.stop();
}

#[test]
fn rewrite_changes_upstream_path_and_host() {
    let app = TestBackend::start(BackendMode::default());
    let mut action = to(0);
    action.rewrite = Some(Rewrite {
        hostname: Some("internal.test".into()),
        path: Some(PathModifier::ReplacePrefixMatch("/headers".into())),
    });
    let mut full = to(0);
    full.rewrite = Some(Rewrite {
        hostname: None,
        path: Some(PathModifier::ReplaceFullPath("/headers".into())),
    });
    let proxy = simple(
        vec![backend("app", app.addr)],
        vec![(prefix("/rw"), action), (prefix("/full"), full)],
        ProxySettings::default(),
    );
    let mut c = proxy.connect();
    let r = c.request(b"GET /rw?y=1 HTTP/1.1\r\nHost: rw.test\r\n\r\n");
    assert_eq!(r.status, 200);
    let seen = String::from_utf8_lossy(&r.body).into_owned();
    assert!(seen.starts_with("GET /headers?y=1 HTTP/1.1\r\n"), "{seen}");
    assert!(seen.contains("\r\nHost: internal.test\r\n"), "{seen}");
    assert!(seen.contains("\r\nX-Forwarded-Host: rw.test\r\n"), "{seen}");
    let r = c.request(b"GET /full/a/b?z HTTP/1.1\r\nHost: rw.test\r\n\r\n");
    let seen = String::from_utf8_lossy(&r.body).into_owned();
    assert!(seen.starts_with("GET /headers?z HTTP/1.1\r\n"), "{seen}");
    assert!(seen.contains("\r\nHost: rw.test\r\n"), "{seen}");
    proxy.stop();
}

#[test]
fn fixed_status_invalid_backend_and_no_match() {
    let app = TestBackend::start(BackendMode::default());
    let fixed = RuleAction {
        fixed_status: Some(500),
        ..to(0)
    };
    let invalid = RuleAction {
        backends: vec![WeightedBackend {
            backend: None,
            weight: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    let proxy = simple(
        vec![backend("app", app.addr)],
        vec![
            (prefix("/fixed"), fixed),
            (prefix("/invalid"), invalid),
            (prefix("/zero"), weighted(&[(0, 0)])),
            (prefix("/ok"), to(0)),
        ],
        ProxySettings::default(),
    );
    let mut c = proxy.connect();
    for path in ["/fixed", "/invalid/x", "/zero"] {
        let r = c.request(format!("GET {path} HTTP/1.1\r\nHost: f.test\r\n\r\n").as_bytes());
        assert_eq!(r.status, 500, "{path}");
    }
    let r = c.request(b"GET /nothing HTTP/1.1\r\nHost: f.test\r\n\r\n");
    assert_eq!(r.status, 404);
    let r = c.request(b"GET /ok HTTP/1.1\r\nHost: f.test\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(app.requests(), 1);
    proxy.stop();
}

#[test]
fn listener_hostname_selects_routes_on_a_merged_port() {
    let (a, w, d) = (
        TestBackend::start(BackendMode::default()),
        TestBackend::start(BackendMode::default()),
        TestBackend::start(BackendMode::default()),
    );
    let backends = vec![
        backend("a", a.addr),
        backend("w", w.addr),
        backend("d", d.addr),
    ];
    let proxy = Proxy::start_gateway(
        move |addr| {
            snapshot(
                addr,
                backends,
                vec![
                    (Some("a.test"), vec![entry(&[], prefix("/a"), 0)]),
                    (Some("*.wild.test"), vec![entry(&[], prefix("/"), 1)]),
                    (None, vec![entry(&[], prefix("/"), 2)]),
                ],
                vec![to(0), to(1), to(2)],
            )
        },
        ProxySettings::default(),
    );
    let mut c = proxy.connect();
    let get = |c: &mut support::Client, host: &str, path: &str| {
        c.request(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .status
    };
    assert_eq!(get(&mut c, "A.test:80", "/a/x"), 200);
    assert_eq!(get(&mut c, "x.wild.test", "/"), 200);
    assert_eq!(get(&mut c, "other.test", "/"), 200);
    // The most specific Listener decides, even without a matching route.
    assert_eq!(get(&mut c, "a.test", "/b"), 404);
    assert_eq!((a.requests(), w.requests(), d.requests()), (1, 1, 1));
    proxy.stop();
}

#[test]
fn timeouts_answer_504() {
    let app = TestBackend::start(BackendMode::default());
    let request = RuleAction {
        request_timeout: Some(Duration::from_millis(300)),
        ..to(0)
    };
    let backend_t = RuleAction {
        backend_timeout: Some(Duration::from_millis(300)),
        ..to(0)
    };
    let backends = vec![backend("app", app.addr)];
    let proxy = Proxy::start_gateway(
        move |addr| {
            let entries = vec![
                entry(&["request.test"], prefix("/"), 0),
                entry(&["backend.test"], prefix("/"), 1),
            ];
            snapshot(
                addr,
                backends,
                vec![(None, entries)],
                vec![request, backend_t],
            )
        },
        ProxySettings::default(),
    );
    for host in ["request.test", "backend.test"] {
        let mut c = proxy.connect();
        let started = Instant::now();
        let r = c.request(format!("GET /slow?ms=1500 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(r.status, 504, "{host}");
        assert!(started.elapsed() < Duration::from_millis(1200), "{host}");
        // A fast request under the same rule is untouched.
        let r = c.request(format!("GET /slow?ms=10 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{host}");
    }
    proxy.stop();
}

#[test]
fn mirror_gets_a_copy_and_client_gets_main_response() {
    let (main, mirror) = (
        TestBackend::start(BackendMode::default()),
        TestBackend::start(BackendMode::default()),
    );
    let mut action = to(0);
    action.mirrors = vec![lb_http::gateway::Mirror::all(BackendId(1))];
    action.request_headers = modifier(&[("x-filtered", "yes")], &[], &[]);
    let proxy = simple(
        vec![backend("main", main.addr), backend("mirror", mirror.addr)],
        vec![(prefix("/"), action)],
        ProxySettings::default(),
    );
    let mut c = proxy.connect();
    let r = c.request(b"POST /m HTTP/1.1\r\nHost: m.test\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    assert!(
        wait_for(|| mirror.requests() == 1),
        "mirror saw the request"
    );
    let head = mirror.stats.last_head.lock().unwrap().clone();
    assert!(head.starts_with("POST /m HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("x-filtered: yes"), "{head}");
    assert_eq!(main.requests(), 1);
    proxy.stop();
}

#[test]
fn http2_request_routes_through_the_gateway_port() {
    let app = TestBackend::start(BackendMode::default());
    let mut action = to(0);
    action.rewrite = Some(Rewrite {
        hostname: None,
        path: Some(PathModifier::ReplacePrefixMatch("/headers".into())),
    });
    action.request_headers = modifier(&[("x-h2", "1")], &[], &[]);
    action.response_headers = modifier(&[("x-kept", "h2")], &[], &[]);
    let redirect = RuleAction {
        redirect: Some(Redirect {
            scheme: Some("https".into()),
            hostname: None,
            port: None,
            path: None,
            status: 302,
        }),
        ..Default::default()
    };
    let proxy = simple(
        vec![backend("app", app.addr)],
        vec![(prefix("/grpc.Svc"), action), (prefix("/go"), redirect)],
        ProxySettings::default(),
    );
    let addr = proxy.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, kept, body, redirect) = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::get("http://h2.test/grpc.Svc/Method?q=1")
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .unwrap()
            .unwrap();
        let status = resp.status().as_u16();
        let kept = resp
            .headers()
            .get("x-kept")
            .map(|v| v.to_str().unwrap().to_owned());
        let mut body = resp.into_body();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let mut send = send.ready().await.unwrap();
        let req = http::Request::get("http://h2.test/go/x").body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, kept, data, (resp.status().as_u16(), location))
    });
    assert_eq!(status, 200);
    assert_eq!(kept.as_deref(), Some("h2"));
    assert_eq!(body, b"ok");
    let seen = app.stats.last_head.lock().unwrap().clone();
    assert!(
        seen.starts_with("GET /headers/Method?q=1 HTTP/1.1\r\n"),
        "{seen}"
    );
    assert!(seen.contains("x-h2: 1"), "{seen}");
    assert!(seen.contains("Host: h2.test"), "{seen}");
    assert_eq!(redirect, (302, Some("https://h2.test/go/x".to_owned())));
    proxy.stop();
}
