//! The downstream connection of the HTTP proxy: a plain TCP [`Stream`] or a
//! TLS session over one. Both read and write through borrowed halves usable
//! at the same time on one task (a request body flows up while the response
//! head is awaited).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use lb_core::stream::{ReadHalf, Stream, WriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

/// A downstream connection.
#[derive(Debug)]
pub enum DownIo {
    /// Plain HTTP.
    Plain(Stream),
    /// HTTPS: the TLS session. The cell lets both halves drive it; each
    /// borrow lasts one poll, never across an await.
    Tls(RefCell<Box<TlsStream<Stream>>>),
}

impl DownIo {
    /// Wraps an established TLS session.
    pub fn tls(stream: TlsStream<Stream>) -> Self {
        DownIo::Tls(RefCell::new(Box::new(stream)))
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, DownIo::Tls(_))
    }

    /// The TLS server name (SNI) the client sent, lowercase; `None` for
    /// plain HTTP or a handshake without SNI.
    pub fn server_name(&self) -> Option<Box<str>> {
        match self {
            DownIo::Plain(_) => None,
            DownIo::Tls(t) => server_name_of(&t.borrow()),
        }
    }
}

/// The lowercase SNI of an established TLS session.
pub fn server_name_of<IO>(tls: &TlsStream<IO>) -> Option<Box<str>> {
    tls.get_ref()
        .1
        .server_name()
        .map(|n| n.to_ascii_lowercase().into_boxed_str())
}

impl DownIo {
    /// Splits into read and write halves borrowing the connection.
    pub fn split(&mut self) -> (DownRead<'_>, DownWrite<'_>) {
        match self {
            DownIo::Plain(s) => {
                let (r, w) = s.split();
                (DownRead::Plain(r), DownWrite::Plain(w))
            }
            DownIo::Tls(t) => (DownRead::Tls(t), DownWrite::Tls(t)),
        }
    }
}

/// The reading half of a [`DownIo`].
#[derive(Debug)]
pub enum DownRead<'a> {
    /// Of a plain connection.
    Plain(ReadHalf<'a>),
    /// Of a TLS session.
    Tls(&'a RefCell<Box<TlsStream<Stream>>>),
}

/// The writing half of a [`DownIo`].
#[derive(Debug)]
pub enum DownWrite<'a> {
    /// Of a plain connection.
    Plain(WriteHalf<'a>),
    /// Of a TLS session.
    Tls(&'a RefCell<Box<TlsStream<Stream>>>),
}

impl AsyncRead for DownRead<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DownRead::Plain(r) => Pin::new(r).poll_read(cx, buf),
            DownRead::Tls(t) => Pin::new(&mut **t.borrow_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DownWrite<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DownWrite::Plain(w) => Pin::new(w).poll_write(cx, data),
            DownWrite::Tls(t) => Pin::new(&mut **t.borrow_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DownWrite::Plain(w) => Pin::new(w).poll_flush(cx),
            DownWrite::Tls(t) => Pin::new(&mut **t.borrow_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DownWrite::Plain(w) => Pin::new(w).poll_shutdown(cx),
            DownWrite::Tls(t) => Pin::new(&mut **t.borrow_mut()).poll_shutdown(cx),
        }
    }
}

// The whole connection reads and writes through its halves.
impl AsyncRead for DownIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().split().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for DownIo {
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
