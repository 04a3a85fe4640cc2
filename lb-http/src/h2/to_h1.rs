//! One HTTP/2 request forwarded to an HTTP/1.1 upstream over the worker's
//! keep-alive pool: the request goes out as HTTP/1.1 (Content-Length when
//! known, else chunked), the response head is parsed with the HTTP/1.1
//! parser and its body, de-chunked, streams into the h2 stream within its
//! flow-control window. Interim 1xx responses and chunked trailers are
//! dropped. A bodiless request that finds its pooled connection dead is
//! retried once on a new connection.

use std::cell::RefCell;
use std::future::poll_fn;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{Method, Request};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::io::{H2Writer, PumpError, h2_error, is_peer_reset};
use super::server::{Ctx, Plan, StreamEnd, client_reset, sleep_opt};
use super::translate::{self, ReqFraming};
use crate::error::{Error, ErrorKind, Side};
use crate::h1::body::{BodyClock, Sink, Source, relay};
use crate::h1::chunked::{LAST_CHUNK, encode_chunk};
use crate::h1::head::{BodyKind, parse_response, response_info};
use crate::proxy::body_limit;
use crate::upstream::UpstreamConn;

/// Read-buffer growth step while reading the response head.
const HEAD_CHUNK: usize = 16 * 1024;

/// Forwards `req` to the HTTP/1.1 endpoint of `plan` and the response back.
pub(super) async fn exchange(
    ctx: &Ctx<'_>,
    plan: &Plan,
    req: Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
) -> StreamEnd {
    let settings = ctx.proxy.settings();
    let (mut parts, mut body) = req.into_parts();
    if let Some(g) = &plan.gw {
        g.modify_request(&mut parts.headers);
    }
    let end = body.is_end_stream();
    // A method that defines a body gets `Content-Length: 0` when it has none
    // (some servers insist on a length for POST).
    let defines_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    let framing = match (plan.content_length, end) {
        (Some(n), false) => ReqFraming::Length(n),
        (Some(0), true) => ReqFraming::Length(0),
        (None, true) if defines_body => ReqFraming::Length(0),
        (_, true) => ReqFraming::None,
        (None, false) => ReqFraming::Chunked,
    };
    let mut head = BytesMut::with_capacity(1024);
    let fwd = ctx.fwd(plan);
    translate::encode_h1_request(
        &parts.method,
        &parts.headers,
        &plan.authority,
        &plan.path,
        framing,
        &fwd,
        &mut head,
    );
    let is_head = parts.method == Method::HEAD;
    drop(parts);
    let up = tokio::select! {
        biased;
        () = client_reset(respond) => return StreamEnd::ClientReset,
        r = ctx.proxy.upstream(plan.addr) => r,
    };
    let mut up = match up {
        Ok(up) => up,
        Err(err) => return StreamEnd::failed(err, false),
    };
    let mut retried = false;
    let x = Exchange {
        ctx,
        plan,
        head: &head,
        framing,
        is_head,
    };
    loop {
        let reused = up.is_reused();
        match x.attempt(up, &mut body, respond).await {
            Ok(end) => return end,
            Err(err) if end && reused && !retried => {
                tracing::debug!(error = %err, "pooled upstream connection was dead, retrying");
                retried = true;
                up = match UpstreamConn::connect(plan.addr, settings.connect_timeout).await {
                    Ok(up) => up,
                    Err(err) => return StreamEnd::failed(err, false),
                };
            }
            Err(err) => return StreamEnd::failed(err, false),
        }
    }
}

struct Exchange<'a> {
    ctx: &'a Ctx<'a>,
    plan: &'a Plan,
    head: &'a [u8],
    framing: ReqFraming,
    is_head: bool,
}

/// What a failed request-body transfer means: `None` when only the
/// upstream stopped reading (its response may still come).
fn body_failed(e: PumpError, head_sent: bool) -> Option<StreamEnd> {
    if e.client_reset {
        return Some(StreamEnd::ClientReset);
    }
    if e.err.side() == Side::Downstream {
        return Some(StreamEnd::failed(e.err, head_sent));
    }
    tracing::debug!(error = %e.err, "request body not fully sent upstream");
    None
}

impl Exchange<'_> {
    /// One try on connection `up`. `Err`: the upstream failed before it
    /// can have processed anything (safe to retry a bodiless request).
    async fn attempt(
        &self,
        mut up: UpstreamConn,
        body: &mut RecvStream,
        respond: &mut SendResponse<Bytes>,
    ) -> Result<StreamEnd, Error> {
        let settings = self.ctx.proxy.settings();
        if let Err(e) = up.stream.write_all(self.head).await {
            return Err(Error::io(Side::Upstream, "request write failed", e));
        }
        let end = matches!(self.framing, ReqFraming::None | ReqFraming::Length(0));
        let limit = body_limit(settings);
        let reusable;
        {
            let (mut ur, mut uw) = up.stream.split();
            let chunked = self.framing == ReqFraming::Chunked;
            let pump = async {
                if end {
                    return Ok(());
                }
                pump_to_h1(body, &mut uw, chunked, settings, limit).await
            };
            tokio::pin!(pump);
            let mut pump_done = end;
            let mut pump_ok = true;
            let far = Instant::now() + settings.response_timeout + settings.idle_timeout * 1000;
            let deadline = tokio::time::sleep_until(if end {
                Instant::now() + settings.response_timeout
            } else {
                far
            });
            tokio::pin!(deadline);
            let mut spans = Vec::new();
            let mut received = false;
            let resp_head = loop {
                if !up.buf.is_empty() {
                    received = true;
                    let parsed = parse_response(
                        &mut up.buf,
                        settings.max_header_bytes,
                        settings.max_headers,
                        &mut spans,
                    );
                    match parsed {
                        Err(e) => return Ok(StreamEnd::failed(e, false)),
                        Ok(Some(h)) if h.code() == 101 => {
                            let e = Error::new(
                                ErrorKind::InvalidHead,
                                Side::Upstream,
                                "unexpected 101",
                            );
                            return Ok(StreamEnd::failed(e, false));
                        }
                        Ok(Some(h)) if h.code() < 200 => {
                            spans = h.into_spans();
                            continue;
                        }
                        Ok(Some(h)) => break h,
                        Ok(None) => {}
                    }
                }
                if up.buf.capacity() - up.buf.len() < 1024 {
                    up.buf.reserve(HEAD_CHUNK);
                }
                tokio::select! {
                    biased;
                    () = client_reset(respond) => return Ok(StreamEnd::ClientReset),
                    r = &mut pump, if !pump_done => {
                        pump_done = true;
                        if let Err(e) = r {
                            pump_ok = false;
                            if let Some(end) = body_failed(e, false) {
                                return Ok(end);
                            }
                        }
                        deadline.as_mut().reset(Instant::now() + settings.response_timeout);
                    }
                    r = ur.read_buf(&mut up.buf) => match r {
                        Ok(0) => {
                            let e = Error::new(ErrorKind::Closed, Side::Upstream, "closed before response head");
                            return if received || !end { Ok(StreamEnd::failed(e, false)) } else { Err(e) };
                        }
                        Err(e) => {
                            let e = Error::io(Side::Upstream, "response head read failed", e);
                            return if received || !end { Ok(StreamEnd::failed(e, false)) } else { Err(e) };
                        }
                        Ok(_) => {}
                    },
                    () = &mut deadline => {
                        let e = Error::new(ErrorKind::Timeout, Side::Upstream, "response head timed out");
                        return Ok(StreamEnd::failed(e, false));
                    }
                    () = sleep_opt(self.plan.gw.as_ref().and_then(|g| g.head_deadline)) => {
                        let e = Error::new(ErrorKind::Timeout, Side::Upstream, "Gateway route timeout");
                        return Ok(StreamEnd::failed(e, false));
                    }
                }
            };
            let info = match response_info(&resp_head, self.is_head) {
                Ok(info) => info,
                Err(e) => return Ok(StreamEnd::failed(e, false)),
            };
            let code = resp_head.code();
            let no_body = self.is_head || code == 204 || code == 304;
            let mut resp = match translate::h2_response_from_h1(&resp_head, &info, no_body) {
                Ok(r) => r,
                Err(e) => return Ok(StreamEnd::failed(e, false)),
            };
            if let Some(g) = &self.plan.gw {
                g.modify_response(resp.headers_mut());
            }
            drop(resp_head);
            let eos = matches!(info.body, BodyKind::Empty | BodyKind::Length(0));
            let down_send = match respond.send_response(resp, eos) {
                Ok(s) => s,
                Err(e) if is_peer_reset(&e) => return Ok(StreamEnd::ClientReset),
                Err(e) => {
                    let e = h2_error(&e, Side::Downstream, "response head not sent");
                    return Ok(StreamEnd::failed(e, true));
                }
            };
            self.ctx.proxy.counters().response(code);
            if eos {
                reusable = info.keep_alive && pump_done && pump_ok && up.buf.is_empty();
            } else {
                let cell = RefCell::new(down_send);
                let mut writer = H2Writer::new(&cell, settings.send_timeout);
                let mut scratch = BytesMut::new();
                let relayed = {
                    let relay_body = async {
                        let mut src = Source {
                            io: &mut ur,
                            buf: &mut up.buf,
                            side: Side::Upstream,
                            timeout: settings.response_timeout,
                            clock: None,
                        };
                        let mut sink = Sink {
                            io: &mut writer,
                            buf: &mut scratch,
                            side: Side::Downstream,
                            chunked: false,
                        };
                        relay(info.body, &mut src, &mut sink).await
                    };
                    tokio::pin!(relay_body);
                    loop {
                        tokio::select! {
                            biased;
                            _ = poll_fn(|cx| cell.borrow_mut().poll_reset(cx)) => {
                                return Ok(StreamEnd::ClientReset);
                            }
                            r = &mut pump, if !pump_done => {
                                pump_done = true;
                                if let Err(e) = r {
                                    pump_ok = false;
                                    if let Some(end) = body_failed(e, true) {
                                        return Ok(end);
                                    }
                                }
                            }
                            r = &mut relay_body => break r,
                        }
                    }
                };
                if let Err(e) = relayed {
                    if e.side() == Side::Upstream {
                        cell.borrow_mut().send_reset(Reason::INTERNAL_ERROR);
                    }
                    return Ok(StreamEnd::failed(e, true));
                }
                if cell.borrow_mut().send_data(Bytes::new(), true).is_err() {
                    return Ok(StreamEnd::ClientReset);
                }
                reusable = info.keep_alive && pump_done && pump_ok && up.buf.is_empty();
            }
        }
        if reusable {
            self.ctx.proxy.pool.put(up);
        }
        Ok(StreamEnd::Done)
    }
}

/// Streams an h2 request body into an HTTP/1.1 upstream, re-framed as
/// chunks when `chunked`, releasing flow-control capacity as bytes go out.
async fn pump_to_h1<W: AsyncWrite + Unpin>(
    src: &mut RecvStream,
    dst: &mut W,
    chunked: bool,
    settings: &crate::settings::ProxySettings,
    limit: u64,
) -> Result<(), PumpError> {
    let mut out = BytesMut::new();
    let mut total = 0u64;
    let write_failed =
        |e| PumpError::new(Error::io(Side::Upstream, "request body write failed", e));
    let timeout = settings.idle_timeout;
    let mut clock = BodyClock::new(settings.body_timeout, settings.body_min_rate);
    loop {
        let wait = clock.bound(timeout);
        let started = Instant::now();
        let next = tokio::time::timeout(wait, src.data()).await;
        let got = match &next {
            Ok(Some(Ok(chunk))) => chunk.len(),
            _ => 0,
        };
        clock.record(started.elapsed(), got);
        let chunk = match next {
            Err(_) => {
                let detail = if wait < timeout {
                    "request body too slow (http.body_timeout)"
                } else {
                    "body read timed out"
                };
                let e = Error::new(ErrorKind::Timeout, Side::Downstream, detail);
                return Err(PumpError::new(e));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(PumpError {
                    err: h2_error(&e, Side::Downstream, "request body read failed"),
                    client_reset: is_peer_reset(&e),
                });
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        if chunk.is_empty() {
            continue;
        }
        total += chunk.len() as u64;
        if total > limit {
            return Err(PumpError::new(Error::new(
                ErrorKind::BodyTooLarge,
                Side::Downstream,
                "body exceeds max_body_bytes",
            )));
        }
        let written = if chunked {
            out.clear();
            encode_chunk(&chunk, &mut out);
            dst.write_all(&out).await
        } else {
            dst.write_all(&chunk).await
        };
        written.map_err(write_failed)?;
        let _ = src.flow_control().release_capacity(chunk.len());
    }
    if chunked {
        dst.write_all(LAST_CHUNK).await.map_err(write_failed)?;
    }
    Ok(())
}
