//! Request and response heads: parsed with httparse into byte spans of the
//! received head (no per-header copies), plus the framing and connection
//! facts the proxy needs (body length, keep-alive, hop-by-hop tokens).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, ErrorKind, Side};

/// Upper bound of header fields httparse is given room for, whatever
/// `max_headers` says.
pub const HEADER_SLOTS: usize = 256;

/// A byte range inside a head's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn of(base: &[u8], part: &[u8]) -> Self {
        // Both slices come from the same buffer; offsets fit in u32 because
        // heads are limited to `max_header_bytes`.
        let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
        Self {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    /// The bytes of this span in `buf`.
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// One header field as spans of the head bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderSpan {
    /// The field name.
    pub name: Span,
    /// The field value (without surrounding whitespace).
    pub value: Span,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    bytes: Bytes,
    method: Span,
    target: Span,
    minor: u8,
    headers: Vec<HeaderSpan>,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    bytes: Bytes,
    code: u16,
    reason: Span,
    minor: u8,
    headers: Vec<HeaderSpan>,
}

macro_rules! head_common {
    () => {
        /// The raw head bytes as received, including the final empty line.
        pub fn raw(&self) -> &[u8] {
            &self.bytes
        }

        /// The minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
        pub fn minor_version(&self) -> u8 {
            self.minor
        }

        /// The header fields, in order, as `(name, value)`.
        pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
            self.headers
                .iter()
                .map(|h| (h.name.get(&self.bytes), h.value.get(&self.bytes)))
        }

        /// The value of the first header named `name` (case-insensitive).
        pub fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| v)
        }

        /// Gives back the header span vector for reuse by the next parse.
        pub fn into_spans(self) -> Vec<HeaderSpan> {
            self.headers
        }
    };
}

impl RequestHead {
    head_common!();

    /// The request method.
    pub fn method(&self) -> &[u8] {
        self.method.get(&self.bytes)
    }

    /// The request target as sent (origin-form, absolute-form, ...).
    pub fn target(&self) -> &[u8] {
        self.target.get(&self.bytes)
    }
}

impl ResponseHead {
    head_common!();

    /// The status code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The reason phrase (possibly empty).
    pub fn reason(&self) -> &[u8] {
        self.reason.get(&self.bytes)
    }
}

fn head_error(side: Side, err: httparse::Error) -> Error {
    match err {
        httparse::Error::TooManyHeaders => {
            Error::new(ErrorKind::HeadTooLarge, side, "too many header fields")
        }
        _ => Error::new(ErrorKind::InvalidHead, side, "malformed head"),
    }
}

fn too_large(side: Side) -> Error {
    Error::new(
        ErrorKind::HeadTooLarge,
        side,
        "head exceeds max_header_bytes",
    )
}

fn record_spans(base: &[u8], parsed: &[httparse::Header<'_>], out: &mut Vec<HeaderSpan>) {
    out.clear();
    out.extend(parsed.iter().map(|h| HeaderSpan {
        name: Span::of(base, h.name.as_bytes()),
        value: Span::of(base, h.value),
    }));
}

/// The head length once httparse saw a complete head within `max_bytes`;
/// `None` while more bytes may still complete it; too large otherwise.
fn complete_len(
    status: httparse::Status<usize>,
    buffered: usize,
    max_bytes: usize,
    side: Side,
) -> Result<Option<usize>, Error> {
    match status {
        httparse::Status::Complete(len) if len <= max_bytes => Ok(Some(len)),
        httparse::Status::Partial if buffered < max_bytes => Ok(None),
        _ => Err(too_large(side)),
    }
}

/// Parses a request head at the start of `buf`. On success the head is split
/// off `buf` (what follows stays for the body); `Ok(None)` means more bytes
/// are needed. `spans` is a reusable vector that the head takes over.
pub fn parse_request(
    buf: &mut BytesMut,
    max_bytes: usize,
    max_headers: usize,
    spans: &mut Vec<HeaderSpan>,
) -> Result<Option<RequestHead>, Error> {
    let side = Side::Downstream;
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_SLOTS];
    let slots = &mut slots[..max_headers.clamp(1, HEADER_SLOTS)];
    let mut req = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, slots)
        .map_err(|e| head_error(side, e))?;
    let Some(len) = complete_len(status, buf.len(), max_bytes, side)? else {
        return Ok(None);
    };
    let base: &[u8] = buf;
    let method = Span::of(base, req.method.unwrap_or_default().as_bytes());
    let target = Span::of(base, req.path.unwrap_or_default().as_bytes());
    let minor = req.version.unwrap_or(1);
    record_spans(base, req.headers, spans);
    let headers = std::mem::take(spans);
    let bytes = buf.split_to(len).freeze();
    Ok(Some(RequestHead {
        bytes,
        method,
        target,
        minor,
        headers,
    }))
}

/// Parses a response head at the start of `buf`, like [`parse_request`].
pub fn parse_response(
    buf: &mut BytesMut,
    max_bytes: usize,
    max_headers: usize,
    spans: &mut Vec<HeaderSpan>,
) -> Result<Option<ResponseHead>, Error> {
    let side = Side::Upstream;
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_SLOTS];
    let slots = &mut slots[..max_headers.clamp(1, HEADER_SLOTS)];
    let mut resp = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, slots)
        .map_err(|e| head_error(side, e))?;
    let Some(len) = complete_len(status, buf.len(), max_bytes, side)? else {
        return Ok(None);
    };
    let base: &[u8] = buf;
    let code = resp.code.unwrap_or(0);
    if !(100..=999).contains(&code) {
        return Err(Error::new(ErrorKind::InvalidHead, side, "bad status code"));
    }
    let reason = Span::of(base, resp.reason.unwrap_or_default().as_bytes());
    let minor = resp.version.unwrap_or(1);
    record_spans(base, resp.headers, spans);
    let headers = std::mem::take(spans);
    let bytes = buf.split_to(len).freeze();
    Ok(Some(ResponseHead {
        bytes,
        code,
        reason,
        minor,
        headers,
    }))
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    Empty,
    /// Exactly this many bytes (possibly zero: the sender said so explicitly).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the sender closes the connection (responses only).
    UntilClose,
}

/// Framing and connection facts of a head, found in one pass over its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageInfo {
    /// How the body is delimited.
    pub body: BodyKind,
    /// Whether the sender wants the connection kept open after this message.
    pub keep_alive: bool,
    /// Whether `Connection` lists tokens other than `close`/`keep-alive`, so
    /// that further fields must be checked against it.
    pub connection_lists_fields: bool,
    /// The `Host` field (requests).
    pub host: Option<Span>,
    /// Whether the request carries `Expect: 100-continue`.
    pub expect_continue: bool,
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// Splits a comma-separated field value into trimmed, non-empty elements.
pub fn list_items(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

struct Scan {
    length: Option<u64>,
    length_invalid: bool,
    chunked_count: u32,
    other_coding: bool,
    te_seen: bool,
    close: bool,
    keep_alive: bool,
    lists_fields: bool,
    host: Option<Span>,
    host_count: u32,
    expect_continue: bool,
}

fn scan(bytes: &[u8], headers: &[HeaderSpan]) -> Scan {
    let mut s = Scan {
        length: None,
        length_invalid: false,
        chunked_count: 0,
        other_coding: false,
        te_seen: false,
        close: false,
        keep_alive: false,
        lists_fields: false,
        host: None,
        host_count: 0,
        expect_continue: false,
    };
    for h in headers {
        let name = h.name.get(bytes);
        let value = h.value.get(bytes);
        // Cheap first-byte dispatch keeps the common case (other fields) fast.
        match name.first().map(u8::to_ascii_lowercase) {
            Some(b'c') if name.eq_ignore_ascii_case(b"content-length") => {
                let mut any = false;
                for item in list_items(value) {
                    any = true;
                    match parse_length(item) {
                        Some(n) if s.length.is_none_or(|l| l == n) => s.length = Some(n),
                        _ => s.length_invalid = true,
                    }
                }
                if !any {
                    s.length_invalid = true;
                }
            }
            Some(b'c') if name.eq_ignore_ascii_case(b"connection") => {
                for token in list_items(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        s.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        s.keep_alive = true;
                    } else {
                        s.lists_fields = true;
                    }
                }
            }
            Some(b't') if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                s.te_seen = true;
                for coding in list_items(value) {
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        s.chunked_count += 1;
                    } else {
                        s.other_coding = true;
                    }
                }
            }
            Some(b'h') if name.eq_ignore_ascii_case(b"host") => {
                s.host_count += 1;
                s.host = Some(h.value);
            }
            Some(b'e') if name.eq_ignore_ascii_case(b"expect") => {
                s.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
    }
    s
}

fn keep_alive(minor: u8, s: &Scan) -> bool {
    !s.close && (minor >= 1 || s.keep_alive)
}

fn framing(side: Side, detail: &'static str) -> Error {
    Error::new(ErrorKind::InvalidFraming, side, detail)
}

/// Validates a request head's framing and returns its facts.
///
/// Rejected (400): Content-Length together with Transfer-Encoding; invalid or
/// differing Content-Length values; any Transfer-Encoding other than a single
/// `chunked` (also on HTTP/1.0); no or several Host fields on HTTP/1.1.
pub fn request_info(head: &RequestHead) -> Result<MessageInfo, Error> {
    let side = Side::Downstream;
    let s = scan(&head.bytes, &head.headers);
    if s.te_seen && (s.length.is_some() || s.length_invalid) {
        return Err(framing(side, "Content-Length with Transfer-Encoding"));
    }
    if s.length_invalid {
        return Err(framing(side, "invalid Content-Length"));
    }
    let body = if s.te_seen {
        if s.chunked_count != 1 || s.other_coding || head.minor == 0 {
            return Err(framing(side, "unsupported Transfer-Encoding"));
        }
        BodyKind::Chunked
    } else {
        match s.length {
            None => BodyKind::Empty,
            Some(n) => BodyKind::Length(n),
        }
    };
    if s.host_count > 1 || (head.minor >= 1 && s.host_count == 0) {
        return Err(Error::new(
            ErrorKind::MissingHost,
            side,
            "missing or repeated Host",
        ));
    }
    Ok(MessageInfo {
        body,
        keep_alive: keep_alive(head.minor, &s),
        connection_lists_fields: s.lists_fields,
        host: s.host,
        expect_continue: s.expect_continue,
    })
}

/// Finds a response's framing. `head_request` is whether the request was
/// HEAD. A Transfer-Encoding other than a single `chunked` is refused (502);
/// with `chunked`, any Content-Length is ignored.
pub fn response_info(head: &ResponseHead, head_request: bool) -> Result<MessageInfo, Error> {
    let side = Side::Upstream;
    let s = scan(&head.bytes, &head.headers);
    let no_body = head_request || head.code < 200 || head.code == 204 || head.code == 304;
    let body = if no_body {
        BodyKind::Empty
    } else if s.te_seen {
        if s.chunked_count != 1 || s.other_coding {
            return Err(framing(side, "unsupported Transfer-Encoding"));
        }
        BodyKind::Chunked
    } else if s.length_invalid {
        return Err(framing(side, "invalid Content-Length"));
    } else {
        match s.length {
            Some(n) => BodyKind::Length(n),
            None => BodyKind::UntilClose,
        }
    };
    Ok(MessageInfo {
        body,
        keep_alive: keep_alive(head.minor, &s) && body != BodyKind::UntilClose,
        connection_lists_fields: s.lists_fields,
        host: None,
        expect_continue: false,
    })
}

/// Whether `name` is a hop-by-hop field lb never forwards (framing fields are
/// re-generated by lb). `Proxy-Authorization` is not one of them.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 8] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether `name` is listed as a token in any `Connection` field of `headers`.
pub fn listed_in_connection<'a>(
    mut headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    name: &[u8],
) -> bool {
    headers.any(|(n, v)| {
        n.eq_ignore_ascii_case(b"connection") && list_items(v).any(|t| t.eq_ignore_ascii_case(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &[u8]) -> Result<Option<RequestHead>, Error> {
        let mut buf = BytesMut::from(raw);
        parse_request(&mut buf, 1024, 16, &mut Vec::new())
    }

    fn info(raw: &[u8]) -> Result<MessageInfo, Error> {
        request_info(&req(raw).unwrap().unwrap())
    }

    #[test]
    fn parses_request_head_and_leaves_body() {
        let mut buf = BytesMut::from(
            &b"POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET"[..],
        );
        let head = parse_request(&mut buf, 1024, 16, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(head.method(), b"POST");
        assert_eq!(head.target(), b"/a?b");
        assert_eq!(head.minor_version(), 1);
        assert_eq!(head.header("HOST"), Some(&b"x"[..]));
        let fields: Vec<_> = head.headers().collect();
        assert_eq!(
            fields,
            vec![
                (&b"Host"[..], &b"x"[..]),
                (&b"Content-Length"[..], &b"3"[..])
            ]
        );
        assert_eq!(&buf[..], b"abcGET");
        let info = request_info(&head).unwrap();
        assert_eq!(info.body, BodyKind::Length(3));
        assert!(info.keep_alive);
    }

    #[test]
    fn partial_and_limits() {
        assert!(req(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2000));
        assert_eq!(req(&big).unwrap_err().kind(), ErrorKind::HeadTooLarge);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..20 {
            many.extend(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(req(&many).unwrap_err().status(), 431);
        assert_eq!(
            req(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            req(b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn smuggling_shapes_are_rejected() {
        let bad: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ];
        for raw in bad {
            let err = info(raw).unwrap_err();
            assert_eq!(err.status(), 400, "{}", String::from_utf8_lossy(raw));
        }
        let same =
            info(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(same.unwrap().body, BodyKind::Length(3));
        let chunked = info(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(chunked.unwrap().body, BodyKind::Chunked);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!info(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            info(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        let i = info(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Foo\r\n\r\n").unwrap();
        assert!(!i.keep_alive);
        assert!(i.connection_lists_fields);
    }

    fn resp(raw: &[u8], head_req: bool) -> Result<MessageInfo, Error> {
        let mut buf = BytesMut::from(raw);
        let head = parse_response(&mut buf, 1024, 16, &mut Vec::new())?.unwrap();
        response_info(&head, head_req)
    }

    #[test]
    fn response_framing() {
        let r = |raw: &[u8]| resp(raw, false).map(|i| (i.body, i.keep_alive));
        assert_eq!(
            r(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").unwrap(),
            (BodyKind::Length(5), true)
        );
        assert_eq!(
            r(b"HTTP/1.1 200 OK\r\n\r\n").unwrap(),
            (BodyKind::UntilClose, false)
        );
        assert_eq!(
            r(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n")
                .unwrap(),
            (BodyKind::Chunked, true)
        );
        assert_eq!(
            r(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
                .unwrap()
                .0,
            BodyKind::Empty
        );
        assert_eq!(
            r(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n")
                .unwrap()
                .0,
            BodyKind::Empty
        );
        assert_eq!(
            r(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap().0,
            BodyKind::Empty
        );
        assert!(
            !r(b"HTTP/1.0 200 OK
Content-Length: 1

")
            .unwrap()
            .1
        );
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
                .unwrap()
                .body,
            BodyKind::Empty
        );
        assert_eq!(
            r(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
                .unwrap_err()
                .status(),
            502
        );
        assert_eq!(
            r(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")
                .unwrap_err()
                .status(),
            502
        );
        assert_eq!(r(b"HTTP/1.1 2000 OK\r\n\r\n").unwrap_err().status(), 502);
    }

    #[test]
    fn hop_by_hop_fields() {
        assert!(is_hop_by_hop(b"Keep-Alive"));
        assert!(is_hop_by_hop(b"TE"));
        assert!(!is_hop_by_hop(b"Proxy-Authorization"));
        let h = [(&b"Connection"[..], &b"close, X-Secret"[..])];
        assert!(listed_in_connection(h.iter().copied(), b"x-secret"));
        assert!(!listed_in_connection(h.iter().copied(), b"x-other"));
    }
}
