//! HTTP/1.1 and WebSocket peers that are too slow: a client that stops
//! reading a large response (send deadline), a client that drips its
//! request body (body budget, 408), an upgraded connection left idle
//! (tunnel idle deadline).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::{
    Backend, Mode, fd_count, manifests, refs, tiny_window_client, wait_closed, wait_fds_at_most,
};
use crate::support::Lb;

#[test]
fn a_client_that_stops_reading_is_closed_after_send_timeout_and_its_upstream_released() {
    let backend = Backend::start(Mode::Flood);
    let files = manifests(backend.addr);
    let lb = Lb::start_runtime("slowread", &refs(&files), "send_timeout = \"2s\"\n", "");
    let fds_before = settled_fd_count(lb.pid());
    let mut client = tiny_window_client(lb.http);
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: bounds.test\r\n\r\n")
        .unwrap();
    let asked = Instant::now();
    // The client never reads: its window closes within milliseconds.
    let ended = backend
        .wait_ended(Duration::from_secs(20))
        .expect("the backend connection stayed open 20 s after the client stopped reading");
    let took = ended - asked;
    assert!(
        took < Duration::from_secs(12),
        "upstream released only after {took:?}"
    );
    // lb aborted the client's connection: what the client reads ends in a reset.
    assert!(
        wait_closed(&mut client, Duration::from_secs(10)).is_some(),
        "the client connection is still open"
    );
    let fds = wait_fds_at_most(lb.pid(), fds_before, Duration::from_secs(10));
    assert!(
        fds <= fds_before,
        "lb holds {fds} descriptors, {fds_before} before the slow reader"
    );
}

#[test]
fn a_dripped_request_body_gets_408_and_its_upstream_released() {
    let backend = Backend::start(Mode::Sink);
    let files = manifests(backend.addr);
    let lb = Lb::start(
        "slowbody",
        &refs(&files),
        "[http]\nbody_timeout = \"1s\"\nbody_min_rate = 1024\n",
    );
    let mut client = std::net::TcpStream::connect(lb.http).unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: bounds.test\r\nContent-Length: 1000\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut dripper = client.try_clone().unwrap();
    // One byte every 300 ms: each read is far within http.idle_timeout (60 s).
    let drip = std::thread::spawn(move || {
        for _ in 0..60 {
            if dripper.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    client
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut head = [0u8; 12];
    client
        .read_exact(&mut head)
        .expect("no response within 15 s to a dripped body");
    assert_eq!(&head, b"HTTP/1.1 408");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "408 only after {took:?}");
    backend
        .wait_ended(Duration::from_secs(10))
        .expect("the backend connection stayed open after the 408");
    drop(client);
    let _ = drip.join();
}

#[test]
fn an_idle_websocket_is_closed_after_tunnel_idle_timeout() {
    let ws_backend = crate::websocket::ws_server("idle");
    let mut files = manifests(ws_backend);
    // crate::websocket::connect asks for host ws.test.
    files[1].1 = files[1].1.replace("bounds.test", "ws.test");
    let lb = Lb::start(
        "wsidle",
        &refs(&files),
        "[http]\ntunnel_idle_timeout = \"1s\"\n",
    );
    let rt = crate::h2::runtime();
    rt.block_on(async {
        let mut ws = crate::websocket::connect(lb.http).await;
        // Traffic within the idle timeout keeps the tunnel open.
        for i in 0..3 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let q = format!("q{i}");
            assert_eq!(
                crate::websocket::ask(&mut ws, &q).await,
                format!("idle:{q}")
            );
        }
        let quiet = Instant::now();
        let end = tokio::time::timeout(Duration::from_secs(15), ws.next()).await;
        assert!(end.is_ok(), "the idle WebSocket was still open after 15 s");
        let took = quiet.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(8),
            "closed after {took:?} of silence"
        );
    });
}

/// Opens a WebSocket through lb from a client with a tiny receive window,
/// has the backend echo 8 MiB that the client never reads (lb's send to it
/// stays pending) and lets the tunnel go idle with that send pending; lb
/// must release every descriptor of it within `limit`.
fn abandoned_tunnel_releases_descriptors(tag: &str, send_timeout: &str, limit: Duration) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let ws_backend = crate::websocket::ws_server("big");
    let mut files = manifests(ws_backend);
    files[1].1 = files[1].1.replace("bounds.test", "ws.test");
    let lb = Lb::start_runtime(
        tag,
        &refs(&files),
        &format!("send_timeout = \"{send_timeout}\"\n"),
        "[http]\ntunnel_idle_timeout = \"1s\"\n",
    );
    let pid = lb.pid();
    let fds_before = settled_fd_count(pid);
    let rt = crate::h2::runtime();
    let client = rt.block_on(async {
        let s = tiny_window_client(lb.http);
        s.set_nonblocking(true).unwrap();
        let tcp = tokio::net::TcpStream::from_std(s).unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.test/chat", tcp)
            .await
            .expect("WebSocket handshake through lb");
        assert_eq!(resp.status(), 101);
        ws.send(Message::text("y".repeat(8 << 20))).await.unwrap();
        ws
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        fd_count(pid) > fds_before,
        "the tunnel holds no descriptors"
    );
    let fds = wait_fds_at_most(pid, fds_before, limit);
    assert!(
        fds <= fds_before,
        "lb holds {fds} descriptors {limit:?} after the tunnel was abandoned, {fds_before} before"
    );
    drop(client);
}

/// The fewest descriptors `pid` holds over half a second (transient ones,
/// such as the readiness probe's admin connection, have gone).
fn settled_fd_count(pid: u32) -> usize {
    (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            fd_count(pid)
        })
        .min()
        .unwrap_or(0)
}

#[test]
fn a_tunnel_abandoned_with_a_send_pending_to_a_zero_window_peer_releases_its_descriptors() {
    abandoned_tunnel_releases_descriptors("wsabandon", "2s", Duration::from_secs(12));
}

/// With no send deadline configured, a ring stream dropped with a send in
/// flight still gets one (30 s) so its descriptor cannot stay forever; on
/// epoll the kernel owns the orphaned socket and the descriptor goes at once.
#[test]
fn without_a_send_deadline_an_abandoned_pending_send_still_ends() {
    abandoned_tunnel_releases_descriptors("wsabandon0", "0", Duration::from_secs(45));
}

/// lb's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn an_early_response_is_buffered_only_a_little_while_the_request_body_is_pending() {
    // The backend answers at once with a huge body while the client has
    // sent one byte of its request body and then waits.
    let backend = Backend::start(Mode::Flood);
    let files = manifests(backend.addr);
    let lb = Lb::start_runtime("earlyresp", &refs(&files), "workers = 1\n", "");
    let pid = lb.pid();
    let before = rss_kib(pid);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let mut c = tiny_window_client(lb.http);
            c.write_all(
                b"POST /up HTTP/1.1\r\nHost: bounds.test\r\nContent-Length: 1000000\r\n\r\nx",
            )
            .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "lb grew by {grown} KiB holding 8 early responses"
    );
    drop(clients);
}
