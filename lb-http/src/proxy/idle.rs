//! A byte tunnel with an idle deadline: bytes flow both ways (as
//! `copy_bidirectional` moves them) until both sides are done, or until no
//! byte was read on either side for the idle timeout.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a tunnel ended.
#[derive(Debug)]
pub(crate) enum TunnelEnd {
    /// Both directions finished (or one failed).
    Done(io::Result<(u64, u64)>),
    /// Nothing moved either way for the idle timeout.
    Idle,
}

/// Copies between `a` and `b` in both directions until both are done, or
/// until neither read a byte for `idle`.
pub(crate) async fn tunnel<A, B>(a: &mut A, b: &mut B, idle: Duration) -> TunnelEnd
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let last = Cell::new(Instant::now());
    let mut a = Active { io: a, last: &last };
    let mut b = Active { io: b, last: &last };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let deadline = last.get() + idle;
        tokio::select! {
            r = &mut copy => return TunnelEnd::Done(r),
            () = tokio::time::sleep_until(deadline) => {
                if last.get() + idle <= Instant::now() {
                    return TunnelEnd::Idle;
                }
            }
        }
    }
}

/// A stream that notes when it last read a byte.
struct Active<'a, S: ?Sized> {
    io: &'a mut S,
    last: &'a Cell<Instant>,
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Active<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.last.set(Instant::now());
        }
        r
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Active<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_it_open_and_silence_ends_it() {
        let (mut a_peer, mut a) = tokio::io::duplex(1024);
        let (mut b, mut b_peer) = tokio::io::duplex(1024);
        let run = async move {
            let started = Instant::now();
            let end = tunnel(&mut a, &mut b, Duration::from_secs(10)).await;
            (end, started.elapsed())
        };
        // Traffic every 6 s keeps the tunnel past 10 s.
        let traffic = async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                a_peer.write_all(b"ping").await.unwrap();
                let mut got = [0u8; 4];
                b_peer.read_exact(&mut got).await.unwrap();
                assert_eq!(&got, b"ping");
            }
            (a_peer, b_peer)
        };
        let ((end, elapsed), _peers) = tokio::join!(run, traffic);
        assert!(matches!(end, TunnelEnd::Idle), "{end:?}");
        assert!(
            elapsed >= Duration::from_secs(28) && elapsed < Duration::from_secs(29),
            "{elapsed:?}"
        );
    }
}
