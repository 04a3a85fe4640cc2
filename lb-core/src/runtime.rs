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

use std::collections::HashMap;
use tokio::net::TcpListener;

use tokio::sync::{mpsc, oneshot, watch};

use crate::Error;
use crate::counters::CounterSet;
use crate::datagram::Datagram;
use crate::limits::{Admission, ConnLimits, RateLimitedWarn};
use crate::progress::{self, Progress};
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
    /// Index of the listener address (into the address list given to
    /// [`start`]); 0 for listeners added later.
    pub listener: usize,
    /// [`STATIC_TAG`] for listeners given at start, else the tag of the
    /// [`ListenerCommand::Add`] that added the listener.
    pub tag: u32,
}

/// Serves connections on one worker. One handler is made per worker and lives
/// on that worker's thread only.
pub trait ConnectionHandler: 'static {
    /// Serves one connection to completion. `drain` tells it when to wind down.
    fn serve(self: Rc<Self>, conn: Accepted, drain: Drain) -> impl Future<Output = ()> + 'static;

    /// Serves the datagrams arriving on one UDP socket (added with
    /// [`ListenerCommand::AddDatagram`]) until the future is dropped, which
    /// happens when the socket is removed or the worker drains. The default
    /// ignores them.
    fn serve_datagrams(
        self: Rc<Self>,
        socket: Datagram,
        tag: u32,
    ) -> impl Future<Output = ()> + 'static {
        let _ = (socket, tag);
        std::future::ready(())
    }
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
    /// Per worker, the receiving end of its listener changes (empty: none).
    pub commands: Vec<mpsc::UnboundedReceiver<ListenerCommand>>,
    /// Where the workers stamp their heartbeats and count panicked
    /// connection tasks (one slot per worker).
    pub progress: Arc<Progress>,
    /// Connection caps and the send deadline of every socket.
    pub limits: ConnLimits,
    /// Where refused connections are counted (worker `i` uses block `i`).
    pub counters: Option<Arc<CounterSet>>,
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
    let limits = plan.limits;
    let counters = plan.counters;
    let mut commands: Vec<Option<_>> = plan.commands.into_iter().map(Some).collect();
    for (index, listeners) in plan.listeners.into_iter().enumerate() {
        let commands = commands.get_mut(index).and_then(Option::take);
        let make = Arc::clone(&make);
        let drain = plan.drain.clone();
        let grace = plan.grace;
        let progress = Arc::clone(&plan.progress);
        let counters = counters.clone();
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
                crate::stream::set_send_timeout(limits.send_timeout);
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    // False once the io_uring driver task has ended: the
                    // worker's I/O no longer completes, so it stops beating.
                    let driving = Rc::new(Cell::new(true));
                    let driver = match io {
                        IoMode::Epoll => None,
                        IoMode::Uring => match uring::install() {
                            Ok(drive) => {
                                let driving = Rc::clone(&driving);
                                Some(tokio::task::spawn_local(async move {
                                    drive.await;
                                    driving.set(false);
                                }))
                            }
                            Err(e) => {
                                tracing::error!(worker = index, error = %e, "cannot set up io_uring");
                                return;
                            }
                        },
                    };
                    let heartbeat = tokio::task::spawn_local({
                        let progress = Arc::clone(&progress);
                        async move {
                            while driving.get() {
                                progress.beat(index);
                                tokio::time::sleep(progress::BEAT).await;
                            }
                        }
                    });
                    let handler = Rc::new(make(index));
                    let admit = Gate {
                        admission: Admission::new(limits),
                        counters,
                        accept_warn: Rc::new(RateLimitedWarn::new(ACCEPT_WARN_EVERY)),
                        progress,
                    };
                    run_worker(index, listeners, commands, handler, drain, grace, admit).await;
                    heartbeat.abort();
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
    mut commands: Option<mpsc::UnboundedReceiver<ListenerCommand>>,
    handler: Rc<H>,
    drain: Drain,
    grace: Duration,
    gate: Gate,
) {
    let active = Rc::new(Cell::new(0usize));
    let mut accept_tasks = Vec::new();
    let mut dynamic: HashMap<u64, (oneshot::Sender<()>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    let ctx = AcceptCtx {
        index,
        handler: Rc::clone(&handler),
        active: Rc::clone(&active),
        drain: drain.clone(),
        gate,
    };
    for (listener_index, std_listener) in listeners.into_iter().enumerate() {
        if let Some(task) = ctx.spawn(std_listener, listener_index, STATIC_TAG, None) {
            accept_tasks.push(task);
        }
    }
    let mut drain_wait = drain.clone();
    loop {
        let command = tokio::select! {
            biased;
            _ = drain_wait.wait() => break,
            c = async {
                match commands.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => c,
        };
        match command {
            None => commands = None,
            Some(ListenerCommand::Add { id, tag, listener }) => {
                let (stop_tx, stop_rx) = oneshot::channel();
                if let Some(task) = ctx.spawn(listener, 0, tag, Some(stop_rx)) {
                    dynamic.insert(id, (stop_tx, task));
                }
            }
            Some(ListenerCommand::AddDatagram { id, tag, socket }) => {
                let (stop_tx, stop_rx) = oneshot::channel();
                if let Some(task) = ctx.spawn_datagrams(socket, tag, stop_rx) {
                    dynamic.insert(id, (stop_tx, task));
                }
            }
            Some(ListenerCommand::Remove { id }) => {
                if let Some((stop, task)) = dynamic.remove(&id) {
                    let _ = stop.send(());
                    let _ = task.await;
                }
            }
        }
    }
    for task in accept_tasks {
        let _ = task.await;
    }
    for (_, (_, task)) in dynamic {
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

/// The tag of the listeners given at start (see [`Accepted::tag`]).
pub const STATIC_TAG: u32 = 0;

/// A change to a worker's set of listeners while it runs.
#[derive(Debug)]
pub enum ListenerCommand {
    /// Start accepting on `listener`; its connections carry `tag`.
    Add {
        /// Identifies the listener for a later `Remove`.
        id: u64,
        /// Handed to the handler with every connection ([`Accepted::tag`]).
        tag: u32,
        /// This worker's SO_REUSEPORT socket for the address.
        listener: StdListener,
    },
    /// Start serving datagrams on `socket` ([`ConnectionHandler::serve_datagrams`]).
    AddDatagram {
        /// Identifies the socket for a later `Remove`.
        id: u64,
        /// Handed to the handler with the socket.
        tag: u32,
        /// This worker's SO_REUSEPORT UDP socket for the address.
        socket: std::net::UdpSocket,
    },
    /// Stop accepting on listener `id` and close it; connections it accepted
    /// carry on. For a UDP socket, its flows end with it.
    Remove {
        /// The id given to `Add`.
        id: u64,
    },
}

struct AcceptCtx<H> {
    index: usize,
    handler: Rc<H>,
    active: Rc<Cell<usize>>,
    drain: Drain,
    gate: Gate,
}

/// Accept failures (EMFILE and the like) are logged at most this often per worker.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// A worker's admission of new connections: its caps, where refusals are
/// counted, the rate limit of accept-failure warnings, and where its
/// heartbeat and panicked connection tasks are recorded.
#[derive(Clone)]
struct Gate {
    admission: Rc<Admission>,
    counters: Option<Arc<CounterSet>>,
    accept_warn: Rc<RateLimitedWarn>,
    /// Heartbeats and panic counts, shared with the control thread.
    progress: Arc<Progress>,
}

/// One open connection in a worker's count; dropped when its task ends,
/// also when the task panicked and unwound.
struct Open(Rc<Cell<usize>>);

impl Open {
    fn new(active: &Rc<Cell<usize>>) -> Self {
        active.set(active.get() + 1);
        Self(Rc::clone(active))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl<H: ConnectionHandler> AcceptCtx<H> {
    /// Spawns the datagram loop of one UDP socket; it ends on drain or `stop`.
    fn spawn_datagrams(
        &self,
        socket: std::net::UdpSocket,
        tag: u32,
        stop: oneshot::Receiver<()>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let socket = match Datagram::new(socket) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(worker = self.index, error = %e, "cannot register UDP socket");
                return None;
            }
        };
        let serve = Rc::clone(&self.handler).serve_datagrams(socket, tag);
        let mut drain = self.drain.clone();
        Some(tokio::task::spawn_local(async move {
            tokio::select! {
                biased;
                _ = drain.wait() => {}
                _ = stop => {}
                _ = serve => {}
            }
        }))
    }

    /// Spawns the accept loop of one listener; it ends on drain or `stop`.
    fn spawn(
        &self,
        std_listener: StdListener,
        listener_index: usize,
        tag: u32,
        stop: Option<oneshot::Receiver<()>>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let index = self.index;
        let mut listener = match Listener::new(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "cannot register listener");
                return None;
            }
        };
        let handler = Rc::clone(&self.handler);
        let active = Rc::clone(&self.active);
        let progress = Arc::clone(&self.gate.progress);
        let mut drain = self.drain.clone();
        let gate = self.gate.clone();
        Some(tokio::task::spawn_local(async move {
            let local = listener.local_addr().ok();
            let mut stop = stop;
            loop {
                let accepted = tokio::select! {
                    biased;
                    _ = drain.wait() => break,
                    _ = async {
                        match stop.as_mut() {
                            Some(rx) => { let _ = rx.await; }
                            None => std::future::pending::<()>().await,
                        }
                    } => break,
                    r = listener.accept() => r,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of
                        // spinning, and warn at most every few seconds.
                        if let Some(held) = gate.accept_warn.check(std::time::Instant::now()) {
                            tracing::warn!(worker = index, error = %e, suppressed = held, "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let ticket = match gate.admission.admit(peer.ip()) {
                    Ok(t) => t,
                    Err(refusal) => {
                        // Dropping the stream closes it at once.
                        if let Some(c) = &gate.counters {
                            c.worker(index).connections_refused[refusal as usize].inc();
                        }
                        tracing::debug!(worker = index, %peer, reason = refusal.as_str(), "connection refused");
                        continue;
                    }
                };
                stream.prepare();
                let conn = Accepted {
                    stream,
                    peer,
                    local: local.unwrap_or(peer),
                    listener: listener_index,
                    tag,
                };
                let open = Open::new(&active);
                let handler = Rc::clone(&handler);
                let drain = drain.clone();
                let progress = Arc::clone(&progress);
                tokio::task::spawn_local(async move {
                    let _ticket = ticket;
                    let _open = open;
                    // A panic ends this connection only: its stream is
                    // dropped (closed) while unwinding, the worker and the
                    // other connections carry on, and it is counted.
                    let serve = std::panic::AssertUnwindSafe(handler.serve(conn, drain));
                    if futures_util::FutureExt::catch_unwind(serve).await.is_err() {
                        progress.count_panic(index);
                        tracing::error!(
                            worker = index,
                            "a connection task panicked; its connection is closed"
                        );
                    }
                });
            }
            // Dropping the listener here closes this worker's socket for the address.
        }))
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
