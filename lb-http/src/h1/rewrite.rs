//! Building the heads lb sends: the upstream request (hop-by-hop fields
//! removed, `X-Forwarded-*` added, body re-framed), the downstream response,
//! and lb's own small error responses. Each head is built into one buffer so
//! it goes out with a single write.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;

use super::head::{
    BodyKind, MessageInfo, RequestHead, ResponseHead, is_hop_by_hop, listed_in_connection,
};
use crate::error::reason;

/// Appends the decimal form of `n`.
pub fn put_u64(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Field names and values, and request targets, lb refused to write as they
/// were (defence in depth: the control plane refuses such values first).
static UNSAFE_HEAD_VALUES: AtomicU64 = AtomicU64::new(0);

/// How many header fields lb left out, and request targets or `Location`s
/// it had to escape, because they held bytes that would have broken the
/// head (`lb_http_unsafe_head_values_total`).
pub fn unsafe_head_values() -> u64 {
    UNSAFE_HEAD_VALUES.load(Ordering::Relaxed)
}

fn count_unsafe() {
    UNSAFE_HEAD_VALUES.fetch_add(1, Ordering::Relaxed);
}

/// Whether `bytes` can be written as a field value without ending the field
/// or the head: no CR, LF or NUL.
pub fn head_safe(bytes: &[u8]) -> bool {
    // A fold without an early exit, which the compiler vectorises: every
    // field of every forwarded head passes here.
    bytes
        .iter()
        .fold(true, |ok, &b| ok & (b != b'\r') & (b != b'\n') & (b != 0))
}

/// Appends one header field, unless its name is empty or its name or value
/// holds CR, LF or NUL: such a field is left out (and counted), so no value
/// can add a field or end the head.
pub(crate) fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    if name.is_empty() || !head_safe(name) || !head_safe(value) {
        count_unsafe();
        return;
    }
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn put_length(out: &mut BytesMut, n: u64) {
    out.extend_from_slice(b"Content-Length: ");
    put_u64(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `s` with every control byte, space and DEL percent-encoded, so that it
/// stays one token of a request line or one field value (counted when
/// anything had to be encoded). Borrowed when nothing needs it.
pub fn escape_ctl(s: &[u8]) -> Cow<'_, [u8]> {
    let bad = |b: &u8| *b <= b' ' || *b == 0x7f;
    if !s.iter().any(bad) {
        return Cow::Borrowed(s);
    }
    count_unsafe();
    let mut out = Vec::with_capacity(s.len() + 8);
    for b in s {
        if bad(b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(*b);
        }
    }
    Cow::Owned(out)
}

/// Appends a request target (a missing leading `/` added), control bytes
/// and spaces percent-encoded (see [`escape_ctl`]).
pub(crate) fn put_target(out: &mut BytesMut, target: &[u8]) {
    if target.first() != Some(&b'/') && target != b"*" {
        out.extend_from_slice(b"/");
    }
    out.extend_from_slice(&escape_ctl(target));
}

/// What lb adds to a forwarded request.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The request target to send: origin-form, `*`, or the path-and-query
    /// of an absolute-form target (a missing leading `/` is added).
    pub target: &'a [u8],
    /// The client's IP address, as text.
    pub client_ip: &'a [u8],
    /// The original Host value (for `X-Forwarded-Host`), if any.
    pub host: Option<&'a [u8]>,
    /// The scheme the client used (`http`).
    pub proto: &'a [u8],
    /// The `Host` to send in place of every `Host` field, if any: the
    /// authority of an absolute-form target (RFC 9112 section 3.2.2).
    pub host_override: Option<&'a [u8]>,
}

fn skip_field(name: &[u8], head_fields: &mut dyn FnMut(&[u8]) -> bool, lists: bool) -> bool {
    is_hop_by_hop(name) || (lists && head_fields(name))
}

/// Whether a client's `Connection` may remove field `name` before the
/// request goes upstream. `Host` may not: routing chose the upstream by it
/// and the backend needs it (`Content-Length`, `Transfer-Encoding` and the
/// `X-Forwarded-*` fields are regenerated anyway).
pub fn connection_may_remove(name: &[u8]) -> bool {
    !name.eq_ignore_ascii_case(b"host")
}

/// The client's end-to-end fields of `head`: every field but the hop-by-hop
/// ones and those its `Connection` lists (except the ones
/// [`connection_may_remove`] protects). Route filters apply to these, so a
/// field a filter adds cannot be removed by naming it in `Connection`.
pub fn end_to_end_fields<'h>(
    head: &'h RequestHead,
    info: &MessageInfo,
) -> impl Iterator<Item = (&'h [u8], &'h [u8])> + 'h {
    let lists = info.connection_lists_fields;
    head.headers().filter(move |(name, _)| {
        let listed =
            lists && connection_may_remove(name) && listed_in_connection(head.headers(), name);
        !(is_hop_by_hop(name) || listed)
    })
}

/// Appends the upstream request head for `head` to `out`: HTTP/1.1, fields in
/// their original order minus hop-by-hop ones (and those listed in
/// `Connection`, `Host` excepted: see [`end_to_end_fields`]), `Host`
/// replaced by [`Forwarded::host_override`] when set, any client
/// `X-Forwarded-Proto`/`X-Forwarded-Host` replaced, `X-Forwarded-For`
/// extended with the client address, framing re-generated.
pub fn encode_request(
    head: &RequestHead,
    info: &MessageInfo,
    fwd: &Forwarded<'_>,
    out: &mut BytesMut,
) {
    encode_request_fields(head, info, fwd, || end_to_end_fields(head, info), out);
}

/// [`encode_request`] with the header fields taken from `fields` (called
/// once per pass over them): for requests whose fields a filter changed.
/// `fields` should start from [`end_to_end_fields`]; hop-by-hop names are
/// dropped here again, `Connection`-listed ones are not (a filter may add
/// a field the client listed).
pub fn encode_request_fields<'f, I>(
    head: &RequestHead,
    info: &MessageInfo,
    fwd: &Forwarded<'_>,
    fields: impl Fn() -> I,
    out: &mut BytesMut,
) where
    I: Iterator<Item = (&'f [u8], &'f [u8])>,
{
    out.extend_from_slice(head.method());
    out.extend_from_slice(b" ");
    put_target(out, fwd.target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = fwd.host_override {
        put_field(out, b"Host", host);
    }
    let mut xff = false;
    let mut host_sent = false;
    for (name, value) in fields() {
        if fwd.host_override.is_some() && name.eq_ignore_ascii_case(b"host") {
            continue;
        }
        if name.len() > 12 && name[..12].eq_ignore_ascii_case(b"x-forwarded-") {
            let rest = &name[12..];
            if rest.eq_ignore_ascii_case(b"for") {
                xff = true;
                continue;
            }
            if rest.eq_ignore_ascii_case(b"proto") || rest.eq_ignore_ascii_case(b"host") {
                continue;
            }
        }
        if is_hop_by_hop(name) {
            continue;
        }
        host_sent |= name.eq_ignore_ascii_case(b"host");
        put_field(out, name, value);
    }
    // An HTTP/1.0 request may come without Host; the upstream request is
    // HTTP/1.1, which needs one: empty when the target has no authority
    // (RFC 9112 3.2).
    if !host_sent && fwd.host_override.is_none() {
        out.extend_from_slice(b"Host: \r\n");
    }
    match info.body {
        BodyKind::Length(n) => put_length(out, n),
        BodyKind::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyKind::Empty | BodyKind::UntilClose => {}
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if xff {
        for (name, value) in fields() {
            if name.eq_ignore_ascii_case(b"x-forwarded-for") && !value.is_empty() {
                out.extend_from_slice(value);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(fwd.client_ip);
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    out.extend_from_slice(fwd.proto);
    out.extend_from_slice(b"\r\n");
    if let Some(host) = fwd.host {
        put_field(out, b"X-Forwarded-Host", host);
    }
    out.extend_from_slice(b"\r\n");
}

/// Adds `Connection: upgrade` and `Upgrade: token` to a request head that
/// [`encode_request`] just wrote to `out` (the upgrade fields are hop-by-hop,
/// so they are re-added only for a request lb relays as an upgrade).
pub fn add_upgrade(out: &mut BytesMut, token: &[u8]) {
    debug_assert!(out.ends_with(b"\r\n\r\n"));
    out.truncate(out.len() - 2);
    put_field(out, b"Connection", b"upgrade");
    put_field(out, b"Upgrade", token);
    out.extend_from_slice(b"\r\n");
}

/// How the downstream response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No framing field: a response that cannot have a body; the upstream's
    /// own Content-Length (describing the HEAD/304 representation) is kept.
    NoBody,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Delimited by closing the connection.
    Close,
}

/// The `Connection` field lb puts on a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionField {
    /// None (HTTP/1.1 keep-alive).
    None,
    /// `Connection: close`.
    Close,
    /// `Connection: keep-alive` (for an HTTP/1.0 client that asked for it).
    KeepAlive,
}

/// Appends the downstream response head for `head` to `out`.
pub fn encode_response(
    head: &ResponseHead,
    info: &MessageInfo,
    framing: Framing,
    connection: ConnectionField,
    out: &mut BytesMut,
) {
    encode_response_fields(head, info, framing, connection, head.headers(), out);
}

/// [`encode_response`] with the header fields taken from `fields` instead
/// of `head` (for responses whose fields a filter changed).
pub fn encode_response_fields<'f>(
    head: &ResponseHead,
    info: &MessageInfo,
    framing: Framing,
    connection: ConnectionField,
    fields: impl Iterator<Item = (&'f [u8], &'f [u8])>,
    out: &mut BytesMut,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(head.code()));
    out.extend_from_slice(b" ");
    out.extend_from_slice(head.reason());
    out.extend_from_slice(b"\r\n");
    let lists = info.connection_lists_fields;
    let mut listed = |name: &[u8]| listed_in_connection(head.headers(), name);
    for (name, value) in fields {
        let keep_length =
            framing == Framing::NoBody && name.eq_ignore_ascii_case(b"content-length");
        if !keep_length && skip_field(name, &mut listed, lists) {
            continue;
        }
        put_field(out, name, value);
    }
    match framing {
        Framing::Length(n) => put_length(out, n),
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::NoBody | Framing::Close => {}
    }
    match connection {
        ConnectionField::None => {}
        ConnectionField::Close => out.extend_from_slice(b"Connection: close\r\n"),
        ConnectionField::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one of lb's own responses: `text/plain` body `"<status> <reason>\n"`
/// (omitted for HEAD requests, the length is still stated).
pub fn encode_error(status: u16, close: bool, head_request: bool, out: &mut BytesMut) {
    let reason = reason(status);
    out.extend_from_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(status));
    out.extend_from_slice(b" ");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\n");
    put_length(out, (3 + 1 + reason.len() + 1) as u64);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        put_u64(out, u64::from(status));
        out.extend_from_slice(b" ");
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::super::head::{parse_request, parse_response, request_info, response_info};
    use super::*;

    fn rewrite_request(raw: &[u8]) -> String {
        let mut buf = BytesMut::from(raw);
        let head = parse_request(&mut buf, 4096, 32, &mut Vec::new())
            .unwrap()
            .unwrap();
        let info = request_info(&head).unwrap();
        let mut out = BytesMut::new();
        let fwd = Forwarded {
            target: head.target(),
            client_ip: b"10.0.0.9",
            host: head.header("host"),
            proto: b"http",
            host_override: None,
        };
        encode_request(&head, &info, &fwd, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn request_rewrite_exact_bytes() {
        let out = rewrite_request(
            b"POST /p HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
Keep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\nUpgrade: h2c\r\nTrailer: X\r\n\
Proxy-Authorization: Basic x\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n\
Accept: */*\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(
            out,
            "POST /p HTTP/1.1\r\nHost: a.example\r\nProxy-Authorization: Basic x\r\nAccept: */*\r\n\
Transfer-Encoding: chunked\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\
X-Forwarded-Host: a.example\r\n\r\n"
        );
        let out = rewrite_request(b"GET / HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: \r\nContent-Length: 0\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn request_with_replaced_fields() {
        let mut buf = BytesMut::from(
            &b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-Old: 1\r\n\r\n"[..],
        );
        let head = parse_request(&mut buf, 4096, 32, &mut Vec::new())
            .unwrap()
            .unwrap();
        let info = request_info(&head).unwrap();
        let fwd = Forwarded {
            target: b"/b?q",
            client_ip: b"10.0.0.9",
            host: Some(b"a"),
            proto: b"https",
            host_override: None,
        };
        // A filter's field the client listed in Connection is kept: the
        // client's own X-Hop is gone before filters apply.
        let mut fields: Vec<(&[u8], &[u8])> = end_to_end_fields(&head, &info).collect();
        assert_eq!(fields, [(&b"Host"[..], &b"a"[..]), (b"X-Old", b"1")]);
        fields[0].1 = b"b";
        fields.retain(|(n, _)| *n != b"X-Old");
        fields.extend([(&b"X-Hop"[..], &b"filter"[..]), (b"X-New", b"2")]);
        let mut out = BytesMut::new();
        encode_request_fields(&head, &info, &fwd, || fields.iter().copied(), &mut out);
        assert_eq!(
            &out[..],
            &b"GET /b?q HTTP/1.1\r\nHost: b\r\nX-Hop: filter\r\nX-New: 2\r\nX-Forwarded-For: 10.0.0.9\r\n\
X-Forwarded-Proto: https\r\nX-Forwarded-Host: a\r\n\r\n"[..]
        );
    }

    #[test]
    fn an_http10_request_without_host_goes_upstream_with_an_empty_host() {
        let out = rewrite_request(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n");
        assert!(out.starts_with("GET / HTTP/1.1\r\n"), "{out}");
        assert!(out.contains("\r\nHost: \r\n"), "{out}");
        // The result is a request lb's own parser (like any HTTP/1.1 server) takes.
        let mut buf = BytesMut::from(out.as_bytes());
        assert!(
            parse_request(&mut buf, 4096, 32, &mut Vec::new())
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn connection_cannot_remove_host() {
        let out = rewrite_request(
            b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: Host, X-Hop, HTTP2-Settings\r\nX-Hop: 1\r\n\
HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
        );
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 10.0.0.9\r\n\
X-Forwarded-Proto: http\r\nX-Forwarded-Host: a.example\r\n\r\n"
        );
        // HTTP2-Settings is hop-by-hop even when Connection does not list it.
        let out = rewrite_request(b"GET / HTTP/1.1\r\nHost: a\r\nHTTP2-Settings: AAMAAABk\r\n\r\n");
        assert!(
            !out.to_ascii_lowercase().contains("http2-settings"),
            "{out}"
        );
    }

    #[test]
    fn absolute_form_authority_replaces_host() {
        let mut buf = BytesMut::from(
            &b"GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\nAccept: */*\r\nHost2: y\r\n\r\n"[..],
        );
        let head = parse_request(&mut buf, 4096, 32, &mut Vec::new())
            .unwrap()
            .unwrap();
        let info = request_info(&head).unwrap();
        let fwd = Forwarded {
            target: b"/x",
            client_ip: b"10.0.0.9",
            host: Some(b"a.test"),
            proto: b"http",
            host_override: Some(b"a.test"),
        };
        let mut out = BytesMut::new();
        encode_request(&head, &info, &fwd, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "GET /x HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\nHost2: y\r\n\
X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a.test\r\n\r\n"
        );
    }

    #[test]
    fn head_writer_refuses_cr_lf_nul() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
        let head = parse_request(&mut buf, 4096, 32, &mut Vec::new())
            .unwrap()
            .unwrap();
        let info = request_info(&head).unwrap();
        let fwd = Forwarded {
            target: b"/p\r\nX-Target: 1 x",
            client_ip: b"10.0.0.9",
            host: None,
            proto: b"http",
            host_override: None,
        };
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b"Host", b"a"),
            (b"X-A", b"v\r\nX-Injected: yes"),
            (b"X-B\r\nX-Injected", b"yes"),
            (b"X-C", b"nul\0"),
            (b"X-D", b"lf\n"),
            (b"", b"empty name"),
            (b"X-Ok", b"tab\tok"),
        ];
        let before = unsafe_head_values();
        let mut out = BytesMut::new();
        encode_request_fields(&head, &info, &fwd, || fields.iter().copied(), &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "GET /p%0D%0AX-Target:%201%20x HTTP/1.1\r\nHost: a\r\nX-Ok: tab\tok\r\n\
X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
        // Five fields left out, one target escaped (other tests may count too).
        assert!(unsafe_head_values() >= before + 6);
        let mut out = BytesMut::new();
        put_field(&mut out, b"Location", b"/a\rb");
        assert!(out.is_empty());
        assert_eq!(&escape_ctl(b"/plain")[..], b"/plain");
        assert!(matches!(escape_ctl(b"/plain"), Cow::Borrowed(_)));
        assert_eq!(&escape_ctl(b"/a b\x7f\0")[..], b"/a%20b%7F%00");
    }

    #[test]
    fn response_rewrite_exact_bytes() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 Fine\r\nServer: s\r\nConnection: X-Drop\r\nX-Drop: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        );
        let head = parse_response(&mut buf, 4096, 32, &mut Vec::new())
            .unwrap()
            .unwrap();
        let info = response_info(&head, false).unwrap();
        let mut out = BytesMut::new();
        encode_response(
            &head,
            &info,
            Framing::Chunked,
            ConnectionField::Close,
            &mut out,
        );
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 Fine\r\nServer: s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"[..]);
        let head = parse_response(&mut buf, 4096, 32, &mut Vec::new())
            .unwrap()
            .unwrap();
        let info = response_info(&head, false).unwrap();
        out.clear();
        encode_response(
            &head,
            &info,
            Framing::NoBody,
            ConnectionField::KeepAlive,
            &mut out,
        );
        assert_eq!(
            &out[..],
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn error_response_bytes() {
        let mut out = BytesMut::new();
        encode_error(404, false, false, &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n404 Not Found\n"
        );
        out.clear();
        encode_error(502, true, true, &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\n"
        );
        out.clear();
        put_u64(&mut out, 0);
        put_u64(&mut out, u64::MAX);
        assert_eq!(&out[..], b"018446744073709551615");
    }
}
