//! Every connection bounded in time and memory (issue 15, item 4), through
//! the running binary: slow readers and dripping bodies are closed and their
//! upstream connections released, idle tunnels end, an HTTP/2 client that
//! never acknowledges the closing PING is closed, and connections over the
//! per-worker and per-client caps are closed at accept and counted.
//!
//! The backends here are tiny raw-socket servers that report when lb closes
//! their connection, which is what "upstream released" means.

mod caps;
mod h2frames;
mod h2raw;
mod slow;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::service_yaml;

/// An Ingress for host `bounds.test` to a Service whose one endpoint is `backend`.
pub(crate) fn manifests(backend: SocketAddr) -> Vec<(&'static str, String)> {
    let ingress = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: lb
  rules:
  - host: bounds.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
";
    vec![
        (
            "svc.yaml",
            service_yaml("default", "web", 80, None, &[backend]),
        ),
        ("ing.yaml", ingress.to_owned()),
    ]
}

/// The manifests as [`Lb::start`](crate::support::Lb::start) takes them.
pub(crate) fn refs<'a>(files: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    files.iter().map(|(n, t)| (*n, t.as_str())).collect()
}

/// What a [`Backend`] does once it has read a request head.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    /// Answers with a 1 GiB Content-Length body, written until the
    /// connection fails.
    Flood,
    /// Reads the request body until the connection ends, never answering.
    Sink,
}

/// A raw HTTP/1.1 backend on its own threads; `ended` receives one message
/// per connection when lb closes (or resets) it.
pub(crate) struct Backend {
    pub addr: SocketAddr,
    pub ended: mpsc::Receiver<Instant>,
}

impl Backend {
    pub(crate) fn start(mode: Mode) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, ended) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    serve(conn, mode);
                    let _ = tx.send(Instant::now());
                });
            }
        });
        Backend { addr, ended }
    }

    /// Waits up to `limit` for lb to close a backend connection.
    pub(crate) fn wait_ended(&self, limit: Duration) -> Option<Instant> {
        self.ended.recv_timeout(limit).ok()
    }
}

fn serve(mut conn: TcpStream, mode: Mode) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    match mode {
        Mode::Flood => {
            let total: u64 = 1 << 30;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n");
            if conn.write_all(head.as_bytes()).is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0u64;
            while sent < total {
                if conn.write_all(&chunk).is_err() {
                    return;
                }
                sent += chunk.len() as u64;
            }
        }
        Mode::Sink => {
            let mut buf = [0u8; 4096];
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

/// A client socket with a tiny receive buffer (so its window closes fast).
pub(crate) fn tiny_window_client(to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap();
    sock.into()
}

/// Descriptors the process `pid` holds.
pub(crate) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits up to `limit` until `pid` holds at most `want` descriptors;
/// returns the last count.
pub(crate) fn wait_fds_at_most(pid: u32, want: usize, limit: Duration) -> usize {
    let start = Instant::now();
    loop {
        let n = fd_count(pid);
        if n <= want || start.elapsed() > limit {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads from `s` until end of stream or error, for at most `limit`;
/// returns when it ended (`None`: still open at the limit).
pub(crate) fn wait_closed(s: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(Instant::now()),
        }
    }
    None
}
