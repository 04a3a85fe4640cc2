//! Readiness checks: a TCP connect, or an HTTP GET as a kubelet's httpGet probe does.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::plan::Check;

/// Runs `check` against the pod at `ip`; true on success within `timeout`.
pub async fn run(ip: IpAddr, check: &Check, timeout: Duration) -> bool {
    let attempt = async {
        match check {
            Check::Tcp(port) => TcpStream::connect(SocketAddr::new(ip, *port)).await.is_ok(),
            Check::Http { port, path } => http_get(SocketAddr::new(ip, *port), path).await,
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

/// An HTTP/1.1 GET; success is a status in 200..=399.
async fn http_get(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.37\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    status_ok(&head)
}

/// Whether an HTTP response starting with `head` has a 2xx or 3xx status.
pub fn status_ok(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return false;
    };
    version.starts_with("HTTP/") && code.parse::<u16>().is_ok_and(|c| (200..400).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_ok(b"HTTP/1.0 302 Found\r\nLocation: x\r\n"));
        assert!(!status_ok(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(!status_ok(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!status_ok(b"garbage"));
        assert!(!status_ok(b""));
    }

    #[tokio::test]
    async fn tcp_and_http_checks() {
        let server = crate::EchoServer::start("127.0.0.1:0".parse().unwrap(), "t").unwrap();
        let addr = server.local_addr();
        let t = Duration::from_secs(2);
        assert!(run(addr.ip(), &Check::Tcp(addr.port()), t).await);
        let ok = Check::Http {
            port: addr.port(),
            path: "/healthz".into(),
        };
        assert!(run(addr.ip(), &ok, t).await);
        let bad = Check::Http {
            port: addr.port(),
            path: "/status/503".into(),
        };
        assert!(!run(addr.ip(), &bad, t).await);
        // Nothing listens on that port of another loopback address.
        let elsewhere: IpAddr = "127.0.0.253".parse().unwrap();
        assert!(!run(elsewhere, &Check::Tcp(addr.port()), t).await);
        assert!(!run(elsewhere, &ok, t).await);
    }
}
