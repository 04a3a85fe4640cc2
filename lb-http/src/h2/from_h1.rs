//! An HTTP/1.1 request forwarded to an h2c upstream: the request is sent as
//! an HTTP/2 stream on the endpoint's pooled connection (body de-framed and
//! streamed within the flow-control window), and the response comes back as
//! HTTP/1.1: `Content-Length` when the upstream gave one, else chunked (or
//! close-delimited for HTTP/1.0 clients). `Expect: 100-continue` is
//! answered by lb; response trailers are dropped.

use std::cell::RefCell;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::client;
use super::io::{H2Writer, h2_error};
use super::server::sleep_opt;
use super::translate::{self, Fwd, content_length};
use crate::downstream::DownIo;
use crate::error::{Error, ErrorKind, Side};
use crate::h1::body::{BodyClock, Sink, Source, relay_limited};
use crate::h1::chunked::{LAST_CHUNK, encode_chunk};
use crate::h1::head::{BodyKind, MessageInfo, RequestHead};
use crate::h1::rewrite::{ConnectionField, Framing};
use crate::proxy::{GwRoute, HttpProxy, body_limit};

/// The downstream side of an HTTP/1.1 request going to an h2c upstream.
pub(crate) struct H1Exchange<'a> {
    /// The client connection.
    pub stream: &'a mut DownIo,
    /// Its read buffer (may hold the start of the body).
    pub rbuf: &'a mut BytesMut,
    /// Scratch buffer.
    pub wbuf: &'a mut BytesMut,
    /// The request head.
    pub head: &'a RequestHead,
    /// Its framing facts.
    pub info: &'a MessageInfo,
    /// The requested authority (absolute-form target or `Host`), if any.
    pub authority: Option<&'a [u8]>,
    /// The origin-form target.
    pub target: &'a [u8],
    /// The client's IP address as text.
    pub client_ip: &'a str,
    /// Whether the worker is draining (the connection closes afterwards).
    pub draining: bool,
    /// Whether the request is HEAD.
    pub is_head: bool,
    /// The Gateway route (request and response filters, Host rewrite),
    /// when the request came through a Gateway listener.
    pub gateway: Option<&'a GwRoute<'a>>,
    /// When the response head must have arrived (Gateway timeouts).
    pub head_deadline: Option<Instant>,
}

/// A failed HTTP/1.1-to-h2c exchange.
#[derive(Debug)]
pub(crate) struct H1Failure {
    /// What failed.
    pub err: Error,
    /// Whether the response head already went downstream.
    pub head_sent: bool,
    /// Whether the downstream connection must close.
    pub close: bool,
}

/// Forwards an HTTP/1.1 request to the h2c endpoint `addr`. `Ok(true)`:
/// the client connection can serve another request.
pub(crate) async fn forward_h1_to_h2c(
    proxy: &HttpProxy,
    x: H1Exchange<'_>,
    addr: SocketAddr,
) -> Result<bool, H1Failure> {
    let H1Exchange {
        stream,
        rbuf,
        wbuf,
        head,
        info,
        authority,
        target,
        client_ip,
        draining,
        is_head,
        gateway,
        head_deadline,
    } = x;
    let settings = proxy.settings();
    let mut body_done = matches!(info.body, BodyKind::Empty | BodyKind::Length(0));
    let fail = |err: Error, body_done: bool| H1Failure {
        close: !body_done || !info.keep_alive || err.side() == Side::Downstream,
        err,
        head_sent: false,
    };
    let after_head = |err: Error| H1Failure {
        err,
        head_sent: true,
        close: true,
    };
    let up_authority = match (gateway.and_then(|g| g.host_rewrite()), authority) {
        (Some(h), _) => h.as_bytes().to_vec(),
        (None, Some(a)) if !a.is_empty() => a.to_vec(),
        _ => addr.to_string().into_bytes(),
    };
    let fwd = Fwd {
        client_ip,
        proto: if stream.is_tls() { "https" } else { "http" },
        host: authority,
    };
    let mut req = translate::h2_request_from_h1(head, info, &up_authority, target, &fwd)
        .map_err(|e| fail(e, body_done))?;
    if let Some(g) = gateway {
        g.modify_request_map(req.headers_mut());
    }
    let mut sender = client::checkout(addr, settings)
        .await
        .map_err(|e| fail(e, body_done))?;
    let (resp_fut, up_send) = sender.send_request(req, body_done).map_err(|e| {
        fail(
            h2_error(&e, Side::Upstream, "upstream refused the stream"),
            body_done,
        )
    })?;
    drop(sender);
    let (mut dr, mut dw) = stream.split();
    if info.expect_continue && !body_done {
        dw.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|e| {
                fail(
                    Error::io(Side::Downstream, "100 Continue not sent", e),
                    false,
                )
            })?;
    }
    let cell = RefCell::new(up_send);
    let limit = body_limit(settings);
    let pump = async {
        let mut src = Source {
            io: &mut dr,
            buf: &mut *rbuf,
            side: Side::Downstream,
            timeout: settings.idle_timeout,
            clock: Some(BodyClock::new(
                settings.body_timeout,
                settings.body_min_rate,
            )),
        };
        let mut writer = H2Writer::new(&cell, settings.send_timeout);
        let mut sink = Sink {
            io: &mut writer,
            buf: &mut *wbuf,
            side: Side::Upstream,
            chunked: false,
        };
        relay_limited(info.body, &mut src, &mut sink, limit).await?;
        cell.borrow_mut()
            .send_data(Bytes::new(), true)
            .map_err(|e| h2_error(&e, Side::Upstream, "request body not ended"))
    };
    tokio::pin!(pump);
    tokio::pin!(resp_fut);
    let mut pump_done = body_done;
    let far = Instant::now() + settings.response_timeout + settings.idle_timeout * 1000;
    let deadline = tokio::time::sleep_until(if body_done {
        Instant::now() + settings.response_timeout
    } else {
        far
    });
    tokio::pin!(deadline);
    let resp = loop {
        tokio::select! {
            biased;
            r = &mut pump, if !pump_done => {
                pump_done = true;
                match r {
                    Ok(()) => body_done = true,
                    Err(e) if e.side() == Side::Downstream => return Err(fail(e, false)),
                    Err(e) => tracing::debug!(error = %e, "request body not fully sent upstream"),
                }
                deadline.as_mut().reset(Instant::now() + settings.response_timeout);
            }
            r = &mut resp_fut => break r,
            () = sleep_opt(head_deadline) => {
                let e = Error::new(ErrorKind::Timeout, Side::Upstream, "Gateway route timeout");
                return Err(fail(e, body_done));
            }
            () = &mut deadline => {
                let e = Error::new(ErrorKind::Timeout, Side::Upstream, "response head timed out");
                return Err(fail(e, body_done));
            }
        }
    };
    let resp = resp.map_err(|e| {
        fail(
            h2_error(&e, Side::Upstream, "upstream response failed"),
            body_done,
        )
    })?;
    let (mut parts, mut up_body) = resp.into_parts();
    if let Some(g) = gateway {
        g.modify_response_map(&mut parts.headers);
    }
    let code = parts.status.as_u16();
    let no_body = is_head || code == 204 || code == 304;
    let length = content_length(&parts.headers).map_err(|()| {
        let e = Error::new(
            ErrorKind::InvalidFraming,
            Side::Upstream,
            "invalid content-length",
        );
        fail(e, body_done)
    })?;
    let mut close = !info.keep_alive || draining || !body_done;
    let framing = if no_body {
        Framing::NoBody
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if up_body.is_end_stream() {
        Framing::Length(0)
    } else if head.minor_version() >= 1 {
        Framing::Chunked
    } else {
        close = true;
        Framing::Close
    };
    let connection = if close {
        ConnectionField::Close
    } else if head.minor_version() == 0 {
        ConnectionField::KeepAlive
    } else {
        ConnectionField::None
    };
    let mut out = BytesMut::with_capacity(512);
    translate::encode_h1_response(parts.status, &parts.headers, framing, connection, &mut out);
    proxy.counters().response(code);
    dw.write_all(&out)
        .await
        .map_err(|e| after_head(Error::io(Side::Downstream, "response write failed", e)))?;
    if framing == Framing::NoBody {
        return Ok(!close && pump_done);
    }
    let copy = async {
        let timeout = settings.response_timeout;
        loop {
            let chunk = match tokio::time::timeout(timeout, up_body.data()).await {
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        Side::Upstream,
                        "body read timed out",
                    ));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(h2_error(&e, Side::Upstream, "response body read failed"));
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            if chunk.is_empty() {
                continue;
            }
            let written = if framing == Framing::Chunked {
                out.clear();
                encode_chunk(&chunk, &mut out);
                dw.write_all(&out).await
            } else {
                dw.write_all(&chunk).await
            };
            written.map_err(|e| Error::io(Side::Downstream, "response write failed", e))?;
            let _ = up_body.flow_control().release_capacity(chunk.len());
        }
        if framing == Framing::Chunked {
            dw.write_all(LAST_CHUNK)
                .await
                .map_err(|e| Error::io(Side::Downstream, "response write failed", e))?;
        }
        Ok(())
    };
    tokio::pin!(copy);
    loop {
        tokio::select! {
            biased;
            r = &mut pump, if !pump_done => {
                pump_done = true;
                match r {
                    Ok(()) => body_done = true,
                    Err(e) => tracing::debug!(error = %e, "request body not fully sent upstream"),
                }
            }
            r = &mut copy => {
                r.map_err(after_head)?;
                break;
            }
        }
    }
    Ok(!close && body_done)
}
