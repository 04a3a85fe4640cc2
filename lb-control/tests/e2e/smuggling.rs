//! Request smuggling and strict HTTP/1.1 parsing through the running binary:
//! a corpus of malformed requests, each sent raw over its own connection,
//! must get lb's own error status and never reach the backend. Plus the
//! size limits (414, 413), `Expect: 100-continue` with curl, 417, and
//! pipelining.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench::echo::EchoServer;

use crate::support::{Client, Lb, service_yaml};

/// `max_body_bytes` of the lb under test.
const BODY_LIMIT: usize = 4 * 1024 * 1024;
/// The default `max_uri_bytes`.
const URI_LIMIT: usize = 8192;

/// What a backend that never answers received on each connection.
#[derive(Default)]
struct Received {
    bytes: Vec<u8>,
    closed: bool,
}

/// A backend that records every byte it receives and never answers, to see
/// exactly what lb forwarded before it gave up on a request.
struct Recorder {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<Mutex<Received>>>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let addr = listener.local_addr().expect("addr");
        let conns: Arc<Mutex<Vec<Arc<Mutex<Received>>>>> = Arc::default();
        let list = Arc::clone(&conns);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let rec = Arc::new(Mutex::new(Received::default()));
                list.lock().unwrap().push(Arc::clone(&rec));
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => rec.lock().unwrap().bytes.extend_from_slice(&buf[..n]),
                        }
                    }
                    rec.lock().unwrap().closed = true;
                });
            }
        });
        Recorder { addr, conns }
    }

    fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Waits until connection `i` was closed by lb and returns its bytes.
    fn wait_closed(&self, i: usize) -> Vec<u8> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let rec = self.conns.lock().unwrap().get(i).cloned();
            if let Some(rec) = rec {
                let rec = rec.lock().unwrap();
                if rec.closed {
                    return rec.bytes.clone();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("upstream connection {i} was not closed by lb");
    }
}

/// The end of a complete chunked body as lb re-encodes it.
const LAST_CHUNK: &[u8] = b"\r\n0\r\n\r\n";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// One lb in front of an echo backend (`smuggle.test`, and the default
/// backend) and a recorder (`record.test`), with a body limit.
fn start(tag: &str, echo: &EchoServer, rec: &Recorder) -> Lb {
    let ingress = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: smuggle}
spec:
  ingressClassName: lb
  defaultBackend:
    service: {name: web, port: {number: 80}}
  rules:
  - host: smuggle.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: record.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: rec, port: {number: 80}}}}
";
    let web = service_yaml("default", "web", 80, None, &[echo.local_addr()]);
    let recsvc = service_yaml("default", "rec", 80, None, &[rec.addr]);
    let extra = format!("[http]\nheader_read_timeout = \"5s\"\nmax_body_bytes = {BODY_LIMIT}\n");
    Lb::start(
        tag,
        &[
            ("web.yaml", &web),
            ("rec.yaml", &recsvc),
            ("ing.yaml", ingress),
        ],
        &extra,
    )
}

/// Reads the status line of the first response on `s` (interim ones
/// included), without interpreting the rest.
fn first_status(s: &mut TcpStream) -> Option<u16> {
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(1) => line.push(b[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&line);
    text.split(' ').nth(1)?.parse().ok()
}

/// Whether lb closed the connection: end of stream (or a reset) within a
/// few seconds, not merely silence.
fn closed(client: &mut Client) -> bool {
    let s = client.writer();
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

/// Builds `POST / HTTP/1.1` with the given extra header lines and body.
fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: smuggle.test\r\n{headers}\r\n{body}").into_bytes()
}

fn get_with(headers: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\n{headers}\r\n").into_bytes()
}

/// The corpus: (name, raw request, status lb must answer with).
fn corpus() -> Vec<(&'static str, Vec<u8>, u16)> {
    let raw = |b: &[u8]| b.to_vec();
    let mut long_uri = b"GET /".to_vec();
    long_uri.extend(std::iter::repeat_n(b'a', URI_LIMIT));
    long_uri.extend(b" HTTP/1.1\r\nHost: smuggle.test\r\n\r\n");
    let mut endless_line = b"GET /".to_vec();
    endless_line.extend(std::iter::repeat_n(b'a', 70 * 1024));
    let mut big_field = b"GET / HTTP/1.1\r\nHost: smuggle.test\r\nX-Big: ".to_vec();
    big_field.extend(std::iter::repeat_n(b'b', 70 * 1024));
    big_field.extend(b"\r\n\r\n");
    let mut many = b"GET / HTTP/1.1\r\nHost: smuggle.test\r\n".to_vec();
    for i in 0..101 {
        many.extend(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend(b"\r\n");
    let chunked = "Transfer-Encoding: chunked\r\n";
    vec![
        // Content-Length / Transfer-Encoding conflicts and bad lengths.
        ("CL then TE", post(&format!("Content-Length: 5\r\n{chunked}"), "0\r\n\r\n"), 400),
        ("TE then CL", post(&format!("{chunked}Content-Length: 5\r\n"), "0\r\n\r\n"), 400),
        ("TE with CL 0", post(&format!("{chunked}Content-Length: 0\r\n"), "0\r\n\r\n"), 400),
        ("differing CL fields", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), 400),
        ("differing CL list", post("Content-Length: 5, 6\r\n", "hello!"), 400),
        ("CL with plus", post("Content-Length: +5\r\n", "hello"), 400),
        ("CL negative", post("Content-Length: -5\r\n", ""), 400),
        ("CL non-digit", post("Content-Length: 5a\r\n", "hello"), 400),
        ("CL hex", post("Content-Length: 0x5\r\n", "hello"), 400),
        ("CL overflow", post("Content-Length: 18446744073709551616\r\n", ""), 400),
        ("CL empty", post("Content-Length: \r\n", ""), 400),
        ("Content_Length", post("Content_Length: 5\r\n", "hello"), 400),
        // Transfer codings lb does not decode or cannot trust.
        ("TE gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), 400),
        ("TE chunked, gzip", post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"), 400),
        ("TE xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), 400),
        ("TE identity", post("Transfer-Encoding: identity\r\n", ""), 400),
        ("TE chunked + VT", post("Transfer-Encoding: chunked\x0b\r\n", "0\r\n\r\n"), 400),
        ("TE FF + chunked", post("Transfer-Encoding:\x0cchunked\r\n", "0\r\n\r\n"), 400),
        ("TE chunked,", post("Transfer-Encoding: chunked,\r\n", "0\r\n\r\n"), 400),
        ("TE twice", post(&format!("{chunked}{chunked}"), "0\r\n\r\n"), 400),
        ("TE on HTTP/1.0", raw(b"POST / HTTP/1.0\r\nHost: smuggle.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400),
        ("Transfer_Encoding", post("Transfer_Encoding: chunked\r\n", "0\r\n\r\n"), 400),
        ("TE space before colon", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"), 400),
        // Chunk framing buffered with the head (checked before connecting).
        ("chunk size non-hex", post(chunked, "zz\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk size empty", post(chunked, "\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk size negative", post(chunked, "-5\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk size overflow", post(chunked, "1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk size 0x", post(chunked, "0x5\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk size inner space", post(chunked, "1 0\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk size leading space", post(chunked, " 5\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk data without CRLF", post(chunked, "5\r\nhelloXX\r\n0\r\n\r\n"), 400),
        ("chunk size bare LF", post(chunked, "5\nhello\r\n0\r\n\r\n"), 400),
        ("chunk announces more than max_body_bytes", post(chunked, "800000\r\nhello"), 413),
        // Line structure.
        ("obs-fold SP", post("X-A: a\r\n b\r\nContent-Length: 0\r\n", ""), 400),
        ("obs-fold HTAB", post("X-A: a\r\n\tb\r\nContent-Length: 0\r\n", ""), 400),
        ("folded TE", post("X-A: a\r\n Transfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400),
        ("bare LF line endings", raw(b"GET / HTTP/1.1\nHost: smuggle.test\n\n"), 400),
        ("bare LF in one field", raw(b"GET / HTTP/1.1\r\nHost: smuggle.test\nX: y\r\n\r\n"), 400),
        ("bare CR", raw(b"GET / HTTP/1.1\r\nHost: smuggle.test\rX: y\r\n\r\n"), 400),
        ("space before colon", post("Content-Length : 5\r\n", "hello"), 400),
        // Bytes that are not allowed.
        ("NUL in field name", raw(b"GET / HTTP/1.1\r\nHost: smuggle.test\r\nX\0Y: v\r\n\r\n"), 400),
        ("NUL in field value", raw(b"GET / HTTP/1.1\r\nHost: smuggle.test\r\nX: a\0b\r\n\r\n"), 400),
        ("DEL in field value", raw(b"GET / HTTP/1.1\r\nHost: smuggle.test\r\nX: a\x7fb\r\n\r\n"), 400),
        ("control in field value", raw(b"GET / HTTP/1.1\r\nHost: smuggle.test\r\nX: a\x01b\r\n\r\n"), 400),
        ("invalid method", raw(b"G<T / HTTP/1.1\r\nHost: smuggle.test\r\n\r\n"), 400),
        ("DEL in target", raw(b"GET /a\x7fb HTTP/1.1\r\nHost: smuggle.test\r\n\r\n"), 400),
        ("non-ASCII target", raw(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: smuggle.test\r\n\r\n"), 400),
        ("fragment in target", raw(b"GET /a#b HTTP/1.1\r\nHost: smuggle.test\r\n\r\n"), 400),
        ("asterisk on GET", raw(b"GET * HTTP/1.1\r\nHost: smuggle.test\r\n\r\n"), 400),
        // Request line shape and version.
        ("two spaces after method", raw(b"GET  / HTTP/1.1\r\nHost: smuggle.test\r\n\r\n"), 400),
        ("two spaces before version", raw(b"GET /  HTTP/1.1\r\nHost: smuggle.test\r\n\r\n"), 400),
        ("space after version", raw(b"GET / HTTP/1.1 \r\nHost: smuggle.test\r\n\r\n"), 400),
        ("space inside target", raw(b"GET /a b HTTP/1.1\r\nHost: smuggle.test\r\n\r\n"), 400),
        ("HTTP/2.0", raw(b"GET / HTTP/2.0\r\nHost: smuggle.test\r\n\r\n"), 505),
        ("HTTP/1.2", raw(b"GET / HTTP/1.2\r\nHost: smuggle.test\r\n\r\n"), 505),
        ("HTTP/0.9 line", raw(b"GET / HTTP/0.9\r\n\r\n"), 505),
        ("HTTP/1.10", raw(b"GET / HTTP/1.10\r\nHost: smuggle.test\r\n\r\n"), 400),
        ("lower-case version", raw(b"GET / http/1.1\r\nHost: smuggle.test\r\n\r\n"), 400),
        // Host.
        ("Host twice", get_with("Host: smuggle.test\r\nHost: smuggle.test\r\n"), 400),
        ("Host differing twice", get_with("Host: smuggle.test\r\nHost: record.test\r\n"), 400),
        ("Host missing", get_with("X: y\r\n"), 400),
        ("Host with space", get_with("Host: smuggle .test\r\n"), 400),
        ("Host with slash", get_with("Host: smuggle.test/x\r\n"), 400),
        ("Host with userinfo", get_with("Host: u@smuggle.test\r\n"), 400),
        ("Host with bad port", get_with("Host: smuggle.test:8x\r\n"), 400),
        ("absolute-form with userinfo", raw(b"GET http://u@smuggle.test/ HTTP/1.1\r\nHost: smuggle.test\r\n\r\n"), 400),
        // Limits, expectations, methods.
        ("target over max_uri_bytes", long_uri, 414),
        ("request line over max_header_bytes", endless_line, 414),
        ("head over max_header_bytes", big_field, 431),
        ("more than max_headers fields", many, 431),
        ("Content-Length over max_body_bytes", post(&format!("Content-Length: {}\r\n", BODY_LIMIT + 1), "x"), 413),
        ("Expect other", post("Expect: 200-ok\r\nContent-Length: 1\r\n", "x"), 417),
        ("Expect list with other", post("Expect: 100-continue, x\r\nContent-Length: 1\r\n", "x"), 417),
        ("CONNECT", raw(b"CONNECT smuggle.test:443 HTTP/1.1\r\nHost: smuggle.test:443\r\n\r\n"), 501),
    ]
}

#[test]
fn malformed_requests_are_refused_before_reaching_the_backend() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let rec = Recorder::start();
    let lb = start("smuggling", &echo, &rec);
    // The counters do move for a request that is forwarded.
    let before = echo.requests();
    assert_eq!(lb.get("smuggle.test", "/fixed").status, 200);
    assert_eq!(echo.requests(), before + 1);

    let cases = corpus();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (name, bytes, want) in &cases {
        let (requests, connections) = (echo.requests(), echo.connections());
        let mut client = lb.client();
        client.send_raw(bytes).expect("send");
        let got = client.read_response(false).map(|r| r.status);
        let is_closed = closed(&mut client);
        let reached = echo.requests() != requests || echo.connections() != connections;
        match got {
            Ok(status) if status == *want && is_closed && !reached => {}
            other => failures.push(format!(
                "{name}: got {other:?} (want {want}), closed={is_closed}, reached backend={reached}"
            )),
        }
    }
    assert_eq!(rec.connections(), 0, "the recorder was never routed to");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn accepted_edge_cases_reach_the_backend() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let rec = Recorder::start();
    let lb = start("smuggling-ok", &echo, &rec);
    let cases: &[(&str, &[u8])] = &[
        // Identical repeated Content-Length values are accepted (RFC 9112 6.3).
        (
            "identical CL fields",
            b"POST /echo HTTP/1.1\r\nHost: smuggle.test\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
        ),
        (
            "identical CL list",
            b"POST /echo HTTP/1.1\r\nHost: smuggle.test\r\nContent-Length: 2, 2\r\n\r\nhi",
        ),
        (
            "TE in upper case with OWS",
            b"POST /echo HTTP/1.1\r\nHost: smuggle.test\r\nTransfer-Encoding: \tCHUNKED \r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        ),
        (
            "chunk extension with BWS",
            b"POST /echo HTTP/1.1\r\nHost: smuggle.test\r\nTransfer-Encoding: chunked\r\n\r\n2 ;ext=1\r\nhi\r\n0\r\nTrailer: x\r\n\r\n",
        ),
        // The absolute-form authority wins over Host (RFC 9112 3.2.2):
        // Host names the recorder, which would never answer.
        (
            "absolute-form authority wins",
            b"POST http://smuggle.test/echo HTTP/1.1\r\nHost: record.test\r\nContent-Length: 2\r\n\r\nhi",
        ),
        (
            "HTTP/1.0 without Host",
            b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
        ),
        (
            "leading empty line",
            b"\r\nPOST /echo HTTP/1.1\r\nHost: smuggle.test\r\nContent-Length: 2\r\n\r\nhi",
        ),
    ];
    for (name, bytes) in cases {
        let before = echo.requests();
        let mut client = lb.client();
        client.send_raw(bytes).expect("send");
        let resp = client.read_response(false).expect(name);
        assert_eq!(resp.status, 200, "{name}");
        assert_eq!(resp.backend(), "web", "{name}");
        assert_eq!(resp.body, b"hi", "{name}");
        assert_eq!(echo.requests(), before + 1, "{name}");
    }
    assert_eq!(rec.connections(), 0);
}

#[test]
fn chunk_errors_while_streaming_abort_the_upstream_request() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let rec = Recorder::start();
    let lb = start("smuggling-stream", &echo, &rec);
    let head = "POST /upload HTTP/1.1\r\nHost: record.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    // (later bytes, expected status): a framing error gives 400, a body
    // growing past max_body_bytes gives 413.
    let big = format!("{:x}\r\n", BODY_LIMIT);
    let cases: [(&str, &[u8], u16); 4] = [
        ("bad size", b"zz\r\n", 400),
        ("missing CRLF after data", b"3\r\nabcX\r\n", 400),
        ("bare LF after size", b"3\nabc\r\n0\r\n\r\n", 400),
        ("over max_body_bytes", big.as_bytes(), 413),
    ];
    for (i, (name, later, want)) in cases.iter().enumerate() {
        let mut client = lb.client();
        client.send_raw(head.as_bytes()).expect("send head");
        client.send_raw(b"5\r\nhello\r\n").expect("send chunk");
        // Wait until lb forwarded the head and the first chunk.
        let start = Instant::now();
        while rec.connections() <= i {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name}: not forwarded"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        client.send_raw(later).expect("send rest");
        let resp = client.read_response(false).expect(name);
        assert_eq!(resp.status, *want, "{name}");
        assert!(closed(&mut client), "{name}: connection left open");
        let upstream = rec.wait_closed(i);
        assert!(
            contains(&upstream, b"hello"),
            "{name}: streaming had started"
        );
        assert!(
            !contains(&upstream, LAST_CHUNK),
            "{name}: the backend got a complete request"
        );
    }
    assert_eq!(echo.requests(), 0);
}

#[test]
fn body_and_uri_limits() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let rec = Recorder::start();
    let lb = start("smuggling-limits", &echo, &rec);
    let mut client = lb.client();
    // A target of exactly max_uri_bytes is fine.
    let path = format!("/fixed?{}", "q".repeat(URI_LIMIT - "/fixed?".len()));
    assert_eq!(client.get("smuggle.test", &path).status, 200);
    // A body of exactly max_body_bytes is fine, with a length or chunked.
    let body = vec![b'z'; BODY_LIMIT];
    let resp = client
        .request("POST", "smuggle.test", "/echo", &[], Some(&body))
        .expect("post");
    assert_eq!((resp.status, resp.body.len()), (200, BODY_LIMIT));
    let mut chunked = format!(
        "POST /echo HTTP/1.1\r\nHost: smuggle.test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        BODY_LIMIT
    )
    .into_bytes();
    chunked.extend(&body);
    chunked.extend(b"\r\n0\r\n\r\n");
    let writer = client.writer().try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let mut w = writer;
        w.write_all(&chunked).expect("send chunked");
    });
    let resp = client.read_response(false).expect("chunked at limit");
    sender.join().expect("sender");
    assert_eq!((resp.status, resp.body.len()), (200, BODY_LIMIT));
    // One byte more, announced in chunks: 413.
    let before = echo.requests();
    let mut c = lb.client();
    c.send_raw(
        format!(
            "POST /echo HTTP/1.1\r\nHost: smuggle.test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            BODY_LIMIT + 1
        )
        .as_bytes(),
    )
    .expect("send");
    assert_eq!(c.read_response(false).expect("413").status, 413);
    assert_eq!(echo.requests(), before);
}

#[test]
fn expect_100_continue_with_curl() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let rec = Recorder::start();
    let lb = start("smuggling-expect", &echo, &rec);
    let curl = |file: &std::path::Path| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-v",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-H",
                "Host: smuggle.test",
                "-H",
                "Expect: 100-continue",
                "--expect100-timeout",
                "10",
                "--data-binary",
            ])
            .arg(format!("@{}", file.display()))
            .arg(format!("http://{}/echo", lb.http))
            .output()
            .expect("curl is installed");
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = out.stdout;
        let split = stdout.iter().rposition(|&b| b == b'\n').expect("status");
        let code: u16 = String::from_utf8_lossy(&stdout[split + 1..])
            .parse()
            .expect("code");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (code, stdout[..split].to_vec(), stderr)
    };
    // Within the limit: the 100 comes back and the body goes through.
    let file = lb.dir.join("upload.bin");
    let body: Vec<u8> = (0..2 * 1024 * 1024 + 5).map(|i| (i % 199) as u8).collect();
    std::fs::write(&file, &body).unwrap();
    let (code, got, log) = curl(&file);
    assert_eq!(code, 200, "{log}");
    assert!(
        log.contains("HTTP/1.1 100 Continue"),
        "no 100 relayed:\n{log}"
    );
    assert!(got == body, "curl got a different body back");
    // Over the limit: 413 at once, no 100, no body sent, backend untouched.
    let before = (echo.requests(), echo.connections());
    let big = lb.dir.join("big.bin");
    std::fs::write(&big, vec![b'b'; BODY_LIMIT + 1]).unwrap();
    let started = Instant::now();
    let (code, _, log) = curl(&big);
    assert_eq!(code, 413, "{log}");
    assert!(!log.contains("100 Continue"), "100 sent before 413:\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "curl waited for a 100 that never came"
    );
    assert_eq!((echo.requests(), echo.connections()), before);

    // The same over raw TCP: the first status line is the 413.
    let mut s = TcpStream::connect(lb.http).expect("connect");
    s.write_all(
        format!(
            "POST /echo HTTP/1.1\r\nHost: smuggle.test\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            BODY_LIMIT + 1
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(first_status(&mut s), Some(413));
    // Within the limit: the first status line is the 100.
    let mut s = TcpStream::connect(lb.http).expect("connect");
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: smuggle.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    )
    .unwrap();
    assert_eq!(first_status(&mut s), Some(100));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").expect("echo");
    let rec = Recorder::start();
    let lb = start("smuggling-pipeline", &echo, &rec);
    let mut client = lb.client();
    let batch = b"GET /status/201 HTTP/1.1\r\nHost: smuggle.test\r\n\r\n\
POST /echo HTTP/1.1\r\nHost: smuggle.test\r\nContent-Length: 5\r\n\r\nhello\
POST /echo HTTP/1.1\r\nHost: smuggle.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
HEAD /fixed HTTP/1.1\r\nHost: smuggle.test\r\n\r\n\
GET /status/202 HTTP/1.1\r\nHost: smuggle.test\r\n\r\n";
    client.send_raw(batch).expect("send");
    let r1 = client.read_response(false).expect("1");
    assert_eq!(r1.status, 201);
    let r2 = client.read_response(false).expect("2");
    assert_eq!((r2.status, &r2.body[..]), (200, &b"hello"[..]));
    let r3 = client.read_response(false).expect("3");
    assert_eq!((r3.status, &r3.body[..]), (200, &b"abcde"[..]));
    let r4 = client.read_response(true).expect("4");
    assert_eq!(r4.status, 200);
    let r5 = client.read_response(false).expect("5");
    assert_eq!(r5.status, 202);
    // Still usable afterwards.
    assert_eq!(client.get("smuggle.test", "/fixed").status, 200);

    // A bad request in the middle: the ones before it are answered, then
    // 400 and close; the ones after it never reach the backend.
    let before = echo.requests();
    let mut client = lb.client();
    client
        .send_raw(
            b"GET /status/203 HTTP/1.1\r\nHost: smuggle.test\r\n\r\n\
POST / HTTP/1.1\r\nHost: smuggle.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
GET /status/204 HTTP/1.1\r\nHost: smuggle.test\r\n\r\n",
        )
        .expect("send");
    assert_eq!(client.read_response(false).expect("a").status, 203);
    assert_eq!(client.read_response(false).expect("b").status, 400);
    assert!(closed(&mut client));
    assert_eq!(echo.requests(), before + 1);
}
