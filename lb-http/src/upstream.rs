//! Upstream connections and the per-worker keep-alive pool, keyed by endpoint
//! address. The pool lives on one worker thread (interior mutability through
//! `RefCell`, never borrowed across an await). Idle connections are capped per
//! endpoint and expire after the idle timeout; one the peer closed while idle
//! is detected and dropped when it would be taken.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use lb_core::stream::Stream;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Side};

/// Initial read-buffer capacity of an upstream connection.
const READ_BUFFER: usize = 16 * 1024;
/// Every this many `put`s the whole pool is swept of expired connections.
const SWEEP_EVERY: u32 = 1024;

/// One upstream HTTP/1.1 connection with its read buffer.
#[derive(Debug)]
pub struct UpstreamConn {
    /// The socket.
    pub stream: Stream,
    /// Bytes read from the upstream and not consumed yet.
    pub buf: BytesMut,
    addr: SocketAddr,
    reused: bool,
    idle_since: Instant,
}

impl UpstreamConn {
    /// Connects to `addr` within `timeout` (timeout: [`ErrorKind::ConnectTimeout`],
    /// other failures: [`ErrorKind::ConnectFailed`]).
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, Error> {
        let stream = match Stream::connect(addr, timeout).await {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(Error::new(
                    ErrorKind::ConnectTimeout,
                    Side::Upstream,
                    "upstream connect timed out",
                ));
            }
            Err(e) => {
                return Err(Error::io(Side::Upstream, "upstream connect failed", e)
                    .with_kind(ErrorKind::ConnectFailed)
                    .retry_safe(true));
            }
            Ok(s) => s,
        };
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(READ_BUFFER),
            addr,
            reused: false,
            idle_since: Instant::now(),
        })
    }

    /// The endpoint this connection goes to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether this connection came from the pool (served a request before).
    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// Whether the connection still looks usable: no bytes pending, not
    /// closed by the peer. Never blocks.
    fn looks_alive(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream.looks_alive()
    }
}

/// Per-worker pool of idle upstream connections.
#[derive(Debug)]
pub struct UpstreamPool {
    idle: RefCell<HashMap<SocketAddr, Vec<UpstreamConn>>>,
    max_idle_per_endpoint: usize,
    idle_timeout: Duration,
    puts: Cell<u32>,
}

impl UpstreamPool {
    /// A pool keeping at most `max_idle_per_endpoint` idle connections per
    /// endpoint, each for at most `idle_timeout`.
    pub fn new(max_idle_per_endpoint: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: RefCell::new(HashMap::new()),
            max_idle_per_endpoint,
            idle_timeout,
            puts: Cell::new(0),
        }
    }

    /// Takes the most recently used live idle connection to `addr`, dropping
    /// expired or peer-closed ones on the way.
    pub fn take(&self, addr: SocketAddr) -> Option<UpstreamConn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(conn) = list.pop() {
            if now.duration_since(conn.idle_since) < self.idle_timeout && conn.looks_alive() {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose last exchange completed cleanly. Kept only
    /// when there is room for its endpoint.
    pub fn put(&self, mut conn: UpstreamConn) {
        conn.reused = true;
        conn.idle_since = Instant::now();
        conn.buf.clear();
        let mut idle = self.idle.borrow_mut();
        let puts = self.puts.get().wrapping_add(1);
        self.puts.set(puts);
        if puts.is_multiple_of(SWEEP_EVERY) {
            let timeout = self.idle_timeout;
            let now = conn.idle_since;
            idle.retain(|_, list| {
                list.retain(|c| now.duration_since(c.idle_since) < timeout);
                !list.is_empty()
            });
        }
        let list = idle.entry(conn.addr).or_default();
        if list.len() < self.max_idle_per_endpoint {
            list.push(conn);
        }
    }

    /// Number of idle connections held for `addr`.
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        self.idle.borrow().get(&addr).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn pools_and_drops_closed_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = UpstreamPool::new(1, Duration::from_secs(60));
        let a = UpstreamConn::connect(addr, Duration::from_secs(1))
            .await
            .unwrap();
        let (peer_a, _) = listener.accept().await.unwrap();
        let b = UpstreamConn::connect(addr, Duration::from_secs(1))
            .await
            .unwrap();
        let (_peer_b, _) = listener.accept().await.unwrap();
        pool.put(a);
        pool.put(b);
        assert_eq!(pool.idle_count(addr), 1, "capped per endpoint");
        let a = pool.take(addr).unwrap();
        assert!(a.is_reused());
        pool.put(a);
        drop(peer_a);
        // Let the reactor see the FIN.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool.take(addr).is_none(),
            "peer-closed idle connection is dropped"
        );
    }

    #[tokio::test]
    async fn connect_failures_are_classified() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = UpstreamConn::connect(addr, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectFailed);
        assert_eq!(err.status(), 502);
    }
}
