//! Listening sockets: one SO_REUSEPORT socket per worker per address, so the
//! kernel spreads new connections across workers without a shared accept queue
//! (and, for UDP, each client flow's datagrams to one worker by 4-tuple hash).

use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::Error;

/// Listen backlog for every listener.
pub const BACKLOG: i32 = 4096;

/// Binds a non-blocking TCP listener on `addr` with SO_REUSEADDR,
/// SO_REUSEPORT and IP_FREEBIND set (so a VIP can be bound before the
/// address exists on the host).
pub fn bind_reuseport(addr: SocketAddr) -> Result<TcpListener, Error> {
    let bind = || -> std::io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        // A VIP may be bound before it is configured on the host.
        if addr.is_ipv6() {
            socket.set_freebind_v6(true)?;
        } else {
            socket.set_freebind_v4(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(socket.into())
    };
    bind().map_err(|source| Error::Bind { addr, source })
}

/// Binds a non-blocking UDP socket on `addr` with SO_REUSEADDR, SO_REUSEPORT
/// and IP_FREEBIND set. Datagrams sent from it leave from `addr`.
pub fn bind_udp_reuseport(addr: SocketAddr) -> Result<UdpSocket, Error> {
    let bind = || -> std::io::Result<UdpSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
            socket.set_freebind_v6(true)?;
        } else {
            socket.set_freebind_v4(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        Ok(socket.into())
    };
    bind().map_err(|source| Error::Bind { addr, source })
}

/// Binds `workers` UDP sockets on `addr`, one per worker.
pub fn bind_udp_per_worker(addr: SocketAddr, workers: usize) -> Result<Vec<UdpSocket>, Error> {
    (0..workers).map(|_| bind_udp_reuseport(addr)).collect()
}

/// Binds `workers` listeners on every address in `addrs`. The result is indexed
/// `[worker][address]`. Nothing is kept bound if any address fails.
pub fn bind_per_worker(
    addrs: &[SocketAddr],
    workers: usize,
) -> Result<Vec<Vec<TcpListener>>, Error> {
    (0..workers)
        .map(|_| addrs.iter().map(|a| bind_reuseport(*a)).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_workers_share_a_port() {
        let first = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_reuseport(addr).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
    }
}
