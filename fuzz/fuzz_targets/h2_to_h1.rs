//! HTTP/2 to HTTP/1.1 translation: from any method, `:authority`, `:path`
//! and field list that the h2 crate and lb's request checks let through,
//! the HTTP/1.1 head lb sends upstream parses whole with lb's own strict
//! parser, keeps every field on a line of its own, carries the authority as
//! its one Host, and announces the body framing lb chose.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use http::Method;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use lb_http::fuzz_api::{Framing, encode_h1_request};
use lb_http::h1::BodyKind;
use lb_http::h1::head::{parse_request, request_info, valid_authority};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    method: Vec<u8>,
    authority: Vec<u8>,
    path: Vec<u8>,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    framing: Option<Option<u64>>,
    forwarded_host: Option<Vec<u8>>,
}

fn clean(b: &[u8]) -> bool {
    !b.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0)
}

fuzz_target!(|input: Input| {
    let Ok(method) = Method::from_bytes(&input.method) else {
        return;
    };
    // h2 hands lb a parsed URI; lb then requires a valid authority.
    let Ok(authority) = Authority::try_from(&input.authority[..]) else {
        return;
    };
    if !valid_authority(authority.as_str().as_bytes()) {
        return;
    }
    let Ok(path) = PathAndQuery::try_from(&input.path[..]) else {
        return;
    };
    // lb's HTTP/2 server answers `:path *` with another method than OPTIONS
    // with 400 before any translation.
    if path.as_str() == "*" && method != Method::OPTIONS {
        return;
    }
    // It also refuses a `:path` with bytes outside visible ASCII (400).
    if !path.as_str().bytes().all(|b| b.is_ascii_graphic()) {
        return;
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &input.fields {
        // h2 refuses pseudo-headers outside the pseudo-header block.
        if name.first() == Some(&b':') {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    // lb's HTTP/2 server refuses more fields than `max_headers` (431), as
    // its HTTP/1.1 parser does.
    if headers.len() > lb_http::settings::ProxySettings::default().max_headers {
        return;
    }
    let framing = match input.framing {
        None => Framing::None,
        Some(None) => Framing::Chunked,
        // lb's HTTP/2 server takes at most 18 digits, as its HTTP/1.1 parser.
        Some(Some(n)) if n < 1_000_000_000_000_000_000 => Framing::Length(n),
        Some(Some(_)) => return,
    };
    // The forwarded host is the client's authority when a rewrite changed it.
    let forwarded_host = input
        .forwarded_host
        .as_deref()
        .filter(|h| valid_authority(h));
    let mut out = BytesMut::new();
    encode_h1_request(
        &method,
        &headers,
        authority.as_str(),
        path.as_str(),
        framing,
        "2001:db8::7",
        forwarded_host,
        &mut out,
    );
    let text = &out[..];
    assert!(text.ends_with(b"\r\n\r\n"));
    for line in text[..text.len() - 4].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(
            clean(line),
            "CR, LF or NUL inside a line: {:?}",
            String::from_utf8_lossy(text)
        );
    }
    let mut again = out.clone();
    let head = match parse_request(&mut again, 1 << 20, 256, &mut Vec::new()) {
        Ok(Some(head)) => head,
        other => panic!(
            "head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(text)
        ),
    };
    assert!(again.is_empty());
    assert_eq!(head.method(), method.as_str().as_bytes());
    let hosts: Vec<&[u8]> = head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"host"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(hosts, [authority.as_str().as_bytes()]);
    let info = match request_info(&head) {
        Ok(info) => info,
        Err(e) => panic!("head refused ({e}): {:?}", String::from_utf8_lossy(text)),
    };
    let expected = match framing {
        Framing::None => BodyKind::Empty,
        Framing::Length(n) => BodyKind::Length(n),
        Framing::Chunked => BodyKind::Chunked,
    };
    assert_eq!(info.body, expected, "{:?}", String::from_utf8_lossy(text));
});
