//! Connections accepted on Gateway API listeners, and the Gateway routing
//! shared by the HTTP/1.1 and HTTP/2 paths: the port's protocol decides
//! whether a connection is served as cleartext HTTP, terminated HTTPS or
//! passed through by SNI; a request is routed through its port's Listener
//! table to a rule action (answer, redirect, or a weighted backend with
//! filters, mirrors and timeouts). Request mirrors are fire-and-forget
//! tasks on the worker's `LocalSet`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use lb_core::runtime::{Accepted, Drain};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::{ActiveGuard, HttpProxy};
use crate::error::{Error, ErrorKind, Side};
use crate::gateway::{
    Field, HeaderModifier, HeaderSource, Mirror, PortProtocol, RedirectFrom, RouteEntry,
    RuleAction, WeightedBackend, modify_fields, modify_map, redirect_location, rewrite_path,
    split_target,
};
use crate::h1::head::{RequestHead, ResponseHead};
use crate::snapshot::{ApplianceSnapshot, BackendId, UpstreamProtocol};
use crate::upstream::UpstreamConn;

/// Most response bytes a mirror reads (and discards) before closing.
const MIRROR_READ_LIMIT: usize = 64 * 1024;

impl HttpProxy {
    /// Serves a connection accepted on a Gateway listener (the port is found
    /// by the connection's local address in the current snapshot): HTTP
    /// ports as cleartext HTTP/1.1 or HTTP/2, HTTPS ports after a TLS
    /// handshake with the port's certificates, TLS ports by passthrough. A
    /// port no longer configured closes the connection.
    pub async fn serve_gateway(self: Rc<Self>, conn: Accepted, drain: Drain) {
        let snapshot = self.snapshot.current();
        let Some((key, port)) = snapshot.value.gateway.port(conn.local) else {
            tracing::debug!(local = %conn.local, "no Gateway port here any more, closing");
            return;
        };
        if !lb_core::l4::source_allowed(port.source_ranges.as_ref(), conn.peer.ip()) {
            // Outside the Gateway's source ranges: closed at once.
            self.counters().gateway_source_refused.inc();
            return;
        }
        let protocol = port.protocol;
        drop(snapshot);
        match protocol {
            PortProtocol::Http => {
                let counters = self.counters();
                counters.accepted_connections.inc();
                counters.active_connections.inc();
                let _guard = ActiveGuard(counters);
                let stream = crate::downstream::DownIo::Plain(conn.stream);
                self.serve_http1(stream, conn.peer, Instant::now(), drain, Some(key))
                    .await;
            }
            PortProtocol::Https => self.serve_tls_on(conn, drain, Some(key)).await,
            PortProtocol::TlsPassthrough => self.serve_passthrough(conn, key, drain).await,
        }
    }

    /// A uniformly distributed number from the worker's xorshift generator
    /// (for weighted backend choice; not cryptographic).
    pub(crate) fn roll(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Sends `request` (an HTTP/1.1 request head with any body) to one
    /// endpoint of each of `mirrors`, on tasks of their own: the response is
    /// read and discarded, failures are only logged, and nothing waits for
    /// them. Backends without endpoints or speaking h2c are skipped. With
    /// `max_mirrors_in_flight` mirrors of this worker still running, a new
    /// one is dropped and counted instead.
    pub(crate) fn mirror(
        &self,
        snap: &ApplianceSnapshot,
        mirrors: &[Mirror],
        request: &[u8],
        client_ip: &str,
    ) {
        let mut bytes: Option<Bytes> = None;
        for m in mirrors {
            if !m.takes(self.roll()) {
                continue;
            }
            let id = m.backend;
            let Some(b) = snap.backend(id) else { continue };
            if b.protocol != UpstreamProtocol::Http1 || b.endpoints.is_empty() {
                continue;
            }
            let key = b.policy.request_key(client_ip, std::iter::empty());
            let Some(addr) = self.balancer.pick(id, &b.endpoints, &b.policy, key, &[]) else {
                continue;
            };
            let bytes = bytes
                .get_or_insert_with(|| Bytes::copy_from_slice(request))
                .clone();
            let s = self.settings();
            let in_flight = Rc::clone(&self.mirrors_in_flight);
            if in_flight.get() >= s.max_mirrors_in_flight {
                self.counters().mirrors_dropped.inc();
                continue;
            }
            in_flight.set(in_flight.get() + 1);
            let (connect, response) = (s.connect_timeout, s.response_timeout);
            tokio::task::spawn_local(async move {
                mirror_once(addr, bytes, connect, response).await;
                in_flight.set(in_flight.get() - 1);
            });
        }
    }
}

/// One mirrored request: connect, send, read until the response head is in
/// (or the peer closes, or the limits run out), close.
async fn mirror_once(addr: SocketAddr, request: Bytes, connect: Duration, response: Duration) {
    let mut up = match UpstreamConn::connect(addr, connect).await {
        Ok(up) => up,
        Err(e) => {
            tracing::debug!(%addr, error = %e, "mirror connect failed");
            return;
        }
    };
    let exchange = async {
        up.stream.write_all(&request).await?;
        let mut buf = Vec::with_capacity(1024);
        let mut scratch = [0u8; 4096];
        while buf.len() < MIRROR_READ_LIMIT {
            let n = up.stream.read(&mut scratch).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&scratch[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(response, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "mirror exchange failed"),
        Err(_) => tracing::debug!(%addr, "mirror response timed out"),
    }
}

/// The request facts Gateway routing reads.
pub(crate) struct GwRequest<'a, H: ?Sized> {
    /// Normalised host (lowercase, no port).
    pub host: &'a str,
    /// Origin-form request target (path and query).
    pub target: &'a str,
    /// The method.
    pub method: &'a [u8],
    /// The header fields.
    pub headers: &'a H,
    /// Whether the request arrived over TLS.
    pub tls: bool,
    /// The TLS server name (lowercase), if the client sent one.
    pub sni: Option<&'a str>,
}

/// What Gateway routing decided for a request.
pub(crate) enum GwStep<'s> {
    /// Forward to a backend.
    Forward(GwRoute<'s>),
    /// lb answers with this status itself.
    Answer(u16),
    /// lb answers with a redirect.
    Redirect {
        /// 301, 302, ...
        status: u16,
        /// The `Location` value.
        location: String,
    },
}

/// A Gateway request going to a backend: the matched entry, its rule's
/// action and the weighted backend chosen.
pub(crate) struct GwRoute<'s> {
    pub entry: &'s RouteEntry,
    pub action: &'s RuleAction,
    pub choice: &'s WeightedBackend,
    pub backend: BackendId,
}

/// Routes a request on Gateway port `port_key` of `snap`; `roll` is a
/// random number for the weighted backend choice. No Listener or no
/// matching route: [`ErrorKind::NoRoute`].
pub(crate) fn route_gateway<'s, H: HeaderSource + ?Sized>(
    snap: &'s ApplianceSnapshot,
    port_key: SocketAddr,
    req: &GwRequest<'_, H>,
    roll: u64,
) -> Result<GwStep<'s>, Error> {
    let no_route = || Error::new(ErrorKind::NoRoute, Side::Downstream, "no Gateway route");
    let (_, port) = snap.gateway.port(port_key).ok_or_else(no_route)?;
    // On an HTTPS port the TLS server name picks the Listener, as it picked
    // the certificate; Host then selects among that Listener's routes.
    let listener = port
        .listener(req.sni.unwrap_or(req.host))
        .ok_or_else(no_route)?;
    let (path, query) = split_target(req.target);
    let entry = listener
        .routes
        .lookup(req.host, path, req.method, req.headers, query)
        .ok_or_else(no_route)?;
    let Some(action) = snap.gateway.action(entry.target) else {
        return Ok(GwStep::Answer(500));
    };
    if let Some(status) = action.fixed_status {
        return Ok(GwStep::Answer(status));
    }
    if let Some(r) = &action.redirect {
        let from = RedirectFrom {
            tls: req.tls,
            host: req.host,
            listener_port: port_key.port(),
            path,
            query,
        };
        let location = redirect_location(r, entry.rule_match.path(), &from);
        return Ok(GwStep::Redirect {
            status: r.status,
            location,
        });
    }
    let Some(choice) = action.choose(roll) else {
        return Ok(GwStep::Answer(500));
    };
    let Some(backend) = choice.backend else {
        return Ok(GwStep::Answer(500));
    };
    Ok(GwStep::Forward(GwRoute {
        entry,
        action,
        choice,
        backend,
    }))
}

impl<'s> GwRoute<'s> {
    fn request_mods(&self) -> [&'s HeaderModifier; 2] {
        [&self.action.request_headers, &self.choice.request_headers]
    }

    fn response_mods(&self) -> [&'s HeaderModifier; 2] {
        [&self.action.response_headers, &self.choice.response_headers]
    }

    /// The rewritten `Host`, if a `URLRewrite` sets one.
    pub fn host_rewrite(&self) -> Option<&'s str> {
        self.action.rewrite.as_ref()?.hostname.as_deref()
    }

    /// Whether the request's header fields change (filters or Host rewrite).
    pub fn changes_request_fields(&self) -> bool {
        self.request_mods().iter().any(|m| !m.is_empty()) || self.host_rewrite().is_some()
    }

    /// Whether the response's header fields change.
    pub fn changes_response_fields(&self) -> bool {
        self.response_mods().iter().any(|m| !m.is_empty())
    }

    /// The request fields sent upstream: `fields` after the rule's and the
    /// backend's request header modifiers and the Host rewrite.
    pub fn request_fields<'a>(&self, fields: impl Iterator<Item = Field<'a>>) -> Vec<Field<'a>>
    where
        's: 'a,
    {
        let mut out: Vec<Field<'a>> = fields.collect();
        for m in self.request_mods() {
            modify_fields(m, &mut out);
        }
        if let Some(host) = self.host_rewrite() {
            match out
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(b"host"))
            {
                Some(i) => {
                    out[i].1 = host.as_bytes();
                    let mut k = 0;
                    out.retain(|(n, _)| {
                        k += 1;
                        k - 1 <= i || !n.eq_ignore_ascii_case(b"host")
                    });
                }
                None => out.insert(0, (b"Host", host.as_bytes())),
            }
        }
        out
    }

    /// The response fields sent downstream for upstream response `head`.
    pub fn response_fields<'a>(&self, head: &'a ResponseHead) -> Vec<Field<'a>>
    where
        's: 'a,
    {
        let mut out: Vec<Field<'a>> = head.headers().collect();
        for m in self.response_mods() {
            modify_fields(m, &mut out);
        }
        out
    }

    /// Applies the request header modifiers to an HTTP/2 header map (the
    /// Host rewrite goes into `:authority`, see [`Self::host_rewrite`]).
    pub fn modify_request_map(&self, map: &mut HeaderMap) {
        for m in self.request_mods() {
            modify_map(m, map);
        }
    }

    /// Applies the response header modifiers to an HTTP/2 header map.
    pub fn modify_response_map(&self, map: &mut HeaderMap) {
        for m in self.response_mods() {
            modify_map(m, map);
        }
    }

    /// The request-target sent upstream when a `URLRewrite` changes the
    /// path (query kept); `None` keeps the request's. `target` is the
    /// origin-form target.
    pub fn upstream_target(&self, target: &str) -> Option<String> {
        let modifier = self.action.rewrite.as_ref()?.path.as_ref()?;
        let (path, query) = split_target(target);
        let mut out = String::with_capacity(target.len() + 16);
        rewrite_path(modifier, self.entry.rule_match.path(), path, &mut out);
        if !query.is_empty() {
            out.push('?');
            out.push_str(query);
        }
        Some(out)
    }

    /// When the whole exchange must have its response head, for a request
    /// that started at `started` (`timeouts.request`).
    pub fn request_deadline(&self, started: Instant) -> Option<Instant> {
        self.action.request_timeout.map(|t| started + t)
    }

    /// When one upstream attempt starting now must have its response head:
    /// `timeouts.backendRequest`, bounded by `request_deadline`.
    pub fn attempt_deadline(&self, request_deadline: Option<Instant>) -> Option<Instant> {
        let attempt = self.action.backend_timeout.map(|t| Instant::now() + t);
        match (attempt, request_deadline) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }
}

/// An HTTP/1.1 request head as a [`HeaderSource`] for route matching.
pub(crate) struct H1Headers<'a>(pub &'a RequestHead);

impl HeaderSource for H1Headers<'_> {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.0
            .headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
}

/// Runs `fut` until `deadline` (when there is one); expiry is an upstream
/// [`ErrorKind::Timeout`] (504).
pub(crate) async fn until<T>(
    deadline: Option<Instant>,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match deadline {
        None => fut.await,
        Some(d) => tokio::time::timeout_at(d, fut).await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Timeout,
                Side::Upstream,
                "Gateway route timeout",
            ))
        }),
    }
}

/// The first state of a worker's random generator: distinct per worker and
/// per start, never zero.
pub(super) fn rng_seed(worker: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (worker as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1
}

/// Encodes a Gateway `RequestRedirect` answer: `status` with `Location`
/// and an empty body.
pub(super) fn encode_redirect_response(
    status: u16,
    location: &str,
    close: bool,
    out: &mut BytesMut,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    crate::h1::rewrite::put_u64(out, u64::from(status));
    out.extend_from_slice(b" ");
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Redirect");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\nLocation: ");
    out.extend_from_slice(location.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: 0\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{
        GatewayListener, GatewayPort, GatewayRouteTable, HostnameMatch, PathMatch, RouteMatch,
        RouteRef, TargetId,
    };
    use crate::tls::CertIndex;

    /// An HTTPS port with a Listener for `second.test` (action 0) and one
    /// without hostname (action 1), each with a catch-all route.
    fn https_port(key: SocketAddr) -> ApplianceSnapshot {
        let listener = |host: Option<&str>, target: u32| GatewayListener {
            name: format!("ns/gw/l{target}"),
            hostname: host.map(|h| HostnameMatch::parse(h).unwrap()),
            routes: GatewayRouteTable::build(vec![RouteEntry {
                hostnames: Vec::new(),
                rule_match: RouteMatch::new(
                    PathMatch::PathPrefix("/".into()),
                    None,
                    Vec::new(),
                    Vec::new(),
                ),
                route: RouteRef {
                    namespace: "ns".into(),
                    name: format!("r{target}"),
                    rule_index: 0,
                    match_index: 0,
                    created: 0,
                },
                target: TargetId(target),
            }]),
            sni_routes: Vec::new(),
        };
        let mut snap = ApplianceSnapshot::default();
        snap.gateway.ports.insert(
            key,
            GatewayPort {
                protocol: PortProtocol::Https,
                tls: CertIndex::default(),
                listeners: vec![listener(Some("second.test"), 0), listener(None, 1)],
                source_ranges: None,
            },
        );
        snap.gateway.actions = vec![
            RuleAction {
                fixed_status: Some(200),
                ..Default::default()
            },
            RuleAction {
                fixed_status: Some(201),
                ..Default::default()
            },
        ];
        snap
    }

    /// The fixed status of the rule `host` (and `sni`) reaches.
    fn status(snap: &ApplianceSnapshot, key: SocketAddr, host: &str, sni: Option<&str>) -> u16 {
        let headers: &[(&str, &[u8])] = &[];
        let req = GwRequest {
            host,
            target: "/",
            method: b"GET",
            headers,
            tls: sni.is_some(),
            sni,
        };
        match route_gateway(snap, key, &req, 0) {
            Ok(GwStep::Answer(s)) => s,
            _ => 0,
        }
    }

    #[test]
    fn the_server_name_picks_the_listener_on_https_ports() {
        let key: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let snap = https_port(key);
        assert_eq!(status(&snap, key, "second.test", Some("second.test")), 200);
        // The SNI selects the hostname-less Listener whatever the Host says.
        assert_eq!(status(&snap, key, "second.test", Some("other.test")), 201);
        assert_eq!(status(&snap, key, "other.test", Some("second.test")), 200);
        // Without SNI the Host decides.
        assert_eq!(status(&snap, key, "second.test", None), 200);
        assert_eq!(status(&snap, key, "other.test", None), 201);
    }
}
