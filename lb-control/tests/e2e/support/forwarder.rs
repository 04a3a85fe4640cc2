//! A TCP forwarder on loopback that a test can turn into a black hole: a
//! network partition between lb and its API server, without touching
//! either.
//!
//! [`Forwarder::start`] listens on 127.0.0.1 (a free port) and relays every
//! connection to a target address, both ways. [`Forwarder::black_hole`]
//! with `true` stops the relaying on every open connection in both
//! directions while leaving it open (nothing is closed, reset or answered),
//! and connections accepted from then on are held open but never relayed,
//! not even after the black hole ends. With `false`, the connections that
//! were open before resume (what is in flight is delivered late, as after a
//! healed partition) and new ones are relayed again. Everything stops when
//! the forwarder drops.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often an idle relay looks at the black-hole and stop flags.
const POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Shared {
    black_hole: AtomicBool,
    stop: AtomicBool,
    /// Bytes relayed, both directions.
    relayed: AtomicU64,
    /// Connections accepted, relayed or not.
    accepted: AtomicU64,
    /// Every socket, to shut down on drop.
    sockets: Mutex<Vec<TcpStream>>,
}

/// A relay from 127.0.0.1:[`Forwarder::port`] to a target, switchable into a
/// black hole.
pub struct Forwarder {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Relays connections to `target`.
    pub fn start(target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the forwarder");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("forwarder address");
        let shared = Arc::new(Shared::default());
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (s, t) = (shared.clone(), threads.clone());
        let accept = std::thread::Builder::new()
            .name("forwarder-accept".into())
            .spawn(move || accept_loop(&listener, target, &s, &t))
            .expect("spawn the forwarder");
        Forwarder {
            addr,
            shared,
            threads,
            accept: Some(accept),
        }
    }

    /// The address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Starts (`true`) or ends (`false`) the black hole.
    pub fn black_hole(&self, on: bool) {
        self.shared.black_hole.store(on, Ordering::SeqCst);
    }

    /// Bytes relayed so far, both directions together.
    pub fn relayed(&self) -> u64 {
        self.shared.relayed.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let threads: Vec<_> = self.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    target: SocketAddr,
    shared: &Arc<Shared>,
    threads: &Mutex<Vec<JoinHandle<()>>>,
) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(_) => {
                std::thread::sleep(POLL);
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nonblocking(false);
        if let Ok(c) = client.try_clone() {
            shared.sockets.lock().unwrap().push(c);
        }
        if shared.black_hole.load(Ordering::SeqCst) {
            // Accepted, never relayed: held open until the forwarder drops.
            shared.sockets.lock().unwrap().push(client);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        if let Ok(u) = upstream.try_clone() {
            shared.sockets.lock().unwrap().push(u);
        }
        let (Ok(client2), Ok(upstream2)) = (client.try_clone(), upstream.try_clone()) else {
            continue;
        };
        let mut list = threads.lock().unwrap();
        for (from, to) in [(client, upstream), (upstream2, client2)] {
            let s = shared.clone();
            list.push(std::thread::spawn(move || pump(from, to, &s)));
        }
    }
}

/// Copies `from` to `to` while the forwarder is not a black hole; holds what
/// it read meanwhile until the black hole ends.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = 0usize;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if shared.black_hole.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
            continue;
        }
        if pending > 0 {
            if to.write_all(&buf[..pending]).is_err() {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            shared.relayed.fetch_add(pending as u64, Ordering::SeqCst);
            pending = 0;
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => pending = n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}
