//! `lb-echo --drain-on-sigterm`: after SIGTERM it keeps serving, closing each connection
//! after one response; a second SIGTERM stops it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The running lb-echo, killed when dropped.
struct Echo {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Echo {
    /// Starts lb-echo on a free loopback port and returns it with the bound address.
    fn start(extra: &[&str]) -> (Echo, SocketAddr) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lb-echo"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--name",
                "drainer",
                "--workers",
                "1",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start lb-echo");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut echo = Echo { child, lines };
        let line = echo.wait_line("listening on");
        let addr = line
            .rsplit("listening on ")
            .next()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        echo.wait_line("lb-echo: ready");
        (echo, addr)
    }

    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("lb-echo printed no {needle:?}: {e}"),
            }
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits (up to 10 s) for the process to exit; returns whether it exited successfully.
    fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("lb-echo did not exit");
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive connection.
struct Conn {
    reader: BufReader<TcpStream>,
}

/// One response: its header lines (lowercased names) and body.
struct Resp {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    fn get(&mut self, path: &str) -> Resp {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
        let mut status = String::new();
        self.reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').unwrap();
            headers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        Resp { headers, body }
    }

    /// Whether the server closed the connection (EOF within 10 s).
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0))
    }
}

#[test]
fn sigterm_drains_then_second_sigterm_stops() {
    let (mut echo, addr) = Echo::start(&["--drain-on-sigterm"]);
    let mut before = Conn::open(addr);
    let resp = before.get("/a");
    assert_eq!(resp.header("connection"), None);
    let json: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(json["backend"], "drainer");

    echo.signal(Signal::SIGTERM);
    echo.wait_line("lb-echo: draining");

    // The open keep-alive connection gets one more answer, marked and then closed.
    let resp = before.get("/b");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(
        before.closed(),
        "connection still open after Connection: close"
    );

    // New connections are still accepted and served, one response each.
    for _ in 0..3 {
        let mut conn = Conn::open(addr);
        let resp = conn.get("/c");
        assert_eq!(resp.header("connection"), Some("close"));
        let json: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(json["backend"], "drainer");
        assert!(conn.closed());
    }
    assert!(
        echo.child.try_wait().unwrap().is_none(),
        "exited on the first SIGTERM"
    );

    echo.signal(Signal::SIGTERM);
    assert!(echo.wait_exit(), "lb-echo failed on the second SIGTERM");
}

#[test]
fn sigint_stops_a_draining_echo() {
    let (mut echo, addr) = Echo::start(&["--drain-on-sigterm"]);
    echo.signal(Signal::SIGTERM);
    echo.wait_line("lb-echo: draining");
    let mut conn = Conn::open(addr);
    assert_eq!(conn.get("/").header("connection"), Some("close"));
    echo.signal(Signal::SIGINT);
    assert!(echo.wait_exit());
}

#[test]
fn without_the_flag_sigterm_stops_at_once() {
    let (mut echo, addr) = Echo::start(&[]);
    let mut conn = Conn::open(addr);
    assert_eq!(conn.get("/").header("connection"), None);
    echo.signal(Signal::SIGTERM);
    assert!(echo.wait_exit());
}
