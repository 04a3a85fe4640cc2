//! The error type of lb's L7 data plane: what went wrong ([`ErrorKind`]), on
//! which side ([`Side`]), whether retrying is safe, and the single mapping from
//! an error to the HTTP status lb answers with ([`Error::status`]).

use std::fmt;
use std::io;

/// Which party an error is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client connection (the request or the client socket).
    Downstream,
    /// The upstream connection or the backend selection.
    Upstream,
    /// lb itself.
    Internal,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        })
    }
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A message head that is not valid HTTP/1.x.
    InvalidHead,
    /// Invalid or ambiguous body framing: Content-Length/Transfer-Encoding
    /// conflicts, unsupported transfer codings, malformed chunks.
    InvalidFraming,
    /// A head larger than `max_header_bytes` or with more than `max_headers` fields.
    HeadTooLarge,
    /// An HTTP/1.1 request without a Host header.
    MissingHost,
    /// A request target longer than `max_uri_bytes` (or a request line
    /// longer than `max_header_bytes`).
    UriTooLong,
    /// A request body larger than `max_body_bytes`.
    BodyTooLarge,
    /// An `Expect` field with an expectation other than `100-continue`.
    ExpectationFailed,
    /// A well-formed HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
    /// A method lb does not proxy (CONNECT).
    UnsupportedMethod,
    /// No route matched the request.
    NoRoute,
    /// The matched backend has no ready endpoints.
    NoEndpoints,
    /// The upstream connection could not be established.
    ConnectFailed,
    /// The upstream connection was not established within `connect_timeout`.
    ConnectTimeout,
    /// The peer did not send in time (request head or upstream response).
    Timeout,
    /// The peer closed the connection before the message was complete.
    Closed,
    /// Any other I/O failure.
    Io,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidHead => "invalid message head",
            ErrorKind::InvalidFraming => "invalid message framing",
            ErrorKind::HeadTooLarge => "message head too large",
            ErrorKind::MissingHost => "missing Host header",
            ErrorKind::UriTooLong => "request target too long",
            ErrorKind::BodyTooLarge => "body too large",
            ErrorKind::ExpectationFailed => "unsupported expectation",
            ErrorKind::VersionNotSupported => "HTTP version not supported",
            ErrorKind::UnsupportedMethod => "unsupported method",
            ErrorKind::NoRoute => "no route",
            ErrorKind::NoEndpoints => "no ready endpoints",
            ErrorKind::ConnectFailed => "connect failed",
            ErrorKind::ConnectTimeout => "connect timed out",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Closed => "connection closed early",
            ErrorKind::Io => "I/O error",
        }
    }
}

/// An L7 data-plane error.
#[derive(Debug, thiserror::Error)]
#[error("{side} {}: {detail}", kind.as_str())]
pub struct Error {
    kind: ErrorKind,
    side: Side,
    retry_safe: bool,
    detail: &'static str,
    #[source]
    source: Option<io::Error>,
}

impl Error {
    /// A new error; `detail` is a short static description for logs.
    pub fn new(kind: ErrorKind, side: Side, detail: &'static str) -> Self {
        Self {
            kind,
            side,
            retry_safe: false,
            detail,
            source: None,
        }
    }

    /// An error caused by an I/O failure. Timeouts and early closes are
    /// classified as [`ErrorKind::Timeout`] and [`ErrorKind::Closed`].
    pub fn io(side: Side, detail: &'static str, source: io::Error) -> Self {
        let kind = match source.kind() {
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ErrorKind::Closed,
            _ => ErrorKind::Io,
        };
        Self {
            source: Some(source),
            ..Self::new(kind, side, detail)
        }
    }

    /// Replaces the kind (e.g. to classify an I/O error as a connect failure).
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Marks the error as safe to retry on another connection (nothing of
    /// the request can have been processed by the upstream).
    pub fn retry_safe(mut self, safe: bool) -> Self {
        self.retry_safe = safe;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Which side the error is attributed to.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Whether the request may be retried on a fresh upstream connection.
    pub fn is_retry_safe(&self) -> bool {
        self.retry_safe
    }

    /// The HTTP status lb answers with for this error, if the response head
    /// has not been sent yet. This is the only place statuses are chosen for
    /// errors.
    pub fn status(&self) -> u16 {
        match (self.kind, self.side) {
            (ErrorKind::HeadTooLarge, Side::Downstream) => 431,
            (ErrorKind::Timeout, Side::Downstream) => 408,
            (ErrorKind::BodyTooLarge, Side::Downstream) => 413,
            (ErrorKind::UriTooLong, Side::Downstream) => 414,
            (ErrorKind::ExpectationFailed, Side::Downstream) => 417,
            (ErrorKind::VersionNotSupported, Side::Downstream) => 505,
            (ErrorKind::UnsupportedMethod, _) => 501,
            (ErrorKind::NoRoute, _) => 404,
            (ErrorKind::NoEndpoints, _) => 503,
            (ErrorKind::ConnectTimeout | ErrorKind::Timeout, Side::Upstream) => 504,
            (_, Side::Internal) => 500,
            (_, Side::Upstream) => 502,
            (_, Side::Downstream) => 400,
        }
    }
}

/// The reason phrase lb uses for a status it generates.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_by_kind_and_side() {
        let e = |k, s| Error::new(k, s, "t").status();
        assert_eq!(e(ErrorKind::HeadTooLarge, Side::Downstream), 431);
        assert_eq!(e(ErrorKind::HeadTooLarge, Side::Upstream), 502);
        assert_eq!(e(ErrorKind::Timeout, Side::Downstream), 408);
        assert_eq!(e(ErrorKind::Timeout, Side::Upstream), 504);
        assert_eq!(e(ErrorKind::ConnectTimeout, Side::Upstream), 504);
        assert_eq!(e(ErrorKind::ConnectFailed, Side::Upstream), 502);
        assert_eq!(e(ErrorKind::InvalidFraming, Side::Downstream), 400);
        assert_eq!(e(ErrorKind::InvalidFraming, Side::Upstream), 502);
        assert_eq!(e(ErrorKind::NoRoute, Side::Downstream), 404);
        assert_eq!(e(ErrorKind::NoEndpoints, Side::Upstream), 503);
        assert_eq!(e(ErrorKind::MissingHost, Side::Downstream), 400);
        assert_eq!(e(ErrorKind::Io, Side::Internal), 500);
        assert_eq!(e(ErrorKind::BodyTooLarge, Side::Downstream), 413);
        assert_eq!(e(ErrorKind::UriTooLong, Side::Downstream), 414);
        assert_eq!(e(ErrorKind::ExpectationFailed, Side::Downstream), 417);
        assert_eq!(e(ErrorKind::VersionNotSupported, Side::Downstream), 505);
        assert_eq!(e(ErrorKind::BodyTooLarge, Side::Upstream), 502);
        for code in [413, 414, 417, 505] {
            assert_ne!(reason(code), "Unknown");
        }
    }

    #[test]
    fn io_errors_are_classified() {
        let err = Error::io(
            Side::Upstream,
            "read",
            io::Error::from(io::ErrorKind::ConnectionReset),
        );
        assert_eq!(err.kind(), ErrorKind::Closed);
        assert_eq!(err.status(), 502);
        assert!(!err.is_retry_safe());
        assert!(err.retry_safe(true).is_retry_safe());
    }
}
