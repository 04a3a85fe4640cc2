//! Request and response heads: parsed with httparse into byte spans of the
//! received head (no per-header copies), plus the framing and connection
//! facts the proxy needs (body length, keep-alive, hop-by-hop tokens).
//!
//! Request heads are held to RFC 9112 strictly, because lb sits in front of
//! servers that may read an ambiguous message differently (request
//! smuggling). httparse already refuses: invalid method tokens, request
//! targets with control bytes, SP or DEL, request lines with extra spaces,
//! versions other than HTTP/1.0 and HTTP/1.1, bare CR, whitespace between a
//! field name and its colon, obs-fold (a line starting with SP or HTAB),
//! invalid bytes in field names, and NUL, DEL or control bytes other than
//! HTAB in field values. On top of that lb refuses bare LF line endings, a
//! request target with non-ASCII bytes or a `#`, and everything
//! [`request_info`] lists.

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

/// The request line at the start of `buf` (after the empty lines a client
/// may send first, which httparse skips) and whether it is complete.
fn request_line(buf: &[u8]) -> (&[u8], bool) {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    match line.iter().position(|&b| b == b'\n') {
        Some(end) => (
            line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]),
            true,
        ),
        None => (line, false),
    }
}

/// The error for a request line whose version httparse refused: 505 when
/// the version is well-formed (`HTTP/` DIGIT `.` DIGIT, or a prefix of that
/// while the line is incomplete), 400 otherwise.
fn version_error(buf: &[u8]) -> Error {
    let (line, complete) = request_line(buf);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = parts.nth(2).unwrap_or_default();
    let shape = |i: usize, b: u8| match i {
        0..=4 => b == b"HTTP/"[i],
        5 | 7 => b.is_ascii_digit(),
        6 => b == b'.',
        _ => false,
    };
    let matches = version.iter().enumerate().all(|(i, &b)| shape(i, b));
    let well_formed = matches && (version.len() == 8 || (!complete && version.len() >= 6));
    if well_formed {
        Error::new(
            ErrorKind::VersionNotSupported,
            Side::Downstream,
            "HTTP version not supported",
        )
    } else {
        Error::new(ErrorKind::InvalidHead, Side::Downstream, "malformed head")
    }
}

/// Whether every LF in `head` is preceded by CR and every CR followed by LF.
/// Branch-free so that it vectorizes; heads are short.
fn crlf_only(head: &[u8]) -> bool {
    let bad = head
        .iter()
        .zip(head.iter().skip(1))
        .fold(0u8, |acc, (&a, &b)| {
            acc | u8::from((a == b'\r') != (b == b'\n'))
        });
    bad == 0 && head.first() != Some(&b'\n') && head.last() != Some(&b'\r')
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
///
/// Errors: a head over `max_bytes` or with more than `max_headers` fields is
/// [`ErrorKind::HeadTooLarge`] (431), unless the request line alone does not
/// fit, which is [`ErrorKind::UriTooLong`] (414); a well-formed version other
/// than 1.0/1.1 is [`ErrorKind::VersionNotSupported`] (505); anything
/// malformed (see the module documentation) is [`ErrorKind::InvalidHead`].
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
        .map_err(|e| match e {
            httparse::Error::Version => version_error(buf),
            e => head_error(side, e),
        })?;
    let len = complete_len(status, buf.len(), max_bytes, side).map_err(|e| {
        if request_line(buf).1 {
            e
        } else {
            Error::new(
                ErrorKind::UriTooLong,
                side,
                "request line exceeds max_header_bytes",
            )
        }
    })?;
    let Some(len) = len else {
        return Ok(None);
    };
    let base: &[u8] = buf;
    if !crlf_only(&base[..len]) {
        return Err(Error::new(
            ErrorKind::InvalidHead,
            side,
            "line not ended by CRLF",
        ));
    }
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

/// Strips optional whitespace (SP, HTAB) from both ends.
fn trim(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &v[start..end]
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
    te_fields: u32,
    te_exact: bool,
    underscore_framing: bool,
    expect_other: bool,
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
        te_fields: 0,
        te_exact: false,
        underscore_framing: false,
        expect_other: false,
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
                s.te_fields += 1;
                s.te_exact = trim(value).eq_ignore_ascii_case(b"chunked");
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
                for item in list_items(value) {
                    if item.eq_ignore_ascii_case(b"100-continue") {
                        s.expect_continue = true;
                    } else {
                        s.expect_other = true;
                    }
                }
            }
            Some(b'c' | b't')
                if name.eq_ignore_ascii_case(b"content_length")
                    || name.eq_ignore_ascii_case(b"transfer_encoding") =>
            {
                s.underscore_framing = true;
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

/// Validates a request head and returns its facts.
///
/// Rejected with 400: Content-Length together with Transfer-Encoding;
/// Content-Length values that are not plain decimal digits (no sign, at most
/// 18 digits) or that differ (identical repeats, also as a list `5, 5`, are
/// accepted); Transfer-Encoding other than exactly one field whose value is
/// `chunked` (any case, surrounding SP/HTAB allowed), so `gzip, chunked`,
/// `chunked, chunked` and a second field are refused, and any
/// Transfer-Encoding on HTTP/1.0; `Content_Length` or `Transfer_Encoding`
/// fields (a server mapping `_` to `-` would see framing lb did not); no Host
/// on HTTP/1.1, several Host fields, or a Host that is not `host[:port]`
/// (see [`valid_authority`]); a request target that is not origin-form,
/// absolute-form (`http://`, `https://`), `*` on OPTIONS or authority-form on
/// CONNECT, or that has non-ASCII bytes or a `#`. Rejected with 417: an
/// `Expect` expectation other than `100-continue`.
pub fn request_info(head: &RequestHead) -> Result<MessageInfo, Error> {
    let side = Side::Downstream;
    check_target(head.method(), head.target())?;
    let s = scan(&head.bytes, &head.headers);
    if s.te_seen && (s.length.is_some() || s.length_invalid) {
        return Err(framing(side, "Content-Length with Transfer-Encoding"));
    }
    if s.length_invalid {
        return Err(framing(side, "invalid Content-Length"));
    }
    if s.underscore_framing {
        return Err(framing(side, "framing field name with underscore"));
    }
    let body = if s.te_seen {
        if s.te_fields != 1 || !s.te_exact || head.minor == 0 {
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
    if let Some(host) = s.host
        && !host.get(&head.bytes).is_empty()
        && !valid_authority(host.get(&head.bytes))
    {
        return Err(Error::new(ErrorKind::InvalidHead, side, "invalid Host"));
    }
    if s.expect_other {
        return Err(Error::new(
            ErrorKind::ExpectationFailed,
            side,
            "unsupported expectation",
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

fn check_target(method: &[u8], target: &[u8]) -> Result<(), Error> {
    let bad = |detail| Err(Error::new(ErrorKind::InvalidHead, Side::Downstream, detail));
    if target.iter().any(|&b| b >= 0x80 || b == b'#') {
        return bad("invalid byte in request target");
    }
    let after = |scheme: &[u8]| {
        (target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme))
            .then(|| &target[scheme.len()..])
    };
    let form_ok = match target.first() {
        Some(b'/') => true,
        Some(b'*') => target.len() == 1 && method == b"OPTIONS",
        _ if method == b"CONNECT" => valid_authority(target),
        _ => match after(b"http://").or_else(|| after(b"https://")) {
            Some(rest) => {
                let end = rest
                    .iter()
                    .position(|&b| b == b'/' || b == b'?')
                    .unwrap_or(rest.len());
                valid_authority(&rest[..end])
            }
            None => false,
        },
    };
    if !form_ok {
        return bad("invalid request target form");
    }
    Ok(())
}

/// Whether `v` is a valid `uri-host [ ":" port ]` (RFC 3986 section 3.2,
/// without userinfo): a bracketed IP literal (hex digits, `:` and `.`) or a
/// name of unreserved characters, sub-delimiters and `%XX` escapes, then
/// optionally `:` and at most 5 decimal digits. Empty is not valid.
pub fn valid_authority(v: &[u8]) -> bool {
    let (host_ok, port) = if let Some(rest) = v.strip_prefix(b"[") {
        match rest.iter().position(|&b| b == b']') {
            Some(close) => (valid_ip_literal(&rest[..close]), &rest[close + 1..]),
            None => return false,
        }
    } else {
        let end = v.iter().position(|&b| b == b':').unwrap_or(v.len());
        (valid_reg_name(&v[..end]), &v[end..])
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    host_ok && port_ok
}

fn valid_ip_literal(v: &[u8]) -> bool {
    !v.is_empty()
        && v.iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
}

fn valid_reg_name(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        let b = v[i];
        if b == b'%' {
            match v.get(i + 1..i + 3) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => i += 3,
                _ => return false,
            }
        } else if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) {
            i += 1;
        } else {
            return false;
        }
    }
    !v.is_empty()
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
    const HOP: [&[u8]; 9] = [
        b"connection",
        b"http2-settings",
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

    /// The status lb would answer for `raw` (0: accepted).
    fn verdict(raw: &[u8]) -> u16 {
        let mut buf = BytesMut::from(raw);
        match parse_request(&mut buf, 1024, 16, &mut Vec::new()) {
            Err(e) => e.status(),
            Ok(None) => 1,
            Ok(Some(head)) => request_info(&head).map_or_else(|e| e.status(), |_| 0),
        }
    }

    #[test]
    fn strict_request_heads() {
        let cases: &[(&str, &[u8], u16)] = &[
            ("ok", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0),
            ("leading empty line", b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 0),
            ("obs-text value", b"GET / HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9\r\n\r\n", 0),
            ("tab in value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\tb\r\n\r\n", 0),
            ("HTTP/1.0 no host", b"GET / HTTP/1.0\r\n\r\n", 0),
            ("bare LF everywhere", b"GET / HTTP/1.1\nHost: x\n\n", 400),
            ("bare LF request line", b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
            ("bare LF header", b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400),
            ("bare LF end", b"GET / HTTP/1.1\r\nHost: x\r\n\n", 400),
            ("bare CR header", b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),
            ("bare CR value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", 400),
            ("obs-fold SP", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),
            ("obs-fold HTAB", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n\tb\r\n\r\n", 400),
            ("space before colon", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n", 400),
            ("tab before colon", b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 400),
            ("empty name", b"GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400),
            ("NUL in name", b"GET / HTTP/1.1\r\nHost: x\r\nX\0Y: v\r\n\r\n", 400),
            ("slash in name", b"GET / HTTP/1.1\r\nHost: x\r\nX/Y: v\r\n\r\n", 400),
            ("non-ASCII name", b"GET / HTTP/1.1\r\nHost: x\r\nX\xc3\xa9: v\r\n\r\n", 400),
            ("NUL in value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n", 400),
            ("DEL in value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n", 400),
            ("VT in value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x0bb\r\n\r\n", 400),
            ("ESC in value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x1bb\r\n\r\n", 400),
            ("bad method", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("control in method", b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("empty method", b" / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("DEL in target", b"GET /a\x7f HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("NUL in target", b"GET /a\0 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("tab in target", b"GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("non-ASCII target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("fragment", b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("relative target", b"GET a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("star on GET", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("star on OPTIONS", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 0),
            ("absolute", b"GET http://a.b:80/x HTTP/1.1\r\nHost: x\r\n\r\n", 0),
            ("absolute userinfo", b"GET http://u@a.b/x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("absolute bad host", b"GET http://a\"b/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("other scheme", b"GET ftp://a/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("space in target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("two spaces after method", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("two spaces before version", b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("trailing space", b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400),
            ("tab separator", b"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
            ("HTTP/0.9", b"GET / HTTP/0.9\r\n\r\n", 505),
            ("h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
            ("HTTP/3", b"GET / HTTP/3\r\nHost: x\r\n\r\n", 400),
            ("HTTP/1.10", b"GET / HTTP/1.10\r\nHost: x\r\n\r\n", 400),
            ("lower-case version", b"GET / http/1.1\r\nHost: x\r\n\r\n", 400),
            ("no version", b"GET /\r\n\r\n", 400),
            ("CL plus sign", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n", 400),
            ("CL minus sign", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
            ("CL hex", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x1\r\n\r\n", 400),
            ("CL decimal point", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1.0\r\n\r\n", 400),
            ("CL inner space", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\n", 400),
            ("CL overflow", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n", 400),
            ("CL 19 digits", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000000\r\n\r\n", 400),
            ("CL list differs", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n", 400),
            ("CL list same", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", 0),
            ("CL empty element", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ,\r\n\r\n", 400),
            ("CL fields differ", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            ("CL leading zeros", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\n", 0),
            ("CL and TE", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
            ("TE gzip, chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
            ("TE chunked, gzip", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            ("TE identity", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", 400),
            ("TE xchunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
            ("TE chunkedx", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunkedx\r\n\r\n", 400),
            ("TE quoted", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400),
            ("TE empty element", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked,\r\n\r\n", 400),
            ("TE VT", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\x0b\r\n\r\n", 400),
            ("TE FF", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0cchunked\r\n\r\n", 400),
            ("TE NBSP", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\xa0\r\n\r\n", 400),
            ("TE empty", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n", 400),
            ("TE twice", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("TE and empty TE", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n", 400),
            ("TE on 1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("TE with OWS", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \tCHUNKED \r\n\r\n", 0),
            ("Transfer_Encoding", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n\r\n", 400),
            ("Content_Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent_Length: 5\r\n\r\n", 400),
            ("host twice", b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n", 400),
            ("host missing", b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
            ("host empty", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 0),
            ("host with port", b"GET / HTTP/1.1\r\nHost: a.b:8080\r\n\r\n", 0),
            ("host IPv6", b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 0),
            ("host pct", b"GET / HTTP/1.1\r\nHost: a%2Db\r\n\r\n", 0),
            ("host space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("host slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            ("host at", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
            ("host bad port", b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
            ("host two colons", b"GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", 400),
            ("host bad pct", b"GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", 400),
            ("host unclosed bracket", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
            ("host non-ASCII", b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", 400),
            ("host comma", b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", 400),
            ("expect continue", b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", 0),
            ("expect other", b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417),
            ("expect list", b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue, x\r\n\r\n", 417),
            ("CONNECT authority", b"CONNECT a.b:443 HTTP/1.1\r\nHost: a.b:443\r\n\r\n", 0),
            ("CONNECT junk", b"CONNECT a/b HTTP/1.1\r\nHost: a.b:443\r\n\r\n", 400),
        ];
        for (name, raw, want) in cases {
            assert_eq!(verdict(raw), *want, "{name}");
        }
    }

    #[test]
    fn long_request_line_is_414_and_long_head_431() {
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', 1100));
        assert_eq!(verdict(&line), 414);
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 1100));
        assert_eq!(verdict(&head), 431);
        // An incomplete but promising line waits for more bytes.
        assert_eq!(verdict(b"GET / HTTP/1.1\r\nHost: x\r\n"), 1);
        assert_eq!(verdict(b"GET / HTTP/2"), 505);
        assert_eq!(verdict(b"GET / HTTP/x"), 400);
    }

    #[test]
    fn crlf_rule() {
        assert!(crlf_only(b"a\r\nb\r\n\r\n"));
        assert!(!crlf_only(b"a\nb\r\n"));
        assert!(!crlf_only(b"a\rb\r\n"));
        assert!(!crlf_only(b"\nab\r\n"));
        assert!(!crlf_only(b"ab\r"));
    }

    #[test]
    fn authorities() {
        for ok in [
            &b"a"[..],
            b"a.b-c_d~e",
            b"a:0",
            b"a:65535",
            b"[::1]",
            b"[::ffff:1.2.3.4]:8",
        ] {
            assert!(valid_authority(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b""[..],
            b":80",
            b"a:123456",
            b"[]",
            b"[x]",
            b"[::1]x",
            b"a b",
            b"a\\b",
        ] {
            assert!(!valid_authority(bad), "{}", String::from_utf8_lossy(bad));
        }
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
