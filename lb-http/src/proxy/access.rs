//! The access-log line of an HTTP/1.1 request: what happened to it
//! ([`Outcome`], filled in as the request goes) and the record written.

use std::net::SocketAddr;

use tokio::time::Instant;

use super::{Downstream, HttpProxy};
use crate::access_log::{self, AccessLog};
use crate::h1::head::RequestHead;
use crate::snapshot::BackendId;

impl HttpProxy {
    /// Writes the access-log line of the request just handled, if logging.
    pub(super) fn log_request(&self, down: &Downstream, head: &RequestHead, started: Instant) {
        let Some(log) = &self.access_log else {
            return;
        };
        let snapshot = self.snapshot.current();
        let o = &down.outcome;
        let record = access_log::Record {
            time: access_log::now_rfc3339(),
            client: down.peer,
            protocol: if head.minor_version() == 0 {
                "HTTP/1.0"
            } else {
                "HTTP/1.1"
            },
            tls: down.stream.is_tls(),
            host: &down.host,
            method: std::str::from_utf8(head.method()).unwrap_or("?"),
            path: std::str::from_utf8(head.target()).unwrap_or("?"),
            status: o.status,
            bytes_sent: o.bytes,
            upstream: o.upstream,
            backend: o
                .backend
                .and_then(|id| snapshot.value.backend(id))
                .map(|b| b.name.as_str()),
            duration_ms: access_log::millis(started.elapsed()),
            upstream_ms: o.upstream_at.map(|t| access_log::millis(t - started)),
        };
        log.log(&record);
    }

    /// Logs every request of this proxy to `log` (one JSON line each).
    pub fn with_access_log(mut self, log: Option<AccessLog>) -> Self {
        self.access_log = log;
        self
    }
}

/// What happened to one request, as the access log reports it.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) status: u16,
    pub(super) bytes: u64,
    pub(super) upstream: Option<SocketAddr>,
    pub(super) backend: Option<BackendId>,
    pub(super) upstream_at: Option<Instant>,
}
