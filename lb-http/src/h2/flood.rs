//! Counting the control frames a client sends that make lb write an
//! acknowledgement and that the h2 crate answers without a bound of its
//! own: PING and SETTINGS (without the ACK flag). (h2 itself bounds DATA
//! frames without data, at 100 per connection, and CONTINUATION frames per
//! header block.) [`FrameMeter`] reads frame headers from the bytes as they
//! arrive (sans-I/O); [`MeteredIo`] feeds it from the connection and wakes
//! the connection task when the client sends more than the limit in a
//! one-second window.

use std::cell::Cell;
use std::io::IoSlice;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

const HEADER: usize = 9;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Skipping the client connection preface (bytes left).
    Preface(usize),
    /// Collecting a frame header (bytes collected so far in `header`).
    Header(usize),
    /// Skipping payload bytes.
    Payload(usize),
}

/// Counts PING and SETTINGS frames per one-second window from the raw bytes a
/// client sends (after the 24-byte connection preface).
#[derive(Debug)]
pub(crate) struct FrameMeter {
    state: State,
    header: [u8; HEADER],
    limit: u32,
    window: Instant,
    count: u32,
    tripped: bool,
}

impl FrameMeter {
    /// A meter for a connection whose bytes start with the preface.
    pub(crate) fn new(limit: u32, now: Instant) -> Self {
        Self {
            state: State::Preface(super::PREFACE.len()),
            header: [0; HEADER],
            limit,
            window: now,
            count: 0,
            tripped: false,
        }
    }

    fn count(&mut self, now: Instant) {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > self.limit {
            self.tripped = true;
        }
    }

    /// Looks at the next bytes the client sent; returns whether the meter
    /// tripped with them.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], now: Instant) -> bool {
        let before = self.tripped;
        while !bytes.is_empty() {
            match self.state {
                State::Preface(left) | State::Payload(left) => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    self.state = if left == n {
                        State::Header(0)
                    } else if matches!(self.state, State::Preface(_)) {
                        State::Preface(left - n)
                    } else {
                        State::Payload(left - n)
                    };
                }
                State::Header(have) => {
                    let n = (HEADER - have).min(bytes.len());
                    self.header[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.state = if have + n == HEADER {
                        self.frame(now)
                    } else {
                        State::Header(have + n)
                    };
                }
            }
        }
        self.tripped && !before
    }

    /// Judges the frame whose header was just read; the state for its payload.
    fn frame(&mut self, now: Instant) -> State {
        let h = &self.header;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        if matches!(kind, PING | SETTINGS) && flags & ACK == 0 {
            self.count(now);
        }
        if len == 0 {
            State::Header(0)
        } else {
            State::Payload(len)
        }
    }
}

/// A connection whose incoming bytes go through a [`FrameMeter`]; when it
/// trips, `tripped` is notified (once).
pub(crate) struct MeteredIo<IO> {
    io: IO,
    meter: FrameMeter,
    tripped: Rc<Notify>,
    seen: Rc<Cell<bool>>,
}

impl<IO> MeteredIo<IO> {
    /// Wraps `io`; `tripped` is notified when the client floods.
    pub(crate) fn new(io: IO, limit: u32, tripped: Rc<Notify>) -> Self {
        Self {
            io,
            meter: FrameMeter::new(limit, Instant::now()),
            tripped,
            seen: Rc::new(Cell::new(false)),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for MeteredIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let start = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && this.meter.feed(&buf.filled()[start..], Instant::now())
            && !this.seen.replace(true)
        {
            this.tripped.notify_one();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for MeteredIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn meter(limit: u32) -> (FrameMeter, Instant) {
        let now = Instant::now();
        let mut m = FrameMeter::new(limit, now);
        assert!(!m.feed(super::super::PREFACE, now));
        (m, now)
    }

    #[test]
    fn counts_pings_and_settings_not_acks_or_other_frames() {
        let (mut m, now) = meter(2);
        let mut bytes = Vec::new();
        bytes.extend(frame(PING, ACK, &[0; 8]));
        bytes.extend(frame(SETTINGS, ACK, &[]));
        bytes.extend(frame(0x0, 0, b"hello"));
        bytes.extend(frame(0x0, 0, &[]));
        bytes.extend(frame(0x9, 0, &[]));
        bytes.extend(frame(PING, 0, &[0; 8]));
        bytes.extend(frame(SETTINGS, 0, &[0, 3, 0, 0, 0, 100]));
        assert!(!m.feed(&bytes, now), "two counted frames are within 2");
        assert!(m.feed(&frame(PING, 0, &[1; 8]), now));
        assert!(m.tripped);
        assert!(!m.feed(&frame(PING, 0, &[0; 8]), now), "trips once");
    }

    #[test]
    fn frames_split_across_reads_and_windows() {
        let (mut m, now) = meter(2);
        let bytes: Vec<u8> = (0..3).flat_map(|_| frame(PING, 0, &[7; 8])).collect();
        let split = 2 * (HEADER + 8) + HEADER - 1;
        for b in &bytes[..split] {
            assert!(!m.feed(std::slice::from_ref(b), now));
        }
        let later = now + Duration::from_secs(1);
        assert!(!m.feed(&bytes[split..], later), "a new window");
        assert!(!m.feed(&frame(PING, 0, &[0; 8]), later));
        assert!(m.feed(&frame(PING, 0, &[0; 8]), later));
    }
}
