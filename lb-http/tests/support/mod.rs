//! Test support: a tiny threaded HTTP/1.1 backend, a blocking HTTP client and
//! a helper that runs `HttpProxy` on lb_core's worker runtime.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use lb_core::counters::CounterSet;
use lb_core::listener::bind_per_worker;
use lb_core::runtime::{DrainController, WorkerPlan, start};
use lb_core::snapshot::SnapshotCell;
use lb_http::h1::chunked::{Chunk, ChunkedDecoder};
use lb_http::{
    ApplianceSnapshot, Backend, BackendId, HostMatch, HttpProxy, PathKind, ProxySettings,
    RouteTableBuilder, RouteTarget,
};

/// FNV-1a, enough to compare bodies.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// Deterministic body bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// A parsed HTTP message as seen by the test code.
#[derive(Debug, Clone)]
pub struct Message {
    /// Request line or status line.
    pub start: String,
    /// Status code (responses).
    pub status: u16,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
    /// Decoded body.
    pub body: Vec<u8>,
    /// The raw head.
    pub raw_head: String,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads until `buf` holds a complete head; returns its length or None on EOF.
fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<usize> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(pos + 4);
        }
        let mut tmp = [0u8; 16384];
        match stream.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> bool {
    let mut tmp = [0u8; 65536];
    match stream.read(&mut tmp) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

/// Reads one message (head + body). `no_body` forces an empty body (HEAD,
/// 204, 304); `until_close` allows a body delimited by EOF.
pub fn read_message(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    response: bool,
    head_request: bool,
) -> Option<Message> {
    let len = read_head(stream, buf)?;
    let raw = buf.split_to(len);
    let raw_head = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = raw_head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let status = if response {
        start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    } else {
        0
    };
    let mut msg = Message {
        start,
        status,
        headers,
        body: Vec::new(),
        raw_head,
    };
    let no_body = head_request || (response && (status < 200 || status == 204 || status == 304));
    if no_body {
        return Some(msg);
    }
    if msg
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut dec = ChunkedDecoder::new();
        loop {
            match dec.decode(buf).expect("valid chunked body") {
                Some(Chunk::Data(n)) => {
                    msg.body.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                }
                Some(Chunk::End) => break,
                None => {
                    if !fill(stream, buf) {
                        return None;
                    }
                }
            }
        }
    } else if let Some(cl) = msg.header("content-length") {
        let n: usize = cl.parse().expect("numeric content-length");
        while buf.len() < n {
            if !fill(stream, buf) {
                return None;
            }
        }
        msg.body = buf.split_to(n).to_vec();
    } else if response {
        while fill(stream, buf) {}
        msg.body = buf.split().to_vec();
    }
    Some(msg)
}

/// What the backend records.
#[derive(Debug, Default)]
pub struct BackendStats {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
    pub last_head: Mutex<String>,
}

/// A threaded test backend on 127.0.0.1.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub stats: Arc<BackendStats>,
}

/// Backend behaviour switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendMode {
    /// Serve one request per connection, then close (without saying so)
    /// when the next request arrives, without answering it.
    pub one_request_per_connection: bool,
}

impl TestBackend {
    pub fn start(mode: BackendMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(BackendStats::default());
        let s = Arc::clone(&stats);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve_backend(stream, s, mode));
            }
        });
        Self { addr, stats }
    }

    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }
}

fn query_num(target: &str, key: &str) -> usize {
    target
        .split_once('?')
        .and_then(|(_, q)| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn serve_backend(mut stream: TcpStream, stats: Arc<BackendStats>, mode: BackendMode) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::new();
    let mut served = 0;
    loop {
        // Peek the head first to honour Expect: 100-continue before the body.
        let Some(len) = read_head(&mut stream, &mut buf) else {
            return;
        };
        if mode.one_request_per_connection && served == 1 {
            return;
        }
        let head = String::from_utf8_lossy(&buf[..len]).into_owned();
        if head
            .to_ascii_lowercase()
            .contains("\r\nexpect: 100-continue")
        {
            let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n");
        }
        let Some(req) = read_message(&mut stream, &mut buf, false, false) else {
            return;
        };
        served += 1;
        stats.requests.fetch_add(1, Ordering::SeqCst);
        *stats.last_head.lock().unwrap() = req.raw_head.clone();
        let target = req.start.split(' ').nth(1).unwrap_or("/").to_owned();
        let path = target.split('?').next().unwrap_or("/");
        let mut out = Vec::new();
        match path {
            "/headers" => {
                let body = req.raw_head.as_bytes();
                out.extend(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: X-Resp-Hop\r\nX-Resp-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
            }
            "/body" => {
                let body = format!("len={} sum={:x}", req.body.len(), checksum(&req.body));
                out.extend(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
            "/chunked" => {
                let data = pattern(query_num(&target, "n"));
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                let mut size = 1;
                for piece in data.chunks(7919) {
                    size += 1;
                    out.extend(format!("{:X};ext={size}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
            }
            "/length" => {
                let data = pattern(query_num(&target, "n"));
                out.extend(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len()).as_bytes(),
                );
                out.extend_from_slice(&data);
            }
            "/slow" => {
                std::thread::sleep(Duration::from_millis(query_num(&target, "ms") as u64));
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow");
            }
            "/nocontent" => out.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n"),
            "/notmodified" => {
                out.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
            }
            "/close" => {
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\nuntil-close body");
                let _ = stream.write_all(&out);
                return;
            }
            _ => {
                let body = if req.start.starts_with("HEAD ") {
                    ""
                } else {
                    "ok"
                };
                out.extend(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{body}").as_bytes(),
                );
            }
        }
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

/// A running proxy with one worker.
pub struct Proxy {
    pub addr: SocketAddr,
    pub drain: DrainController,
    pub counters: Arc<CounterSet>,
    pub cell: Arc<SnapshotCell<ApplianceSnapshot>>,
    pub handles: Vec<JoinHandle<()>>,
}

/// Routes: `app.test` -> `app`, `empty.test` -> no endpoints, `dead.test` -> a
/// port nobody listens on. Other hosts: 404.
pub fn snapshot(app: SocketAddr) -> ApplianceSnapshot {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut b = RouteTableBuilder::new();
    for (i, host) in ["app.test", "empty.test", "dead.test"].iter().enumerate() {
        let target = RouteTarget {
            backend: BackendId(i as u32),
            source: format!("test {host}").into(),
            source_ranges: None,
        };
        b.add(HostMatch::parse(host), "/", PathKind::Prefix, target)
            .unwrap();
    }
    ApplianceSnapshot {
        routes: b.build(),
        backends: vec![
            Backend {
                name: "app".into(),
                endpoints: vec![app],
                protocol: Default::default(),
                policy: Default::default(),
                health: None,
            },
            Backend {
                name: "empty".into(),
                endpoints: vec![],
                protocol: Default::default(),
                policy: Default::default(),
                health: None,
            },
            Backend {
                name: "dead".into(),
                endpoints: vec![dead],
                protocol: Default::default(),
                policy: Default::default(),
                health: None,
            },
        ],
        ..ApplianceSnapshot::default()
    }
}

/// The I/O mode under test: `LB_TEST_IO=epoll|uring`, else what `auto` picks.
pub fn test_io() -> lb_core::stream::IoMode {
    use lb_core::runtime::{IoSetting, resolve_io};
    let setting = match std::env::var("LB_TEST_IO").as_deref() {
        Ok("epoll") => IoSetting::Epoll,
        Ok("uring") => IoSetting::Uring,
        _ => IoSetting::Auto,
    };
    resolve_io(setting)
        .expect("the I/O mode under test is available")
        .0
}

impl Proxy {
    pub fn start(snapshot: ApplianceSnapshot, settings: ProxySettings) -> Self {
        Self::start_on(|_| snapshot, settings, |proxy| proxy)
    }

    /// A one-worker proxy on a fresh loopback port: `snapshot` is made once
    /// the listening address is known, and `handler` wraps each worker's
    /// proxy into the connection handler the worker runs.
    fn start_on<H: lb_core::runtime::ConnectionHandler>(
        snapshot: impl FnOnce(SocketAddr) -> ApplianceSnapshot,
        settings: ProxySettings,
        handler: fn(HttpProxy) -> H,
    ) -> Self {
        let listeners = bind_per_worker(&["127.0.0.1:0".parse().unwrap()], 1).unwrap();
        let addr = listeners[0][0].local_addr().unwrap();
        let (drain, rx) = DrainController::new();
        let plan = WorkerPlan {
            listeners,
            drain: rx,
            grace: Duration::from_secs(5),
            io: test_io(),
            pin: false,
            commands: Vec::new(),
            progress: Arc::new(lb_core::progress::Progress::new(1)),
            limits: Default::default(),
            counters: None,
        };
        let cell = Arc::new(SnapshotCell::new(snapshot(addr)));
        let counters = Arc::new(CounterSet::new(1));
        let (c, k) = (Arc::clone(&cell), Arc::clone(&counters));
        let handles = start(plan, move |w| {
            handler(HttpProxy::new(
                Arc::clone(&c),
                Arc::clone(&k),
                w,
                settings.clone(),
            ))
        })
        .unwrap();
        Self {
            addr,
            drain,
            counters,
            cell,
            handles,
        }
    }

    pub fn connect(&self) -> Client {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let _ = stream.set_nodelay(true);
        Client {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub fn stop(self) {
        self.drain.drain();
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// A blocking client connection.
pub struct Client {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl Client {
    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).unwrap();
    }

    pub fn read(&mut self, head_request: bool) -> Option<Message> {
        read_message(&mut self.stream, &mut self.buf, true, head_request)
    }

    pub fn request(&mut self, raw: &[u8]) -> Message {
        self.send(raw);
        let head = raw.starts_with(b"HEAD ");
        self.read(head).expect("a response")
    }

    /// Whether the proxy closed the connection (EOF with nothing pending).
    pub fn is_closed(&mut self) -> bool {
        let mut tmp = [0u8; 1];
        self.buf.is_empty() && matches!(self.stream.read(&mut tmp), Ok(0) | Err(_))
    }
}

/// Serves every connection of a worker as a Gateway connection.
pub struct GatewayHandler(pub std::rc::Rc<HttpProxy>);

impl lb_core::runtime::ConnectionHandler for GatewayHandler {
    async fn serve(
        self: std::rc::Rc<Self>,
        conn: lb_core::runtime::Accepted,
        drain: lb_core::runtime::Drain,
    ) {
        std::rc::Rc::clone(&self.0).serve_gateway(conn, drain).await
    }
}

impl Proxy {
    /// A one-worker proxy whose listener is a Gateway listener; the
    /// snapshot is made once the listening address is known.
    pub fn start_gateway(
        snapshot: impl FnOnce(SocketAddr) -> ApplianceSnapshot,
        settings: ProxySettings,
    ) -> Self {
        Self::start_on(snapshot, settings, |proxy| {
            GatewayHandler(std::rc::Rc::new(proxy))
        })
    }
}
