//! HTTP/1.1 request head micro-benchmarks: the crate's own parser
//! ([`lb_http::h1::head::parse_request`], httparse into spans) alone and
//! followed by the framing scan ([`lb_http::h1::head::request_info`]), on a
//! typical browser-like head (10 fields) and a large one (40 fields).

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lb_http::h1::head::{BodyKind, HeaderSpan, parse_request, request_info};

/// The defaults of `http.max_header_bytes` and `http.max_headers`.
const MAX_BYTES: usize = 65536;
const MAX_HEADERS: usize = 100;

const TYPICAL: &[(&str, &str)] = &[
    ("Host", "shop.example.com"),
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    ("Accept", "application/json, text/plain, */*"),
    ("Accept-Language", "en-US,en;q=0.5"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Referer", "https://shop.example.com/account/orders"),
    (
        "Cookie",
        "session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark; consent=1",
    ),
    ("Connection", "keep-alive"),
    ("X-Request-Id", "3b1f2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"),
    ("Cache-Control", "no-cache"),
];

const EXTRA: &[(&str, &str)] = &[
    ("Sec-Fetch-Dest", "empty"),
    ("Sec-Fetch-Mode", "cors"),
    ("Sec-Fetch-Site", "same-origin"),
    (
        "Sec-Ch-Ua",
        "\"Chromium\";v=\"128\", \"Not;A=Brand\";v=\"24\"",
    ),
    ("Sec-Ch-Ua-Mobile", "?0"),
    ("Sec-Ch-Ua-Platform", "\"Linux\""),
    ("Pragma", "no-cache"),
    ("Origin", "https://shop.example.com"),
    ("DNT", "1"),
    ("Priority", "u=1, i"),
    (
        "Traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ),
    ("Tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    (
        "Baggage",
        "userId=alice,serverNode=DF%2028,isProduction=false",
    ),
    ("X-Forwarded-For", "203.0.113.7, 198.51.100.23"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "shop.example.com"),
    ("X-Real-Ip", "203.0.113.7"),
    ("Forwarded", "for=203.0.113.7;proto=https;by=198.51.100.23"),
    (
        "Authorization",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
    ),
    ("If-None-Match", "W/\"5e15153d-120f\""),
    ("If-Modified-Since", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ("X-Csrf-Token", "a1b2c3d4e5f60718293a4b5c6d7e8f90"),
    ("X-Client-Version", "web/4.18.2"),
    ("X-Tenant", "acme-europe-west"),
    ("X-Feature-Flags", "checkout-v2,new-search,dark-mode"),
    (
        "X-Amzn-Trace-Id",
        "Root=1-67891233-abcdef012345678912345678",
    ),
    ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("X-B3-SpanId", "e457b5a2e4d86bd1"),
    ("X-B3-Sampled", "1"),
    ("Upgrade-Insecure-Requests", "1"),
];

fn head(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut raw = b"GET /api/v1/users/12345/orders?limit=20&offset=40 HTTP/1.1\r\n".to_vec();
    for (name, value) in fields {
        raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw
}

/// Copies `raw` into the reused read buffer (as a socket read would) and
/// parses it, handing the span vector back for the next request, as the
/// proxy does on a keep-alive connection. Returns the body framing when
/// `framing` is set.
fn parse_once(
    raw: &[u8],
    buf: &mut BytesMut,
    spans: &mut Vec<HeaderSpan>,
    framing: bool,
) -> Option<BodyKind> {
    buf.clear();
    buf.extend_from_slice(raw);
    let head = parse_request(black_box(buf), MAX_BYTES, MAX_HEADERS, spans)
        .ok()
        .flatten()
        .expect("complete head");
    let body = framing.then(|| request_info(&head).expect("valid framing").body);
    *spans = head.into_spans();
    body
}

fn parse(c: &mut Criterion) {
    let typical = head(TYPICAL);
    let large = head(&[TYPICAL, EXTRA].concat());
    let mut g = c.benchmark_group("h1_parse_request");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, raw) in [
        ("typical_10_headers", &typical),
        ("large_40_headers", &large),
    ] {
        g.throughput(Throughput::Bytes(raw.len() as u64));
        for (what, framing) in [("parse", false), ("parse_and_framing", true)] {
            let mut buf = BytesMut::with_capacity(16 * 1024);
            let mut spans = Vec::with_capacity(MAX_HEADERS);
            g.bench_function(format!("{name}/{what}"), |b| {
                b.iter(|| parse_once(raw, &mut buf, &mut spans, framing))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
