//! End-to-end tests of `HttpProxy` over real loopback sockets, driven through
//! lb_core's worker runtime, against a small threaded backend.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use lb_http::ProxySettings;
use support::{BackendMode, Proxy, TestBackend, checksum, pattern, snapshot};

fn setup() -> (TestBackend, Proxy) {
    setup_with(BackendMode::default(), ProxySettings::default())
}

fn setup_with(mode: BackendMode, settings: ProxySettings) -> (TestBackend, Proxy) {
    let backend = TestBackend::start(mode);
    let proxy = Proxy::start(snapshot(backend.addr), settings);
    (backend, proxy)
}

#[test]
fn routes_and_error_statuses() {
    let (backend, proxy) = setup();
    let mut c = proxy.connect();
    let r = c.request(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    let r = c.request(b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n");
    assert_eq!((r.status, &r.body[..]), (404, &b"404 Not Found\n"[..]));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = c.request(b"GET / HTTP/1.1\r\nHost: EMPTY.test:8080\r\n\r\n");
    assert_eq!(r.status, 503);
    let r = c.request(b"GET / HTTP/1.1\r\nHost: dead.test\r\n\r\n");
    assert_eq!((r.status, &r.body[..]), (502, &b"502 Bad Gateway\n"[..]));
    // Absolute-form authority routes too; the connection survived all errors.
    let r = c.request(b"GET http://app.test/x HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(
        backend
            .stats
            .last_head
            .lock()
            .unwrap()
            .starts_with("GET /x HTTP/1.1\r\n")
    );
    let k = proxy.counters.worker(0);
    assert_eq!(k.responses[1].get(), 2);
    assert_eq!(k.responses[3].get(), 1);
    assert_eq!(k.responses[4].get(), 2);
    assert_eq!(k.upstream_errors.get(), 1);
    assert_eq!(k.active_connections.get(), 1);
    drop(c);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(k.active_connections.get(), 0);
    proxy.stop();
}

#[test]
fn keep_alive_thousand_requests_reuse_one_upstream_connection() {
    let (backend, proxy) = setup();
    let mut c = proxy.connect();
    for i in 0..1000 {
        let r = c.request(format!("GET /n{i} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes());
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]), "request {i}");
    }
    assert_eq!(backend.requests(), 1000);
    assert_eq!(backend.connections(), 1, "upstream keep-alive reused");
    // Pipelined requests are answered in order.
    c.send(b"GET /a HTTP/1.1\r\nHost: app.test\r\n\r\nGET /length?n=3 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(c.read(false).unwrap().body, b"ok");
    assert_eq!(c.read(false).unwrap().body, pattern(3));
    proxy.stop();
}

#[test]
fn chunked_request_body_streams_intact() {
    let (_backend, proxy) = setup();
    let mut c = proxy.connect();
    let data = pattern(4 << 20);
    let mut wire =
        b"POST /body HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut sizes = [1usize, 100, 4096, 65536, 100_000].iter().cycle();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).min(rest.len());
        wire.extend(format!("{n:x};x=y\r\n").as_bytes());
        wire.extend_from_slice(&rest[..n]);
        wire.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    wire.extend_from_slice(b"0\r\nTrailer-Field: v\r\n\r\n");
    let writer = {
        let mut s = c.stream.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&wire).unwrap())
    };
    let r = c.read(false).unwrap();
    writer.join().unwrap();
    let expect = format!("len={} sum={:x}", data.len(), checksum(&data));
    assert_eq!(
        (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        (200, expect)
    );
    proxy.stop();
}

#[test]
fn chunked_and_length_responses_stream_intact() {
    let (_backend, proxy) = setup();
    let mut c = proxy.connect();
    let n = 3 << 20;
    let r = c.request(format!("GET /chunked?n={n} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes());
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(checksum(&r.body), checksum(&pattern(n)));
    let r = c.request(format!("GET /length?n={n} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes());
    assert_eq!(r.header("content-length"), Some(n.to_string().as_str()));
    assert_eq!(checksum(&r.body), checksum(&pattern(n)));
    // Content-Length request bodies, small (sent with the head) and large.
    for size in [10usize, 2 << 20] {
        let data = pattern(size);
        let mut wire =
            format!("PUT /body HTTP/1.1\r\nHost: app.test\r\nContent-Length: {size}\r\n\r\n")
                .into_bytes();
        wire.extend_from_slice(&data);
        let writer = {
            let mut s = c.stream.try_clone().unwrap();
            std::thread::spawn(move || s.write_all(&wire).unwrap())
        };
        let r = c.read(false).unwrap();
        writer.join().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            format!("len={size} sum={:x}", checksum(&data))
        );
    }
    proxy.stop();
}

#[test]
fn http10_client_gets_raw_body_and_close() {
    let (_backend, proxy) = setup();
    let mut c = proxy.connect();
    let r = c.request(b"GET /chunked?n=5000 HTTP/1.0\r\nHost: app.test\r\n\r\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.body, pattern(5000));
    let mut c = proxy.connect();
    let r = c.request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    // No Host on HTTP/1.0 routes to nothing here: 404 but kept alive.
    assert_eq!(r.status, 404);
    let r = c.request(b"GET / HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    // A close-delimited upstream response closes downstream too.
    let r = c.request(b"GET /close HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(
        (r.header("connection"), &r.body[..]),
        (Some("close"), &b"until-close body"[..])
    );
    proxy.stop();
}

#[test]
fn forwarded_headers_and_hop_by_hop_removal() {
    let (_backend, proxy) = setup();
    let mut c = proxy.connect();
    let r = c.request(
        b"GET /headers?q=1 HTTP/1.1\r\nHost: App.Test:80\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n\
Keep-Alive: 300\r\nTE: trailers\r\nUpgrade: websocket\r\nProxy-Connection: keep-alive\r\n\
Proxy-Authorization: Basic Zm9v\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Custom: a\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = String::from_utf8(r.body.clone()).unwrap();
    assert_eq!(
        seen,
        "GET /headers?q=1 HTTP/1.1\r\nHost: App.Test:80\r\nProxy-Authorization: Basic Zm9v\r\nX-Custom: a\r\n\
X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: App.Test:80\r\n\r\n"
    );
    // Response hop-by-hop fields are removed too.
    assert_eq!(r.header("x-resp-hop"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("connection"), None);
    assert_eq!(r.header("x-kept"), Some("1"));
    proxy.stop();
}

#[test]
fn smuggling_shapes_are_rejected_before_any_upstream_request() {
    let (backend, proxy) = setup();
    let cases: &[(&[u8], u16)] = &[
        (b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
        (b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0x5\r\n\r\nhello", 400),
        (b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : app.test\r\n\r\n", 400),
        (b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test\r\n\r\n", 501),
    ];
    for (raw, status) in cases {
        let mut c = proxy.connect();
        let r = c.request(raw);
        assert_eq!(r.status, *status, "{}", String::from_utf8_lossy(raw));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.is_closed());
    }
    assert_eq!(backend.requests(), 0, "the backend saw no request");
    // An invalid chunk size while streaming: 400 to the client.
    let mut c = proxy.connect();
    let r = c.request(b"POST /body HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
    assert_eq!(r.status, 400);
    proxy.stop();
}

#[test]
fn oversized_head_gets_431_and_slow_head_408() {
    let settings = ProxySettings {
        header_read_timeout: Duration::from_millis(300),
        max_header_bytes: 8192,
        ..ProxySettings::default()
    };
    let (backend, proxy) = setup_with(BackendMode::default(), settings);
    let mut c = proxy.connect();
    let mut raw = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 10_000));
    raw.extend_from_slice(b"\r\n\r\n");
    let r = c.request(&raw);
    assert_eq!(r.status, 431);
    let mut c = proxy.connect();
    let mut raw = b"GET / HTTP/1.1\r\nHost: app.test\r\n".to_vec();
    for i in 0..150 {
        raw.extend(format!("X-{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    assert_eq!(c.request(&raw).status, 431);
    let mut c = proxy.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: app");
    let start = Instant::now();
    let r = c.read(false).unwrap();
    assert_eq!(r.status, 408);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(backend.requests(), 0);
    proxy.stop();
}

#[test]
fn head_204_304_have_no_body_and_keep_alive() {
    let (_backend, proxy) = setup();
    let mut c = proxy.connect();
    let r = c.request(b"HEAD / HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!((r.status, r.header("content-length")), (200, Some("2")));
    let r = c.request(b"GET /nocontent HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!((r.status, r.header("content-length")), (204, None));
    let r = c.request(b"GET /notmodified HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!((r.status, r.header("content-length")), (304, Some("10")));
    let r = c.request(b"HEAD /nowhere HTTP/1.1\r\nHost: none.test\r\n\r\n");
    assert_eq!(r.status, 404);
    // Nothing stray was left on the connection.
    let r = c.request(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    proxy.stop();
}

#[test]
fn expect_continue_is_relayed() {
    let (_backend, proxy) = setup();
    let mut c = proxy.connect();
    c.send(b"POST /body HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read(false).unwrap();
    assert_eq!(interim.status, 100);
    assert_eq!(interim.header("x-interim"), Some("yes"));
    c.send(b"hello");
    let r = c.read(false).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!("len=5 sum={:x}", checksum(b"hello"))
    );
    proxy.stop();
}

#[test]
fn dead_pooled_connection_is_retried_once() {
    let (backend, proxy) = setup_with(
        BackendMode {
            one_request_per_connection: true,
        },
        ProxySettings::default(),
    );
    let mut c = proxy.connect();
    for i in 0..20 {
        let r = c.request(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n");
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(backend.requests(), 20);
    assert_eq!(
        backend.connections(),
        20,
        "each reuse attempt failed and was retried"
    );
    assert_eq!(proxy.counters.worker(0).upstream_errors.get(), 0);
    proxy.stop();
}

#[test]
fn drain_finishes_in_flight_request_and_closes_idle_connections() {
    let (_backend, proxy) = setup();
    let mut idle = proxy.connect();
    assert_eq!(
        idle.request(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .status,
        200
    );
    let mut busy = proxy.connect();
    busy.send(b"GET /slow?ms=600 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    std::thread::sleep(Duration::from_millis(150));
    proxy.drain.drain();
    let start = Instant::now();
    assert!(
        idle.is_closed(),
        "idle keep-alive connection closed on drain"
    );
    assert!(start.elapsed() < Duration::from_millis(500));
    let r = busy.read(false).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"slow"[..]));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(busy.is_closed());
    for h in proxy.handles {
        h.join().unwrap();
    }
}

#[test]
fn slow_upstream_response_head_gets_504() {
    let settings = ProxySettings {
        response_timeout: Duration::from_millis(200),
        ..ProxySettings::default()
    };
    let (_backend, proxy) = setup_with(BackendMode::default(), settings);
    let mut c = proxy.connect();
    let r = c.request(b"GET /slow?ms=1000 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(r.status, 504);
    assert_eq!(proxy.counters.worker(0).upstream_errors.get(), 1);
    // The connection is still usable; the timed-out upstream one is not reused.
    let r = c.request(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(r.status, 200);
    proxy.stop();
}
