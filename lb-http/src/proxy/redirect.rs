//! The HTTP-to-HTTPS redirect of plain-HTTP requests for hosts with TLS.

use bytes::BytesMut;
use lb_core::runtime::Drain;
use tokio::io::AsyncWriteExt;

use super::wire::split_target;
use super::{Downstream, HttpProxy, Next};
use crate::h1::head::{BodyKind, RequestHead, request_info};
use crate::route::normalize_host;

impl HttpProxy {
    /// Answers a plain-HTTP request for a host that has TLS with a 308 to
    /// the same URL on HTTPS. `None` when the host is not redirected.
    pub(super) async fn redirect_to_https(
        &self,
        down: &mut Downstream,
        head: &RequestHead,
        drain: &Drain,
    ) -> Option<Next> {
        let snapshot = self.snapshot.current();
        let snap = &snapshot.value;
        if snap.https_redirect.is_empty() {
            return None;
        }
        let info = request_info(head).ok()?;
        // The same authority routing uses: an absolute-form target's, else Host.
        let (authority, target) = split_target(head.target())?;
        let host = authority.or_else(|| info.host.map(|h| h.get(head.raw())))?;
        let host = std::str::from_utf8(host).ok()?;
        normalize_host(host, &mut down.host);
        if !snap.redirects_to_https(&down.host) {
            return None;
        }
        let path = if target.first() == Some(&b'/') {
            target
        } else {
            b"/"
        };
        let close = !info.keep_alive
            || drain.is_draining()
            || !matches!(info.body, BodyKind::Empty | BodyKind::Length(0));
        down.wbuf.clear();
        encode_redirect(
            &down.host,
            snap.https_port.unwrap_or(443),
            path,
            close,
            &mut down.wbuf,
        );
        self.counters().response(308);
        down.outcome.status = 308;
        let ok = down.stream.write_all(&down.wbuf).await.is_ok();
        Some(if ok && !close {
            Next::KeepAlive
        } else {
            Next::Close
        })
    }
}

/// Encodes a `308 Permanent Redirect` to `https://host[:port]path`.
pub(super) fn encode_redirect(host: &str, port: u16, path: &[u8], close: bool, out: &mut BytesMut) {
    out.extend_from_slice(b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://");
    out.extend_from_slice(host.as_bytes());
    if port != 443 {
        out.extend_from_slice(format!(":{port}").as_bytes());
    }
    out.extend_from_slice(&crate::h1::rewrite::escape_ctl(path));
    out.extend_from_slice(b"\r\nContent-Length: 0\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
