//! The echo backend, exercised over raw TCP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bench::EchoServer;
use bench::echo::pattern_byte;

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Sizes of the chunks when the body was chunked.
    chunks: Option<Vec<usize>>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(server: &EchoServer) -> Client {
        let stream = TcpStream::connect(server.local_addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, data: &[u8]) {
        self.reader.get_mut().write_all(data).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "line {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// Reads one response; `head` means the request was HEAD (no body).
    fn read(&mut self, head: bool) -> Resp {
        let status_line = self.line();
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').expect("header line");
            headers.push((n.to_owned(), v.trim().to_owned()));
        }
        let mut resp = Resp {
            status_line,
            headers,
            body: Vec::new(),
            chunks: None,
        };
        let code: u16 = resp.status_line[9..12].parse().unwrap();
        if head || code == 204 || code == 304 || code < 200 {
            return resp;
        }
        if resp.header("transfer-encoding") == Some("chunked") {
            let mut chunks = Vec::new();
            loop {
                let size = usize::from_str_radix(&self.line(), 16).unwrap();
                if size == 0 {
                    assert_eq!(self.line(), "", "no trailers expected");
                    break;
                }
                let start = resp.body.len();
                resp.body.resize(start + size, 0);
                self.reader.read_exact(&mut resp.body[start..]).unwrap();
                assert_eq!(self.line(), "");
                chunks.push(size);
            }
            resp.chunks = Some(chunks);
        } else if let Some(len) = resp.header("content-length") {
            resp.body.resize(len.parse().unwrap(), 0);
            self.reader.read_exact(&mut resp.body).unwrap();
        } else {
            self.reader.read_to_end(&mut resp.body).unwrap();
        }
        resp
    }

    fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.read(false)
    }

    /// True when the server has closed the connection (reads end of stream).
    fn closed(&mut self) -> bool {
        let mut byte = [0u8];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

fn start(name: &str) -> EchoServer {
    EchoServer::start("127.0.0.1:0".parse().unwrap(), name).unwrap()
}

fn is_pattern(body: &[u8]) -> bool {
    body.iter()
        .enumerate()
        .all(|(i, &b)| b == pattern_byte(i as u64))
}

#[test]
fn get_describes_the_request() {
    let server = start("alpha");
    let mut c = Client::connect(&server);
    c.send(b"GET /some/path?x=1&y=2 HTTP/1.1\r\nHost: myapp.example.com\r\nX-Custom: one\r\nx-custom: two\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.header("x-backend"), Some("alpha"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let j = r.json();
    assert_eq!(j["backend"], "alpha");
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/some/path?x=1&y=2");
    assert_eq!(j["host"], "myapp.example.com");
    assert_eq!(j["body_bytes"], 0);
    assert_eq!(
        j["headers"],
        serde_json::json!([
            ["Host", "myapp.example.com"],
            ["X-Custom", "one"],
            ["x-custom", "two"]
        ])
    );
}

#[test]
fn status_codes() {
    let server = start("s");
    let mut c = Client::connect(&server);
    for (code, line) in [
        (200, "HTTP/1.1 200 OK"),
        (404, "HTTP/1.1 404 Not Found"),
        (503, "HTTP/1.1 503 Service Unavailable"),
        (299, "HTTP/1.1 299 Status"),
    ] {
        let r = c.get(&format!("/status/{code}"));
        assert_eq!(r.status_line, line);
        assert_eq!(r.header("x-backend"), Some("s"));
        assert_eq!(r.json()["status"], code);
    }
    let r = c.get("/status/204");
    assert_eq!(r.status_line, "HTTP/1.1 204 No Content");
    assert_eq!(r.header("content-length"), None);
    let r = c.get("/status/nope");
    assert_eq!(r.status_line, "HTTP/1.1 400 Bad Request");
    // Still usable after all of those.
    assert_eq!(c.get("/fixed").body, b"ok\n");
    assert_eq!(server.connections(), 1);
}

#[test]
fn bytes_and_chunked() {
    let server = start("b");
    let mut c = Client::connect(&server);
    for n in [0usize, 1, 250, 251, 252, 16 * 1024, 100_000, 3 << 20] {
        let r = c.get(&format!("/bytes/{n}"));
        assert_eq!(r.status_line, "HTTP/1.1 200 OK");
        assert_eq!(r.header("content-length"), Some(n.to_string().as_str()));
        assert!(r.chunks.is_none());
        assert_eq!(r.body.len(), n);
        assert!(is_pattern(&r.body), "pattern of /bytes/{n}");

        let r = c.get(&format!("/chunked/{n}"));
        assert_eq!(r.status_line, "HTTP/1.1 200 OK");
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("content-length"), None);
        assert_eq!(r.body.len(), n);
        assert!(is_pattern(&r.body), "pattern of /chunked/{n}");
        let chunks = r.chunks.unwrap();
        assert_eq!(chunks.len(), n.div_ceil(16 * 1024));
        assert!(chunks.iter().all(|&s| s <= 16 * 1024));
    }
}

#[test]
fn fixed_keep_alive_and_pipelining() {
    let server = start("f");
    let mut c = Client::connect(&server);
    for _ in 0..200 {
        let r = c.get("/fixed");
        assert_eq!(r.status_line, "HTTP/1.1 200 OK");
        assert_eq!(r.header("content-length"), Some("3"));
        assert_eq!(r.header("connection"), None);
        assert_eq!(r.body, b"ok\n");
    }
    // 50 pipelined requests in one write, answered in order.
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.extend_from_slice(format!("GET /p{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    c.send(&batch);
    for i in 0..50 {
        let r = c.read(false);
        assert_eq!(r.json()["path"], format!("/p{i}"));
    }
    assert_eq!(server.connections(), 1);
    assert_eq!(server.requests(), 250);
}

#[test]
fn sleep_waits() {
    let server = start("z");
    let mut c = Client::connect(&server);
    let t = Instant::now();
    let r = c.get("/sleep/200");
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.json()["path"], "/sleep/200");
}

#[test]
fn close_closes() {
    let server = start("c");
    let mut c = Client::connect(&server);
    let r = c.get("/close");
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.json()["backend"], "c");
    assert!(c.closed());

    // A client's Connection: close is honoured too.
    let mut c = Client::connect(&server);
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read(false).header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn head_has_no_body() {
    let server = start("h");
    let mut c = Client::connect(&server);
    c.send(b"HEAD /bytes/1000 HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read(true);
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.header("content-length"), Some("1000"));
    c.send(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read(true);
    assert!(r.header("content-length").is_some());
    // The next response starts right away: no stray body bytes were sent.
    assert_eq!(c.get("/fixed").body, b"ok\n");
}

#[test]
fn body_is_counted() {
    let server = start("p");
    let mut c = Client::connect(&server);
    c.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world");
    let j = c.read(false).json();
    assert_eq!(j["method"], "POST");
    assert_eq!(j["body_bytes"], 11);
    c.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    let j = c.read(false).json();
    assert_eq!(j["body_bytes"], 11);
    // A body on /fixed is read and discarded.
    c.send(b"POST /fixed HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(c.read(false).body, b"ok\n");
    assert_eq!(server.connections(), 1);
}

#[test]
fn expect_continue() {
    let server = start("e");
    let mut c = Client::connect(&server);
    c.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.line(), "HTTP/1.1 100 Continue");
    assert_eq!(c.line(), "");
    c.send(b"data");
    let r = c.read(false);
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.json()["body_bytes"], 4);
}

#[test]
fn echo_small_bodies() {
    let server = start("echo");
    let mut c = Client::connect(&server);
    c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.read(false);
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.header("x-backend"), Some("echo"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, b"hello");
    c.send(b"PUT /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    assert_eq!(c.read(false).body, b"abcde");
    c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.body, b"");
    assert_eq!(r.chunks, Some(vec![]));
    assert_eq!(server.connections(), 1);
}

#[test]
fn echo_streams_many_mib() {
    let server = start("echo");
    let mut c = Client::connect(&server);
    let total: usize = 8 << 20;
    let body: Vec<u8> = (0..total).map(|i| (i * 7 % 256) as u8).collect();
    let mut writer = c.reader.get_ref().try_clone().unwrap();
    let sent = body.clone();
    // Send chunked from another thread while this one reads the echo: nothing is
    // buffered whole on the server, so both directions must flow at once.
    let sender = std::thread::spawn(move || {
        writer
            .write_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        for piece in sent.chunks(100_000) {
            writer
                .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .unwrap();
            writer.write_all(piece).unwrap();
            writer.write_all(b"\r\n").unwrap();
        }
        writer.write_all(b"0\r\n\r\n").unwrap();
    });
    let r = c.read(false);
    sender.join().unwrap();
    assert_eq!(r.body.len(), total);
    assert!(r.body == body);
    assert!(r.chunks.unwrap().len() > 1, "streamed in pieces");
    // Content-Length bodies stream the same way, and the connection stays usable.
    let mut writer = c.reader.get_ref().try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        writer
            .write_all(
                format!("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: {total}\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
        writer.write_all(&body).unwrap();
    });
    let r = c.read(false);
    sender.join().unwrap();
    assert_eq!(r.body.len(), total);
    assert_eq!(c.get("/fixed").body, b"ok\n");
    assert_eq!(server.connections(), 1);
}

#[test]
fn malformed_request_gets_400_and_close() {
    let server = start("m");
    let mut c = Client::connect(&server);
    c.send(b"NOT A REQUEST\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.status_line, "HTTP/1.1 400 Bad Request");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn http10_is_closed_unless_keep_alive() {
    let server = start("o");
    let mut c = Client::connect(&server);
    c.send(b"GET /fixed HTTP/1.0\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
    let mut c = Client::connect(&server);
    c.send(b"GET /fixed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.read(false).header("connection"), Some("keep-alive"));
    c.send(b"GET /fixed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.read(false).body, b"ok\n");
}

#[test]
fn counts_connections_and_stops() {
    let server = start("n");
    let addr = server.local_addr();
    for _ in 0..3 {
        let mut c = Client::connect(&server);
        c.get("/fixed");
    }
    assert_eq!(server.connections(), 3);
    assert_eq!(server.requests(), 3);
    // An idle keep-alive connection is closed by stop().
    let mut idle = Client::connect(&server);
    idle.get("/fixed");
    server.stop();
    assert!(idle.closed());
    let _ = idle.reader.get_ref().shutdown(Shutdown::Both);
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

#[tokio::test(flavor = "current_thread")]
async fn usable_from_async_tests() {
    let server = start("a");
    let addr = server.local_addr();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /fixed HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nok\n"), "{text}");
    drop(server);
}
