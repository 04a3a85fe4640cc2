//! Raw HTTP/2 frames for clients that misbehave on purpose (ignore PING,
//! never read): a client library would answer PINGs and read for us.

use std::io::{Read, Write};
use std::net::TcpStream;

pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const ACK: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;

/// One frame: type, flags, stream id, payload.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block of literal fields without indexing (names and values
/// under 127 bytes, no Huffman coding).
pub(crate) fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Preface and SETTINGS; with `big_windows`, the stream and connection
/// windows are opened to their maximum.
pub(crate) fn handshake(big_windows: bool) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    if big_windows {
        // SETTINGS_INITIAL_WINDOW_SIZE = 2^31 - 1.
        out.extend(frame(SETTINGS, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]));
        out.extend(frame(WINDOW_UPDATE, 0, 0, &0x7fff_0000u32.to_be_bytes()));
    } else {
        out.extend(frame(SETTINGS, 0, 0, &[]));
    }
    out
}

/// A GET for `path` on `bounds.test` as stream 1, ending the stream.
pub(crate) fn get(path: &str) -> Vec<u8> {
    let block = header_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "bounds.test"),
        (":path", path),
    ]);
    frame(HEADERS, END_HEADERS | END_STREAM, 1, &block)
}

/// Reads one frame: (type, flags, stream, payload); `None` at end of
/// stream or on an error (a timeout included).
pub(crate) fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    Some((head[3], head[4], stream, payload))
}

/// Writes `bytes`, panicking on failure.
pub(crate) fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).expect("write frames");
}
