//! A raw HTTP/2 frame client for attack tests: it writes frames that no
//! real client sends (floods, resets the server is made to send, zero
//! windows) and a reader thread watches what lb answers (GOAWAY and its
//! error code, or EOF). Requests use HPACK's static table and literals
//! without Huffman coding, so no encoder is needed.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// How the server ended the connection, as the reader thread saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// GOAWAY with this error code.
    GoAway(u32),
    /// The connection closed (EOF or reset) without a GOAWAY.
    Closed,
}

/// A raw client connection.
pub struct Raw {
    tcp: TcpStream,
    ends: mpsc::Receiver<(End, Instant)>,
    reader: Option<JoinHandle<()>>,
}

/// One frame, header and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A header block for `method` (`GET` or `POST`) on `path` for
/// `authority`, plus `extra` as literal fields without indexing.
pub fn request_block(method: &str, path: &str, authority: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![if method == "POST" { 0x83 } else { 0x82 }, 0x86];
    let lit = |b: &mut Vec<u8>, index: u8, value: &str| {
        b.push(index);
        assert!(value.len() < 127);
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    };
    lit(&mut b, 0x04, path);
    lit(&mut b, 0x01, authority);
    for (name, value) in extra {
        b.push(0x00);
        b.push(name.len() as u8);
        b.extend_from_slice(name.as_bytes());
        assert!(value.len() < 127);
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

impl Raw {
    /// Connects, sends the preface and a SETTINGS frame with `settings`
    /// ((identifier, value) pairs), and starts the reader thread, which
    /// acknowledges the server's SETTINGS.
    pub fn connect(addr: SocketAddr, settings: &[(u16, u32)]) -> Raw {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_nodelay(true).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut hello = crate::support::h2raw::PREFACE.to_vec();
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        hello.extend(frame(SETTINGS, 0, 0, &payload));
        (&tcp).write_all(&hello).expect("preface");
        let (tx, ends) = mpsc::channel();
        let mut rd = tcp.try_clone().unwrap();
        let mut wr = tcp.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            rd.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut header = [0u8; 9];
            loop {
                if rd.read_exact(&mut header).is_err() {
                    let _ = tx.send((End::Closed, Instant::now()));
                    return;
                }
                let len = usize::from(header[0]) << 16
                    | usize::from(header[1]) << 8
                    | usize::from(header[2]);
                let mut payload = vec![0u8; len];
                if rd.read_exact(&mut payload).is_err() {
                    let _ = tx.send((End::Closed, Instant::now()));
                    return;
                }
                match header[3] {
                    GOAWAY if len >= 8 => {
                        let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                        let _ = tx.send((End::GoAway(code), Instant::now()));
                        return;
                    }
                    SETTINGS if header[4] & ACK == 0 => {
                        let _ = wr.write_all(&frame(SETTINGS, ACK, 0, &[]));
                    }
                    _ => {}
                }
            }
        });
        Raw {
            tcp,
            ends,
            reader: Some(reader),
        }
    }

    /// Writes bytes; false once the connection is gone.
    pub fn send(&self, bytes: &[u8]) -> bool {
        (&self.tcp).write_all(bytes).is_ok()
    }

    /// How the server ended the connection, if it did within `wait`.
    pub fn end(&self, wait: Duration) -> Option<(End, Instant)> {
        self.ends.recv_timeout(wait).ok()
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.tcp.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
