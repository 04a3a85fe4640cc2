//! The TCP stream type the proxies use, whichever I/O mode the worker runs:
//! a tokio (epoll) socket or a socket on the worker's io_uring ring. Both
//! implement tokio's `AsyncRead`/`AsyncWrite`, and both split into borrowed
//! read and write halves usable at the same time on one task.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::os::fd::{AsFd, BorrowedFd};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::uring::{self, UringStream};

thread_local! {
    /// This worker's send deadline (see [`set_send_timeout`]).
    static SEND_TIMEOUT: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// This thread's send deadline, if one was set.
pub fn send_timeout() -> Option<Duration> {
    SEND_TIMEOUT.with(std::cell::Cell::get)
}

/// Sets the send deadline of the TCP sockets this thread accepts and
/// connects from now on (TCP_USER_TIMEOUT): data the peer leaves
/// unacknowledged, or cannot take because it advertises a zero window, for
/// this long aborts the connection, and every pending read or write on it
/// fails with `TimedOut`. `None` keeps the kernel's default.
pub fn set_send_timeout(timeout: Option<Duration>) {
    SEND_TIMEOUT.with(|t| t.set(timeout));
}

/// Which I/O engine a worker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// io_uring (one ring per worker).
    Uring,
    /// epoll through tokio.
    Epoll,
}

impl IoMode {
    /// The mode's name as shown in `/metrics` and `/config`.
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Uring => "uring",
            IoMode::Epoll => "epoll",
        }
    }
}

/// A connected TCP stream.
#[derive(Debug)]
pub enum Stream {
    /// A socket on the tokio (epoll) reactor.
    Epoll(TcpStream),
    /// A socket on this worker's io_uring ring.
    Uring(UringStream),
}

impl Stream {
    /// Connects to `addr` within `timeout` (`TimedOut` when it expires), on
    /// the ring when this thread runs one, else through tokio.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Stream> {
        if uring::is_installed() {
            let s = Stream::Uring(uring::connect(addr, timeout).await?);
            s.prepare();
            return Ok(s);
        }
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            Ok(r) => {
                let s = Stream::Epoll(r?);
                s.prepare();
                Ok(s)
            }
        }
    }

    /// Sets the options every proxied socket gets: no Nagle delay, and the
    /// thread's send deadline ([`set_send_timeout`]).
    pub fn prepare(&self) {
        let sock = self.sock();
        let _ = sock.set_tcp_nodelay(true);
        if let Some(t) = SEND_TIMEOUT.with(std::cell::Cell::get) {
            let _ = sock.set_tcp_user_timeout(Some(t));
        }
    }

    /// The socket, for socket options and plain socket calls.
    fn sock(&self) -> SockRef<'_> {
        match self {
            Stream::Epoll(s) => SockRef::from(s),
            Stream::Uring(s) => SockRef::from(s.fd()),
        }
    }

    /// Disables Nagle's algorithm.
    pub fn set_nodelay(&self) -> io::Result<()> {
        self.sock().set_tcp_nodelay(true)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock()
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }

    /// Whether an idle connection still looks usable: nothing to read and
    /// not closed by the peer. Never waits.
    pub fn looks_alive(&self) -> bool {
        if let Stream::Uring(s) = self
            && s.has_buffered()
        {
            return false;
        }
        let sock = self.sock();
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match sock.peek(&mut probe) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            // EOF or unexpected bytes: not reusable.
            Ok(_) => false,
        }
    }

    /// Runs the non-blocking operation `f` on the socket (for example a
    /// `splice`), waiting for readability (or, with `write`, writability)
    /// whenever it would block; with `wait_first`, a ring stream waits for
    /// readiness before the first try (saving a try that would most likely
    /// block). Bytes a ring stream buffered from earlier reads are not seen
    /// by `f`.
    pub async fn io<R>(
        &self,
        write: bool,
        wait_first: bool,
        mut f: impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            Stream::Epoll(s) => {
                let interest = if write {
                    Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                loop {
                    s.ready(interest).await?;
                    match s.try_io(interest, || f(s.as_fd())) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        r => return r,
                    }
                }
            }
            Stream::Uring(u) => {
                if wait_first {
                    u.ready(write).await?;
                }
                loop {
                    match f(u.fd().as_fd()) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => u.ready(write).await?,
                        r => return r,
                    }
                }
            }
        }
    }

    /// Shuts the sending direction down now (nothing is buffered to flush
    /// when only [`Stream::io`] wrote).
    pub fn shutdown_write(&self) -> io::Result<()> {
        shutdown_write(self.sock())
    }

    /// Splits into read and write halves borrowing the stream.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Epoll(s) => {
                let (r, w) = s.split();
                (ReadHalf::Epoll(r), WriteHalf::Epoll(w))
            }
            Stream::Uring(s) => (ReadHalf::Uring(s), WriteHalf::Uring(s)),
        }
    }
}

// The whole stream reads and writes through its halves: one dispatch for both.
impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().split().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().split().1).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().split().1).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().split().1).poll_shutdown(cx)
    }
}

/// Shuts a socket's sending direction down; a peer already gone is not an error.
pub(crate) fn shutdown_write(sock: SockRef<'_>) -> io::Result<()> {
    match sock.shutdown(std::net::Shutdown::Write) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf<'a> {
    /// Of an epoll stream.
    Epoll(tokio::net::tcp::ReadHalf<'a>),
    /// Of a ring stream.
    Uring(&'a UringStream),
}

/// The writing half of a [`Stream`].
#[derive(Debug)]
pub enum WriteHalf<'a> {
    /// Of an epoll stream.
    Epoll(tokio::net::tcp::WriteHalf<'a>),
    /// Of a ring stream.
    Uring(&'a UringStream),
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Epoll(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Uring(s) => s.poll_read_ref(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Epoll(w) => Pin::new(w).poll_write(cx, data),
            WriteHalf::Uring(s) => s.poll_write_ref(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Epoll(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Uring(s) => s.poll_flush_ref(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Epoll(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Uring(s) => s.poll_shutdown_ref(cx),
        }
    }
}
