//! HTTP/2 with the `h2` crate: the downstream server ([`server`]: TLS with
//! ALPN `h2`, or cleartext by prior knowledge), the per-worker pool of
//! upstream h2c connections ([`client`]), the exchanges that carry one
//! request to an HTTP/1.1 ([`to_h1`]) or h2c ([`to_h2c`]) upstream, HTTP/1.1
//! requests forwarded to h2c upstreams ([`from_h1`]), header translation
//! between the two versions ([`translate`]) and the I/O adapters ([`io`]).
//!
//! Everything runs on one worker thread: the streams of a connection are
//! futures polled by the connection's own task, upstream connection drivers
//! are `spawn_local` tasks, state is `Cell`/`RefCell` never borrowed across
//! an await.
//!
//! Flood defences (RFC 9113 section 10.5): a bound on concurrent streams
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`, excess refused with REFUSED_STREAM),
//! on the header list (CONTINUATION floods end at `max_header_list_size`),
//! on streams the client resets before they are accepted and on resets lb
//! must send for client protocol errors (both enforced by h2 with GOAWAY
//! ENHANCE_YOUR_CALM), and on client RST_STREAMs per second counted here
//! (rapid reset, CVE-2023-44487: the connection gets GOAWAY
//! ENHANCE_YOUR_CALM). h2 bounds DATA frames without data (100 per
//! connection) and CONTINUATION frames per header block itself, both with
//! GOAWAY ENHANCE_YOUR_CALM. It answers every PING and SETTINGS, one at a
//! time (it stops reading while an acknowledgement waits to be written),
//! without a bound on their rate: [`flood`] counts them per second on the
//! bytes read and ends a flooding connection with GOAWAY ENHANCE_YOUR_CALM
//! (`max_control_frames_per_second`).

use std::time::Duration;

mod client;
mod flood;
mod from_h1;
mod io;
mod server;
mod to_h1;
mod to_h2c;
mod translate;

pub(crate) use from_h1::{H1Exchange, forward_h1_to_h2c};
pub(crate) use io::{PrefixedIo, sniff_preface};
pub(crate) use server::serve_h2;
pub(crate) use translate::{Fwd, ReqFraming, encode_h1_request};

/// The HTTP/2 client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/2 limits, for downstream connections (and the flow-control windows
/// of upstream h2c connections too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Settings {
    /// Streams a client may have open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Largest decoded header list (request head) accepted, in bytes; a
    /// larger one is refused and ends CONTINUATION floods.
    pub max_header_list_size: usize,
    /// Streams the client reset before lb accepted them that may wait in
    /// the accept queue; more is a connection error (GOAWAY).
    pub max_pending_accept_reset_streams: usize,
    /// Streams lb may reset because of client protocol errors over a
    /// connection's life; more is a connection error (GOAWAY).
    pub max_local_error_reset_streams: usize,
    /// Client RST_STREAM frames tolerated per connection and second; more
    /// ends the connection with GOAWAY (rapid reset).
    pub max_resets_per_second: u32,
    /// PING and SETTINGS frames (without ACK) tolerated per connection and
    /// second; more ends the connection with GOAWAY ENHANCE_YOUR_CALM.
    pub max_control_frames_per_second: u32,
    /// Initial flow-control window of each stream, in bytes.
    pub stream_window: u32,
    /// Flow-control window of a whole connection, in bytes.
    pub connection_window: u32,
    /// Once lb sent GOAWAY (idle or drain) and no stream is open, the
    /// connection is closed hard after this long, whether or not the
    /// client acknowledged the closing PING.
    pub goaway_timeout: Duration,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            max_header_list_size: 65536,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            max_resets_per_second: 100,
            max_control_frames_per_second: 100,
            stream_window: 256 * 1024,
            connection_window: 1024 * 1024,
            goaway_timeout: Duration::from_secs(5),
        }
    }
}
