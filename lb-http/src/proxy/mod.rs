//! The HTTP/1.1 reverse proxy connection handler: reads request heads from a
//! downstream connection (keep-alive, sequential so pipelining is safe),
//! validates and routes them through the worker-local snapshot view, forwards
//! them over pooled upstream connections and streams bodies both ways.
//!
//! Choices worth knowing:
//! - A Transfer-Encoding other than a single `chunked` is refused with 400.
//! - Upstream connect timeout answers 504, other connect failures 502.
//! - CONNECT is refused with 501. A GET asking to upgrade (`Upgrade` listed
//!   in `Connection`) keeps both fields; a `101` answer turns the connection
//!   into a byte tunnel (WebSocket). Other requests lose `Upgrade`.
//! - Connect failures move on to other endpoints; idempotent requests are
//!   retried once elsewhere when the upstream closes before answering
//!   ([`crate::balance`] chooses endpoints and ejects failing ones).
//! - Client-sent `X-Forwarded-Proto`/`X-Forwarded-Host` are replaced; earlier
//!   `X-Forwarded-For` values are kept and the client address appended.
//! - Chunk extensions and request/response trailers are dropped.
//! - Interim 1xx responses are relayed to HTTP/1.1 clients and not counted.
//! - If the final response arrives before the request body was fully sent,
//!   sending stops and both connections close after the response.
//!
//! - Connections on Gateway API listeners carry their port (and on HTTPS
//!   ports the TLS server name, which picks the Listener, Host falling back
//!   when there is none); their requests are routed by the port's Listeners
//!   and rule actions (`gateway`), with
//!   header filters, rewrites, redirects, weights, mirrors and timeouts.
//!   Mirrors only get requests whose body went out with the head.
//!
//! Submodules: `exchange` (request body and response head, then the
//! response), `failover` (endpoint choice and connect failover), `tunnel`
//! (upgrades), `redirect` (HTTP to HTTPS), `gateway` (Gateway connections
//! and routing), `access` (the access-log line) and `wire` (HTTP/1.1 wire
//! helpers).

mod access;
mod exchange;
mod failover;
mod gateway;
mod idle;
mod redirect;
mod tunnel;
mod wire;

use access::Outcome;
pub use failover::CONNECT_ATTEMPTS;
use failover::{Pick, Tried, is_idempotent};
pub(crate) use gateway::{GwRequest, GwRoute, GwStep, H1Headers, route_gateway};
use gateway::{encode_redirect_response, rng_seed, until};
use tunnel::upgrade_token;
pub(crate) use wire::split_target;
use wire::{check_body_start, linger_close};

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use lb_core::counters::{CounterSet, WorkerCounters};
use lb_core::runtime::{Accepted, ConnectionHandler, Drain};
use lb_core::snapshot::{LocalSnapshot, SnapshotCell};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::access_log::AccessLog;
use crate::balance::{Balancer, Policy};
use crate::downstream::DownIo;
use crate::error::{Error, ErrorKind, Side};
use crate::h1::head::{
    BodyKind, HeaderSpan, RequestHead, ResponseHead, parse_request, request_info,
};
use crate::h1::rewrite::{
    Forwarded, add_upgrade, encode_error, encode_request, encode_request_fields, end_to_end_fields,
};
use crate::route::normalize_host;
use crate::settings::ProxySettings;
use crate::snapshot::{ApplianceSnapshot, UpstreamProtocol};
use crate::tls;
use crate::upstream::{UpstreamConn, UpstreamPool};

/// Buffer growth step while streaming bodies.
const BUFFER: usize = 16 * 1024;
/// Initial (and head-reading) buffer size of a downstream connection: small,
/// because an idle keep-alive connection keeps its buffers.
const HEAD_BUFFER: usize = 4 * 1024;
/// Bodies up to this size that are already buffered go out with their head.
const INLINE_BODY: usize = 64 * 1024;
/// Response bytes held while a request body is still being sent upstream;
/// once full, lb stops reading the upstream (TCP holds the rest) until the
/// body is sent.
const EARLY_RESPONSE_LIMIT: usize = 64 * 1024;
/// Longest time a closing connection keeps reading (and discarding) so that
/// unread request bytes do not turn the close into a reset.
const LINGER: Duration = Duration::from_millis(500);

/// The HTTP/1.1 reverse proxy of one worker. Create it on the worker thread;
/// it holds worker-local state (snapshot view, upstream pool, endpoint
/// balancer) and is never shared between threads.
#[derive(Debug)]
pub struct HttpProxy {
    pub(crate) snapshot: LocalSnapshot<ApplianceSnapshot>,
    counters: Arc<CounterSet>,
    worker: usize,
    settings: ProxySettings,
    pub(crate) pool: UpstreamPool,
    /// Endpoint choice and passive outlier detection.
    pub(crate) balancer: Balancer,
    /// Where request lines go, when logging.
    access_log: Option<AccessLog>,
    /// State of the worker's xorshift generator (Gateway backend weights).
    rng: Cell<u64>,
    /// Mirrored requests of this worker still in flight.
    mirrors_in_flight: Rc<Cell<usize>>,
}

/// What happens to the downstream connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// A request that failed.
#[derive(Debug)]
struct Failure {
    err: Error,
    /// Whether the response head already went downstream.
    head_sent: bool,
    /// Whether the downstream connection must close afterwards.
    close: bool,
}

/// An upstream exchange that got its final response head.
struct Exchanged<'g, 's> {
    up: UpstreamConn,
    resp: ResponseHead,
    /// Whether the request body was fully sent.
    body_done: bool,
    /// The Gateway route, for response filters.
    gateway: Option<&'g GwRoute<'s>>,
}

/// Per-connection state, reused across the requests of one connection.
struct Downstream {
    stream: DownIo,
    rbuf: BytesMut,
    wbuf: BytesMut,
    spans: Vec<HeaderSpan>,
    resp_spans: Vec<HeaderSpan>,
    host: String,
    client_ip: String,
    peer: SocketAddr,
    /// What happened to the current request (for the access log).
    outcome: Outcome,
    /// The Gateway port the connection arrived on (`None`: Ingress).
    gateway: Option<SocketAddr>,
    /// The TLS server name, which picks the Listener on a Gateway HTTPS port.
    sni: Option<Box<str>>,
}

/// Decrements the active-connection gauge however the connection ends.
struct ActiveGuard<'a>(&'a WorkerCounters);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active_connections.dec();
    }
}

impl HttpProxy {
    /// The proxy for worker `worker`. Panics if `counters` has no block for
    /// `worker` (a wiring bug, not an input error).
    pub fn new(
        snapshot: Arc<SnapshotCell<ApplianceSnapshot>>,
        counters: Arc<CounterSet>,
        worker: usize,
        settings: ProxySettings,
    ) -> Self {
        assert!(
            worker < counters.iter().count(),
            "no counter block for worker {worker}"
        );
        Self {
            snapshot: LocalSnapshot::new(snapshot),
            counters,
            worker,
            pool: UpstreamPool::new(settings.max_idle_per_endpoint, settings.idle_timeout),
            balancer: Balancer::new(worker, settings.outlier),
            access_log: None,
            rng: Cell::new(rng_seed(worker)),
            mirrors_in_flight: Rc::new(Cell::new(0)),
            settings,
        }
    }

    /// The settings this proxy runs with.
    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    pub(crate) fn counters(&self) -> &WorkerCounters {
        self.counters.worker(self.worker)
    }

    /// Serves an HTTPS connection: the TLS handshake (certificate chosen by
    /// SNI from the current snapshot, bounded by the header read timeout),
    /// then HTTP/1.1 over the session.
    pub async fn serve_tls(self: Rc<Self>, conn: Accepted, drain: Drain) {
        self.serve_tls_on(conn, drain, None).await;
    }

    /// [`Self::serve_tls`] for an Ingress listener (`gateway` `None`:
    /// certificates and routes of the Ingress part of the snapshot) or for
    /// the Gateway HTTPS port `gateway` (its certificates and Listeners).
    async fn serve_tls_on(&self, conn: Accepted, drain: Drain, gateway: Option<SocketAddr>) {
        let counters = self.counters();
        counters.accepted_connections.inc();
        counters.active_connections.inc();
        let _guard = ActiveGuard(counters);
        let snapshot = self.snapshot.current();
        // Ingress wildcards cover one label, Gateway Listener wildcards any number.
        let pick = |sni: Option<&str>| {
            match gateway {
                None => snapshot.value.tls.lookup(sni),
                Some(key) => {
                    (snapshot.value.gateway.port(key)).and_then(|(_, p)| p.tls.lookup_suffix(sni))
                }
            }
            .map(|c| c.server_config())
        };
        let accepted_at = Instant::now();
        let tls = match tls::accept(conn.stream, pick, self.settings.header_read_timeout).await {
            Ok(s) => s,
            Err(e) => {
                counters.tls_handshake_errors.inc();
                tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
                return;
            }
        };
        drop(snapshot);
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            let sni = crate::downstream::server_name_of(&tls);
            crate::h2::serve_h2(self, tls, conn.peer, true, sni, drain, gateway).await;
            return;
        }
        self.serve_http1(DownIo::tls(tls), conn.peer, accepted_at, drain, gateway)
            .await;
    }

    async fn serve_connection(&self, conn: Accepted, drain: Drain) {
        let counters = self.counters();
        counters.accepted_connections.inc();
        counters.active_connections.inc();
        let _guard = ActiveGuard(counters);
        self.serve_http1(
            DownIo::Plain(conn.stream),
            conn.peer,
            Instant::now(),
            drain,
            None,
        )
        .await;
    }

    /// Serves HTTP/1.1 requests on an established downstream connection.
    async fn serve_http1(
        &self,
        stream: DownIo,
        peer: SocketAddr,
        accepted_at: Instant,
        mut drain: Drain,
        gateway: Option<SocketAddr>,
    ) {
        let sni = stream.server_name();
        let mut down = Downstream {
            stream,
            rbuf: BytesMut::with_capacity(HEAD_BUFFER),
            wbuf: BytesMut::with_capacity(HEAD_BUFFER),
            spans: Vec::new(),
            resp_spans: Vec::new(),
            host: String::new(),
            client_ip: peer.ip().to_canonical().to_string(),
            peer,
            outcome: Outcome::default(),
            gateway,
            sni,
        };
        // HTTP/2 by prior knowledge: the connection opens with the preface.
        let deadline = accepted_at + self.settings.header_read_timeout;
        if crate::h2::sniff_preface(&mut down.stream, &mut down.rbuf, deadline, &mut drain).await {
            let tls = down.stream.is_tls();
            let io = crate::h2::PrefixedIo::new(down.rbuf.split().freeze(), down.stream);
            let sni = down.sni.take();
            crate::h2::serve_h2(self, io, peer, tls, sni, drain, gateway).await;
            return;
        }
        let mut first = true;
        loop {
            let head = match self
                .read_request_head(&mut down, first, accepted_at, &mut drain)
                .await
            {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(error = %err, "bad request head");
                    self.respond_error(&mut down, err.status(), true, false)
                        .await;
                    break;
                }
            };
            first = false;
            let next = self.handle_request(&mut down, head, &drain).await;
            if next == Next::Close {
                break;
            }
        }
        linger_close(&mut down.stream).await;
    }

    /// Reads the next request head. `Ok(None)`: close silently (peer closed,
    /// idle timeout, draining while idle).
    async fn read_request_head(
        &self,
        down: &mut Downstream,
        first: bool,
        accepted_at: Instant,
        drain: &mut Drain,
    ) -> Result<Option<RequestHead>, Error> {
        let s = &self.settings;
        let idle_deadline = if first {
            accepted_at + s.header_read_timeout
        } else {
            Instant::now() + s.idle_timeout
        };
        let mut head_deadline = None;
        loop {
            if !down.rbuf.is_empty() {
                if let Some(head) = parse_request(
                    &mut down.rbuf,
                    s.max_header_bytes,
                    s.max_headers,
                    &mut down.spans,
                )? {
                    return Ok(Some(head));
                }
                if head_deadline.is_none() {
                    head_deadline = Some(if first {
                        accepted_at + s.header_read_timeout
                    } else {
                        Instant::now() + s.header_read_timeout
                    });
                }
            }
            let idle = head_deadline.is_none();
            if idle && drain.is_draining() {
                return Ok(None);
            }
            let deadline = head_deadline.unwrap_or(idle_deadline);
            if down.rbuf.capacity() - down.rbuf.len() < 1024 {
                down.rbuf.reserve(HEAD_BUFFER);
            }
            let read = tokio::select! {
                biased;
                _ = drain.wait(), if idle => return Ok(None),
                r = tokio::time::timeout_at(deadline, down.stream.read_buf(&mut down.rbuf)) => r,
            };
            match read {
                Err(_) if idle => return Ok(None),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        Side::Downstream,
                        "request head timed out",
                    ));
                }
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn handle_request(
        &self,
        down: &mut Downstream,
        head: RequestHead,
        drain: &Drain,
    ) -> Next {
        let is_head = head.method() == b"HEAD";
        let started = Instant::now();
        down.outcome = Outcome::default();
        down.host.clear();
        if !down.stream.is_tls()
            && down.gateway.is_none()
            && let Some(next) = self.redirect_to_https(down, &head, drain).await
        {
            self.log_request(down, &head, started);
            down.spans = head.into_spans();
            return next;
        }
        let next = match self.forward(down, &head, drain, is_head).await {
            Ok(next) => next,
            Err(failure) => {
                let err = &failure.err;
                if err.side() == Side::Upstream && err.kind() != ErrorKind::NoEndpoints {
                    self.counters().upstream_errors.inc();
                }
                tracing::debug!(error = %err, head_sent = failure.head_sent, "request failed");
                if failure.head_sent {
                    Next::Close
                } else {
                    let close = failure.close || drain.is_draining();
                    if self.respond_error(down, err.status(), close, is_head).await && !close {
                        Next::KeepAlive
                    } else {
                        Next::Close
                    }
                }
            }
        };
        self.log_request(down, &head, started);
        down.spans = head.into_spans();
        next
    }

    /// Writes one of lb's own responses; returns whether the write succeeded.
    async fn respond_error(
        &self,
        down: &mut Downstream,
        status: u16,
        close: bool,
        is_head: bool,
    ) -> bool {
        down.wbuf.clear();
        encode_error(status, close, is_head, &mut down.wbuf);
        self.counters().response(status);
        down.outcome.status = status;
        down.stream.write_all(&down.wbuf).await.is_ok()
    }

    pub(crate) async fn upstream(&self, addr: SocketAddr) -> Result<UpstreamConn, Error> {
        match self.pool.take(addr) {
            Some(conn) => Ok(conn),
            None => UpstreamConn::connect(addr, self.settings.connect_timeout).await,
        }
    }

    async fn forward(
        &self,
        down: &mut Downstream,
        head: &RequestHead,
        drain: &Drain,
        is_head: bool,
    ) -> Result<Next, Failure> {
        let early = |err: Error| Failure {
            err,
            head_sent: false,
            close: true,
        };
        if head.target().len() > self.settings.max_uri_bytes {
            return Err(early(Error::new(
                ErrorKind::UriTooLong,
                Side::Downstream,
                "request target exceeds max_uri_bytes",
            )));
        }
        let info = request_info(head).map_err(early)?;
        if head.method() == b"CONNECT" {
            return Err(early(Error::new(
                ErrorKind::UnsupportedMethod,
                Side::Downstream,
                "CONNECT",
            )));
        }
        check_body_start(&info, &down.rbuf, body_limit(&self.settings)).map_err(early)?;
        let mut body_done = matches!(info.body, BodyKind::Empty | BodyKind::Length(0));
        let fail = |err: Error, body_done: bool| {
            let bad_request = err.side() == Side::Downstream && err.kind() != ErrorKind::NoRoute;
            Failure {
                err,
                head_sent: false,
                close: bad_request || !body_done || !info.keep_alive,
            }
        };
        let bad_target = || {
            Error::new(
                ErrorKind::InvalidHead,
                Side::Downstream,
                "bad request target",
            )
        };
        let (authority, target) = split_target(head.target()).ok_or_else(|| early(bad_target()))?;
        let host_field = info.host.map(|s| s.get(head.raw()));
        let host_raw = authority.or(host_field);
        let host =
            std::str::from_utf8(host_raw.unwrap_or_default()).map_err(|_| early(bad_target()))?;
        normalize_host(host, &mut down.host);
        let path = if target.first() == Some(&b'/') {
            target
        } else {
            &b"/"[..]
        };
        let path = std::str::from_utf8(path).map_err(|_| early(bad_target()))?;
        // Routing and the upstream see the same normalised path.
        let normalized = crate::path::normalize_target(path).map_err(|e| {
            early(Error::new(
                ErrorKind::InvalidHead,
                Side::Downstream,
                e.as_str(),
            ))
        })?;
        let path: &str = &normalized;
        let target = if target.first() == Some(&b'/') {
            path.as_bytes()
        } else {
            target
        };

        // One snapshot for the whole request.
        let snapshot = self.snapshot.current();
        let snap = &snapshot.value;
        let gw = match down.gateway {
            None => None,
            Some(port_key) => {
                let req = GwRequest {
                    host: &down.host,
                    target: path,
                    method: head.method(),
                    headers: &H1Headers(head),
                    tls: down.stream.is_tls(),
                    sni: down.sni.as_deref(),
                };
                match route_gateway(snap, port_key, &req, self.roll()) {
                    Err(e) => return Err(fail(e, body_done)),
                    Ok(GwStep::Forward(r)) => Some(r),
                    Ok(GwStep::Answer(status)) => {
                        let close = !info.keep_alive || !body_done || drain.is_draining();
                        let ok = self.respond_error(down, status, close, is_head).await;
                        return Ok(if ok && !close {
                            Next::KeepAlive
                        } else {
                            Next::Close
                        });
                    }
                    Ok(GwStep::Redirect { status, location }) => {
                        let close = !info.keep_alive || !body_done || drain.is_draining();
                        down.wbuf.clear();
                        encode_redirect_response(status, &location, close, &mut down.wbuf);
                        self.counters().response(status);
                        down.outcome.status = status;
                        let ok = down.stream.write_all(&down.wbuf).await.is_ok();
                        return Ok(if ok && !close {
                            Next::KeepAlive
                        } else {
                            Next::Close
                        });
                    }
                }
            }
        };
        let backend_id = match &gw {
            Some(r) => r.backend,
            None => match snap.routes.lookup(&down.host, path) {
                Some(route)
                    if !lb_core::l4::source_allowed(
                        route.source_ranges.as_ref(),
                        down.peer.ip(),
                    ) =>
                {
                    // The Ingress's source ranges do not include the client.
                    let close = !info.keep_alive || !body_done || drain.is_draining();
                    let ok = self.respond_error(down, 403, close, is_head).await;
                    return Ok(if ok && !close {
                        Next::KeepAlive
                    } else {
                        Next::Close
                    });
                }
                Some(route) => route.backend,
                None => {
                    return Err(fail(
                        Error::new(ErrorKind::NoRoute, Side::Downstream, "no route"),
                        body_done,
                    ));
                }
            },
        };
        let request_deadline = gw.as_ref().and_then(|r| r.request_deadline(Instant::now()));
        let endpoints = snap
            .backend(backend_id)
            .map_or(&[][..], |b| &b.endpoints[..]);
        if endpoints.is_empty() {
            return Err(fail(
                Error::new(ErrorKind::NoEndpoints, Side::Upstream, "no endpoints"),
                body_done,
            ));
        }
        let backend = snap.backend(backend_id);
        let policy = backend.map(|b| &b.policy).unwrap_or(&Policy::RoundRobin);
        let key = policy.request_key(&down.client_ip, head.headers());
        let mut tried = Tried::default();
        let Some(mut addr) = self
            .balancer
            .pick(backend_id, endpoints, policy, key, tried.list())
        else {
            return Err(fail(
                Error::new(ErrorKind::NoEndpoints, Side::Upstream, "no endpoints"),
                body_done,
            ));
        };
        // A Gateway `URLRewrite` of the path changes the target sent.
        let rewritten = gw.as_ref().and_then(|r| r.upstream_target(path));
        let target = rewritten.as_deref().map_or(target, str::as_bytes);
        if backend.map(|b| b.protocol) == Some(UpstreamProtocol::H2c) {
            let x = crate::h2::H1Exchange {
                stream: &mut down.stream,
                rbuf: &mut down.rbuf,
                wbuf: &mut down.wbuf,
                head,
                info: &info,
                authority: host_raw,
                target,
                client_ip: &down.client_ip,
                draining: drain.is_draining(),
                is_head,
                gateway: gw.as_ref(),
                head_deadline: gw
                    .as_ref()
                    .and_then(|r| r.attempt_deadline(request_deadline)),
            };
            return match crate::h2::forward_h1_to_h2c(self, x, addr).await {
                Ok(true) => Ok(Next::KeepAlive),
                Ok(false) => Ok(Next::Close),
                Err(f) => Err(Failure {
                    err: f.err,
                    head_sent: f.head_sent,
                    close: f.close,
                }),
            };
        }

        down.wbuf.clear();
        let fwd = Forwarded {
            target,
            client_ip: down.client_ip.as_bytes(),
            host: host_raw,
            proto: if down.stream.is_tls() {
                b"https"
            } else {
                b"http"
            },
            // An absolute-form target's authority replaces Host (RFC 9112
            // 3.2.2), unless a URLRewrite sets the Host.
            host_override: authority
                .filter(|_| gw.as_ref().is_none_or(|r| r.host_rewrite().is_none())),
        };
        match gw.as_ref().filter(|r| r.changes_request_fields()) {
            Some(r) => {
                let fields = r.request_fields(end_to_end_fields(head, &info));
                encode_request_fields(head, &info, &fwd, || fields.iter().copied(), &mut down.wbuf);
            }
            None => encode_request(head, &info, &fwd, &mut down.wbuf),
        }
        let upgrade = upgrade_token(head, &info);
        if let Some(token) = upgrade {
            add_upgrade(&mut down.wbuf, token);
        }
        if let BodyKind::Length(n) = info.body
            && n > 0
            && n as usize <= INLINE_BODY
            && n as usize <= down.rbuf.len()
        {
            down.wbuf.extend_from_slice(&down.rbuf[..n as usize]);
            down.rbuf.advance(n as usize);
            body_done = true;
        }
        let streams_body = !body_done;
        // Mirrors get the request when it is complete here (no body, or an
        // inline one); requests with streamed bodies are not mirrored.
        if let Some(r) = &gw
            && !r.action.mirrors.is_empty()
            && !streams_body
        {
            self.mirror(snap, &r.action.mirrors, &down.wbuf, &down.client_ip);
        }

        let pick = Pick {
            id: backend_id,
            endpoints,
            policy,
            key,
        };
        // `connect_failover` leaves `addr` at the endpoint it reached.
        let mut up = until(
            request_deadline,
            self.connect_failover(&pick, &mut addr, &mut tried, false),
        )
        .await
        .map_err(|e| fail(e, body_done))?;
        let tracked = *policy == Policy::LeastRequest;
        let mut inflight = self.balancer.start(addr, tracked);
        // A request that may be sent twice (idempotent, body not streamed)
        // is retried once on another endpoint when the upstream closes
        // before any response byte.
        let replayable = !streams_body && is_idempotent(head.method());
        let (mut fresh_retry, mut other_retry) = (false, false);
        let resp = loop {
            let attempt_deadline = gw
                .as_ref()
                .and_then(|r| r.attempt_deadline(request_deadline));
            let attempt = async {
                match up.stream.write_all(&down.wbuf).await {
                    Err(e) => {
                        Err(Error::io(Side::Upstream, "request write failed", e).retry_safe(true))
                    }
                    Ok(()) => {
                        self.exchange(
                            down,
                            &mut up,
                            &info,
                            &mut body_done,
                            head.minor_version(),
                            upgrade.is_some(),
                        )
                        .await
                    }
                }
            };
            let result = until(attempt_deadline, attempt).await;
            match result {
                Ok(resp) => break resp,
                Err(e) if e.is_retry_safe() && up.is_reused() && !fresh_retry && !streams_body => {
                    tracing::debug!(error = %e, "pooled upstream connection was dead, retrying");
                    fresh_retry = true;
                    up = until(
                        request_deadline,
                        self.connect_failover(&pick, &mut addr, &mut tried, true),
                    )
                    .await
                    .map_err(|e| fail(e, body_done))?;
                }
                Err(e) if e.is_retry_safe() && replayable && !other_retry => {
                    tracing::debug!(error = %e, endpoint = %addr, "upstream closed before answering, retrying on another endpoint");
                    other_retry = true;
                    self.balancer.failure(addr, endpoints);
                    tried.push(addr);
                    let Some(next) = self.balancer.pick(
                        pick.id,
                        pick.endpoints,
                        pick.policy,
                        pick.key,
                        tried.list(),
                    ) else {
                        return Err(fail(e, body_done));
                    };
                    addr = next;
                    up = until(
                        request_deadline,
                        self.connect_failover(&pick, &mut addr, &mut tried, true),
                    )
                    .await
                    .map_err(|e| fail(e, body_done))?;
                }
                Err(e) => {
                    if e.side() == Side::Upstream {
                        self.balancer.failure(addr, endpoints);
                    }
                    return Err(fail(e, body_done));
                }
            }
            if inflight.addr() != addr {
                inflight = self.balancer.start(addr, tracked);
            }
        };
        down.outcome.upstream = Some(addr);
        down.outcome.backend = Some(backend_id);
        down.outcome.upstream_at = Some(Instant::now());
        if resp.code() >= 500 {
            self.balancer.failure(addr, endpoints);
        } else {
            self.balancer.success(addr);
        }
        drop(inflight);
        if resp.code() == 101 {
            self.counters().response(101);
            down.outcome.status = 101;
            return self.tunnel(down, up, resp).await;
        }
        let exchange = Exchanged {
            up,
            resp,
            body_done,
            gateway: gw.as_ref(),
        };
        let result = self
            .respond(down, exchange, head, &info, drain, is_head)
            .await;
        result.map_err(|mut f| {
            f.close |= !body_done || !info.keep_alive;
            f
        })
    }
}

impl ConnectionHandler for HttpProxy {
    async fn serve(self: Rc<Self>, conn: Accepted, drain: Drain) {
        self.serve_connection(conn, drain).await
    }
}

/// The request body limit in bytes (`max_body_bytes`, 0 meaning none).
pub(crate) fn body_limit(settings: &ProxySettings) -> u64 {
    match settings.max_body_bytes {
        0 => u64::MAX,
        n => n,
    }
}
