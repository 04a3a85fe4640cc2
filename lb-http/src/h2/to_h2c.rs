//! One HTTP/2 request forwarded to an h2c upstream: headers, body and
//! trailers stream both ways at once (gRPC unary, client, server and
//! bidirectional streaming), flow control carried through (capacity is
//! released to the sender only once the bytes went on). The response
//! timeout starts once the request body is complete.

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::Request;
use tokio::time::Instant;

use super::client;
use super::io::{PumpError, copy_h2, h2_error, is_peer_reset};
use super::server::{Ctx, Plan, StreamEnd, client_reset, sleep_opt};
use super::translate;
use crate::error::{Error, ErrorKind, Side};
use crate::h1::body::BodyClock;
use crate::proxy::body_limit;

/// What a failed request-body transfer means for the exchange: `None` when
/// only the upstream stopped reading (its response may still come).
fn request_body_failed(e: PumpError, head_sent: bool) -> Option<StreamEnd> {
    if e.client_reset {
        return Some(StreamEnd::ClientReset);
    }
    if e.err.side() == Side::Downstream {
        return Some(StreamEnd::failed(e.err, head_sent));
    }
    tracing::debug!(error = %e.err, "request body not fully sent upstream");
    None
}

/// Forwards `req` to the h2c endpoint of `plan` and the response back.
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
    let fwd = ctx.fwd(plan);
    let up_req = match translate::h2_request(
        parts.method,
        parts.headers,
        &plan.authority,
        &plan.path,
        &fwd,
    ) {
        Ok(r) => r,
        Err(err) => return StreamEnd::failed(err, false),
    };
    let end = body.is_end_stream();
    let sender = tokio::select! {
        biased;
        () = client_reset(respond) => return StreamEnd::ClientReset,
        s = client::checkout(plan.addr, settings) => s,
    };
    let mut sender = match sender {
        Ok(s) => s,
        Err(err) => return StreamEnd::failed(err, false),
    };
    let (resp_fut, mut up_send) = match sender.send_request(up_req, end) {
        Ok(pair) => pair,
        Err(e) => {
            let err = h2_error(&e, Side::Upstream, "upstream refused the stream");
            return StreamEnd::failed(err, false);
        }
    };
    drop(sender);

    let limit = body_limit(settings);
    let pump = async {
        if end {
            return Ok(0);
        }
        copy_h2(
            &mut body,
            &mut up_send,
            Side::Downstream,
            settings.idle_timeout,
            limit,
            settings.send_timeout,
            Some(BodyClock::new(
                settings.body_timeout,
                settings.body_min_rate,
            )),
        )
        .await
    };
    tokio::pin!(pump);
    tokio::pin!(resp_fut);
    let mut pump_done = end;
    // Far enough never to fire before the request body completes.
    let far = Instant::now() + settings.response_timeout + settings.idle_timeout * 1000;
    let deadline = tokio::time::sleep_until(if end {
        Instant::now() + settings.response_timeout
    } else {
        far
    });
    tokio::pin!(deadline);
    let resp = loop {
        tokio::select! {
            biased;
            () = client_reset(respond) => return StreamEnd::ClientReset,
            r = &mut pump, if !pump_done => {
                pump_done = true;
                if let Err(e) = r
                    && let Some(end) = request_body_failed(e, false)
                {
                    return end;
                }
                deadline.as_mut().reset(Instant::now() + settings.response_timeout);
            }
            r = &mut resp_fut => break r,
            () = sleep_opt(plan.gw.as_ref().and_then(|g| g.head_deadline)) => {
                let err = Error::new(ErrorKind::Timeout, Side::Upstream, "Gateway route timeout");
                return StreamEnd::failed(err, false);
            }
            () = &mut deadline => {
                let err = Error::new(ErrorKind::Timeout, Side::Upstream, "response head timed out");
                return StreamEnd::failed(err, false);
            }
        }
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            let err = h2_error(&e, Side::Upstream, "upstream response failed");
            return StreamEnd::failed(err, false);
        }
    };
    let (rparts, mut up_body) = resp.into_parts();
    let status = rparts.status.as_u16();
    let eos = up_body.is_end_stream();
    let mut down_resp = translate::h2_response(rparts.status, rparts.headers);
    if let Some(g) = &plan.gw {
        g.modify_response(down_resp.headers_mut());
    }
    let mut down_send = match respond.send_response(down_resp, eos) {
        Ok(s) => s,
        Err(e) if is_peer_reset(&e) => return StreamEnd::ClientReset,
        Err(e) => {
            let err = h2_error(&e, Side::Downstream, "response head not sent");
            return StreamEnd::failed(err, true);
        }
    };
    ctx.proxy.counters().response(status);
    if eos {
        return StreamEnd::Done;
    }
    let result = {
        let copy = copy_h2(
            &mut up_body,
            &mut down_send,
            Side::Upstream,
            settings.response_timeout,
            u64::MAX,
            settings.send_timeout,
            None,
        );
        tokio::pin!(copy);
        loop {
            tokio::select! {
                biased;
                r = &mut pump, if !pump_done => {
                    pump_done = true;
                    if let Err(e) = r
                        && let Some(end) = request_body_failed(e, true)
                    {
                        break Err(end);
                    }
                }
                r = &mut copy => break r.map_err(|e| {
                    if e.client_reset {
                        StreamEnd::ClientReset
                    } else {
                        StreamEnd::failed(e.err, true)
                    }
                }),
            }
        }
    };
    match result {
        Ok(_) => StreamEnd::Done,
        Err(StreamEnd::Failed { err, head_sent }) => {
            let reason = if err.side() == Side::Upstream {
                Reason::INTERNAL_ERROR
            } else {
                Reason::CANCEL
            };
            down_send.send_reset(reason);
            StreamEnd::Failed { err, head_sent }
        }
        Err(end) => end,
    }
}
