//! HTTP/1.1 wire helpers of the proxy: request-target splitting, reading
//! upstream response heads (relaying interim 1xx), judging a request-body
//! relay, checking buffered body framing before connecting, and lingering
//! close.

use std::cell::Cell;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{BUFFER, LINGER};
use crate::downstream::DownIo;
use crate::error::{Error, ErrorKind, Side};
use crate::h1::head::{
    BodyKind, HeaderSpan, MessageInfo, ResponseHead, parse_response, response_info,
};
use crate::h1::rewrite::{ConnectionField, Framing, encode_response};
use crate::settings::ProxySettings;

/// Judges a finished request-body relay: a downstream failure ends the
/// exchange; an upstream one (it stopped reading) is logged, since the
/// upstream may still answer.
pub(super) fn body_outcome<T>(r: Result<T, Error>) -> Result<(), Error> {
    match r {
        Err(e) if e.side() == Side::Downstream => Err(e),
        Err(e) => {
            tracing::debug!(error = %e, "request body not fully sent");
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

/// Splits a request target into (authority, origin-form target). Origin-form
/// has no authority; absolute-form `http://host/path?q` yields `host` and
/// `/path?q` (`?q` or empty when the path is empty; the rewrite adds the
/// `/`); `*` stays `*`. Anything else is refused.
pub(crate) fn split_target(target: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    if target.first() == Some(&b'/') || target == b"*" {
        return Some((None, target));
    }
    let scheme_len = if target.len() >= 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else if target.len() >= 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else {
        return None;
    };
    let rest = &target[scheme_len..];
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority.contains(&b'@') {
        return None;
    }
    let path = &rest[end..];
    Some((Some(authority), path))
}

/// Reads upstream heads until a final (non-1xx) one; interim responses are
/// relayed to HTTP/1.1 clients. The response timeout only runs once the
/// request body has been sent (`body_finished`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn read_response_head<R, W>(
    ur: &mut R,
    buf: &mut BytesMut,
    dw: &mut W,
    client_minor: u8,
    upgrade: bool,
    body_finished: &Cell<bool>,
    settings: &ProxySettings,
    spans: &mut Vec<HeaderSpan>,
) -> Result<ResponseHead, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut received = false;
    let mut deadline = Instant::now() + settings.response_timeout;
    loop {
        if !buf.is_empty() {
            received = true;
            if let Some(head) =
                parse_response(buf, settings.max_header_bytes, settings.max_headers, spans)?
            {
                if head.code() >= 200 {
                    return Ok(head);
                }
                if head.code() == 101 && upgrade {
                    return Ok(head);
                }
                if head.code() == 101 {
                    return Err(Error::new(
                        ErrorKind::InvalidHead,
                        Side::Upstream,
                        "unexpected 101",
                    ));
                }
                if client_minor >= 1 {
                    let info = response_info(&head, false)?;
                    let mut out = BytesMut::with_capacity(head.raw().len() + 16);
                    encode_response(
                        &head,
                        &info,
                        Framing::NoBody,
                        ConnectionField::None,
                        &mut out,
                    );
                    dw.write_all(&out).await.map_err(|e| {
                        Error::io(Side::Downstream, "interim response write failed", e)
                    })?;
                }
                *spans = head.into_spans();
                deadline = Instant::now() + settings.response_timeout;
                continue;
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(BUFFER);
        }
        match tokio::time::timeout_at(deadline, ur.read_buf(buf)).await {
            Err(_) if !body_finished.get() => {
                deadline = Instant::now() + settings.response_timeout;
            }
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    Side::Upstream,
                    "response head timed out",
                ));
            }
            Ok(Ok(0)) => {
                return Err(Error::new(
                    ErrorKind::Closed,
                    Side::Upstream,
                    "closed before response head",
                )
                .retry_safe(!received));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(
                    Error::io(Side::Upstream, "response head read failed", e).retry_safe(!received)
                );
            }
        }
    }
}

/// Closes a downstream connection gently: shuts its sending side down,
/// then reads and discards what the client still sends for [`LINGER`] (at
/// most 256 KiB), so that unread request bytes do not turn the close into a
/// reset. The shutdown itself (which flushes) is bounded by [`LINGER`] too:
/// a client that takes no bytes cannot hold the connection.
pub(super) async fn linger_close(stream: &mut DownIo) {
    let _ = tokio::time::timeout(LINGER, stream.shutdown()).await;
    let mut scratch = [0u8; 4096];
    let deadline = Instant::now() + LINGER;
    let mut discarded = 0usize;
    while discarded < 256 * 1024 {
        match tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => break,
        }
    }
}

/// Refuses a request body before anything goes upstream: a Content-Length
/// over `limit` (413), or chunked framing already received with the head
/// (`buffered`) that is malformed (400) or announces more than `limit` (413).
/// Chunked framing that arrives later is checked while it streams.
pub(super) fn check_body_start(
    info: &MessageInfo,
    buffered: &[u8],
    limit: u64,
) -> Result<(), Error> {
    let too_large = || {
        Error::new(
            ErrorKind::BodyTooLarge,
            Side::Downstream,
            "body exceeds max_body_bytes",
        )
    };
    match info.body {
        BodyKind::Length(n) if n > limit => Err(too_large()),
        BodyKind::Chunked => {
            let declared =
                crate::h1::chunked::ChunkedDecoder::check_prefix(buffered).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidFraming,
                        Side::Downstream,
                        "invalid chunked body",
                    )
                })?;
            if declared > limit {
                return Err(too_large());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_targets() {
        assert_eq!(split_target(b"/a?b"), Some((None, &b"/a?b"[..])));
        assert_eq!(split_target(b"*"), Some((None, &b"*"[..])));
        assert_eq!(
            split_target(b"http://Example.com:8080/x/y?z"),
            Some((Some(&b"Example.com:8080"[..]), &b"/x/y?z"[..]))
        );
        assert_eq!(split_target(b"HTTP://h"), Some((Some(&b"h"[..]), &b""[..])));
        assert_eq!(
            split_target(b"http://h?q"),
            Some((Some(&b"h"[..]), &b"?q"[..]))
        );
        assert_eq!(split_target(b"http:///x"), None);
        assert_eq!(split_target(b"http://u@h/"), None);
        assert_eq!(split_target(b"h:80"), None);
    }
}
