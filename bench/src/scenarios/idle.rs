//! Idle keep-alive client connections opened from the bench process itself:
//! each one sends one small GET, reads the whole response, then stays open
//! and idle until [`IdleConns`] is dropped. Batches bound the time spent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Connections opened (and requests sent) before their responses are read.
const BATCH: usize = 64;
/// Longest wait for one connect or one response.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// The request each connection sends.
const REQUEST: &[u8] = b"GET /fixed HTTP/1.1\r\nHost: bench\r\nUser-Agent: lb-bench-idle\r\n\r\n";

/// Open client connections that were each served one request.
#[derive(Debug, Default)]
pub struct IdleConns {
    streams: Vec<TcpStream>,
    /// Connections established (accepted by the kernel).
    pub opened: usize,
    /// Connections that got a complete 2xx response.
    pub served: usize,
    /// Why opening stopped early, if it did.
    pub error: Option<String>,
    /// Time spent opening and serving them.
    pub elapsed: Duration,
}

impl IdleConns {
    /// Opens up to `n` connections to `addr`, stopping at the first failure
    /// or at `deadline`.
    pub fn open(addr: SocketAddr, n: usize, deadline: Instant) -> IdleConns {
        let start = Instant::now();
        let mut c = IdleConns::default();
        while c.opened < n && c.error.is_none() {
            if Instant::now() >= deadline {
                c.error = Some(format!("time limit reached after {} connections", c.opened));
                break;
            }
            let mut batch = Vec::with_capacity(BATCH);
            for _ in 0..BATCH.min(n - c.opened) {
                match connect_and_send(addr) {
                    Ok(s) => batch.push(s),
                    Err(e) => {
                        c.error = Some(format!("connection {}: {e}", c.opened + batch.len()));
                        break;
                    }
                }
            }
            c.opened += batch.len();
            for mut s in batch {
                match read_response(&mut s) {
                    Ok(status) if (200..300).contains(&status) => {
                        c.served += 1;
                        c.streams.push(s);
                    }
                    Ok(status) => {
                        c.error.get_or_insert(format!("status {status}"));
                    }
                    Err(e) => {
                        c.error.get_or_insert(format!("response: {e}"));
                    }
                }
            }
        }
        c.elapsed = start.elapsed();
        c
    }

    /// How many connections are held open now.
    pub fn held(&self) -> usize {
        self.streams.len()
    }
}

fn connect_and_send(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.write_all(REQUEST)?;
    Ok(s)
}

/// Reads one complete response (Content-Length or chunked body) and returns
/// its status code.
pub fn read_response(s: &mut impl Read) -> Result<u16, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut fill = |buf: &mut Vec<u8>| -> Result<(), String> {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        Ok(())
    };
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf).map_err(|e| e.to_string())? {
            httparse::Status::Partial => fill(&mut buf)?,
            httparse::Status::Complete(head) => {
                let status = resp.code.unwrap_or(0);
                let header = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
                };
                if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                    while !buf[head..].ends_with(b"0\r\n\r\n") {
                        fill(&mut buf)?;
                    }
                } else {
                    let len: usize = header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head + len {
                        fill(&mut buf)?;
                    }
                }
                return Ok(status);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_length_and_chunked_responses() {
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(read_response(&mut r), Ok(200));
        let mut r: &[u8] =
            b"HTTP/1.1 503 Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n";
        assert_eq!(read_response(&mut r), Ok(503));
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok";
        assert!(read_response(&mut r).is_err());
    }
}
