//! HTTP/2 peers that hold a connection: one that stops reading, one that
//! never opens its flow-control window, one that never acknowledges the
//! closing PING after the idle GOAWAY, one that drips its request body.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::h2frames::{
    ACK, GOAWAY, PING, RST_STREAM, SETTINGS, frame, get, handshake, read_frame, send,
};
use super::{Backend, Mode, manifests, refs, tiny_window_client, wait_closed};
use crate::support::Lb;

#[test]
fn h2_client_that_stops_reading_is_closed_and_its_upstream_released() {
    let backend = Backend::start(Mode::Flood);
    let files = manifests(backend.addr);
    let lb = Lb::start_runtime("h2slowread", &refs(&files), "send_timeout = \"2s\"\n", "");
    let mut client = tiny_window_client(lb.http);
    let mut out = handshake(true);
    out.extend(get("/big"));
    send(&mut client, &out);
    let asked = Instant::now();
    let ended = backend
        .wait_ended(Duration::from_secs(20))
        .expect("the backend connection stayed open 20 s after the h2 client stopped reading");
    let took = ended - asked;
    assert!(
        took < Duration::from_secs(12),
        "upstream released after {took:?}"
    );
    // Still not reading: the connection itself is aborted too (reading now
    // would open the window and let lb flush what h2 still holds).
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        wait_closed(&mut client, Duration::from_secs(10)).is_some(),
        "the h2 connection is still open"
    );
}

#[test]
fn h2_stream_whose_window_stays_shut_is_reset_and_its_upstream_released() {
    let backend = Backend::start(Mode::Flood);
    let files = manifests(backend.addr);
    let lb = Lb::start_runtime("h2window", &refs(&files), "send_timeout = \"2s\"\n", "");
    let mut client = TcpStream::connect(lb.http).unwrap();
    // Default windows (64 KiB), never a WINDOW_UPDATE; everything is read.
    let mut out = handshake(false);
    out.extend(get("/big"));
    send(&mut client, &out);
    let asked = Instant::now();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reset = None;
    while let Some((kind, flags, stream, _)) = read_frame(&mut client) {
        if kind == SETTINGS && flags & ACK == 0 {
            send(&mut client, &frame(SETTINGS, ACK, 0, &[]));
        }
        if (kind == RST_STREAM && stream == 1) || kind == GOAWAY {
            reset = Some(asked.elapsed());
            break;
        }
    }
    let took = reset.expect("stream 1 never reset while its window stayed shut");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(12),
        "reset after {took:?}"
    );
    backend
        .wait_ended(Duration::from_secs(10))
        .expect("the backend connection stayed open after the reset");
}

#[test]
fn h2_client_that_ignores_the_closing_ping_is_closed() {
    let backend = Backend::start(Mode::Sink);
    let files = manifests(backend.addr);
    let lb = Lb::start(
        "h2ping",
        &refs(&files),
        "[http]\nidle_timeout = \"1s\"\n[http2]\ngoaway_timeout = \"1s\"\n",
    );
    let mut client = TcpStream::connect(lb.http).unwrap();
    send(&mut client, &handshake(false));
    let opened = Instant::now();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut goaway, mut pinged) = (false, false);
    // SETTINGS are acknowledged; PINGs never are.
    while let Some((kind, flags, _, _)) = read_frame(&mut client) {
        match kind {
            SETTINGS if flags & ACK == 0 => send(&mut client, &frame(SETTINGS, ACK, 0, &[])),
            GOAWAY => goaway = true,
            PING => pinged = true,
            _ => {}
        }
    }
    let took = opened.elapsed();
    assert!(goaway && pinged, "GOAWAY {goaway}, PING {pinged}");
    assert!(
        took < Duration::from_secs(8),
        "the connection ended only after {took:?} (idle 1 s, goaway_timeout 1 s)"
    );
}

#[test]
fn h2_dripped_request_body_gets_408_and_its_upstream_released() {
    let backend = Backend::start(Mode::Sink);
    let files = manifests(backend.addr);
    let lb = Lb::start(
        "h2slowbody",
        &refs(&files),
        "[http]\nbody_timeout = \"1s\"\nbody_min_rate = 1024\n",
    );
    let rt = crate::h2::runtime();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(lb.http).await.unwrap();
        let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::post("http://bounds.test/upload")
            .header("content-length", "1000")
            .body(())
            .unwrap();
        let (resp, mut body) = h2.send_request(req, false).unwrap();
        let started = Instant::now();
        let drip = tokio::spawn(async move {
            for _ in 0..60 {
                if body.send_data(Bytes::from_static(b"x"), false).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let resp = tokio::time::timeout(Duration::from_secs(15), resp)
            .await
            .expect("no response within 15 s to a dripped h2 body")
            .expect("a response, not a reset");
        assert_eq!(resp.status(), 408);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(8), "408 only after {took:?}");
        drip.abort();
    });
    backend
        .wait_ended(Duration::from_secs(10))
        .expect("the backend connection stayed open after the 408");
}
