//! HTTP/2 attacks against the running binary, each from a raw-frame client
//! on loopback (no real client sends these frames): PING, SETTINGS and
//! empty-DATA floods, CONTINUATION floods, MadeYouReset (CVE-2025-8671,
//! the client makes lb reset streams with WINDOW_UPDATE overflows), and the
//! zero-window stall with HPACK amplification ("HTTP/2 Bomb"). Each test
//! checks how the attacking connection ends and how fast, that lb's
//! resident memory stays bounded while it lasts, and that curl with prior
//! knowledge is served during and after the attack.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bench::echo::EchoServer;

use crate::support::h2raw::{
    self, CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, End, HEADERS, PING, Raw,
    SETTINGS, WINDOW_UPDATE, frame, request_block, rss_kib,
};
use crate::support::{Lb, service_yaml};

const CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: lb}\nspec: {controller: lb.example.com/ingress-controller}\n";
const INGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: default}\nspec:\n  ingressClassName: lb\n  rules:\n  - http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n";

/// GOAWAY error code PROTOCOL_ERROR.
const PROTOCOL_ERROR: u32 = 0x1;

/// Growth of lb's resident memory tolerated during an attack.
const RSS_BOUND_KIB: u64 = 48 * 1024;

fn start(tag: &str, echo: &EchoServer, extra: &str) -> Lb {
    let svc = service_yaml("default", "web", 80, None, &[echo.local_addr()]);
    Lb::start(
        tag,
        &[
            ("class.yaml", CLASS),
            ("svc.yaml", &svc),
            ("ing.yaml", INGRESS),
        ],
        extra,
    )
}

fn pid(lb: &Lb) -> u32 {
    lb.child.as_ref().expect("running").id()
}

/// One request with curl over HTTP/2 prior knowledge: the status.
fn curl_h2(addr: SocketAddr) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.arg("--http2-prior-knowledge");
    curl_status(cmd, addr)
}

/// Runs `cmd` (curl with its protocol and header options) against
/// `/fixed` on `addr`: the status, 0 when there is none.
fn curl_status(mut cmd: Command, addr: SocketAddr) -> u16 {
    let out = cmd
        .args([
            "-s",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://{addr}/fixed"))
        .stdin(Stdio::null())
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// curl requests in a loop until `stop` (at most 200): how many were
/// answered 200 and how many were made.
fn curl_during(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u32, u32)> {
    std::thread::spawn(move || {
        let (mut ok, mut all) = (0, 0);
        while !stop.load(Ordering::Relaxed) && all < 200 {
            all += 1;
            if curl_h2(addr) == 200 {
                ok += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (ok, all)
    })
}

/// What an attack did to lb.
struct Outcome {
    end: Option<(End, Duration)>,
    rss_growth_kib: u64,
    served: (u32, u32),
}

/// Runs `attack` (called with the connection and an iteration number,
/// bounded in count and time, until it returns false or the connection
/// fails) while curl keeps asking; samples lb's RSS.
fn run_attack(lb: &Lb, raw: &Raw, max: u32, mut attack: impl FnMut(&Raw, u32) -> bool) -> Outcome {
    let pid = pid(lb);
    let before = rss_kib(pid);
    let mut peak = before;
    let stop = Arc::new(AtomicBool::new(false));
    let during = curl_during(lb.http, Arc::clone(&stop));
    let started = Instant::now();
    for i in 0..max {
        if started.elapsed() > Duration::from_secs(10) || !attack(raw, i) {
            break;
        }
        if i % 256 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    let end = raw
        .end(Duration::from_secs(5))
        .map(|(e, at)| (e, at - started));
    peak = peak.max(rss_kib(pid));
    stop.store(true, Ordering::Relaxed);
    let served = during.join().unwrap();
    eprintln!(
        "attack on pid {pid}: end {end:?}, RSS {before} KiB, peak {peak} KiB, curl {served:?}"
    );
    Outcome {
        end,
        rss_growth_kib: peak.saturating_sub(before),
        served,
    }
}

fn assert_calmed(lb: &Lb, o: &Outcome, within: Duration) {
    let (end, after) = o.end.expect("the attacking connection was ended");
    assert_eq!(
        end,
        End::GoAway(ENHANCE_YOUR_CALM),
        "log:\n{}",
        lb.log_text()
    );
    assert!(after < within, "ended after {after:?}");
    assert_served(lb, o);
}

fn assert_served(lb: &Lb, o: &Outcome) {
    assert!(
        o.rss_growth_kib < RSS_BOUND_KIB,
        "RSS grew {} KiB",
        o.rss_growth_kib
    );
    let (ok, all) = o.served;
    assert!(all > 0 && ok == all, "curl during the attack: {ok}/{all}");
    assert_eq!(curl_h2(lb.http), 200, "served after the attack");
}

#[test]
fn ping_flood_gets_goaway() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let lb = start("h2a-ping", &echo, "");
    let raw = Raw::connect(lb.http, &[]);
    let burst: Vec<u8> = (0..64u64)
        .flat_map(|i| frame(PING, 0, 0, &i.to_be_bytes()))
        .collect();
    let o = run_attack(&lb, &raw, 2_000, |raw, _| raw.send(&burst));
    assert_calmed(&lb, &o, Duration::from_secs(2));
}

#[test]
fn settings_flood_gets_goaway() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let lb = start("h2a-settings", &echo, "");
    let raw = Raw::connect(lb.http, &[]);
    let one = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    let burst: Vec<u8> = one.repeat(64);
    let o = run_attack(&lb, &raw, 2_000, |raw, _| raw.send(&burst));
    assert_calmed(&lb, &o, Duration::from_secs(2));
}

#[test]
fn empty_data_flood_gets_goaway() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let lb = start("h2a-data", &echo, "");
    let raw = Raw::connect(lb.http, &[]);
    let block = request_block("POST", "/echo", "web.test", &[]);
    assert!(raw.send(&frame(HEADERS, END_HEADERS, 1, &block)));
    let burst: Vec<u8> = frame(DATA, 0, 1, &[]).repeat(256);
    let o = run_attack(&lb, &raw, 2_000, |raw, _| raw.send(&burst));
    assert_calmed(&lb, &o, Duration::from_secs(2));
}

#[test]
fn continuation_flood_gets_goaway() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let lb = start("h2a-cont", &echo, "");
    let raw = Raw::connect(lb.http, &[]);
    // A header block that never ends: a valid request, then CONTINUATION
    // frames each adding a 100-byte field, never END_HEADERS.
    let block = request_block("GET", "/", "web.test", &[]);
    assert!(raw.send(&frame(HEADERS, 0, 1, &block)));
    let mut field = vec![0x00, 5];
    field.extend_from_slice(b"x-pad");
    field.push(100);
    field.extend_from_slice("p".repeat(100).as_bytes());
    let piece = frame(CONTINUATION, 0, 1, &field);
    let burst = piece.repeat(64);
    let o = run_attack(&lb, &raw, 2_000, |raw, _| raw.send(&burst));
    assert_calmed(&lb, &o, Duration::from_secs(2));
}

#[test]
fn made_you_reset_window_overflow_gets_goaway() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let lb = start("h2a-myr", &echo, "");
    let raw = Raw::connect(lb.http, &[]);
    // Each request asks the backend for a slow answer, then a WINDOW_UPDATE
    // overflows the stream's send window: lb must reset the stream
    // (FLOW_CONTROL_ERROR), which frees a concurrency slot while the
    // backend would still be working.
    let block = request_block("GET", "/sleep/200", "web.test", &[]);
    let o = run_attack(&lb, &raw, 5_000, |raw, i| {
        let stream = 2 * i + 1;
        let mut bytes = frame(HEADERS, END_HEADERS | END_STREAM, stream, &block);
        bytes.extend(frame(
            WINDOW_UPDATE,
            0,
            stream,
            &0x7fff_ffffu32.to_be_bytes(),
        ));
        raw.send(&bytes)
    });
    assert_calmed(&lb, &o, Duration::from_secs(5));
}

#[test]
fn made_you_reset_data_after_end_stream_gets_goaway() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let lb = start("h2a-myr-data", &echo, "");
    let raw = Raw::connect(lb.http, &[]);
    // DATA on a stream the client already half-closed: lb must reset it
    // (STREAM_CLOSED) while the backend works on the request.
    let block = request_block("GET", "/sleep/200", "web.test", &[]);
    let o = run_attack(&lb, &raw, 5_000, |raw, i| {
        let stream = 2 * i + 1;
        let mut bytes = frame(HEADERS, END_HEADERS | END_STREAM, stream, &block);
        bytes.extend(frame(DATA, 0, stream, b"late"));
        raw.send(&bytes)
    });
    // h2 treats DATA after END_STREAM as a connection error: the first one
    // ends the connection (GOAWAY PROTOCOL_ERROR), so resets cannot pile up.
    let (end, after) = o.end.expect("the attacking connection was ended");
    assert!(
        matches!(end, End::GoAway(PROTOCOL_ERROR | ENHANCE_YOUR_CALM)),
        "{end:?}; log:\n{}",
        lb.log_text()
    );
    assert!(after < Duration::from_secs(2), "ended after {after:?}");
    assert_served(&lb, &o);
}

#[test]
fn zero_window_stall_with_hpack_amplification_stays_bounded() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let lb = start("h2a-bomb", &echo, "");
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: lb can never send response data.
    let raw = Raw::connect(lb.http, &[(0x4, 0)]);
    // A 4 KB field entered into the HPACK dynamic table once (literal with
    // incremental indexing), then referenced (index 62) 14 times per
    // request: about 57 KB decoded from 14 bytes, under the 64 KiB header
    // list limit, on as many streams as lb allows, each asking for 1 MB.
    let big = "b".repeat(4000);
    let mut first = request_block("GET", "/bytes/1000000", "web.test", &[]);
    first.push(0x40);
    first.push(5);
    first.extend_from_slice(b"x-big");
    first.extend_from_slice(&[
        0x7f,
        (4000 - 127) as u8 & 0x7f | 0x80,
        ((4000 - 127) >> 7) as u8,
    ]);
    first.extend_from_slice(big.as_bytes());
    assert!(raw.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &first)));
    let mut block = request_block("GET", "/bytes/1000000", "web.test", &[]);
    block.extend(std::iter::repeat_n(0xbe, 14));
    let o = run_attack(&lb, &raw, 200, |raw, i| {
        std::thread::sleep(Duration::from_millis(5));
        raw.send(&frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 3, &block))
    });
    // Streams over the concurrency limit are refused, the rest stall on
    // the zero window: memory stays bounded and others are served.
    assert_served(&lb, &o);
    let _ = h2raw::PREFACE;
}

/// One request of `fields` header fields (`x-f0: v` ...; curl's own
/// User-Agent and Accept removed), over HTTP/2 prior knowledge or
/// HTTP/1.1 (which adds Host): the status.
fn curl_fields(addr: SocketAddr, fields: usize, h2: bool) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-H", "User-Agent:", "-H", "Accept:"]);
    cmd.arg(if h2 {
        "--http2-prior-knowledge"
    } else {
        "--http1.1"
    });
    for i in 0..fields {
        cmd.args(["-H", &format!("x-f{i}: v")]);
    }
    curl_status(cmd, addr)
}

/// An HTTP/2 request with more header fields than `max_headers` (100 by
/// default) gets 431, as an HTTP/1.1 request does; one at the limit is
/// served. Found by the `h2_to_h1` fuzz target: the header-list size limit
/// alone let thousands of small fields into an HTTP/1.1 head that lb's own
/// parser refuses.
#[test]
fn more_header_fields_than_max_headers_get_431_over_h2_as_over_h1() {
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), "web").unwrap();
    let lb = start("h2-fields", &echo, "");
    assert_eq!(curl_fields(lb.http, 100, true), 200);
    assert_eq!(curl_fields(lb.http, 101, true), 431);
    assert_eq!(curl_fields(lb.http, 1000, true), 431);
    // HTTP/1.1 counts Host too: 99 of ours plus Host is the limit.
    assert_eq!(curl_fields(lb.http, 99, false), 200);
    assert_eq!(curl_fields(lb.http, 100, false), 431);
    assert_eq!(
        curl_h2(lb.http),
        200,
        "the connection's server still serves"
    );
}
