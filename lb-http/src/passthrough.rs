//! TLS passthrough for Gateway `TLS` listeners: the ClientHello's SNI picks a
//! TLSRoute, and the connection is relayed unopened to one of its backends.
//!
//! This module owns the whole path of such a connection: reading the
//! ClientHello (bounded in time and size, reassembled across TLS records and
//! reads), extracting its server name with a small bounds-checked parser,
//! routing it (Listener, then TLSRoute, then weighted backend, then
//! endpoint), connecting with failover, replaying the bytes read, and the
//! splice relay. Anything that cannot be routed is closed without a word:
//! lb holds no certificate to answer with.
//!
//! Counters: a ClientHello that is malformed, too large, late or without
//! SNI counts as a TLS handshake error; a connection that finds no route or
//! endpoint counts as an unserved L4 connection; each failed connect as an
//! upstream error; a relayed connection as an L4 connection.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use lb_core::counters::WorkerCounters;
use lb_core::l4::relay::{RelayEnd, relay};
use lb_core::runtime::{Accepted, Drain};
use lb_core::stream::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::balance::Policy;
use crate::proxy::{CONNECT_ATTEMPTS, HttpProxy};

/// Largest ClientHello handshake message accepted (its body, in bytes).
const MAX_HELLO: usize = 16 * 1024;
/// Most bytes buffered while waiting for a complete ClientHello: the
/// largest message plus the headers of the records carrying it.
const MAX_BUFFER: usize = MAX_HELLO + 4 + 64 * RECORD_HEADER;
/// TLS record header: content type, version, length.
const RECORD_HEADER: usize = 5;
/// Largest TLS plaintext record payload (RFC 8446 5.1).
const MAX_RECORD: usize = 1 << 14;
/// Read step while collecting the ClientHello.
const READ_STEP: usize = 4 * 1024;

/// What the bytes read so far say about the ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hello {
    /// More bytes are needed.
    Partial,
    /// A complete ClientHello: its server name (lowercase, no trailing
    /// dot), or `None` when it carries no `server_name` extension.
    Complete(Option<String>),
    /// Not a TLS ClientHello, malformed, or too large.
    Invalid(&'static str),
}

/// Examines the first bytes of a connection for a TLS ClientHello and its
/// SNI. The handshake message may span several records; bytes after it are
/// ignored. Never panics, whatever `buf` holds.
pub(crate) fn parse_client_hello(buf: &[u8]) -> Hello {
    match reassemble(buf) {
        Ok(Some(msg)) => match client_hello_sni(&msg) {
            Ok(sni) => Hello::Complete(sni),
            Err(why) => Hello::Invalid(why),
        },
        Ok(None) if buf.len() >= MAX_BUFFER => Hello::Invalid("ClientHello too large"),
        Ok(None) => Hello::Partial,
        Err(why) => Hello::Invalid(why),
    }
}

/// The first handshake message (a ClientHello body, header stripped) once
/// the records in `buf` hold all of it; `Ok(None)` while incomplete.
fn reassemble(buf: &[u8]) -> Result<Option<Cow<'_, [u8]>>, &'static str> {
    let mut rest = buf;
    let mut joined: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        let Some(header) = rest.get(..RECORD_HEADER) else {
            // Check what is there already, so garbage fails fast.
            if rest.first().is_some_and(|&t| t != 22) {
                return Err("not a TLS handshake record");
            }
            return Ok(None);
        };
        if header[0] != 22 {
            return Err("not a TLS handshake record");
        }
        if header[1] != 3 {
            return Err("not a TLS record version");
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Err("bad TLS record length");
        }
        let Some(payload) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
            return Ok(None);
        };
        rest = &rest[RECORD_HEADER + len..];
        // The common case: one record holds the whole message.
        if first && let Some(msg) = whole_message(payload)? {
            return Ok(Some(Cow::Borrowed(msg)));
        }
        first = false;
        joined.extend_from_slice(payload);
        if let Some(msg) = whole_message(&joined)? {
            let n = msg.len();
            joined.truncate(4 + n);
            joined.drain(..4);
            return Ok(Some(Cow::Owned(joined)));
        }
    }
}

/// The ClientHello body when `data` (handshake bytes) holds all of it.
fn whole_message(data: &[u8]) -> Result<Option<&[u8]>, &'static str> {
    let Some(&kind) = data.first() else {
        return Ok(None);
    };
    if kind != 1 {
        return Err("first handshake message is not a ClientHello");
    }
    let Some(len) = data.get(1..4) else {
        return Ok(None);
    };
    let len = usize::from(len[0]) << 16 | usize::from(len[1]) << 8 | usize::from(len[2]);
    if len > MAX_HELLO {
        return Err("ClientHello too large");
    }
    Ok(data.get(4..4 + len))
}

/// A cursor over bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let (head, tail) = self.0.split_at_checked(n).ok_or("truncated ClientHello")?;
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The `server_name` of a ClientHello body (RFC 8446 4.1.2, RFC 6066 3).
fn client_hello_sni(body: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader(body);
    let version = r.take(2)?;
    if version[0] != 3 {
        return Err("not a TLS ClientHello version");
    }
    r.take(32)?; // random
    if r.vec8()?.len() > 32 {
        return Err("session id too long");
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("bad cipher suite list");
    }
    r.vec8()?; // compression methods
    if r.0.is_empty() {
        return Ok(None); // no extensions at all
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind == 0 {
            return server_name(data).map(Some);
        }
    }
    Ok(None)
}

/// The host name in a `server_name` extension's data.
fn server_name(data: &[u8]) -> Result<String, &'static str> {
    let mut list = Reader(Reader(data).vec16()?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind != 0 {
            continue;
        }
        let name = name.strip_suffix(b".").unwrap_or(name);
        // Labels of letters, digits, `-` and `_`, none empty (so no leading
        // dot, no `..`, and at most the one trailing dot stripped above).
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split(|&b| b == b'.').all(|label| {
                !label.is_empty()
                    && label
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            });
        if !ok {
            return Err("bad server name");
        }
        return Ok(String::from_utf8_lossy(name).to_ascii_lowercase());
    }
    Err("server_name without a host name")
}

/// Decrements the active-connection gauge however the connection ends.
struct ActiveGuard<'a>(&'a WorkerCounters);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active_connections.dec();
    }
}

/// A random number for the weighted backend choice: splitmix64 of the
/// client port and the clock (no shared state).
fn roll(peer: SocketAddr) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos ^ u64::from(peer.port()).rotate_left(48) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl HttpProxy {
    /// Serves one connection on the passthrough port bound at `port`.
    pub(crate) async fn serve_passthrough(&self, conn: Accepted, port: SocketAddr, drain: Drain) {
        let counters = self.counters();
        counters.accepted_connections.inc();
        counters.active_connections.inc();
        let _guard = ActiveGuard(counters);
        let Accepted {
            stream: mut client,
            peer,
            ..
        } = conn;
        let (hello, sni) = match self.read_hello(&mut client, drain).await {
            Ok(Some(got)) => got,
            Ok(None) => return,
            Err(why) => {
                counters.tls_handshake_errors.inc();
                tracing::debug!(%peer, %port, reason = why, "TLS passthrough: no usable ClientHello");
                return;
            }
        };
        let Some((mut upstream, inflight)) = self.connect_route(port, peer, &sni).await else {
            counters.l4_unserved.inc();
            return;
        };
        if let Err(e) = upstream.write_all(&hello).await {
            counters.upstream_errors.inc();
            tracing::debug!(%peer, endpoint = %inflight.addr(), error = %e, "TLS passthrough: ClientHello write failed");
            return;
        }
        drop(hello);
        counters.l4_connections.inc();
        // Once relaying, the connection runs to its end even when draining.
        match relay(
            &mut client,
            &mut upstream,
            self.settings().tunnel_idle_timeout,
        )
        .await
        {
            Ok(_) => {}
            Err(RelayEnd::Idle(_)) => {
                tracing::debug!(%peer, %sni, "TLS passthrough: idle timeout");
            }
            Err(RelayEnd::Error(e, _)) => {
                tracing::debug!(%peer, %sni, error = %e, "TLS passthrough: relay ended");
            }
        }
        drop(inflight);
    }

    /// Reads until the bytes hold a complete ClientHello, within the header
    /// read timeout: (every byte read, the SNI). `Ok(None)`: the client
    /// left, or draining began.
    async fn read_hello(
        &self,
        client: &mut Stream,
        mut drain: Drain,
    ) -> Result<Option<(BytesMut, String)>, &'static str> {
        let deadline = Instant::now() + self.settings().header_read_timeout;
        let mut buf = BytesMut::with_capacity(READ_STEP);
        loop {
            if drain.is_draining() {
                return Ok(None);
            }
            let room = MAX_BUFFER.saturating_sub(buf.len());
            buf.reserve(READ_STEP.min(room));
            let mut limited = (&mut buf).limit(room);
            let read = tokio::select! {
                biased;
                _ = drain.wait() => return Ok(None),
                r = tokio::time::timeout_at(deadline, client.read_buf(&mut limited)) => r,
            };
            match read {
                Err(_) => return Err("ClientHello timed out"),
                Ok(Ok(0)) if buf.is_empty() => return Ok(None),
                Ok(Ok(0)) => return Err("client closed inside the ClientHello"),
                Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
            match parse_client_hello(&buf) {
                Hello::Partial => {}
                Hello::Complete(Some(sni)) => return Ok(Some((buf, sni))),
                Hello::Complete(None) => return Err("ClientHello without SNI"),
                Hello::Invalid(why) => return Err(why),
            }
        }
    }

    /// Routes server name `sni` on `port` to an endpoint and connects to it,
    /// moving on to other endpoints when connecting fails. `None` (logged):
    /// nothing to connect to.
    async fn connect_route(
        &self,
        port: SocketAddr,
        peer: SocketAddr,
        sni: &str,
    ) -> Option<(Stream, crate::balance::InFlight<'_>)> {
        let snapshot = self.snapshot.current();
        let snap = &snapshot.value;
        let unserved = |why: &str| tracing::debug!(%peer, %port, %sni, reason = why, "TLS passthrough: connection closed");
        let Some(listener) = snap.gateway.ports.get(&port).and_then(|p| p.listener(sni)) else {
            unserved("no listener");
            return None;
        };
        let Some(route) = listener
            .sni_routes
            .iter()
            .find(|r| r.hostnames.is_empty() || r.hostnames.iter().any(|h| h.matches(sni)))
        else {
            unserved("no TLSRoute");
            return None;
        };
        let action = snap.gateway.action(route.target);
        let Some(action) = action.filter(|a| a.fixed_status.is_none()) else {
            unserved("no usable rule action");
            return None;
        };
        let id = match action.choose(roll(peer)).map(|b| b.backend) {
            Some(Some(id)) => id,
            _ => {
                unserved("invalid or zero-weight backend");
                return None;
            }
        };
        let Some(backend) = snap.backend(id).filter(|b| !b.endpoints.is_empty()) else {
            unserved("no endpoints");
            return None;
        };
        let policy = &backend.policy;
        let key = match policy {
            Policy::Hash(_) => {
                policy.request_key(&peer.ip().to_canonical().to_string(), std::iter::empty())
            }
            _ => None,
        };
        let mut tried: Vec<SocketAddr> = Vec::new();
        while tried.len() < CONNECT_ATTEMPTS {
            let Some(addr) = self
                .balancer
                .pick(id, &backend.endpoints, policy, key, &tried)
            else {
                break;
            };
            match Stream::connect(addr, self.settings().connect_timeout).await {
                Ok(up) => {
                    self.balancer.success(addr);
                    let inflight = self.balancer.start(addr, *policy == Policy::LeastRequest);
                    return Some((up, inflight));
                }
                Err(e) => {
                    self.counters().upstream_errors.inc();
                    self.balancer.failure(addr, &backend.endpoints);
                    tracing::debug!(%peer, %sni, endpoint = %addr, error = %e, "TLS passthrough: connect failed");
                    tried.push(addr);
                }
            }
        }
        unserved("no endpoint could be reached");
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    use super::*;

    /// The bytes a real rustls client sends first for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    /// `hello` (one record) re-framed as records of at most `size` bytes.
    fn reframe(hello: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in hello[RECORD_HEADER..].chunks(size) {
            out.extend_from_slice(&hello[..3]);
            out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            out.extend_from_slice(piece);
        }
        out
    }

    #[test]
    fn sni_of_a_real_client_hello() {
        let hello = client_hello("A.Example.com");
        assert_eq!(
            parse_client_hello(&hello),
            Hello::Complete(Some("a.example.com".into()))
        );
        // What follows the ClientHello does not matter.
        let mut more = hello.clone();
        more.extend_from_slice(&[20, 3, 3, 0, 1, 1, 23, 3, 3]);
        assert_eq!(
            parse_client_hello(&more),
            Hello::Complete(Some("a.example.com".into()))
        );
    }

    #[test]
    fn sni_across_records_and_reads() {
        let hello = client_hello("b.example.com");
        let len = hello.len() - RECORD_HEADER;
        for size in [len / 2 + 1, 100, 7, 1] {
            let split = reframe(&hello, size);
            assert!(split.len() > hello.len(), "{size} makes several records");
            assert_eq!(
                parse_client_hello(&split),
                Hello::Complete(Some("b.example.com".into())),
                "records of {size} bytes"
            );
        }
        // Arriving a few bytes at a time: partial until the last byte.
        let split = reframe(&hello, 300);
        for end in 0..split.len() {
            assert_eq!(
                parse_client_hello(&split[..end]),
                Hello::Partial,
                "prefix {end}"
            );
        }
    }

    /// Found by the `client_hello` fuzz target: a name with empty labels
    /// came out with a trailing dot (`api.ex......` gave `api.ex.....`).
    #[test]
    fn names_with_empty_labels_are_invalid() {
        let hello = client_hello("abc.example.com");
        let at = hello
            .windows(15)
            .position(|w| w == b"abc.example.com")
            .unwrap();
        let with = |name: &[u8; 15]| {
            let mut h = hello.clone();
            h[at..at + 15].copy_from_slice(name);
            parse_client_hello(&h)
        };
        for bad in [b"abc.example....", b".bc.example.com", b"abc..xample.com"] {
            assert!(
                matches!(with(bad), Hello::Invalid(_)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            with(b"abc.example.co."),
            Hello::Complete(Some("abc.example.co".into()))
        );
    }

    #[test]
    fn an_ip_address_name_sends_no_sni() {
        let hello = client_hello("127.0.0.1");
        assert_eq!(parse_client_hello(&hello), Hello::Complete(None));
    }

    #[test]
    fn garbage_and_plain_http_are_invalid() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"\x16\x02\x00\x00\x10",
            b"\x16\x03\x01\x00\x00",
            b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",
            b"\x17",
        ] {
            assert!(
                matches!(parse_client_hello(bad), Hello::Invalid(_)),
                "{bad:?}"
            );
        }
        assert_eq!(parse_client_hello(b""), Hello::Partial);
        assert_eq!(parse_client_hello(b"\x16\x03"), Hello::Partial);
    }

    #[test]
    fn truncated_lengths_inside_a_complete_message_are_invalid() {
        let hello = client_hello("a.example.com");
        // Shrink the handshake length so the body ends early: each cut must
        // give a complete-but-malformed or SNI-less hello, never a panic.
        let body = hello.len() - RECORD_HEADER - 4;
        for cut in 0..body {
            let mut h = hello[..RECORD_HEADER + 4 + cut].to_vec();
            h[3..5].copy_from_slice(&((4 + cut) as u16).to_be_bytes());
            h[6..9].copy_from_slice(&(cut as u32).to_be_bytes()[1..]);
            let got = parse_client_hello(&h);
            assert!(
                matches!(got, Hello::Invalid(_) | Hello::Complete(None)),
                "cut {cut}: {got:?}"
            );
        }
        // Flipping any byte never panics.
        for i in 0..hello.len() {
            let mut h = hello.clone();
            h[i] ^= 0xff;
            let _ = parse_client_hello(&h);
        }
    }

    #[test]
    fn oversized_hellos_are_invalid() {
        // A handshake header announcing more than the limit.
        let big = [22, 3, 1, 0, 4, 1, 0x01, 0x00, 0x00];
        assert_eq!(
            parse_client_hello(&big),
            Hello::Invalid("ClientHello too large")
        );
        // Many tiny records never completing the message.
        let mut many = Vec::new();
        let mut first = vec![22, 3, 1, 0, 4, 1, 0x00, 0x40, 0x00];
        many.append(&mut first);
        while many.len() < MAX_BUFFER {
            many.extend_from_slice(&[22, 3, 1, 0, 1, 0]);
        }
        assert_eq!(
            parse_client_hello(&many),
            Hello::Invalid("ClientHello too large")
        );
        // A record longer than TLS allows.
        assert!(matches!(
            parse_client_hello(&[22, 3, 1, 0x40, 0x01, 1]),
            Hello::Invalid(_)
        ));
    }
}
