//! UDP sockets for either I/O engine: a tokio (epoll) socket, or a socket
//! whose readiness comes from the worker's io_uring ring. Both are used the
//! same way: non-blocking `try_*` calls, and `readable()` to wait when one
//! would block.

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::OwnedFd;

use nix::sys::socket::{MsgFlags, SockaddrStorage};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};
use tokio::net::UdpSocket;

use crate::uring::{self, UringSocket};

/// A UDP socket on this worker's I/O engine.
#[derive(Debug)]
pub enum Datagram {
    /// On the tokio (epoll) reactor.
    Epoll(UdpSocket),
    /// Polled through this worker's io_uring ring.
    Uring(UringSocket),
}

impl Datagram {
    /// Takes a bound socket onto this thread's engine (the ring when this
    /// thread runs one).
    pub fn new(socket: StdUdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        if uring::is_installed() {
            Ok(Datagram::Uring(uring::socket(OwnedFd::from(socket))?))
        } else {
            Ok(Datagram::Epoll(UdpSocket::from_std(socket)?))
        }
    }

    /// A new socket connected to `peer` (from an ephemeral port), so that
    /// only `peer`'s datagrams are received on it.
    pub fn connected(peer: SocketAddr) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(peer), Type::DGRAM, None)?;
        socket.set_nonblocking(true)?;
        socket.connect(&SockAddr::from(peer))?;
        Self::new(socket.into())
    }

    fn sock(&self) -> SockRef<'_> {
        match self {
            Datagram::Epoll(s) => SockRef::from(s),
            Datagram::Uring(s) => SockRef::from(s.fd()),
        }
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock()
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }

    /// Waits until a datagram (or an error) is waiting.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Datagram::Epoll(s) => s.readable().await,
            Datagram::Uring(s) => s.ready(false).await,
        }
    }

    /// Receives one datagram and its sender without waiting (`WouldBlock`
    /// when none is there). A datagram longer than `buf` is truncated.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            Datagram::Epoll(s) => s.try_recv_from(buf),
            Datagram::Uring(s) => {
                let (n, from) = nix::sys::socket::recvfrom::<SockaddrStorage>(s.fd().raw(), buf)
                    .map_err(io::Error::from)?;
                Ok((n, from.and_then(storage_addr).ok_or_else(no_addr)?))
            }
        }
    }

    /// Receives one datagram on a connected socket without waiting.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Datagram::Epoll(s) => s.try_recv(buf),
            Datagram::Uring(s) => nix::sys::socket::recv(s.fd().raw(), buf, MsgFlags::empty())
                .map_err(io::Error::from),
        }
    }

    /// Sends one datagram to `to` without waiting (`WouldBlock` when the
    /// send buffer is full). The send is tried at once on either engine
    /// (tokio's own `try_send_to` refuses until it has seen the socket
    /// writable, which a fresh socket has not).
    pub fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.sock().send_to(buf, &SockAddr::from(to))
    }

    /// Sends one datagram on a connected socket without waiting.
    pub fn try_send(&self, buf: &[u8]) -> io::Result<usize> {
        self.sock().send(buf)
    }
}

fn storage_addr(s: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    if let Some(v6) = s.as_sockaddr_in6() {
        return Some(SocketAddr::V6((*v6).into()));
    }
    None
}

fn no_addr() -> io::Error {
    io::Error::other("datagram without a sender address")
}
