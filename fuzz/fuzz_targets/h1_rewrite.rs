//! Request rewriting: a head the parser accepts, forwarded the way the
//! proxy does it (target split, hop-by-hop fields dropped, X-Forwarded-*
//! added, framing re-generated), gives an upstream head that lb's own
//! strict parser accepts whole, with every field on a line of its own, no
//! hop-by-hop field but the framing lb chose, and the same body framing.
#![no_main]

use bytes::BytesMut;
use lb_http::fuzz_api::split_target;
use lb_http::h1::BodyKind;
use lb_http::h1::head::{is_hop_by_hop, parse_request, request_info};
use lb_http::h1::rewrite::{Forwarded, encode_request};
use libfuzzer_sys::fuzz_target;

fn clean(b: &[u8]) -> bool {
    !b.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0)
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let Ok(Some(head)) = parse_request(&mut buf, 16 * 1024, 100, &mut Vec::new()) else {
        return;
    };
    let Ok(info) = request_info(&head) else {
        return;
    };
    let Some((authority, target)) = split_target(head.target()) else {
        return;
    };
    let host = authority.or(info.host.map(|s| s.get(head.raw())));
    let fwd = Forwarded {
        target,
        client_ip: b"192.0.2.7",
        host,
        proto: b"http",
        // As the proxy does: an absolute-form target's authority is the Host.
        host_override: authority,
    };
    let mut out = BytesMut::new();
    encode_request(&head, &info, &fwd, &mut out);
    let text = &out[..];
    assert!(text.ends_with(b"\r\n\r\n"));
    // Every line ends with CRLF and holds no other CR or LF.
    let lines: Vec<&[u8]> = text[..text.len() - 4].split(|&b| b == b'\n').collect();
    for line in &lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(
            clean(line),
            "CR, LF or NUL inside a line: {:?}",
            String::from_utf8_lossy(text)
        );
    }
    let mut again = out.clone();
    let up = match parse_request(&mut again, 64 * 1024, 256, &mut Vec::new()) {
        Ok(Some(up)) => up,
        other => panic!(
            "upstream head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(text)
        ),
    };
    assert!(again.is_empty(), "bytes after the upstream head");
    assert_eq!(up.method(), head.method());
    assert_eq!(up.headers().count() + 1, lines.len());
    let up_info = match request_info(&up) {
        Ok(i) => i,
        Err(e) => panic!(
            "upstream head refused ({e}): {:?}",
            String::from_utf8_lossy(text)
        ),
    };
    let expected = match info.body {
        BodyKind::Length(0) if !matches!(up_info.body, BodyKind::Length(_)) => BodyKind::Empty,
        b => b,
    };
    assert_eq!(
        up_info.body,
        expected,
        "{:?}",
        String::from_utf8_lossy(text)
    );
    for (name, _) in up.headers() {
        let framing = name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding");
        assert!(
            framing || !is_hop_by_hop(name),
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
    let xff = up
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-forwarded-for"));
    let last = xff.last().expect("X-Forwarded-For").1;
    assert!(last.ends_with(b"192.0.2.7"));
});
