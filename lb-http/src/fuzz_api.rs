//! Entry points for the fuzz targets in `fuzz/` (not a stable API): thin
//! wrappers over crate-private parsers and encoders, with no behaviour of
//! their own.

use bytes::BytesMut;
use http::{HeaderMap, Method};

use crate::h2::{Fwd, ReqFraming};
use crate::passthrough::{Hello, parse_client_hello};

/// What [`client_hello_sni`] found in the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloResult {
    /// More bytes are needed.
    Partial,
    /// A complete ClientHello and its server name, if any.
    Complete(Option<String>),
    /// Not a ClientHello, malformed or too large.
    Invalid,
}

/// The TLS passthrough ClientHello/SNI parser.
pub fn client_hello_sni(buf: &[u8]) -> HelloResult {
    match parse_client_hello(buf) {
        Hello::Partial => HelloResult::Partial,
        Hello::Complete(sni) => HelloResult::Complete(sni),
        Hello::Invalid(_) => HelloResult::Invalid,
    }
}

/// How the HTTP/1.1 request body that [`encode_h1_request`] announces is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body, no framing field.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The HTTP/1.1 request head lb sends upstream for an HTTP/2 request.
#[allow(clippy::too_many_arguments)]
pub fn encode_h1_request(
    method: &Method,
    headers: &HeaderMap,
    authority: &str,
    path: &str,
    framing: Framing,
    client_ip: &str,
    forwarded_host: Option<&[u8]>,
    out: &mut BytesMut,
) {
    let framing = match framing {
        Framing::None => ReqFraming::None,
        Framing::Length(n) => ReqFraming::Length(n),
        Framing::Chunked => ReqFraming::Chunked,
    };
    let fwd = Fwd {
        client_ip,
        proto: "https",
        host: forwarded_host,
    };
    crate::h2::encode_h1_request(method, headers, authority, path, framing, &fwd, out);
}

/// Splits an HTTP/1.1 request target into the authority of an absolute-form
/// target and the path lb forwards, as the proxy does; `None` for a target
/// the proxy refuses.
pub fn split_target(target: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    crate::proxy::split_target(target)
}
