//! I/O pieces of the HTTP/2 proxy: spotting the cleartext preface on a new
//! connection and replaying the bytes already read ([`PrefixedIo`]), writing
//! into an h2 stream within its flow-control window ([`send_all`],
//! [`H2Writer`]), and copying a body with its trailers from one h2 stream
//! to another ([`copy_h2`]).

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use lb_core::runtime::Drain;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::PREFACE;
use super::translate::strip_connection_fields;
use crate::error::{Error, ErrorKind, Side};
use crate::h1::body::BodyClock;

/// Reads the first bytes of a connection into `buf` until they either are
/// the HTTP/2 preface (`true`) or cannot be (`false`). Bytes read stay in
/// `buf`. End of stream, an error, `deadline` or draining while nothing
/// arrived answer `false` and leave the rest to the HTTP/1.1 reader.
pub(crate) async fn sniff_preface<R>(
    io: &mut R,
    buf: &mut BytesMut,
    deadline: Instant,
    drain: &mut Drain,
) -> bool
where
    R: AsyncRead + Unpin,
{
    loop {
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            return false;
        }
        if n == PREFACE.len() {
            return true;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let idle = buf.is_empty();
        if idle && drain.is_draining() {
            return false;
        }
        let read = tokio::select! {
            biased;
            _ = drain.wait(), if idle => return false,
            r = tokio::time::timeout_at(deadline, io.read_buf(buf)) => r,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
}

/// A connection whose first bytes were already read: they are read again
/// before the connection's own.
#[derive(Debug)]
pub(crate) struct PrefixedIo<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> PrefixedIo<IO> {
    /// Replays `prefix`, then reads `io`.
    pub(crate) fn new(prefix: Bytes, io: IO) -> Self {
        Self { prefix, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for PrefixedIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Why sending on an h2 stream failed: an h2 error, or the stream was
/// already closed (`None`).
pub(super) type SendError = Option<h2::Error>;

/// Sends `data` on `dst` piece by piece as flow control grants capacity,
/// so that no more than the window is ever buffered; `eos` ends the stream
/// with the last piece. A window that stays shut for `send_timeout` fails
/// the send (`Err(None)`).
pub(super) async fn send_all(
    dst: &mut SendStream<Bytes>,
    mut data: Bytes,
    eos: bool,
    send_timeout: Duration,
) -> Result<(), SendError> {
    if data.is_empty() {
        return dst.send_data(data, eos).map_err(Some);
    }
    while !data.is_empty() {
        dst.reserve_capacity(data.len());
        let cap = dst.capacity();
        if cap == 0 {
            let granted = tokio::time::timeout(send_timeout, poll_fn(|cx| dst.poll_capacity(cx)));
            match granted.await {
                Err(_) | Ok(None) => return Err(None),
                Ok(Some(Err(e))) => return Err(Some(e)),
                Ok(Some(Ok(_))) => continue,
            }
        }
        let piece = data.split_to(cap.min(data.len()));
        dst.send_data(piece, eos && data.is_empty()).map_err(Some)?;
    }
    Ok(())
}

/// An `AsyncWrite` over an h2 stream that writes only what the stream's
/// flow-control window allows. A window that stays shut for the send
/// timeout fails the write with `TimedOut` (a peer that never sends
/// WINDOW_UPDATE cannot hold the stream). Flush and shutdown do nothing;
/// the caller ends the stream.
pub(super) struct H2Writer<'a> {
    stream: &'a RefCell<SendStream<Bytes>>,
    send_timeout: Duration,
    /// Armed while waiting for capacity.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<'a> H2Writer<'a> {
    /// Writes into `stream`, waiting at most `send_timeout` for capacity.
    pub(super) fn new(stream: &'a RefCell<SendStream<Bytes>>, send_timeout: Duration) -> Self {
        Self {
            stream,
            send_timeout,
            stall: None,
        }
    }
}

impl AsyncWrite for H2Writer<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        let mut s = this.stream.borrow_mut();
        loop {
            s.reserve_capacity(data.len());
            let cap = s.capacity();
            if cap > 0 {
                let n = cap.min(data.len());
                s.send_data(Bytes::copy_from_slice(&data[..n]), false)
                    .map_err(to_io)?;
                this.stall = None;
                return Poll::Ready(Ok(n));
            }
            match s.poll_capacity(cx) {
                Poll::Ready(None) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(to_io(e))),
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Pending => {
                    let timeout = this.send_timeout;
                    let stall = this
                        .stall
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    ready!(stall.as_mut().poll(cx));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "HTTP/2 flow-control window stayed shut",
                    )));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().unwrap_or_else(|| io::ErrorKind::Other.into());
    }
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

/// Whether `e` is the peer resetting the stream (RST_STREAM it sent).
pub(super) fn is_peer_reset(e: &h2::Error) -> bool {
    e.is_reset() && e.is_remote()
}

/// Classifies an h2 error on `side`.
pub(super) fn h2_error(e: &h2::Error, side: Side, detail: &'static str) -> Error {
    let kind = if e.is_io() {
        ErrorKind::Io
    } else {
        ErrorKind::Closed
    };
    Error::new(kind, side, detail)
}

/// A body transfer that failed: the error (its side tells which stream),
/// and whether it was the client resetting its stream.
#[derive(Debug)]
pub(super) struct PumpError {
    pub err: Error,
    pub client_reset: bool,
}

impl PumpError {
    pub(super) fn new(err: Error) -> Self {
        Self {
            err,
            client_reset: false,
        }
    }
}

/// Copies a body and its trailers from `src` (on `src_side`) to `dst`,
/// releasing `src`'s flow-control capacity only once the bytes went out on
/// `dst`. Each read of `src` is bounded by `timeout`; more than `limit`
/// body bytes fail with [`ErrorKind::BodyTooLarge`]; `dst`'s window shut
/// for `send_timeout` fails the copy. With a `clock` (a request body), the
/// time spent waiting for `src` is also bounded by it. Returns the number
/// of body bytes copied. Connection-specific trailer fields are dropped.
pub(super) async fn copy_h2(
    src: &mut RecvStream,
    dst: &mut SendStream<Bytes>,
    src_side: Side,
    timeout: Duration,
    limit: u64,
    send_timeout: Duration,
    mut clock: Option<BodyClock>,
) -> Result<u64, PumpError> {
    let dst_side = match src_side {
        Side::Downstream => Side::Upstream,
        _ => Side::Downstream,
    };
    let src_failed = |e: h2::Error| PumpError {
        err: h2_error(&e, src_side, "HTTP/2 body read failed"),
        client_reset: src_side == Side::Downstream && is_peer_reset(&e),
    };
    let dst_failed = |e: SendError| PumpError {
        err: Error::new(ErrorKind::Closed, dst_side, "HTTP/2 body write failed"),
        client_reset: dst_side == Side::Downstream && e.as_ref().is_none_or(is_peer_reset),
    };
    let timed_out = || {
        PumpError::new(Error::new(
            ErrorKind::Timeout,
            src_side,
            "body read timed out",
        ))
    };
    let mut total = 0u64;
    loop {
        let wait = clock.as_ref().map_or(timeout, |c| c.bound(timeout));
        let started = Instant::now();
        let next = tokio::select! {
            biased;
            r = poll_fn(|cx| dst.poll_reset(cx)) => {
                return Err(dst_failed(r.err()));
            }
            r = tokio::time::timeout(wait, src.data()) => r,
        };
        if let Some(c) = clock.as_mut() {
            let n = match &next {
                Ok(Some(Ok(chunk))) => chunk.len(),
                _ => 0,
            };
            c.record(started.elapsed(), n);
        }
        let chunk = match next {
            Err(_) => return Err(timed_out()),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(src_failed(e)),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let n = chunk.len();
        total += n as u64;
        if total > limit {
            return Err(PumpError::new(Error::new(
                ErrorKind::BodyTooLarge,
                src_side,
                "body exceeds max_body_bytes",
            )));
        }
        let eos = src.is_end_stream();
        send_all(dst, chunk, eos, send_timeout)
            .await
            .map_err(dst_failed)?;
        let _ = src.flow_control().release_capacity(n);
        if eos {
            return Ok(total);
        }
    }
    let trailers = match tokio::time::timeout(timeout, src.trailers()).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(e)) => return Err(src_failed(e)),
        Ok(Ok(t)) => t,
    };
    match trailers {
        Some(mut t) => {
            strip_connection_fields(&mut t);
            dst.send_trailers(t)
        }
        None => dst.send_data(Bytes::new(), true),
    }
    .map_err(|e| dst_failed(Some(e)))?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::runtime::DrainController;
    use tokio::io::AsyncWriteExt;

    async fn sniff(parts: &[&[u8]]) -> (bool, BytesMut) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let (_ctl, mut drain) = DrainController::new();
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for p in parts {
                client.write_all(&p).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let mut buf = BytesMut::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let h2 = sniff_preface(&mut server, &mut buf, deadline, &mut drain).await;
        writer.await.unwrap();
        (h2, buf)
    }

    #[tokio::test]
    async fn spots_the_preface_even_split() {
        let (h2, buf) = sniff(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n\0\0\x12"]).await;
        assert!(h2);
        assert!(buf.starts_with(PREFACE));
        let (h2, buf) = sniff(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]).await;
        assert!(!h2);
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let (h2, buf) = sniff(&[b"PR", b"X"]).await;
        assert!(!h2);
        assert_eq!(&buf[..], b"PRX");
        let (h2, buf) = sniff(&[b"PRI"]).await;
        assert!(!h2, "end of stream before the whole preface");
        assert_eq!(&buf[..], b"PRI");
    }

    #[tokio::test]
    async fn prefixed_io_replays_then_reads() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut io = PrefixedIo::new(Bytes::from_static(b"hello"), server);
        let mut out = Vec::new();
        io.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello world");
    }
}
