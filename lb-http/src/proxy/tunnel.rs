//! Upgraded connections (WebSocket): the request that asks for an upgrade,
//! and the byte tunnel after the upstream's `101`.

use tokio::io::AsyncWriteExt;

use super::idle::{TunnelEnd, tunnel};
use super::{Downstream, Failure, HttpProxy, Next};
use crate::error::{Error, Side};
use crate::h1::head::{BodyKind, MessageInfo, RequestHead, ResponseHead, listed_in_connection};
use crate::upstream::UpstreamConn;

impl HttpProxy {
    /// Relays an upgraded connection (WebSocket): the upstream's 101 head
    /// goes to the client as received, then bytes flow both ways until both
    /// sides are done, or until nothing moved either way for
    /// `tunnel_idle_timeout`. The connection keeps this endpoint for its
    /// life, whatever reloads happen meanwhile.
    pub(super) async fn tunnel(
        &self,
        down: &mut Downstream,
        mut up: UpstreamConn,
        resp: ResponseHead,
    ) -> Result<Next, Failure> {
        let after_head = |err: Error| Failure {
            err,
            head_sent: true,
            close: true,
        };
        down.wbuf.clear();
        down.wbuf.extend_from_slice(resp.raw());
        down.wbuf.extend_from_slice(&up.buf);
        up.buf.clear();
        down.stream
            .write_all(&down.wbuf)
            .await
            .map_err(|e| after_head(Error::io(Side::Downstream, "101 write failed", e)))?;
        if !down.rbuf.is_empty() {
            up.stream
                .write_all(&down.rbuf)
                .await
                .map_err(|e| after_head(Error::io(Side::Upstream, "tunnel write failed", e)))?;
            down.rbuf.clear();
        }
        let idle = self.settings().tunnel_idle_timeout;
        match tunnel(&mut down.stream, &mut up.stream, idle).await {
            TunnelEnd::Idle => tracing::debug!("upgraded connection idle, closing"),
            TunnelEnd::Done(Err(e)) => tracing::debug!(error = %e, "upgraded connection failed"),
            TunnelEnd::Done(Ok(_)) => {}
        }
        Ok(Next::Close)
    }
}

/// The `Upgrade` value of a request asking to switch protocols (a GET with
/// `Upgrade` listed in `Connection`, and no body). An `Upgrade` that offers
/// `h2c` is never relayed: such a request goes upstream as a plain request
/// (without `Upgrade` and `HTTP2-Settings`), so no client can reach a
/// backend's HTTP/2 past lb's routes and filters.
pub(super) fn upgrade_token<'a>(head: &'a RequestHead, info: &MessageInfo) -> Option<&'a [u8]> {
    if head.method() != b"GET" || !matches!(info.body, BodyKind::Empty | BodyKind::Length(0)) {
        return None;
    }
    let token = head
        .header("upgrade")
        .filter(|v| !v.trim_ascii().is_empty())?;
    if offers_h2c(token) {
        return None;
    }
    listed_in_connection(head.headers(), b"upgrade").then_some(token)
}

/// Whether an `Upgrade` value lists `h2c` (any case, with or without a
/// version).
fn offers_h2c(upgrade: &[u8]) -> bool {
    upgrade.split(|b| *b == b',').any(|p| {
        let p = p.trim_ascii();
        let name = p.split(|b| *b == b'/').next().unwrap_or_default();
        name.eq_ignore_ascii_case(b"h2c")
    })
}

#[cfg(test)]
mod tests {
    use super::offers_h2c;

    #[test]
    fn h2c_offers_are_recognised() {
        for yes in [&b"h2c"[..], b"H2C", b"websocket, h2c", b" h2c/1 "] {
            assert!(offers_h2c(yes), "{yes:?}");
        }
        for no in [&b"websocket"[..], b"h2", b"h2cx", b"TLS/1.2"] {
            assert!(!offers_h2c(no), "{no:?}");
        }
    }
}
