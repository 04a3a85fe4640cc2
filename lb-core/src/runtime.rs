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

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Error;
use crate::stream::{IoMode, Stream};
use crate::uring::{self, UringListener};

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
    pub stream: Stream,
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
    /// The I/O engine every worker uses (decided once, see [`resolve_io`]).
    pub io: IoMode,
    /// Pin worker `i` to the `i`-th CPU the process may run on.
    pub pin: bool,
}

/// The configured I/O choice: `auto` tries io_uring and falls back to epoll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoSetting {
    /// io_uring when the kernel allows it, else epoll.
    #[default]
    Auto,
    /// io_uring or fail.
    Uring,
    /// epoll.
    Epoll,
}

/// Decides the I/O mode for a setting: `Ok((mode, fallback_reason))`, or an
/// error when `uring` was demanded and cannot be had.
pub fn resolve_io(setting: IoSetting) -> Result<(IoMode, Option<String>), Error> {
    match setting {
        IoSetting::Epoll => Ok((IoMode::Epoll, None)),
        IoSetting::Uring => match uring::probe() {
            Ok(()) => Ok((IoMode::Uring, None)),
            Err(reason) => Err(Error::Uring(reason)),
        },
        IoSetting::Auto => match uring::probe() {
            Ok(()) => Ok((IoMode::Uring, None)),
            Err(reason) => Ok((IoMode::Epoll, Some(reason))),
        },
    }
}

/// The CPUs this process may run on (its affinity mask, so `taskset` and
/// systemd `CPUAffinity=` are respected), in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{CpuSet, sched_getaffinity};
    let Ok(set) = sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

fn pin_to(cpu: usize) -> Result<(), String> {
    use nix::sched::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| e.to_string())?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(|e| e.to_string())
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
    let cpus = if plan.pin { allowed_cpus() } else { Vec::new() };
    let io = plan.io;
    for (index, listeners) in plan.listeners.into_iter().enumerate() {
        let make = Arc::clone(&make);
        let drain = plan.drain.clone();
        let grace = plan.grace;
        let cpu = (!cpus.is_empty()).then(|| cpus[index % cpus.len()]);
        let handle = std::thread::Builder::new()
            .name(format!("lb-worker-{index}"))
            .spawn(move || {
                if let Some(cpu) = cpu
                    && let Err(e) = pin_to(cpu)
                {
                    tracing::warn!(worker = index, cpu, error = %e, "cannot pin worker");
                }
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
                    let driver = match io {
                        IoMode::Epoll => None,
                        IoMode::Uring => match uring::install() {
                            Ok(drive) => Some(tokio::task::spawn_local(drive)),
                            Err(e) => {
                                tracing::error!(worker = index, error = %e, "cannot set up io_uring");
                                return;
                            }
                        },
                    };
                    let handler = Rc::new(make(index));
                    run_worker(index, listeners, handler, drain, grace).await;
                    if let Some(driver) = driver {
                        uring::uninstall();
                        let _ = tokio::time::timeout(Duration::from_secs(1), driver).await;
                    }
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
        let mut listener = match Listener::new(std_listener) {
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
                let _ = stream.set_nodelay();
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

/// A worker's listening socket on either engine.
enum Listener {
    Epoll(TcpListener),
    Uring(UringListener),
}

impl Listener {
    fn new(l: StdListener) -> std::io::Result<Self> {
        if uring::is_installed() {
            Ok(Listener::Uring(uring::listener(l)?))
        } else {
            l.set_nonblocking(true)?;
            Ok(Listener::Epoll(TcpListener::from_std(l)?))
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Listener::Epoll(l) => l.local_addr(),
            Listener::Uring(l) => l.local_addr(),
        }
    }

    async fn accept(&mut self) -> std::io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Epoll(l) => l.accept().await.map(|(s, a)| (Stream::Epoll(s), a)),
            Listener::Uring(l) => l.accept().await.map(|(s, a)| (Stream::Uring(s), a)),
        }
    }
}
