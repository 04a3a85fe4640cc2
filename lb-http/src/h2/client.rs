//! Upstream h2c connections: one per endpoint and worker thread, shared by
//! all the streams going there. Each connection's driver is a `spawn_local`
//! task that removes the connection from the pool when it ends; a
//! connection idle for `idle_timeout` is released (h2 closes it once its
//! last stream is done). Streams arriving while a connection is being
//! established wait for it instead of opening their own.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use lb_core::stream::Stream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::io::h2_error;
use crate::error::{Error, ErrorKind, Side};
use crate::settings::ProxySettings;
use crate::upstream::UpstreamConn;

/// Most bytes h2 buffers for one upstream stream beyond what flow control
/// let out.
const SEND_BUFFER: usize = 256 * 1024;

thread_local! {
    static POOL: RefCell<HashMap<SocketAddr, Rc<Endpoint>>> = RefCell::new(HashMap::new());
}

/// The connection state of one endpoint.
#[derive(Default)]
struct Endpoint {
    live: RefCell<Option<Live>>,
    connecting: Cell<bool>,
    changed: Notify,
    last_error: Cell<Option<ErrorKind>>,
    next_id: Cell<u64>,
}

struct Live {
    id: u64,
    send: SendRequest<Bytes>,
    last_used: Cell<Instant>,
}

impl Endpoint {
    fn current(&self) -> Option<(u64, SendRequest<Bytes>)> {
        let live = self.live.borrow();
        let l = live.as_ref()?;
        l.last_used.set(Instant::now());
        Some((l.id, l.send.clone()))
    }

    fn forget(&self, id: u64) {
        let mut live = self.live.borrow_mut();
        if live.as_ref().is_some_and(|l| l.id == id) {
            *live = None;
        }
    }

    fn install(&self, send: SendRequest<Bytes>) -> u64 {
        let id = self.next_id.get().wrapping_add(1);
        self.next_id.set(id);
        *self.live.borrow_mut() = Some(Live {
            id,
            send,
            last_used: Cell::new(Instant::now()),
        });
        id
    }

    /// Releases connection `id` if no stream started on it for `idle`
    /// (streams still open on it finish; h2 closes it after the last).
    fn expire(&self, id: u64, idle: Duration) -> bool {
        let mut live = self.live.borrow_mut();
        let expired = live
            .as_ref()
            .is_some_and(|l| l.id == id && l.last_used.get().elapsed() >= idle);
        if expired {
            *live = None;
        }
        expired
    }
}

/// Clears the connecting flag and wakes the waiters however the connect
/// attempt ends (including being cancelled).
struct Connecting<'a>(&'a Endpoint);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.connecting.set(false);
        self.0.changed.notify_waiters();
    }
}

fn endpoint(addr: SocketAddr) -> Rc<Endpoint> {
    POOL.with(|p| Rc::clone(p.borrow_mut().entry(addr).or_default()))
}

/// A handle ready to open a stream to `addr`: the pooled connection, or a
/// new one when there is none or it failed.
pub(super) async fn checkout(
    addr: SocketAddr,
    settings: &ProxySettings,
) -> Result<SendRequest<Bytes>, Error> {
    let ep = endpoint(addr);
    let mut fresh = false;
    loop {
        if let Some((id, send)) = ep.current() {
            match send.ready().await {
                Ok(send) => return Ok(send),
                Err(e) => {
                    ep.forget(id);
                    if fresh {
                        return Err(h2_error(
                            &e,
                            Side::Upstream,
                            "upstream h2c connection failed",
                        ));
                    }
                    tracing::debug!(%addr, error = %e, "pooled h2c connection failed, reconnecting");
                    continue;
                }
            }
        }
        if ep.connecting.get() {
            // Single-threaded: nothing runs between the check and creating
            // the waiter, which receives the wake-up from then on.
            ep.changed.notified().await;
            if ep.live.borrow().is_none() {
                let kind = ep.last_error.get().unwrap_or(ErrorKind::ConnectFailed);
                return Err(Error::new(
                    kind,
                    Side::Upstream,
                    "upstream h2c connect failed",
                ));
            }
            continue;
        }
        ep.connecting.set(true);
        let guard = Connecting(&ep);
        match connect(addr, settings).await {
            Ok((send, conn)) => {
                let id = ep.install(send);
                POOL.with(|p| p.borrow_mut().insert(addr, Rc::clone(&ep)));
                let driver = drive(addr, Rc::clone(&ep), id, conn, settings.idle_timeout);
                tokio::task::spawn_local(driver);
            }
            Err(e) => {
                ep.last_error.set(Some(e.kind()));
                return Err(e);
            }
        }
        drop(guard);
        fresh = true;
    }
}

async fn connect(
    addr: SocketAddr,
    settings: &ProxySettings,
) -> Result<(SendRequest<Bytes>, Connection<Stream, Bytes>), Error> {
    let stream = UpstreamConn::connect(addr, settings.connect_timeout)
        .await?
        .stream;
    let h = &settings.http2;
    let mut builder = h2::client::Builder::new();
    builder
        .enable_push(false)
        .initial_window_size(h.stream_window)
        .initial_connection_window_size(h.connection_window)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_send_buffer_size(SEND_BUFFER);
    match tokio::time::timeout(settings.connect_timeout, builder.handshake(stream)).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(
            h2_error(&e, Side::Upstream, "upstream h2c handshake failed")
                .with_kind(ErrorKind::ConnectFailed),
        ),
        Err(_) => Err(Error::new(
            ErrorKind::ConnectTimeout,
            Side::Upstream,
            "upstream h2c handshake timed out",
        )),
    }
}

/// Drives connection `id` to `addr` until it ends, releasing it from the
/// pool once idle, and forgets it at the end.
async fn drive(
    addr: SocketAddr,
    ep: Rc<Endpoint>,
    id: u64,
    conn: Connection<Stream, Bytes>,
    idle: Duration,
) {
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(idle.max(Duration::from_secs(1)));
    tick.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut conn => break r,
            _ = tick.tick() => {
                if ep.expire(id, idle) {
                    break conn.as_mut().await;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%addr, error = %e, "upstream h2c connection ended");
    }
    ep.forget(id);
    if ep.live.borrow().is_none() && !ep.connecting.get() {
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.get(&addr).is_some_and(|e| Rc::ptr_eq(e, &ep)) {
                pool.remove(&addr);
            }
        });
    }
}
