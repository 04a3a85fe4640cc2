//! The downstream HTTP/2 server: one task per connection drives the h2
//! connection and polls its streams; each stream is routed like an
//! HTTP/1.1 request (same route table, backends, round robin, counters) and
//! handed to the exchange for its backend's protocol. Draining, idling and
//! too many client resets end the connection with GOAWAY.

use std::cell::Cell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use lb_core::runtime::Drain;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::flood::MeteredIo;
use super::translate::{self, Fwd, ReqFraming, content_length};
use super::{to_h1, to_h2c};
use crate::balance::Policy;
use crate::error::{Error, ErrorKind, Side, reason};
use crate::gateway::{RuleAction, TargetId, WeightedBackend, modify_map};
use crate::h1::head::valid_authority;
use crate::proxy::{GwRequest, GwStep, HttpProxy, body_limit, route_gateway};
use crate::route::normalize_host;
use crate::snapshot::ApplianceSnapshot;
use crate::snapshot::UpstreamProtocol;
use lb_core::snapshot::Published;
use std::rc::Rc;
use std::sync::Arc;

/// Most bytes h2 buffers for one stream beyond what flow control let out.
const SEND_BUFFER: usize = 256 * 1024;
/// Longest time a closed connection keeps discarding client bytes.
const LINGER: Duration = Duration::from_millis(500);
/// Most client bytes discarded while lingering.
const LINGER_BYTES: usize = 256 * 1024;

/// Per-connection state the streams share.
pub(super) struct Ctx<'a> {
    pub proxy: &'a HttpProxy,
    pub client_ip: String,
    /// The client's address (for an Ingress's source ranges).
    peer_ip: std::net::IpAddr,
    tls: bool,
    /// The TLS server name, which picks the Listener on a Gateway HTTPS port.
    sni: Option<Box<str>>,
    resets: ResetMeter,
    /// The Gateway port the connection arrived on (`None`: Ingress).
    gateway: Option<SocketAddr>,
}

/// Where one request goes.
pub(super) struct Plan {
    pub addr: SocketAddr,
    pub protocol: UpstreamProtocol,
    /// The authority requested (`:authority`, else `Host`), as sent.
    pub authority: String,
    /// The `:path` (path and query).
    pub path: String,
    /// The request's `content-length`, if it has one.
    pub content_length: Option<u64>,
    /// The authority the client asked for, when a Gateway `URLRewrite`
    /// changed `authority` (it stays the `X-Forwarded-Host`).
    pub forwarded_host: Option<String>,
    /// The Gateway rule the request matched, if it came through a Gateway
    /// listener.
    pub gw: Option<GwPlan>,
}

/// The Gateway part of a [`Plan`]: the rule action and backend chosen
/// (found again in the request's snapshot), and the response head deadline.
#[allow(clippy::redundant_allocation)] // The worker's snapshot handle: cloning the Rc is not atomic.
pub(super) struct GwPlan {
    snapshot: Rc<Arc<Published<ApplianceSnapshot>>>,
    target: TargetId,
    choice: usize,
    /// When the response head must have arrived (`timeouts`).
    pub head_deadline: Option<Instant>,
}

impl GwPlan {
    fn parts(&self) -> Option<(&RuleAction, &WeightedBackend)> {
        let action = self.snapshot.value.gateway.action(self.target)?;
        Some((action, action.backends.get(self.choice)?))
    }

    /// Applies the rule's, then the backend's request header modifiers.
    pub fn modify_request(&self, map: &mut HeaderMap) {
        if let Some((a, b)) = self.parts() {
            modify_map(&a.request_headers, map);
            modify_map(&b.request_headers, map);
        }
    }

    /// Applies the rule's, then the backend's response header modifiers.
    pub fn modify_response(&self, map: &mut HeaderMap) {
        if let Some((a, b)) = self.parts() {
            modify_map(&a.response_headers, map);
            modify_map(&b.response_headers, map);
        }
    }

    fn mirrors(&self) -> &[crate::gateway::Mirror] {
        self.parts().map_or(&[][..], |(a, _)| &a.mirrors[..])
    }
}

/// Resolves at `deadline`, never without one.
pub(crate) async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// How a stream ended.
pub(super) enum StreamEnd {
    /// The exchange completed.
    Done,
    /// The client reset the stream.
    ClientReset,
    /// The exchange failed; `head_sent` tells whether a response head went
    /// out already (then the stream was reset).
    Failed { err: Error, head_sent: bool },
}

impl StreamEnd {
    pub(super) fn failed(err: Error, head_sent: bool) -> Self {
        StreamEnd::Failed { err, head_sent }
    }
}

/// A request answered by lb itself.
enum Early {
    Error(Error),
    /// A redirect: status and `Location`.
    Redirect(u16, String),
    /// A Gateway rule's own status.
    Answer(u16),
}

/// Counts client stream resets in one-second windows.
struct ResetMeter {
    limit: u32,
    window: Cell<Instant>,
    count: Cell<u32>,
    tripped: Cell<bool>,
}

impl ResetMeter {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            window: Cell::new(Instant::now()),
            count: Cell::new(0),
            tripped: Cell::new(false),
        }
    }

    fn hit(&self) {
        let now = Instant::now();
        if now.duration_since(self.window.get()) >= Duration::from_secs(1) {
            self.window.set(now);
            self.count.set(0);
        }
        let n = self.count.get().saturating_add(1);
        self.count.set(n);
        if n > self.limit {
            self.tripped.set(true);
        }
    }
}

/// Serves HTTP/2 on an established connection (after TLS with ALPN `h2`,
/// or cleartext that began with the preface) until the client goes away,
/// the connection idles for `idle_timeout` with no stream open, or the
/// worker drains; the last two send GOAWAY and let open streams finish.
pub(crate) async fn serve_h2<IO>(
    proxy: &HttpProxy,
    io: IO,
    peer: SocketAddr,
    tls: bool,
    sni: Option<Box<str>>,
    mut drain: Drain,
    gateway: Option<SocketAddr>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let settings = proxy.settings();
    let h = &settings.http2;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(h.max_concurrent_streams)
        .max_header_list_size(u32::try_from(h.max_header_list_size).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(h.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(h.max_local_error_reset_streams))
        .initial_window_size(h.stream_window)
        .initial_connection_window_size(h.connection_window)
        .max_send_buffer_size(SEND_BUFFER);
    let flood = Rc::new(Notify::new());
    let mut io = MeteredIo::new(io, h.max_control_frames_per_second, Rc::clone(&flood));
    let handshake = builder.handshake::<_, Bytes>(&mut io);
    let mut conn = match tokio::time::timeout(settings.header_read_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTP/2 handshake timed out");
            return;
        }
    };
    let ctx = Ctx {
        proxy,
        client_ip: peer.ip().to_canonical().to_string(),
        peer_ip: peer.ip(),
        tls,
        sni,
        resets: ResetMeter::new(h.max_resets_per_second),
        gateway,
    };
    let mut streams = FuturesUnordered::new();
    let mut closing = false;
    let mut calmed = false;
    let idle = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(idle);
    // Once GOAWAY went out and no stream is open, h2 still waits for the
    // client to acknowledge its closing PING; this deadline ends that wait.
    let hard = tokio::time::sleep(h.goaway_timeout);
    tokio::pin!(hard);
    let mut hard_armed = false;
    loop {
        if closing && streams.is_empty() {
            if !hard_armed {
                hard.as_mut().reset(Instant::now() + h.goaway_timeout);
                hard_armed = true;
            }
        } else {
            hard_armed = false;
        }
        tokio::select! {
            biased;
            () = &mut hard, if hard_armed => {
                tracing::debug!(%peer, "HTTP/2 GOAWAY not completed in time, closing");
                break;
            }
            _ = drain.wait(), if !closing => {
                closing = true;
                conn.graceful_shutdown();
            }
            Some(()) = streams.next(), if !streams.is_empty() => {
                if ctx.resets.tripped.get() && !calmed {
                    calmed = true;
                    closing = true;
                    tracing::info!(%peer, "HTTP/2 client reset too many streams, sending GOAWAY");
                    conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                }
                if streams.is_empty() {
                    idle.as_mut().reset(Instant::now() + settings.idle_timeout);
                }
            }
            r = conn.accept() => match r {
                Some(Ok((req, respond))) => streams.push(ctx.serve_stream(req, respond)),
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTP/2 connection ended");
                    break;
                }
                None => break,
            },
            () = flood.notified(), if !calmed => {
                calmed = true;
                closing = true;
                tracing::info!(%peer, "HTTP/2 client sent too many PING or SETTINGS frames, sending GOAWAY");
                conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
            }
            () = &mut idle, if streams.is_empty() && !closing => {
                closing = true;
                conn.graceful_shutdown();
            }
        }
    }
    drop(streams);
    drop(conn);
    linger(&mut io).await;
}

/// Closes the connection gracefully: shuts down the write side, then
/// discards what the client still sends for a short while, so that a
/// closing GOAWAY is read by the client rather than lost to a reset.
async fn linger<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO) {
    // A client that takes no bytes cannot hold the close: shutting down
    // (which flushes) gets the same short bound as the discarding.
    let _ = tokio::time::timeout(LINGER, io.shutdown()).await;
    let mut scratch = [0u8; 4096];
    let deadline = Instant::now() + LINGER;
    let mut discarded = 0usize;
    while discarded < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, io.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => break,
        }
    }
}

impl Ctx<'_> {
    /// What lb adds to requests of this connection going to `plan`.
    pub(super) fn fwd<'p>(&'p self, plan: &'p Plan) -> Fwd<'p> {
        Fwd {
            client_ip: &self.client_ip,
            proto: if self.tls { "https" } else { "http" },
            host: Some(
                plan.forwarded_host
                    .as_deref()
                    .unwrap_or(&plan.authority)
                    .as_bytes(),
            ),
        }
    }

    async fn serve_stream(&self, req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let is_head = req.method() == Method::HEAD;
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let end = match self.route(&req) {
            Err(Early::Error(err)) => StreamEnd::failed(err, false),
            Err(Early::Redirect(status, location)) => {
                self.redirect(&mut respond, status, &location);
                return;
            }
            Err(Early::Answer(status)) => {
                self.reply_error(&mut respond, status, is_head, grpc);
                return;
            }
            Ok(plan) => {
                if plan.gw.as_ref().is_some_and(|g| !g.mirrors().is_empty()) {
                    self.mirror(&plan, &req);
                }
                match plan.protocol {
                    UpstreamProtocol::H2c => to_h2c::exchange(self, &plan, req, &mut respond).await,
                    UpstreamProtocol::Http1 => {
                        to_h1::exchange(self, &plan, req, &mut respond).await
                    }
                }
            }
        };
        match end {
            StreamEnd::Done => {}
            StreamEnd::ClientReset => self.resets.hit(),
            StreamEnd::Failed { err, head_sent } => {
                if err.side() == Side::Upstream && err.kind() != ErrorKind::NoEndpoints {
                    self.proxy.counters().upstream_errors.inc();
                }
                tracing::debug!(error = %err, head_sent, "HTTP/2 request failed");
                if !head_sent {
                    self.reply_error(&mut respond, err.status(), is_head, grpc);
                }
            }
        }
    }

    /// Routes a request exactly as the HTTP/1.1 proxy does.
    fn route(&self, req: &Request<RecvStream>) -> Result<Plan, Early> {
        let s = self.proxy.settings();
        let early = |kind, detail| Early::Error(Error::new(kind, Side::Downstream, detail));
        if req.method() == Method::CONNECT {
            return Err(early(ErrorKind::UnsupportedMethod, "CONNECT"));
        }
        let authority = match req.uri().authority() {
            Some(a) => a.as_str(),
            None => match req.headers().get(header::HOST) {
                Some(h) if valid_authority(h.as_bytes()) => h.to_str().unwrap_or_default(),
                _ => return Err(early(ErrorKind::MissingHost, "no :authority or Host")),
            },
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        // The HTTP/1.1 request line takes visible ASCII only (the http crate
        // lets other bytes through in a query): 400, as the h1 parser does.
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(early(
                ErrorKind::InvalidHead,
                ":path with a byte outside visible ASCII",
            ));
        }
        // RFC 9113 8.3.1: `*` is the `:path` of a server-wide OPTIONS only.
        if path == "*" && req.method() != Method::OPTIONS {
            return Err(early(
                ErrorKind::InvalidHead,
                ":path * with a method other than OPTIONS",
            ));
        }
        if path.len() > s.max_uri_bytes {
            return Err(early(ErrorKind::UriTooLong, ":path exceeds max_uri_bytes"));
        }
        // No more header fields than an HTTP/1.1 request may carry (431, as
        // the h1 parser answers): the list-size limit alone let thousands of
        // small fields through, into an HTTP/1.1 head lb itself refuses.
        if req.headers().len() > s.max_headers {
            return Err(early(
                ErrorKind::HeadTooLarge,
                "more header fields than max_headers",
            ));
        }
        // Routing and the upstream see the same normalised path.
        let normalized = crate::path::normalize_target(path)
            .map_err(|e| early(ErrorKind::InvalidHead, e.as_str()))?;
        let path: &str = &normalized;
        let content_length = content_length(req.headers())
            .map_err(|()| early(ErrorKind::InvalidFraming, "invalid content-length"))?;
        if content_length.is_some_and(|n| n > body_limit(s)) {
            return Err(early(
                ErrorKind::BodyTooLarge,
                "body exceeds max_body_bytes",
            ));
        }
        let mut host = String::new();
        normalize_host(authority, &mut host);
        let snapshot = self.proxy.snapshot.current();
        let snap = &snapshot.value;
        let mut gw = None;
        let backend_id = match self.gateway {
            None => {
                if !self.tls && snap.redirects_to_https(&host) {
                    let port = match snap.https_port {
                        Some(443) | None => String::new(),
                        Some(p) => format!(":{p}"),
                    };
                    let path = if path.starts_with('/') { path } else { "/" };
                    return Err(Early::Redirect(308, format!("https://{host}{port}{path}")));
                }
                let Some(route) = snap.routes.lookup(&host, path) else {
                    return Err(early(ErrorKind::NoRoute, "no route"));
                };
                if !lb_core::l4::source_allowed(route.source_ranges.as_ref(), self.peer_ip) {
                    // The Ingress's source ranges do not include the client.
                    return Err(Early::Answer(403));
                }
                route.backend
            }
            Some(port_key) => {
                let greq = GwRequest {
                    host: &host,
                    target: path,
                    method: req.method().as_str().as_bytes(),
                    headers: req.headers(),
                    tls: self.tls,
                    sni: self.sni.as_deref(),
                };
                let r = match route_gateway(snap, port_key, &greq, self.proxy.roll()) {
                    Err(e) => return Err(Early::Error(e)),
                    Ok(GwStep::Answer(status)) => return Err(Early::Answer(status)),
                    Ok(GwStep::Redirect { status, location }) => {
                        return Err(Early::Redirect(status, location));
                    }
                    Ok(GwStep::Forward(r)) => r,
                };
                let started = Instant::now();
                let choice = r
                    .action
                    .backends
                    .iter()
                    .position(|b| std::ptr::eq(b, r.choice))
                    .unwrap_or(0);
                gw = Some((
                    r.upstream_target(path),
                    r.host_rewrite().map(str::to_owned),
                    GwPlan {
                        snapshot: Rc::clone(&snapshot),
                        target: r.entry.target,
                        choice,
                        head_deadline: r.attempt_deadline(r.request_deadline(started)),
                    },
                ));
                r.backend
            }
        };
        let backend = snap.backend(backend_id);
        let endpoints = backend.map_or(&[][..], |b| &b.endpoints[..]);
        if endpoints.is_empty() {
            return Err(Early::Error(Error::new(
                ErrorKind::NoEndpoints,
                Side::Upstream,
                "no endpoints",
            )));
        }
        let policy = backend.map_or(&Policy::RoundRobin, |b| &b.policy);
        let key = policy.request_key(
            &self.client_ip,
            req.headers()
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
        );
        let Some(addr) = self
            .proxy
            .balancer
            .pick(backend_id, endpoints, policy, key, &[])
        else {
            return Err(Early::Error(Error::new(
                ErrorKind::NoEndpoints,
                Side::Upstream,
                "no endpoints",
            )));
        };
        let mut plan = Plan {
            addr,
            protocol: backend.map_or(UpstreamProtocol::Http1, |b| b.protocol),
            authority: authority.to_owned(),
            path: path.to_owned(),
            content_length,
            forwarded_host: None,
            gw: None,
        };
        if let Some((target, host, g)) = gw {
            if let Some(t) = target {
                plan.path = t;
            }
            if let Some(h) = host {
                plan.forwarded_host = Some(std::mem::replace(&mut plan.authority, h));
            }
            plan.gw = Some(g);
        }
        Ok(plan)
    }

    /// Sends a copy of a bodiless Gateway request to the rule's mirror
    /// backends (as HTTP/1.1, after the request filters). Requests with a
    /// body are not mirrored.
    fn mirror(&self, plan: &Plan, req: &Request<RecvStream>) {
        let Some(g) = &plan.gw else { return };
        if !req.body().is_end_stream() {
            return;
        }
        let mut headers = req.headers().clone();
        g.modify_request(&mut headers);
        let framing = if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
            ReqFraming::Length(0)
        } else {
            ReqFraming::None
        };
        let mut out = BytesMut::with_capacity(1024);
        translate::encode_h1_request(
            req.method(),
            &headers,
            &plan.authority,
            &plan.path,
            framing,
            &self.fwd(plan),
            &mut out,
        );
        self.proxy
            .mirror(&g.snapshot.value, g.mirrors(), &out, &self.client_ip);
    }

    /// Answers with one of lb's own responses (`"<status> <reason>\n"`). A
    /// gRPC request gets a trailers-only gRPC answer instead (HTTP 200,
    /// `grpc-status` from the HTTP status as the gRPC spec maps them), so
    /// that gRPC clients see a status rather than a body they cannot parse.
    /// The counters record `status` either way.
    fn reply_error(
        &self,
        respond: &mut SendResponse<Bytes>,
        status: u16,
        is_head: bool,
        grpc: bool,
    ) {
        if grpc {
            let mut resp = Response::new(());
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert(
                "grpc-status",
                HeaderValue::from(u16::from(grpc_status(status))),
            );
            if let Ok(msg) = HeaderValue::from_str(&format!("{status} {}", reason(status))) {
                h.insert("grpc-message", msg);
            }
            self.proxy.counters().response(status);
            let _ = respond.send_response(resp, true);
            return;
        }
        let body = format!("{status} {}\n", reason(status));
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        self.proxy.counters().response(status);
        if let Ok(mut send) = respond.send_response(resp, is_head)
            && !is_head
        {
            let _ = send.send_data(Bytes::from(body), true);
        }
    }

    /// Answers `status` (a redirect) to `location`.
    fn redirect(&self, respond: &mut SendResponse<Bytes>, status: u16, location: &str) {
        let Ok(value) = HeaderValue::from_str(location) else {
            self.reply_error(respond, 400, false, false);
            return;
        };
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
        resp.headers_mut().insert(header::LOCATION, value);
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        self.proxy.counters().response(status);
        let _ = respond.send_response(resp, true);
    }
}

/// The gRPC status code a client derives from HTTP status `http` (gRPC's
/// "HTTP to gRPC Status Code Mapping"): 404 is UNIMPLEMENTED, 429 and 502 to
/// 504 UNAVAILABLE, and so on; anything else UNKNOWN.
fn grpc_status(http: u16) -> u8 {
    match http {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// Resolves when the client resets the stream (or the connection fails).
pub(super) async fn client_reset(respond: &mut SendResponse<Bytes>) {
    let _ = poll_fn(|cx| respond.poll_reset(cx)).await;
}
