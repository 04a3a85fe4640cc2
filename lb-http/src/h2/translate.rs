//! Header translation between HTTP/2 and HTTP/1.1 messages (RFC 9113
//! section 8): connection-specific fields are dropped, `:authority` and
//! `Host` map onto each other, split `cookie` fields are joined for
//! HTTP/1.1, framing fields are regenerated, and `X-Forwarded-*` is added
//! as the HTTP/1.1 proxy does it (client `X-Forwarded-Proto`/`-Host`
//! replaced, `X-Forwarded-For` extended).

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};

use crate::error::{Error, ErrorKind, Side};
use crate::h1::head::{
    BodyKind, MessageInfo, RequestHead, ResponseHead, is_hop_by_hop, listed_in_connection,
};
use crate::h1::rewrite::{ConnectionField, Framing, put_field, put_target, put_u64};

/// What lb adds to a forwarded request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fwd<'a> {
    /// The client's IP address, as text.
    pub client_ip: &'a str,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The authority the client asked for (`X-Forwarded-Host`), if any.
    pub host: Option<&'a [u8]>,
}

/// How an HTTP/1.1 request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReqFraming {
    /// No body and no framing field.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

fn bad_request(detail: &'static str) -> Error {
    Error::new(ErrorKind::InvalidHead, Side::Downstream, detail)
}

/// Removes the fields HTTP/2 forbids (RFC 9113 section 8.2.2): those named
/// in `Connection`, `Connection` itself, `Keep-Alive`, `Proxy-Connection`,
/// `Transfer-Encoding`, `Upgrade`, and `TE` unless it is `trailers`.
pub(super) fn strip_connection_fields(map: &mut HeaderMap) {
    let listed: Vec<HeaderName> = map
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for name in listed {
        map.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        map.remove(name);
    }
    if map.get_all(header::TE).iter().any(|v| v != "trailers") {
        map.remove(header::TE);
    }
}

/// Replaces client `X-Forwarded-Proto`/`-Host` and extends
/// `X-Forwarded-For` with the client address.
fn add_forwarded(map: &mut HeaderMap, fwd: &Fwd<'_>) {
    let mut xff = Vec::new();
    for v in map.get_all(&X_FORWARDED_FOR) {
        if !v.is_empty() {
            xff.extend_from_slice(v.as_bytes());
            xff.extend_from_slice(b", ");
        }
    }
    xff.extend_from_slice(fwd.client_ip.as_bytes());
    map.remove(&X_FORWARDED_FOR);
    map.remove(&X_FORWARDED_HOST);
    if let Ok(v) = HeaderValue::from_bytes(&xff) {
        map.insert(X_FORWARDED_FOR, v);
    }
    map.insert(X_FORWARDED_PROTO, HeaderValue::from_static(fwd.proto));
    if let Some(v) = fwd.host.and_then(|h| HeaderValue::from_bytes(h).ok()) {
        map.insert(X_FORWARDED_HOST, v);
    }
}

fn upstream_uri(authority: &[u8], path: &[u8]) -> Result<Uri, Error> {
    let path = if path.first() == Some(&b'/') || path == b"*" {
        path.to_vec()
    } else {
        [b"/", path].concat()
    };
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| bad_request("request target not representable in HTTP/2"))
}

/// The request sent to an h2c upstream for an HTTP/2 request with
/// `method` and `headers` (taken over) for `authority` and `path`.
pub(super) fn h2_request(
    method: Method,
    mut headers: HeaderMap,
    authority: &str,
    path: &str,
    fwd: &Fwd<'_>,
) -> Result<Request<()>, Error> {
    strip_connection_fields(&mut headers);
    headers.remove(header::HOST);
    add_forwarded(&mut headers, fwd);
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = upstream_uri(authority.as_bytes(), path.as_bytes())?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// The request sent to an h2c upstream for an HTTP/1.1 request: hop-by-hop
/// fields and those listed in `Connection` dropped, `Host` carried as
/// `:authority`, `Expect` answered by lb, `Content-Length` kept.
pub(super) fn h2_request_from_h1(
    head: &RequestHead,
    info: &MessageInfo,
    authority: &[u8],
    target: &[u8],
    fwd: &Fwd<'_>,
) -> Result<Request<()>, Error> {
    let method = Method::from_bytes(head.method()).map_err(|_| bad_request("bad method"))?;
    let mut headers = HeaderMap::new();
    for (name, value) in head.headers() {
        if is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"expect")
            || (info.connection_lists_fields && listed_in_connection(head.headers(), name))
        {
            continue;
        }
        let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else {
            return Err(bad_request("header not representable in HTTP/2"));
        };
        headers.append(n, v);
    }
    if let BodyKind::Length(n) = info.body {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    add_forwarded(&mut headers, fwd);
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = upstream_uri(authority, target)?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Appends the HTTP/1.1 request head sent upstream for an HTTP/2 request:
/// `Host` from `authority`, fields in order minus hop-by-hop ones, `cookie`
/// fields joined with `"; "` (RFC 9113 section 8.2.3), framing per
/// `framing`, `X-Forwarded-*` last.
pub(crate) fn encode_h1_request(
    method: &Method,
    headers: &HeaderMap,
    authority: &str,
    path: &str,
    framing: ReqFraming,
    fwd: &Fwd<'_>,
    out: &mut BytesMut,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    put_target(out, path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    put_field(out, b"Host", authority.as_bytes());
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let n = name.as_str();
        if is_hop_by_hop(n.as_bytes()) || name == header::HOST || n.starts_with("x-forwarded-") {
            continue;
        }
        if name == header::COOKIE {
            if !cookies.is_empty() {
                cookies.extend_from_slice(b"; ");
            }
            cookies.extend_from_slice(value.as_bytes());
            continue;
        }
        put_field(out, n.as_bytes(), value.as_bytes());
    }
    if !cookies.is_empty() {
        put_field(out, b"cookie", &cookies);
    }
    match framing {
        ReqFraming::None => {}
        ReqFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ReqFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    let mut fwd_fields = HeaderMap::new();
    for v in headers.get_all(&X_FORWARDED_FOR) {
        fwd_fields.append(X_FORWARDED_FOR, v.clone());
    }
    add_forwarded(&mut fwd_fields, fwd);
    for name in [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST] {
        if let Some(v) = fwd_fields.get(&name) {
            put_field(out, name.as_str().as_bytes(), v.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The HTTP/2 response for an HTTP/1.1 upstream response: hop-by-hop fields
/// and those listed in `Connection` dropped, `Content-Length` set from the
/// framing (kept as sent for bodiless responses, `no_body`). Field names
/// or values HTTP/2 cannot carry fail with a 502.
pub(super) fn h2_response_from_h1(
    head: &ResponseHead,
    info: &MessageInfo,
    no_body: bool,
) -> Result<Response<()>, Error> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidHead,
            Side::Upstream,
            "response not representable in HTTP/2",
        )
    };
    let status = StatusCode::from_u16(head.code()).map_err(|_| bad())?;
    let mut headers = HeaderMap::new();
    for (name, value) in head.headers() {
        let keep_length = no_body && name.eq_ignore_ascii_case(b"content-length");
        if !keep_length
            && (is_hop_by_hop(name)
                || (info.connection_lists_fields && listed_in_connection(head.headers(), name)))
        {
            continue;
        }
        let n = HeaderName::from_bytes(name).map_err(|_| bad())?;
        let v = HeaderValue::from_bytes(value).map_err(|_| bad())?;
        headers.append(n, v);
    }
    if let (false, BodyKind::Length(n)) = (no_body, info.body) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// The HTTP/2 response for an HTTP/2 upstream response (connection-specific
/// fields dropped).
pub(super) fn h2_response(status: StatusCode, mut headers: HeaderMap) -> Response<()> {
    strip_connection_fields(&mut headers);
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// Appends the HTTP/1.1 response head for an HTTP/2 upstream response.
/// `Content-Length` is kept only for [`Framing::NoBody`]; otherwise the
/// framing field comes from `framing`.
pub(super) fn encode_h1_response(
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    connection: ConnectionField,
    out: &mut BytesMut,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(status.as_u16()));
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        let n = name.as_str().as_bytes();
        let keep_length = framing == Framing::NoBody && name == header::CONTENT_LENGTH;
        if !keep_length && is_hop_by_hop(n) {
            continue;
        }
        put_field(out, n, value.as_bytes());
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
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

/// The `content-length` of an HTTP/2 message: `Ok(None)` when absent,
/// an error when present but not one decimal number.
pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let parse = |v: &HeaderValue| {
        let b = v.as_bytes();
        // At most 18 digits, as the HTTP/1.1 parser allows: the value goes
        // upstream in an HTTP/1.1 head.
        if b.is_empty() || b.len() > 18 || !b.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        std::str::from_utf8(b)
            .map_err(|_| ())?
            .parse::<u64>()
            .map_err(|_| ())
    };
    let n = parse(first)?;
    if values.any(|v| parse(v) != Ok(n)) {
        return Err(());
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::head::{parse_request, parse_response, request_info, response_info};

    const FWD: Fwd<'static> = Fwd {
        client_ip: "10.0.0.9",
        proto: "https",
        host: Some(b"a.example"),
    };

    fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in fields {
            m.append(*n, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn connection_specific_fields_are_stripped() {
        let mut m = map(&[
            ("connection", "x-hop, keep-alive"),
            ("x-hop", "1"),
            ("keep-alive", "5"),
            ("proxy-connection", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        strip_connection_fields(&mut m);
        let names: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["te", "accept"]);
        let mut m = map(&[("te", "gzip")]);
        strip_connection_fields(&mut m);
        assert!(m.is_empty());
    }

    #[test]
    fn h2_request_to_h2c_keeps_trailers_te_and_adds_forwarded() {
        let headers = map(&[
            ("host", "ignored"),
            ("te", "trailers"),
            ("content-type", "application/grpc"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil"),
        ]);
        let req = h2_request(Method::POST, headers, "a.example:443", "/svc/M", &FWD).unwrap();
        assert_eq!(req.uri(), "http://a.example:443/svc/M");
        let h = req.headers();
        assert!(h.get("host").is_none());
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.example");
    }

    #[test]
    fn h2_request_to_h1_refuses_cr_lf_in_host_and_path() {
        let mut out = BytesMut::new();
        encode_h1_request(
            &Method::GET,
            &HeaderMap::new(),
            "a.example\r\nX-Injected: yes",
            "/p\r\nX-Path: 1",
            ReqFraming::None,
            &Fwd { host: None, ..FWD },
            &mut out,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "GET /p%0D%0AX-Path:%201 HTTP/1.1\r\n\
x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: https\r\n\r\n"
        );
    }

    #[test]
    fn h2_request_to_h1_exact_bytes() {
        let headers = map(&[
            ("cookie", "a=1"),
            ("accept", "*/*"),
            ("cookie", "b=2"),
            ("te", "trailers"),
            ("content-length", "3"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        let mut out = BytesMut::new();
        let fwd = Fwd {
            proto: "http",
            ..FWD
        };
        encode_h1_request(
            &Method::PUT,
            &headers,
            "a.example",
            "/p?q=1",
            ReqFraming::Length(3),
            &fwd,
            &mut out,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "PUT /p?q=1 HTTP/1.1\r\nHost: a.example\r\naccept: */*\r\ncookie: a=1; b=2\r\n\
Content-Length: 3\r\nx-forwarded-for: 1.2.3.4, 10.0.0.9\r\nx-forwarded-proto: http\r\n\
x-forwarded-host: a.example\r\n\r\n"
        );
        out.clear();
        encode_h1_request(
            &Method::POST,
            &HeaderMap::new(),
            "h",
            "/",
            ReqFraming::Chunked,
            &Fwd { host: None, ..FWD },
            &mut out,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\
x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: https\r\n\r\n"
        );
    }

    #[test]
    fn h1_response_to_h2() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nServer: s\r\nConnection: X-Drop, keep-alive\r\nX-Drop: 1\r\n\
Transfer-Encoding: chunked\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\n"[..],
        );
        let head = parse_response(&mut buf, 4096, 32, &mut Vec::new())
            .unwrap()
            .unwrap();
        let info = response_info(&head, false).unwrap();
        let resp = h2_response_from_h1(&head, &info, false).unwrap();
        assert_eq!(resp.status(), 200);
        let names: Vec<&str> = resp.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["server", "set-cookie"]);
        assert_eq!(resp.headers().get_all("set-cookie").iter().count(), 2);

        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nKeep-Alive: 5\r\n\r\n"[..]);
        let head = parse_response(&mut buf, 4096, 32, &mut Vec::new())
            .unwrap()
            .unwrap();
        let info = response_info(&head, true).unwrap();
        let resp = h2_response_from_h1(&head, &info, true).unwrap();
        assert_eq!(
            resp.headers()["content-length"],
            "10",
            "HEAD keeps the length"
        );
        assert!(resp.headers().get("keep-alive").is_none());
        let info = response_info(&head, false).unwrap();
        let resp = h2_response_from_h1(&head, &info, false).unwrap();
        assert_eq!(resp.headers()["content-length"], "10");
    }

    #[test]
    fn h1_request_to_h2c() {
        let mut buf = BytesMut::from(
            &b"POST /x HTTP/1.1\r\nHost: a.example\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\
Expect: 100-continue\r\nContent-Length: 5\r\nAccept: */*\r\n\r\n"[..],
        );
        let head = parse_request(&mut buf, 4096, 32, &mut Vec::new())
            .unwrap()
            .unwrap();
        let info = request_info(&head).unwrap();
        let req = h2_request_from_h1(&head, &info, b"a.example", b"/x", &FWD).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "http://a.example/x");
        let names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "accept",
                "content-length",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host"
            ]
        );
        assert_eq!(req.headers()["content-length"], "5");
        let req = h2_request_from_h1(&head, &info, b"a.example", b"?q", &FWD).unwrap();
        assert_eq!(req.uri().path_and_query().unwrap(), "/?q");
    }

    #[test]
    fn h2_response_to_h1_exact_bytes() {
        let headers = map(&[("content-type", "text/plain"), ("content-length", "2")]);
        let mut out = BytesMut::new();
        encode_h1_response(
            StatusCode::OK,
            &headers,
            Framing::Chunked,
            ConnectionField::Close,
            &mut out,
        );
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        out.clear();
        encode_h1_response(
            StatusCode::NOT_MODIFIED,
            &headers,
            Framing::NoBody,
            ConnectionField::None,
            &mut out,
        );
        assert_eq!(
            &out[..],
            b"HTTP/1.1 304 Not Modified\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n"
        );
    }

    #[test]
    fn content_lengths() {
        assert_eq!(content_length(&HeaderMap::new()), Ok(None));
        assert_eq!(
            content_length(&map(&[("content-length", "1000000000000000000")])),
            Err(())
        );
        assert_eq!(
            content_length(&map(&[("content-length", "12")])),
            Ok(Some(12))
        );
        assert_eq!(
            content_length(&map(&[("content-length", "1"), ("content-length", "1")])),
            Ok(Some(1))
        );
        for bad in [
            &[("content-length", "1"), ("content-length", "2")][..],
            &[("content-length", "-1")],
            &[("content-length", "")],
        ] {
            assert_eq!(content_length(&map(bad)), Err(()));
        }
    }
}
