//! A socket that only waits on the ring: readiness through one-shot polls,
//! while the caller does the non-blocking system calls itself (used for UDP,
//! where each datagram carries its own address).

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use io_uring::{opcode, types};

use super::reactor::{Keep, Reactor, SockFd};
use super::stream::OpFuture;

/// A socket whose readiness comes from this worker's ring and whose
/// descriptor closes through it.
#[derive(Debug)]
pub struct UringSocket {
    fd: Rc<SockFd>,
    reactor: Rc<Reactor>,
}

impl UringSocket {
    pub(crate) fn new(reactor: Rc<Reactor>, fd: OwnedFd) -> Self {
        Self {
            fd: SockFd::new(&reactor, fd),
            reactor,
        }
    }

    /// The socket descriptor (for socket calls).
    pub fn fd(&self) -> &SockFd {
        &self.fd
    }

    /// Waits until the socket is readable (or, with `writable`, writable).
    pub async fn ready(&self, writable: bool) -> io::Result<()> {
        let mask = if writable {
            libc::POLLOUT
        } else {
            libc::POLLIN
        };
        let sqe = opcode::PollAdd::new(types::Fd(self.fd.raw()), mask as u32).build();
        let keep = Keep {
            fd: Some(Rc::clone(&self.fd)),
            ..Keep::default()
        };
        // SAFETY: a poll carries no pointers; the keep holds the descriptor
        // until the kernel's completion, so its number cannot be reused first.
        let id = unsafe { self.reactor.submit(sqe, keep) };
        OpFuture::new(Rc::clone(&self.reactor), id)
            .await
            .io_result()
            .map(drop)
    }
}
