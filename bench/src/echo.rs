//! The echo backend: a small HTTP/1.1 server used by integration tests, the demo and
//! benchmarks.
//!
//! Requests on one connection are handled strictly one after another (so pipelining is
//! safe), connections are kept alive, and request and response bodies are streamed, never
//! buffered whole. Every response carries `x-backend: <name>`.
//!
//! | target                | answer                                                        |
//! |-----------------------|---------------------------------------------------------------|
//! | any path              | 200, JSON describing the request (method, target, headers...) |
//! | `/status/<code>`      | that status, small JSON body                                  |
//! | `/bytes/<n>`          | `n` pattern bytes (`byte i = i % 251`) with Content-Length     |
//! | `/chunked/<n>`        | the same bytes, chunked in ~16 KiB chunks                     |
//! | `/sleep/<ms>`         | waits, then answers like any path                             |
//! | `/close`              | answers like any path, then closes the connection             |
//! | `/echo`               | the request body streamed back as a chunked response          |
//! | `/fixed`              | `ok\n` with Content-Length (the benchmark response)           |
//!
//! | request header                      | effect                                              |
//! |-------------------------------------|-----------------------------------------------------|
//! | `x-echo-response-header: Name: val` | the response carries `Name: val` (repeatable; on    |
//! |                                     | the describing answers and `/status/<code>`)        |
//!
//! Each server also keeps the targets of the last [`SEEN_PATHS`] requests it received
//! ([`EchoServer::seen_paths`]), so a test can check what reached a backend whose answer
//! it never sees, such as a mirror.
//!
//! `/echo` writes while it reads: a client must read the response concurrently with
//! sending a body larger than the socket buffers, as a proxy does.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Largest request head (request line plus headers) accepted, in bytes.
const MAX_HEAD: usize = 64 * 1024;
/// Most request headers accepted.
const MAX_HEADERS: usize = 128;
/// Size of the chunks of `/chunked/<n>` and of the writes of `/bytes/<n>`.
const PIECE: usize = 16 * 1024;
/// Period of the deterministic body pattern.
const PERIOD: usize = 251;
/// Longest accepted `/sleep/<ms>`.
const MAX_SLEEP_MS: u64 = 3_600_000;
/// Largest chunk-size line or trailer line accepted, in bytes.
const MAX_LINE: usize = 8 * 1024;
/// How many request targets [`EchoServer::seen_paths`] remembers.
pub const SEEN_PATHS: usize = 1024;
/// Request header naming a header to add to the response (`Name: value`).
pub const RESPONSE_HEADER: &str = "x-echo-response-header";

/// Byte `i` of the deterministic body pattern served by `/bytes/<n>` and `/chunked/<n>`.
pub fn pattern_byte(i: u64) -> u8 {
    (i % PERIOD as u64) as u8
}

/// Counters shared by every connection of one echo backend.
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
    /// Set by [`Stats::drain`]: every later response closes its connection.
    draining: AtomicBool,
    /// The targets of the last [`SEEN_PATHS`] requests, oldest first.
    seen: Mutex<VecDeque<String>>,
}

impl Stats {
    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The request targets (path and query) of the last [`SEEN_PATHS`] requests, in
    /// the order they arrived.
    pub fn seen_paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|seen| seen.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Starts draining: from now on every response carries `Connection: close` and its
    /// connection is closed after it, while new connections are still accepted and served.
    /// Keep-alive clients thus reconnect (to wherever a load balancer now sends them)
    /// instead of seeing their connection fail when the server finally stops.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether [`Stats::drain`] was called.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn record(&self, target: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() == SEEN_PATHS {
                seen.pop_front();
            }
            seen.push_back(target.to_owned());
        }
    }
}

/// An echo backend running on its own thread with its own tokio runtime.
///
/// Usable from synchronous and asynchronous tests alike. Stopping (explicitly or on drop)
/// stops accepting, closes every connection and joins the thread.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    stats: Arc<Stats>,
    shutdown: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Binds `addr` (port 0 picks a free port) and starts serving as backend `name`.
    pub fn start(addr: SocketAddr, name: &str) -> io::Result<EchoServer> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lb-echo")
            .enable_all()
            .build()?;
        let stats = Arc::new(Stats::default());
        let (tx, rx) = watch::channel(false);
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(std_listener)?
        };
        let name: Arc<str> = Arc::from(name);
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("lb-echo {addr}"))
            .spawn(move || {
                runtime.block_on(serve_until(listener, name, thread_stats, rx));
                // Dropping the runtime cancels every connection task, closing its socket.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(EchoServer {
            addr,
            stats,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.stats.connections()
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.stats.requests()
    }

    /// The request targets (path and query) of the last [`SEEN_PATHS`] requests this
    /// server received, oldest first.
    pub fn seen_paths(&self) -> Vec<String> {
        self.stats.seen_paths()
    }

    /// Stops accepting, closes every connection and joins the server thread.
    pub fn stop(mut self) {
        self.shutdown_and_join();
    }

    fn shutdown_and_join(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.shutdown_and_join();
    }
}

/// Accepts on `listener` until `shutdown` turns true (or its sender is dropped).
async fn serve_until(
    listener: TcpListener,
    name: Arc<str>,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::select! {
        () = serve(listener, name, stats) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

/// Accepts connections on `listener` forever, serving each on its own task as backend
/// `name`. Must run inside a tokio runtime with I/O and time enabled.
pub async fn serve(listener: TcpListener, name: Arc<str>, stats: Arc<Stats>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let name = name.clone();
                let stats = stats.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, &name, &stats).await;
                });
            }
            // Out of descriptors or similar: back off briefly instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Serves HTTP/1.1 requests on one connection, one after another, until either side
/// closes it. Works on any byte stream.
pub async fn serve_connection<S>(io: S, name: &str, stats: &Stats) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        io,
        rbuf: BytesMut::with_capacity(8 * 1024),
        wbuf: Vec::with_capacity(8 * 1024),
    };
    loop {
        let mut head = match conn.read_head().await? {
            HeadResult::Head(head) => head,
            HeadResult::Eof => return conn.flush().await,
            HeadResult::Reject(status) => {
                write_simple(&mut conn.wbuf, name, status, false);
                conn.flush().await?;
                return conn.io.shutdown().await;
            }
        };
        stats.record(&head.target);
        if stats.draining() {
            head.keep_alive = false;
        }
        let keep_alive = handle(&mut conn, name, head).await?;
        if !keep_alive {
            conn.flush().await?;
            return conn.io.shutdown().await;
        }
    }
}

/// One connection: the stream, unread input and not yet written output.
struct Conn<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Writes out pending output.
    async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Flushes pending output (the peer may wait for it), then reads more input.
    /// Returns the number of bytes read, 0 at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        self.flush().await?;
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 * 1024);
        }
        self.io.read_buf(&mut self.rbuf).await
    }

    /// Like [`Conn::fill`], but end of stream is an error.
    async fn fill_some(&mut self) -> io::Result<()> {
        if self.fill().await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    async fn read_head(&mut self) -> io::Result<HeadResult> {
        loop {
            match parse_head(&mut self.rbuf) {
                Ok(Some(head)) => return Ok(HeadResult::Head(head)),
                Ok(None) => {}
                Err(status) => return Ok(HeadResult::Reject(status)),
            }
            if self.rbuf.len() > MAX_HEAD {
                return Ok(HeadResult::Reject(431));
            }
            if self.fill().await? == 0 {
                return Ok(HeadResult::Eof);
            }
        }
    }

    /// Next piece of the request body, `None` once it is complete.
    async fn body_chunk(&mut self, body: &mut Body) -> io::Result<Option<Bytes>> {
        loop {
            match body {
                Body::Done => return Ok(None),
                Body::Length(0) => {
                    *body = Body::Done;
                }
                Body::Length(remaining) | Body::ChunkData(remaining) => {
                    if self.rbuf.is_empty() {
                        self.fill_some().await?;
                    }
                    let n = (*remaining).min(self.rbuf.len() as u64) as usize;
                    *remaining -= n as u64;
                    if *remaining == 0 && matches!(body, Body::ChunkData(_)) {
                        *body = Body::ChunkEnd;
                    }
                    return Ok(Some(self.rbuf.split_to(n).freeze()));
                }
                Body::ChunkSize => match httparse::parse_chunk_size(&self.rbuf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.rbuf.advance(used);
                        *body = if size == 0 {
                            Body::Trailers
                        } else {
                            Body::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if self.rbuf.len() < MAX_LINE => {
                        self.fill_some().await?
                    }
                    _ => return Err(invalid("bad chunk size line")),
                },
                Body::ChunkEnd => {
                    if self.rbuf.len() < 2 {
                        self.fill_some().await?;
                        continue;
                    }
                    if &self.rbuf[..2] != b"\r\n" {
                        return Err(invalid("chunk not followed by CRLF"));
                    }
                    self.rbuf.advance(2);
                    *body = Body::ChunkSize;
                }
                Body::Trailers => match self.rbuf.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        self.rbuf.advance(2);
                        *body = Body::Done;
                    }
                    Some(end) => self.rbuf.advance(end + 2),
                    None if self.rbuf.len() < MAX_LINE => self.fill_some().await?,
                    None => return Err(invalid("trailer line too long")),
                },
            }
        }
    }

    /// Reads and discards the rest of the request body, returning its length.
    async fn drain_body(&mut self, body: &mut Body) -> io::Result<u64> {
        let mut total = 0;
        while let Some(chunk) = self.body_chunk(body).await? {
            total += chunk.len() as u64;
        }
        Ok(total)
    }

    /// Queues bytes for writing, flushing once enough is pending.
    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.wbuf.extend_from_slice(data);
        if self.wbuf.len() >= 64 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

enum HeadResult {
    Head(Head),
    Eof,
    Reject(u16),
}

/// Request body framing and decoding state.
#[derive(Debug)]
enum Body {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Done,
}

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    http11: bool,
    headers: Vec<(String, String)>,
    host: Option<String>,
    body: Body,
    has_body: bool,
    keep_alive: bool,
    expect_continue: bool,
}

/// Parses a request head from the front of `buf`, consuming it when complete.
/// `Err` carries the status to reject the request with.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, u16> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    let http11 = req.version == Some(1);
    let mut head = Head {
        method: req.method.unwrap_or("GET").to_owned(),
        target: req.path.unwrap_or("/").to_owned(),
        http11,
        headers: Vec::with_capacity(req.headers.len()),
        host: None,
        body: Body::Length(0),
        has_body: false,
        keep_alive: http11,
        expect_continue: false,
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).into_owned();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value.trim().parse().map_err(|_| 400u16)?;
            if length.is_some_and(|old| old != n) {
                return Err(400);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                return Err(400);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.trim().eq_ignore_ascii_case("100-continue");
        } else if name.eq_ignore_ascii_case("host") && head.host.is_none() {
            head.host = Some(value.clone());
        }
        head.headers.push((name.to_owned(), value));
    }
    if chunked {
        if length.is_some() {
            return Err(400);
        }
        head.body = Body::ChunkSize;
        head.has_body = true;
    } else if let Some(n) = length {
        head.body = Body::Length(n);
        head.has_body = n > 0;
    }
    buf.advance(used);
    Ok(Some(head))
}

/// What a request asks for.
enum Route {
    Describe,
    Status(u16),
    Bytes(u64),
    Chunked(u64),
    Sleep(u64),
    Close,
    Echo,
    Fixed,
    BadRequest,
}

fn route(path: &str) -> Route {
    fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
        s.strip_suffix('/').unwrap_or(s).parse().ok()
    }
    let bad = |r: Option<Route>| r.unwrap_or(Route::BadRequest);
    if let Some(rest) = path.strip_prefix("/status/") {
        bad(num(rest)
            .filter(|c| (100..=999).contains(c))
            .map(Route::Status))
    } else if let Some(rest) = path.strip_prefix("/bytes/") {
        bad(num(rest).map(Route::Bytes))
    } else if let Some(rest) = path.strip_prefix("/chunked/") {
        bad(num(rest).map(Route::Chunked))
    } else if let Some(rest) = path.strip_prefix("/sleep/") {
        bad(num(rest).map(|ms: u64| Route::Sleep(ms.min(MAX_SLEEP_MS))))
    } else {
        match path {
            "/close" => Route::Close,
            "/echo" => Route::Echo,
            "/fixed" => Route::Fixed,
            _ => Route::Describe,
        }
    }
}

/// Answers one request. Returns whether the connection stays open.
async fn handle<S>(conn: &mut Conn<S>, name: &str, mut head: Head) -> io::Result<bool>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if head.expect_continue && head.has_body && head.http11 {
        conn.wbuf
            .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        conn.flush().await?;
    }
    let path = head.target.split('?').next().unwrap_or("");
    let route = route(path);
    let is_head = head.method == "HEAD";
    let mut keep_alive = head.keep_alive;
    let mut body = std::mem::replace(&mut head.body, Body::Done);

    if let Route::Echo = route {
        return echo(conn, name, &head, body, is_head).await;
    }

    // Every other answer comes after the whole request body has been read.
    let body_bytes = conn.drain_body(&mut body).await?;
    match route {
        Route::Echo => unreachable!("handled above"),
        Route::Fixed => {
            let mut out = response_head(name, 200, "text/plain", keep_alive, head.http11);
            out.push_str("content-length: 3\r\n\r\n");
            conn.wbuf.extend_from_slice(out.as_bytes());
            if !is_head {
                conn.wbuf.extend_from_slice(b"ok\n");
            }
        }
        Route::Status(code) => {
            let body = if matches!(code, 100..=199 | 204 | 304) {
                String::new()
            } else {
                let mut b = serde_json::json!({"backend": name, "status": code}).to_string();
                b.push('\n');
                b
            };
            if code < 200 {
                // An interim status cannot end a request; answer it with no framing and close.
                keep_alive = false;
            }
            let mut out = response_head(name, code, "application/json", keep_alive, head.http11);
            out.push_str(&requested_headers(&head));
            if !matches!(code, 100..=199 | 204) {
                out.push_str(&format!("content-length: {}\r\n", body.len()));
            }
            out.push_str("\r\n");
            conn.wbuf.extend_from_slice(out.as_bytes());
            if !is_head {
                conn.wbuf.extend_from_slice(body.as_bytes());
            }
        }
        Route::Bytes(n) => {
            let mut out = response_head(
                name,
                200,
                "application/octet-stream",
                keep_alive,
                head.http11,
            );
            out.push_str(&format!("content-length: {n}\r\n\r\n"));
            conn.wbuf.extend_from_slice(out.as_bytes());
            if !is_head {
                write_pattern(conn, n, false).await?;
            }
        }
        Route::Chunked(n) => {
            // HTTP/1.0 has no chunked coding: delimit the body by closing instead.
            keep_alive &= head.http11;
            let mut out = response_head(
                name,
                200,
                "application/octet-stream",
                keep_alive,
                head.http11,
            );
            if head.http11 {
                out.push_str("transfer-encoding: chunked\r\n");
            }
            out.push_str("\r\n");
            conn.wbuf.extend_from_slice(out.as_bytes());
            if !is_head {
                write_pattern(conn, n, head.http11).await?;
            }
        }
        Route::BadRequest => write_simple(&mut conn.wbuf, name, 400, keep_alive),
        Route::Describe | Route::Sleep(_) | Route::Close => {
            if let Route::Sleep(ms) = route {
                conn.flush().await?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if let Route::Close = route {
                keep_alive = false;
            }
            let mut json = serde_json::json!({
                "backend": name,
                "method": head.method,
                "path": head.target,
                "host": head.host,
                "headers": head.headers.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>(),
                "body_bytes": body_bytes,
            })
            .to_string();
            json.push('\n');
            let mut out = response_head(name, 200, "application/json", keep_alive, head.http11);
            out.push_str(&requested_headers(&head));
            out.push_str(&format!("content-length: {}\r\n\r\n", json.len()));
            conn.wbuf.extend_from_slice(out.as_bytes());
            if !is_head {
                conn.wbuf.extend_from_slice(json.as_bytes());
            }
        }
    }
    // Keep small answers queued while a pipelined request is already waiting; the next
    // read flushes them.
    if conn.rbuf.is_empty() || !keep_alive {
        conn.flush().await?;
    }
    Ok(keep_alive)
}

/// `/echo`: streams the request body back as a chunked response while reading it.
async fn echo<S>(
    conn: &mut Conn<S>,
    name: &str,
    head: &Head,
    mut body: Body,
    is_head: bool,
) -> io::Result<bool>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let chunked = head.http11;
    let keep_alive = head.keep_alive && chunked;
    let mut out = response_head(
        name,
        200,
        "application/octet-stream",
        keep_alive,
        head.http11,
    );
    if chunked {
        out.push_str("transfer-encoding: chunked\r\n");
    }
    out.push_str("\r\n");
    conn.wbuf.extend_from_slice(out.as_bytes());
    conn.flush().await?;
    while let Some(chunk) = conn.body_chunk(&mut body).await? {
        if is_head || chunk.is_empty() {
            continue;
        }
        if chunked {
            conn.wbuf
                .extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        }
        conn.wbuf.extend_from_slice(&chunk);
        if chunked {
            conn.wbuf.extend_from_slice(b"\r\n");
        }
        conn.flush().await?;
    }
    if chunked && !is_head {
        conn.wbuf.extend_from_slice(b"0\r\n\r\n");
    }
    conn.flush().await?;
    Ok(keep_alive)
}

/// Writes `n` bytes of the pattern, as ~16 KiB chunks when `chunked`.
async fn write_pattern<S>(conn: &mut Conn<S>, n: u64, chunked: bool) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let pattern = PATTERN.get_or_init(|| (0..(PIECE + PERIOD) as u64).map(pattern_byte).collect());
    let mut offset = 0u64;
    while offset < n {
        let len = (n - offset).min(PIECE as u64) as usize;
        let start = (offset % PERIOD as u64) as usize;
        if chunked {
            conn.write(format!("{len:x}\r\n").as_bytes()).await?;
        }
        conn.write(&pattern[start..start + len]).await?;
        if chunked {
            conn.write(b"\r\n").await?;
        }
        offset += len as u64;
    }
    if chunked {
        conn.write(b"0\r\n\r\n").await?;
    }
    Ok(())
}

/// Status line and the headers every response carries, without the blank line.
fn response_head(
    name: &str,
    code: u16,
    content_type: &str,
    keep_alive: bool,
    http11: bool,
) -> String {
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nx-backend: {name}\r\ncontent-type: {content_type}\r\n",
        reason(code)
    );
    if !keep_alive {
        out.push_str("connection: close\r\n");
    } else if !http11 {
        out.push_str("connection: keep-alive\r\n");
    }
    out
}

/// The response header lines asked for with [`RESPONSE_HEADER`] request headers, in
/// order. A value that is not `Name: value` with a token for a name is ignored.
fn requested_headers(head: &Head) -> String {
    let is_token = |n: &str| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    head.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(RESPONSE_HEADER))
        .filter_map(|(_, v)| {
            let (n, v) = v.split_once(':')?;
            let n = n.trim();
            is_token(n).then(|| format!("{n}: {}\r\n", v.trim()))
        })
        .collect()
}

/// A complete small JSON response for `code`.
fn write_simple(wbuf: &mut Vec<u8>, name: &str, code: u16, keep_alive: bool) {
    let mut body = serde_json::json!({"backend": name, "status": code}).to_string();
    body.push('\n');
    let mut out = response_head(name, code, "application/json", keep_alive, true);
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    wbuf.extend_from_slice(out.as_bytes());
    wbuf.extend_from_slice(body.as_bytes());
}

/// Reason phrase for the status codes worth naming.
fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// One request on a fresh connection; returns the raw response head.
    fn head_of(server: &EchoServer, request: &str) -> String {
        let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
    }

    #[test]
    fn response_headers_on_request() {
        let server = EchoServer::start("127.0.0.1:0".parse().unwrap(), "t").unwrap();
        let head = head_of(
            &server,
            "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\
             x-echo-response-header: X-One: a b\r\n\
             X-Echo-Response-Header: X-One: c\r\n\
             x-echo-response-header: bad name: no\r\n\
             x-echo-response-header: no-colon\r\n\r\n",
        );
        let lines: Vec<&str> = head.lines().filter(|l| l.starts_with("X-One")).collect();
        assert_eq!(lines, ["X-One: a b", "X-One: c"], "{head}");
        assert!(!head.contains("bad name"), "{head}");
        let head = head_of(
            &server,
            "GET /status/404 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\
             x-echo-response-header: X-Two: 2\r\n\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        assert!(head.contains("\r\nX-Two: 2"), "{head}");
    }

    #[test]
    fn seen_paths_are_recorded_and_bounded() {
        let server = EchoServer::start("127.0.0.1:0".parse().unwrap(), "t").unwrap();
        head_of(
            &server,
            "GET /a?b=c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        );
        head_of(
            &server,
            "GET /fixed HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(server.seen_paths(), ["/a?b=c", "/fixed"]);
        let stats = Stats::default();
        for i in 0..SEEN_PATHS + 3 {
            stats.record(&format!("/{i}"));
        }
        let seen = stats.seen_paths();
        assert_eq!(seen.len(), SEEN_PATHS);
        assert_eq!(seen[0], "/3");
        assert_eq!(stats.requests(), (SEEN_PATHS + 3) as u64);
    }
}
