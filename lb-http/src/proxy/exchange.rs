//! The exchange with the upstream once a request is routed: streaming the
//! request body while waiting for the response head (relaying interim 1xx
//! answers), then sending the response downstream and returning the
//! upstream connection to the pool when it is clean.

use std::cell::Cell;

use bytes::Buf;
use lb_core::runtime::Drain;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::wire::{body_outcome, read_response_head};
use super::{
    Downstream, EARLY_RESPONSE_LIMIT, Exchanged, Failure, HttpProxy, INLINE_BODY, Next, body_limit,
};
use crate::error::{Error, Side};
use crate::h1::body::{BodyClock, Sink, Source, relay};
use crate::h1::head::{BodyKind, MessageInfo, RequestHead, ResponseHead, response_info};
use crate::h1::rewrite::{ConnectionField, Framing, encode_response, encode_response_fields};
use crate::upstream::UpstreamConn;

impl HttpProxy {
    /// Streams the request body (if any) while waiting for the final response
    /// head, relaying interim 1xx responses. `body_done` is updated.
    pub(super) async fn exchange(
        &self,
        down: &mut Downstream,
        up: &mut UpstreamConn,
        info: &MessageInfo,
        body_done: &mut bool,
        client_minor: u8,
        upgrade: bool,
    ) -> Result<ResponseHead, Error> {
        let finished = Cell::new(*body_done);
        let (mut dr, mut dw) = down.stream.split();
        let (mut ur, mut uw) = up.stream.split();
        let mut head_fut = Box::pin(read_response_head(
            &mut ur,
            &mut up.buf,
            &mut dw,
            client_minor,
            upgrade,
            &finished,
            &self.settings,
            &mut down.resp_spans,
        ));
        if *body_done {
            return head_fut.await;
        }
        let body_fut = async {
            let mut src = Source {
                io: &mut dr,
                buf: &mut down.rbuf,
                side: Side::Downstream,
                timeout: self.settings.idle_timeout,
                clock: Some(BodyClock::new(
                    self.settings.body_timeout,
                    self.settings.body_min_rate,
                )),
            };
            let mut sink = Sink {
                io: &mut uw,
                buf: &mut down.wbuf,
                side: Side::Upstream,
                chunked: true,
            };
            let limit = body_limit(&self.settings);
            let result =
                crate::h1::body::relay_limited(info.body, &mut src, &mut sink, limit).await;
            if result.is_ok() {
                finished.set(true);
            }
            result
        };
        tokio::pin!(body_fut);
        let mut body_running = true;
        let head = loop {
            tokio::select! {
                r = &mut body_fut, if body_running => {
                    body_running = false;
                    body_outcome(r)?;
                }
                head = &mut head_fut => break head?,
            }
        };
        drop(head_fut);
        // The upstream answered while the request body is still flowing (an
        // echo-style server): keep sending the body, and hold the response
        // bytes that arrive meanwhile (bounded) so neither side stalls.
        while body_running {
            tokio::select! {
                r = &mut body_fut => {
                    body_running = false;
                    body_outcome(r)?;
                }
                r = ur.read_buf(&mut up.buf), if up.buf.len() < EARLY_RESPONSE_LIMIT => {
                    match r {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
        }
        *body_done = finished.get();
        Ok(head)
    }

    /// Sends the response downstream and returns the upstream connection to
    /// the pool when it is clean.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn respond(
        &self,
        down: &mut Downstream,
        exchanged: Exchanged<'_, '_>,
        req: &RequestHead,
        req_info: &MessageInfo,
        drain: &Drain,
        is_head: bool,
    ) -> Result<Next, Failure> {
        let Exchanged {
            mut up,
            resp,
            body_done,
            gateway,
        } = exchanged;
        let before_head = |err: Error| Failure {
            err,
            head_sent: false,
            close: true,
        };
        let info = response_info(&resp, is_head).map_err(before_head)?;
        let code = resp.code();
        let no_body = is_head || code == 204 || code == 304;
        let mut close = !req_info.keep_alive || !body_done || drain.is_draining();
        let framing = match info.body {
            BodyKind::Empty if no_body => Framing::NoBody,
            BodyKind::Empty => Framing::Length(0),
            BodyKind::Length(n) => Framing::Length(n),
            BodyKind::Chunked if req.minor_version() >= 1 => Framing::Chunked,
            BodyKind::Chunked | BodyKind::UntilClose => {
                close = true;
                Framing::Close
            }
        };
        let connection = if close {
            ConnectionField::Close
        } else if req.minor_version() == 0 {
            ConnectionField::KeepAlive
        } else {
            ConnectionField::None
        };
        down.wbuf.clear();
        match gateway.filter(|r| r.changes_response_fields()) {
            Some(r) => {
                let fields = r.response_fields(&resp);
                encode_response_fields(
                    &resp,
                    &info,
                    framing,
                    connection,
                    fields.into_iter(),
                    &mut down.wbuf,
                );
            }
            None => encode_response(&resp, &info, framing, connection, &mut down.wbuf),
        }
        down.resp_spans = resp.into_spans();
        let mut body = info.body;
        if let BodyKind::Length(n) = body
            && n as usize <= INLINE_BODY
            && n as usize <= up.buf.len()
        {
            down.wbuf.extend_from_slice(&up.buf[..n as usize]);
            up.buf.advance(n as usize);
            body = BodyKind::Empty;
            down.outcome.bytes = n;
        }
        self.counters().response(code);
        down.outcome.status = code;
        let after_head = |err: Error| Failure {
            err,
            head_sent: true,
            close: true,
        };
        down.stream
            .write_all(&down.wbuf)
            .await
            .map_err(|e| after_head(Error::io(Side::Downstream, "response write failed", e)))?;
        let mut src = Source {
            io: &mut up.stream,
            buf: &mut up.buf,
            side: Side::Upstream,
            timeout: self.settings.response_timeout,
            clock: None,
        };
        let mut sink = Sink {
            io: &mut down.stream,
            buf: &mut down.wbuf,
            side: Side::Downstream,
            chunked: framing == Framing::Chunked,
        };
        let streamed = relay(body, &mut src, &mut sink).await.map_err(after_head)?;
        down.outcome.bytes += streamed;
        if info.keep_alive && body_done && up.buf.is_empty() {
            self.pool.put(up);
        }
        Ok(if close { Next::Close } else { Next::KeepAlive })
    }
}
