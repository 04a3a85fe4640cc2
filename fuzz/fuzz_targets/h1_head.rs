//! The HTTP/1.1 request and response head parsers: no panic on any input,
//! a complete head never looks complete earlier, and what they hand out
//! (method, target, fields) never holds a CR, LF or NUL.
#![no_main]

use bytes::BytesMut;
use lb_http::h1::head::{parse_request, parse_response, request_info, response_info};
use libfuzzer_sys::fuzz_target;

const MAX_BYTES: usize = 8192;
const MAX_HEADERS: usize = 64;

fn clean(b: &[u8]) -> bool {
    !b.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0)
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    if let Ok(Some(head)) = parse_request(&mut buf, MAX_BYTES, MAX_HEADERS, &mut Vec::new()) {
        let len = head.raw().len();
        assert!(len <= MAX_BYTES);
        assert!(head.raw().ends_with(b"\r\n\r\n"));
        assert_eq!(&data[len..], &buf[..], "the rest stays for the body");
        assert!(!head.method().is_empty() && clean(head.method()));
        assert!(!head.target().is_empty() && clean(head.target()));
        for (name, value) in head.headers() {
            assert!(!name.is_empty() && clean(name) && clean(value));
        }
        // A strict prefix of a complete head is never a complete head.
        for cut in [len - 1, len / 2] {
            let mut part = BytesMut::from(&data[..cut]);
            let r = parse_request(&mut part, MAX_BYTES, MAX_HEADERS, &mut Vec::new());
            assert!(
                !matches!(r, Ok(Some(_))),
                "complete after {cut} of {len} bytes"
            );
        }
        if let Ok(info) = request_info(&head) {
            if let Some(host) = info.host {
                assert!(clean(host.get(head.raw())));
            }
        }
    }
    let mut buf = BytesMut::from(data);
    if let Ok(Some(head)) = parse_response(&mut buf, MAX_BYTES, MAX_HEADERS, &mut Vec::new()) {
        assert!((100..=999).contains(&head.code()));
        assert!(clean(head.reason()));
        for (name, value) in head.headers() {
            assert!(clean(name) && clean(value));
        }
        let _ = response_info(&head, false);
        let _ = response_info(&head, true);
    }
});
