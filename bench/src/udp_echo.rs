//! A UDP echo backend for tests and benchmarks: answers every datagram with
//! `<name> <payload>`, sent back to the sender's address, so a client can
//! tell which endpoint served its flow.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running UDP echo server on its own thread; stops when dropped.
#[derive(Debug)]
pub struct UdpEchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    datagrams: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEchoServer {
    /// Binds `addr` and starts answering as `name`.
    pub fn start(addr: SocketAddr, name: &str) -> io::Result<UdpEchoServer> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let datagrams = Arc::new(AtomicU64::new(0));
        let prefix = format!("{name} ").into_bytes();
        let (stop2, count) = (Arc::clone(&stop), Arc::clone(&datagrams));
        let thread = std::thread::Builder::new()
            .name(format!("udp-echo-{name}"))
            .spawn(move || {
                let mut buf = vec![0u8; 65_536];
                let mut out = Vec::with_capacity(65_536);
                while !stop2.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                    out.clear();
                    out.extend_from_slice(&prefix);
                    out.extend_from_slice(&buf[..n]);
                    let _ = socket.send_to(&out, from);
                }
            })?;
        Ok(UdpEchoServer {
            addr,
            stop,
            datagrams,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub fn datagrams(&self) -> u64 {
        self.datagrams.load(Ordering::Relaxed)
    }
}

impl Drop for UdpEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
