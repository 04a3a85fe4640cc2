//! Tunables of the HTTP/1.1 proxy: timeouts, head, target and body limits.

use std::time::Duration;

/// Limits and timeouts applied by [`crate::HttpProxy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// Time allowed to receive a complete request head once its first byte
    /// arrived (and for the first request, from accept); exceeding it mid-head
    /// answers 408 and closes.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests before it
    /// is closed silently; also bounds each body read and idle pooled upstream
    /// connections.
    pub idle_timeout: Duration,
    /// Time allowed to establish an upstream TCP connection (timeout: 504).
    pub connect_timeout: Duration,
    /// Time allowed for the upstream response head once the request was sent
    /// (timeout: 504), and for each read of the response body.
    pub response_timeout: Duration,
    /// Largest accepted request (and upstream response) head in bytes; larger
    /// request heads get 431.
    pub max_header_bytes: usize,
    /// Most header fields accepted in one head; more gets 431.
    pub max_headers: usize,
    /// Longest request target in bytes; longer gets 414.
    pub max_uri_bytes: usize,
    /// Largest request body in bytes; 0 means no limit. A larger
    /// Content-Length gets 413 before any upstream connection; a chunked body
    /// that grows past it is aborted (413 if no response head was sent yet).
    pub max_body_bytes: u64,
    /// Time allowed for a request body (HTTP/1.1 or HTTP/2) from when
    /// its relay starts, extended by one second for every `body_min_rate`
    /// bytes received; a body that misses it gets 408 (or its connection
    /// or stream reset once a response began) and its upstream connection
    /// is closed.
    pub body_timeout: Duration,
    /// Bytes per second of request body that extend `body_timeout`; 0:
    /// `body_timeout` bounds the whole body.
    pub body_min_rate: u64,
    /// An upgraded connection (WebSocket) or TLS passthrough connection
    /// that moves no byte either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// How long an HTTP/2 response may wait for the client's flow-control
    /// window to open (WINDOW_UPDATE) before its stream is reset; the
    /// sockets' own send deadline (TCP_USER_TIMEOUT) is set by the worker.
    pub send_timeout: Duration,
    /// Mirrored requests (Gateway `RequestMirror`) each worker keeps in
    /// flight; more are dropped and counted.
    pub max_mirrors_in_flight: usize,
    /// HTTP/2 limits (downstream connections and upstream h2c connections).
    pub http2: crate::h2::Http2Settings,
    /// Idle keep-alive upstream connections kept per endpoint and worker.
    pub max_idle_per_endpoint: usize,
    /// Passive outlier detection of upstream endpoints.
    pub outlier: crate::balance::OutlierSettings,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            max_header_bytes: 65536,
            max_headers: 100,
            max_uri_bytes: 8192,
            max_body_bytes: 0,
            body_timeout: Duration::from_secs(60),
            body_min_rate: 1024,
            tunnel_idle_timeout: Duration::from_secs(3600),
            send_timeout: Duration::from_secs(30),
            max_mirrors_in_flight: 256,
            http2: crate::h2::Http2Settings::default(),
            max_idle_per_endpoint: 512,
            outlier: crate::balance::OutlierSettings::default(),
        }
    }
}
