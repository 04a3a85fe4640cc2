//! Worker threads: one per core, each running a tokio current-thread runtime
//! with a `LocalSet`, accepting on its own listeners and serving every
//! connection on that same thread. Draining stops accepting, lets open
//! connections finish within a grace period, then ends the thread.

use std::cell::Cell;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Error;

/// Number of workers for a configured count: 0 means one per available core.
pub fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The drain signal as seen by a connection: once set, finish the current
/// request, answer it with `Connection: close` and stop.
#[derive(Debug, Clone)]
pub struct Drain(watch::Receiver<bool>);

impl Drain {
    /// Whether draining has begun.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once draining begins (or the controller went away).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|d| *d).await;
    }
}

/// The controlling side of the drain signal.
#[derive(Debug)]
pub struct DrainController(watch::Sender<bool>);

impl DrainController {
    /// Creates a controller and the receiving side handed to workers.
    pub fn new() -> (Self, Drain) {
        let (tx, rx) = watch::channel(false);
        (Self(tx), Drain(rx))
    }

    /// Starts draining every worker.
    pub fn drain(&self) {
        let _ = self.0.send(true);
    }
}

/// One accepted downstream connection.
#[derive(Debug)]
pub struct Accepted {
    /// The connection.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The local address it arrived on.
    pub local: SocketAddr,
    /// Index of the listener address (into the address list given to [`start`]).
    pub listener: usize,
}

/// Serves connections on one worker. One handler is made per worker and lives
/// on that worker's thread only.
pub trait ConnectionHandler: 'static {
    /// Serves one connection to completion. `drain` tells it when to wind down.
    fn serve(self: Rc<Self>, conn: Accepted, drain: Drain) -> impl Future<Output = ()> + 'static;
}

/// What every worker needs to start.
#[derive(Debug)]
pub struct WorkerPlan {
    /// Listeners per worker, `[worker][address]`, from [`crate::listener::bind_per_worker`].
    pub listeners: Vec<Vec<StdListener>>,
    /// The drain signal.
    pub drain: Drain,
    /// How long open connections may take to finish once draining starts.
    pub grace: Duration,
}

/// Starts one thread per entry of `plan.listeners`; `make` builds each worker's
/// handler on its own thread. Returns the join handles; each thread ends once
/// draining is complete.
pub fn start<H, F>(plan: WorkerPlan, make: F) -> Result<Vec<JoinHandle<()>>, Error>
where
    H: ConnectionHandler,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let mut handles = Vec::new();
    for (index, listeners) in plan.listeners.into_iter().enumerate() {
        let make = Arc::clone(&make);
        let drain = plan.drain.clone();
        let grace = plan.grace;
        let handle = std::thread::Builder::new()
            .name(format!("lb-worker-{index}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(worker = index, error = %e, "cannot build worker runtime");
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let handler = Rc::new(make(index));
                    run_worker(index, listeners, handler, drain, grace).await;
                });
            })
            .map_err(|source| Error::Worker { index, source })?;
        handles.push(handle);
    }
    Ok(handles)
}

async fn run_worker<H: ConnectionHandler>(
    index: usize,
    listeners: Vec<StdListener>,
    handler: Rc<H>,
    drain: Drain,
    grace: Duration,
) {
    let active = Rc::new(Cell::new(0usize));
    let mut accept_tasks = Vec::new();
    for (listener_index, std_listener) in listeners.into_iter().enumerate() {
        let listener = match TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "cannot register listener");
                continue;
            }
        };
        let handler = Rc::clone(&handler);
        let active = Rc::clone(&active);
        let mut drain = drain.clone();
        accept_tasks.push(tokio::task::spawn_local(async move {
            let local = listener.local_addr().ok();
            loop {
                let accepted = tokio::select! {
                    biased;
                    _ = drain.wait() => break,
                    r = listener.accept() => r,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(worker = index, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = Accepted {
                    stream,
                    peer,
                    local: local.unwrap_or(peer),
                    listener: listener_index,
                };
                active.set(active.get() + 1);
                let active = Rc::clone(&active);
                let handler = Rc::clone(&handler);
                let drain = drain.clone();
                tokio::task::spawn_local(async move {
                    handler.serve(conn, drain).await;
                    active.set(active.get() - 1);
                });
            }
            // Dropping the listener here closes this worker's socket for the address.
        }));
    }
    let mut drain_wait = drain.clone();
    drain_wait.wait().await;
    for task in accept_tasks {
        let _ = task.await;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while active.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if active.get() > 0 {
        tracing::warn!(
            worker = index,
            open = active.get(),
            "grace period over, closing connections"
        );
    }
}
