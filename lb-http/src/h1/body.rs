//! Streaming a message body from one connection to another without buffering
//! it whole: Content-Length bodies are copied exactly, chunked bodies are
//! decoded incrementally and re-emitted as chunks (or as raw bytes for an
//! HTTP/1.0 receiver), close-delimited bodies are copied until EOF. A body
//! size limit can be enforced while streaming ([`relay_limited`]).

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::{Chunk, ChunkedDecoder, LAST_CHUNK, encode_chunk_header};
use super::head::BodyKind;
use crate::error::{Error, ErrorKind, Side};

/// Reads are made with at least this much free buffer space.
const READ_CHUNK: usize = 32 * 1024;
/// Re-encoded output is flushed once it reaches this size.
const FLUSH_AT: usize = 64 * 1024;

/// The reading end of a body transfer: a stream, its read buffer (which may
/// already hold the start of the body) and the side it belongs to.
#[derive(Debug)]
pub struct Source<'a, R> {
    /// The stream to read from.
    pub io: &'a mut R,
    /// Read buffer; bytes after the body stay in it.
    pub buf: &'a mut BytesMut,
    /// Which side the stream is.
    pub side: Side,
    /// Bound on each read.
    pub timeout: Duration,
    /// For a request body: the client's time budget for the whole body.
    pub clock: Option<BodyClock>,
}

/// The time budget of a request body: `grace`, plus one second for every
/// `rate` bytes received, spent only while waiting for the client's bytes
/// (time spent writing to a slow upstream is not the client's). A client
/// that drips its body slower than `rate` runs out of budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyClock {
    grace: Duration,
    rate: u64,
    received: u64,
    waited: Duration,
}

impl BodyClock {
    /// A budget of `grace`, extended by `rate` bytes per second (0: never).
    pub fn new(grace: Duration, rate: u64) -> Self {
        Self {
            grace,
            rate,
            received: 0,
            waited: Duration::ZERO,
        }
    }

    /// What is left of the budget.
    pub fn remaining(&self) -> Duration {
        let earned = match self.rate {
            0 => Duration::ZERO,
            r => Duration::from_secs(self.received / r)
                .saturating_add(Duration::from_millis((self.received % r) * 1000 / r)),
        };
        self.grace
            .saturating_add(earned)
            .saturating_sub(self.waited)
    }

    /// The wait allowed for the next read: `per_read` or what is left of
    /// the budget, whichever is shorter.
    pub fn bound(&self, per_read: Duration) -> Duration {
        per_read.min(self.remaining())
    }

    /// Records a wait of `waited` that brought `bytes`.
    pub fn record(&mut self, waited: Duration, bytes: usize) {
        self.waited = self.waited.saturating_add(waited);
        self.received = self.received.saturating_add(bytes as u64);
    }
}

/// The writing end of a body transfer.
#[derive(Debug)]
pub struct Sink<'a, W> {
    /// The stream to write to.
    pub io: &'a mut W,
    /// Scratch buffer for re-encoded output.
    pub buf: &'a mut BytesMut,
    /// Which side the stream is.
    pub side: Side,
    /// Whether a chunked body is re-emitted chunked (else as raw bytes).
    pub chunked: bool,
}

impl<R: AsyncRead + Unpin> Source<'_, R> {
    /// Reads more bytes; end of stream is an error unless `eof_ok`.
    /// Returns the number of bytes read.
    pub async fn fill(&mut self, eof_ok: bool) -> Result<usize, Error> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let wait = self.clock.map_or(self.timeout, |c| c.bound(self.timeout));
        // The clock is read only for a request body (responses have no budget).
        let started = self.clock.map(|_| tokio::time::Instant::now());
        let read = tokio::time::timeout(wait, self.io.read_buf(self.buf)).await;
        if let (Some(c), Some(started)) = (self.clock.as_mut(), started) {
            c.record(
                started.elapsed(),
                *read.as_ref().map_or(&0, |r| r.as_ref().unwrap_or(&0)),
            );
        }
        match read {
            Err(_) if wait < self.timeout => Err(Error::new(
                ErrorKind::Timeout,
                self.side,
                "request body too slow (http.body_timeout)",
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                self.side,
                "body read timed out",
            )),
            Ok(Err(e)) => Err(Error::io(self.side, "body read failed", e)),
            Ok(Ok(0)) if !eof_ok => {
                Err(Error::new(ErrorKind::Closed, self.side, "body ended early"))
            }
            Ok(Ok(n)) => Ok(n),
        }
    }
}

impl<W: AsyncWrite + Unpin> Sink<'_, W> {
    async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.io
            .write_all(data)
            .await
            .map_err(|e| Error::io(self.side, "body write failed", e))
    }

    async fn flush_buf(&mut self) -> Result<(), Error> {
        if !self.buf.is_empty() {
            let res = self.io.write_all(self.buf).await;
            self.buf.clear();
            res.map_err(|e| Error::io(self.side, "body write failed", e))?;
        }
        Ok(())
    }
}

/// Copies a body of kind `kind` from `src` to `dst`. Returns the number of
/// body bytes moved. On error, the error's side tells which stream failed.
pub async fn relay<R, W>(
    kind: BodyKind,
    src: &mut Source<'_, R>,
    dst: &mut Sink<'_, W>,
) -> Result<u64, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    relay_limited(kind, src, dst, u64::MAX).await
}

/// Like [`relay`], but a chunked body whose announced chunk sizes add up to
/// more than `limit` bytes fails with [`ErrorKind::BodyTooLarge`] (on the
/// source's side) before the data of the offending chunk is forwarded.
/// Content-Length bodies are expected to be checked against the limit
/// before the transfer starts; close-delimited ones are not limited.
pub async fn relay_limited<R, W>(
    kind: BodyKind,
    src: &mut Source<'_, R>,
    dst: &mut Sink<'_, W>,
    limit: u64,
) -> Result<u64, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match kind {
        BodyKind::Empty | BodyKind::Length(0) => Ok(0),
        BodyKind::Length(n) => relay_length(n, src, dst).await,
        BodyKind::Chunked => relay_chunked(src, dst, limit).await,
        BodyKind::UntilClose => relay_until_close(src, dst).await,
    }
}

async fn relay_length<R, W>(
    len: u64,
    src: &mut Source<'_, R>,
    dst: &mut Sink<'_, W>,
) -> Result<u64, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut remaining = len;
    loop {
        if !src.buf.is_empty() {
            let take = remaining.min(src.buf.len() as u64) as usize;
            dst.write(&src.buf[..take]).await?;
            src.buf.advance(take);
            remaining -= take as u64;
        }
        if remaining == 0 {
            return Ok(len);
        }
        src.fill(false).await?;
    }
}

async fn relay_until_close<R, W>(
    src: &mut Source<'_, R>,
    dst: &mut Sink<'_, W>,
) -> Result<u64, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    loop {
        if !src.buf.is_empty() {
            dst.write(&src.buf[..]).await?;
            total += src.buf.len() as u64;
            src.buf.clear();
        }
        if src.fill(true).await? == 0 {
            return Ok(total);
        }
    }
}

async fn relay_chunked<R, W>(
    src: &mut Source<'_, R>,
    dst: &mut Sink<'_, W>,
    limit: u64,
) -> Result<u64, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut dec = ChunkedDecoder::new();
    let mut total = 0u64;
    dst.buf.clear();
    loop {
        loop {
            let next = dec.decode(src.buf).map_err(|_| {
                Error::new(ErrorKind::InvalidFraming, src.side, "invalid chunked body")
            })?;
            if dec.declared() > limit {
                return Err(Error::new(
                    ErrorKind::BodyTooLarge,
                    src.side,
                    "chunked body exceeds max_body_bytes",
                ));
            }
            match next {
                Some(Chunk::Data(n)) => {
                    if dst.chunked {
                        encode_chunk_header(n, dst.buf);
                    }
                    dst.buf.extend_from_slice(&src.buf[..n]);
                    src.buf.advance(n);
                    if dst.chunked {
                        dst.buf.extend_from_slice(b"\r\n");
                    }
                    total += n as u64;
                    if dst.buf.len() >= FLUSH_AT {
                        dst.flush_buf().await?;
                    }
                }
                Some(Chunk::End) => {
                    if dst.chunked {
                        dst.buf.extend_from_slice(LAST_CHUNK);
                    }
                    dst.flush_buf().await?;
                    return Ok(total);
                }
                None => break,
            }
        }
        dst.flush_buf().await?;
        src.fill(false).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(
        kind: BodyKind,
        input: &[u8],
        chunked_out: bool,
    ) -> Result<(Vec<u8>, Vec<u8>), Error> {
        run_limited(kind, input, chunked_out, u64::MAX).await
    }

    async fn run_limited(
        kind: BodyKind,
        input: &[u8],
        chunked_out: bool,
        limit: u64,
    ) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        client.write_all(input).await.unwrap();
        drop(client);
        let mut rbuf = BytesMut::new();
        let mut out: Vec<u8> = Vec::new();
        let mut scratch = BytesMut::new();
        let mut src = Source {
            io: &mut server,
            buf: &mut rbuf,
            side: Side::Downstream,
            timeout: Duration::from_secs(5),
            clock: None,
        };
        let mut dst = Sink {
            io: &mut out,
            buf: &mut scratch,
            side: Side::Upstream,
            chunked: chunked_out,
        };
        relay_limited(kind, &mut src, &mut dst, limit).await?;
        let rest = src.buf.to_vec();
        Ok((out, rest))
    }

    #[tokio::test]
    async fn copies_exact_lengths_and_keeps_the_rest() {
        let (out, rest) = run(BodyKind::Length(5), b"helloGET /", false)
            .await
            .unwrap();
        assert_eq!(out, b"hello");
        assert_eq!(rest, b"GET /");
        let err = run(BodyKind::Length(10), b"short", false)
            .await
            .unwrap_err();
        assert_eq!(
            (err.kind(), err.side()),
            (ErrorKind::Closed, Side::Downstream)
        );
    }

    #[tokio::test]
    async fn rechunks_and_dechunks() {
        let wire = b"3\r\nabc\r\n2;e=1\r\nde\r\n0\r\nT: v\r\n\r\nNEXT";
        let (out, rest) = run(BodyKind::Chunked, wire, true).await.unwrap();
        assert_eq!(out, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        assert_eq!(rest, b"NEXT");
        let (out, _) = run(BodyKind::Chunked, wire, false).await.unwrap();
        assert_eq!(out, b"abcde");
        let err = run(BodyKind::Chunked, b"z\r\n", true).await.unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[tokio::test]
    async fn chunked_body_limit_counts_announced_sizes() {
        let wire = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (out, _) = run_limited(BodyKind::Chunked, wire, false, 5)
            .await
            .unwrap();
        assert_eq!(out, b"abcde");
        let err = run_limited(BodyKind::Chunked, wire, false, 4)
            .await
            .unwrap_err();
        assert_eq!(
            (err.kind(), err.side(), err.status()),
            (ErrorKind::BodyTooLarge, Side::Downstream, 413)
        );
        // A chunk announcing more than the limit fails before its data arrives.
        let err = run_limited(BodyKind::Chunked, b"ffffff\r\n", false, 1024)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyTooLarge);
    }

    #[test]
    fn body_clock_earns_time_by_rate_and_spends_it_waiting() {
        let mut c = BodyClock::new(Duration::from_secs(10), 1000);
        assert_eq!(c.remaining(), Duration::from_secs(10));
        c.record(Duration::from_secs(4), 2500);
        assert_eq!(c.remaining(), Duration::from_millis(8500));
        assert_eq!(
            c.bound(Duration::from_secs(60)),
            Duration::from_millis(8500)
        );
        assert_eq!(c.bound(Duration::from_secs(1)), Duration::from_secs(1));
        c.record(Duration::from_secs(100), 0);
        assert_eq!(c.remaining(), Duration::ZERO);
        // No rate: the grace bounds the whole body.
        let mut fixed = BodyClock::new(Duration::from_secs(2), 0);
        fixed.record(Duration::from_secs(1), 1 << 30);
        assert_eq!(fixed.remaining(), Duration::from_secs(1));
        // Huge counts saturate instead of overflowing.
        let mut big = BodyClock::new(Duration::MAX, 1);
        big.record(Duration::ZERO, usize::MAX);
        assert_eq!(big.remaining(), Duration::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dripping_body_runs_out_of_budget() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let drip = tokio::spawn(async move {
            for _ in 0..100 {
                if client.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        let mut rbuf = BytesMut::new();
        let mut out: Vec<u8> = Vec::new();
        let mut scratch = BytesMut::new();
        let mut src = Source {
            io: &mut server,
            buf: &mut rbuf,
            side: Side::Downstream,
            timeout: Duration::from_secs(60),
            clock: Some(BodyClock::new(Duration::from_secs(20), 1024)),
        };
        let mut dst = Sink {
            io: &mut out,
            buf: &mut scratch,
            side: Side::Upstream,
            chunked: false,
        };
        let started = tokio::time::Instant::now();
        let err = relay(BodyKind::Length(100), &mut src, &mut dst)
            .await
            .unwrap_err();
        assert_eq!((err.kind(), err.status()), (ErrorKind::Timeout, 408));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(20) && took < Duration::from_secs(21),
            "{took:?}"
        );
        drip.abort();
    }

    #[tokio::test]
    async fn until_close_reads_to_eof() {
        let (out, _) = run(BodyKind::UntilClose, b"all of it", false)
            .await
            .unwrap();
        assert_eq!(out, b"all of it");
    }
}
