//! The worker runtime on real sockets: a connection task that panics closes
//! only its own connection, is counted, and leaves the worker's connection
//! count right (so a drain ends at once instead of waiting out the grace
//! period); a worker whose thread is stuck stops beating its heartbeat.
//! Runs on the engine `LB_TEST_IO` names (`epoll`, `uring`; default: what
//! `auto` picks).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::listener::bind_per_worker;
use lb_core::progress::Progress;
use lb_core::runtime::{
    self, Accepted, ConnectionHandler, Drain, DrainController, IoSetting, WorkerPlan,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads one byte: `p` panics, `s` blocks the worker thread for 2 s, any
/// other byte is echoed back.
struct Handler;

impl ConnectionHandler for Handler {
    async fn serve(self: Rc<Self>, mut conn: Accepted, _drain: Drain) {
        let mut b = [0u8; 1];
        if conn.stream.read_exact(&mut b).await.is_err() {
            return;
        }
        match b[0] {
            b'p' => panic!("test: a connection task panics"),
            b's' => std::thread::sleep(Duration::from_secs(2)),
            _ => {}
        }
        let _ = conn.stream.write_all(&b).await;
        let _ = conn.stream.flush().await;
    }
}

fn io() -> IoSetting {
    match std::env::var("LB_TEST_IO").as_deref() {
        Ok("epoll") => IoSetting::Epoll,
        Ok("uring") => IoSetting::Uring,
        _ => IoSetting::Auto,
    }
}

struct Running {
    addr: SocketAddr,
    drain: DrainController,
    progress: Arc<Progress>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

fn start(grace: Duration) -> Running {
    let listeners = bind_per_worker(&["127.0.0.1:0".parse().unwrap()], 1).unwrap();
    let addr = listeners[0][0].local_addr().unwrap();
    let (io, _) = runtime::resolve_io(io()).expect("I/O engine");
    let (drain, rx) = DrainController::new();
    let progress = Arc::new(Progress::new(1));
    let plan = WorkerPlan {
        listeners,
        drain: rx,
        grace,
        io,
        pin: false,
        commands: Vec::new(),
        progress: Arc::clone(&progress),
        limits: Default::default(),
        counters: None,
    };
    let handles = runtime::start(plan, |_| Handler).expect("start workers");
    Running {
        addr,
        drain,
        progress,
        handles,
    }
}

fn send(addr: SocketAddr, byte: u8) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(&[byte]).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    out
}

#[test]
fn a_panicking_connection_is_closed_counted_and_not_left_open() {
    let r = start(Duration::from_secs(20));
    assert_eq!(send(r.addr, b'a'), b"a");
    // The panicking connection gets EOF, nothing else.
    assert_eq!(send(r.addr, b'p'), b"");
    // Counted once the task has unwound (the client may see EOF first).
    let deadline = Instant::now() + Duration::from_secs(2);
    while r.progress.panics() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(r.progress.panics(), 1);
    // The worker carries on.
    assert_eq!(send(r.addr, b'b'), b"b");
    // No connection is open, so the drain does not wait for the 20 s grace
    // (it did when a panic skipped the count's decrement).
    let t = Instant::now();
    r.drain.drain();
    for h in r.handles {
        h.join().unwrap();
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_stuck_worker_stops_beating() {
    let r = start(Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !r.progress.stalled(Duration::from_millis(600)).is_empty() {
        assert!(Instant::now() < deadline, "the worker never beat");
        std::thread::sleep(Duration::from_millis(20));
    }
    // `s` blocks the worker thread for 2 s: no heartbeat meanwhile.
    let addr = r.addr;
    let blocked = std::thread::spawn(move || send(addr, b's'));
    let t = Instant::now();
    let mut seen_stalled = false;
    while t.elapsed() < Duration::from_millis(1800) {
        if r.progress.stalled(Duration::from_millis(600)) == [0] {
            seen_stalled = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen_stalled, "a blocked worker still looked alive");
    assert_eq!(blocked.join().unwrap(), b"s");
    // Beating again once unblocked.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !r.progress.stalled(Duration::from_millis(600)).is_empty() {
        assert!(Instant::now() < deadline, "the worker did not recover");
        std::thread::sleep(Duration::from_millis(20));
    }
    r.drain.drain();
    for h in r.handles {
        h.join().unwrap();
    }
}
