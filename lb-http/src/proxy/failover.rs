//! Choosing and reaching a request's endpoint: the policy key of a request,
//! the endpoints it already tried, connect failover to other endpoints, and
//! which methods may be sent twice.

use std::net::SocketAddr;

use super::HttpProxy;
use crate::balance::Policy;
use crate::error::{Error, ErrorKind};
use crate::snapshot::BackendId;
use crate::upstream::UpstreamConn;

impl HttpProxy {
    /// Connects to `*addr` (from the pool unless `fresh`); when that fails,
    /// records the failure and tries other endpoints (up to
    /// [`CONNECT_ATTEMPTS`] in all), updating `*addr` to the one connected.
    pub(super) async fn connect_failover(
        &self,
        pick: &Pick<'_>,
        addr: &mut SocketAddr,
        tried: &mut Tried,
        fresh: bool,
    ) -> Result<UpstreamConn, Error> {
        loop {
            let result = if fresh {
                UpstreamConn::connect(*addr, self.settings.connect_timeout).await
            } else {
                self.upstream(*addr).await
            };
            let e = match result {
                Ok(up) => return Ok(up),
                Err(e) => e,
            };
            self.balancer.failure(*addr, pick.endpoints);
            tried.push(*addr);
            if !matches!(
                e.kind(),
                ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout
            ) || tried.len() >= CONNECT_ATTEMPTS
            {
                return Err(e);
            }
            match self
                .balancer
                .pick(pick.id, pick.endpoints, pick.policy, pick.key, tried.list())
            {
                Some(next) => {
                    tracing::debug!(error = %e, endpoint = %addr, next = %next, "connect failed, trying another endpoint");
                    *addr = next;
                }
                None => return Err(e),
            }
        }
    }
}

/// Closes a downstream connection gracefully: shuts down the write side,
/// then discards what the client still sends for a short while so that the
/// last response is not lost to a reset.
/// Endpoints tried per request, at most: connect failures move on to the
/// next endpoint until this many were tried.
pub const CONNECT_ATTEMPTS: usize = 3;

/// What a request's endpoint is chosen from.
pub(super) struct Pick<'a> {
    pub(super) id: BackendId,
    pub(super) endpoints: &'a [SocketAddr],
    pub(super) policy: &'a Policy,
    pub(super) key: Option<u64>,
}

/// The endpoints a request already tried (allocates only on a failure).
#[derive(Default)]
pub(super) struct Tried {
    pub(super) list: Vec<SocketAddr>,
}

impl Tried {
    pub(super) fn push(&mut self, a: SocketAddr) {
        if !self.list.contains(&a) {
            self.list.push(a);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn list(&self) -> &[SocketAddr] {
        &self.list
    }
}

/// Whether a method is idempotent (RFC 9110 9.2.2), so a request that got
/// no response byte may be sent again.
pub(super) fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}
