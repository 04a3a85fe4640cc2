//! TCP streams and listeners on the ring: multishot accept, connect with a
//! linked timeout, recv and send through buffers the operation owns.
//!
//! A stream keeps one receive and one send in flight at most. Reads copy out
//! of the receive buffer (4 KiB, doubling up to 128 KiB while receives fill
//! it). A write copies into a send buffer handed to the kernel at once and
//! returns; it waits only while the previous send is in flight. Sends carry
//! `MSG_WAITALL`, so nothing written is ever left for a later poll to push; a
//! send error surfaces on the next write or flush. Dropping a stream cancels
//! its receive; a send in flight is allowed to finish, and the descriptor is
//! closed when the last operation holding it completes.
//!
//! Bulk data skips the extra copy: while receives keep filling the buffer, a
//! read first tries a non-blocking `recv` straight into the caller's buffer,
//! and a write of 16 KiB or more first tries a non-blocking `send` from the
//! caller's slice; only what would block goes through the ring.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use io_uring::{opcode, types};
use tokio::io::ReadBuf;

use super::reactor::{Completion, Keep, Reactor, SockFd};

/// Initial receive buffer size (small: an idle connection's receive holds it).
const RECV_BUF: usize = 4 * 1024;
/// Largest receive buffer a busy stream grows to.
const RECV_MAX: usize = 128 * 1024;
/// Largest single copy accepted by one write.
const SEND_MAX: usize = 256 * 1024;
/// Writes at least this large try a direct non-blocking send first.
const DIRECT_SEND_MIN: usize = 16 * 1024;
/// Send buffers larger than this are not kept once idle.
const SEND_KEEP: usize = 64 * 1024;

#[derive(Debug, Default)]
struct ReadSide {
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    op: Option<usize>,
    grow: bool,
}

#[derive(Debug, Default)]
struct WriteSide {
    /// The send in flight (its buffer is held by the operation's slot).
    op: Option<usize>,
    /// A spare buffer for the next send.
    spare: Vec<u8>,
}

/// A connected TCP socket driven by the worker's ring.
#[derive(Debug)]
pub struct UringStream {
    fd: Rc<SockFd>,
    reactor: Rc<Reactor>,
    read: RefCell<ReadSide>,
    write: RefCell<WriteSide>,
}

impl UringStream {
    pub(crate) fn from_fd(reactor: Rc<Reactor>, fd: OwnedFd) -> Self {
        Self {
            fd: SockFd::new(&reactor, fd),
            reactor,
            read: RefCell::new(ReadSide::default()),
            write: RefCell::new(WriteSide::default()),
        }
    }

    /// The socket descriptor (for socket options).
    pub fn fd(&self) -> &SockFd {
        &self.fd
    }

    /// Connects to `addr`; the connect carries a linked timeout of `timeout`
    /// (`TimedOut` when it fires).
    pub(crate) async fn connect(
        reactor: Rc<Reactor>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<Self> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.cloexec(),
            None,
        )?;
        socket.set_nonblocking(true)?;
        let fd = SockFd::new(&reactor, OwnedFd::from(socket));
        let sa = Box::new(socket2::SockAddr::from(addr));
        let ts = Box::new(
            types::Timespec::new()
                .sec(timeout.as_secs())
                .nsec(timeout.subsec_nanos()),
        );
        let connect =
            opcode::Connect::new(types::Fd(fd.raw()), sa.as_ptr().cast(), sa.len()).build();
        let link = opcode::LinkTimeout::new(&*ts).build();
        // SAFETY: the connect reads the address in `sa` (boxed, owned by the
        // first keep) and targets `fd` (held by the keep); the linked timeout
        // reads the boxed timespec owned by the second keep.
        let id = unsafe {
            reactor.submit_linked(
                connect,
                Keep {
                    fd: Some(Rc::clone(&fd)),
                    addr: Some(sa),
                    ..Keep::default()
                },
                link,
                Keep {
                    time: Some(ts),
                    ..Keep::default()
                },
            )
        };
        let done = OpFuture::new(Rc::clone(&reactor), id).await;
        match done.io_result() {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
            }
            Err(e) => return Err(e),
        }
        Ok(Self {
            fd,
            reactor,
            read: RefCell::new(ReadSide::default()),
            write: RefCell::new(WriteSide::default()),
        })
    }

    /// Reads into `out`; `Ready(Ok)` with nothing added means end of stream.
    pub fn poll_read_ref(
        &self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut r = self.read.borrow_mut();
        loop {
            if r.pos < r.end {
                let n = (r.end - r.pos).min(out.remaining());
                out.put_slice(&r.buf[r.pos..r.pos + n]);
                r.pos += n;
                return Poll::Ready(Ok(()));
            }
            if let Some(id) = r.op {
                let mut c = ready!(self.reactor.poll_op(id, cx));
                r.op = None;
                if let Some(buf) = c.keep.buf.take() {
                    r.buf = buf;
                }
                let n = c.io_result()?;
                if n == 0 {
                    return Poll::Ready(Ok(()));
                }
                r.pos = 0;
                r.end = n;
                r.grow = n == r.buf.len() && r.buf.len() < RECV_MAX;
                continue;
            }
            if out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // While data streams in (the last receive filled its buffer),
            // more is most likely queued already: take it straight into the
            // caller's buffer, saving the copy through ours.
            if r.grow {
                match self.recv_direct(out) {
                    Some(Ok(n)) => {
                        r.grow = n > 0 && out.remaining() == 0;
                        return Poll::Ready(Ok(()));
                    }
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    None => r.grow = false,
                }
            }
            let mut buf = std::mem::take(&mut r.buf);
            // Start small; a receive that filled the buffer doubles it.
            let want = if r.grow {
                (buf.len() * 2).min(RECV_MAX)
            } else {
                buf.len().max(RECV_BUF)
            };
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let sqe =
                opcode::Recv::new(types::Fd(self.fd.raw()), buf.as_mut_ptr(), buf.len() as u32)
                    .build();
            // SAFETY: the receive writes into `buf`'s heap memory, which the
            // keep owns (moving a Vec does not move its heap buffer) until
            // the completion; `fd` is held by the keep as well.
            r.op = Some(unsafe { self.submit_on_fd(sqe, Some(buf)) });
            r.pos = 0;
            r.end = 0;
        }
    }

    /// A non-blocking `recv` into the unfilled part of `out`: `None` when
    /// nothing is queued (would block).
    fn recv_direct(&self, out: &mut ReadBuf<'_>) -> Option<io::Result<usize>> {
        // SAFETY: the bytes `recv` reports are initialised by the kernel
        // before `assume_init`; the rest of the slice is never read.
        let dst = unsafe { out.unfilled_mut() };
        match socket2::SockRef::from(&*self.fd).recv_with_flags(dst, libc::MSG_DONTWAIT) {
            Ok(n) => {
                // SAFETY: `recv` initialised the first `n` bytes of the unfilled part.
                unsafe { out.assume_init(n) };
                out.advance(n);
                Some(Ok(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Waits for the send in flight, if any. Sends carry `MSG_WAITALL`, so
    /// the kernel completes one only when all of it went out (or failed).
    fn poll_sent(&self, w: &mut WriteSide, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(id) = w.op else {
            return Poll::Ready(Ok(()));
        };
        let mut c: Completion = ready!(self.reactor.poll_op(id, cx));
        w.op = None;
        if let Some(mut buf) = c.keep.buf.take()
            && buf.capacity() <= SEND_KEEP
        {
            buf.clear();
            w.spare = buf;
        }
        Poll::Ready(c.io_result().map(drop))
    }

    /// Copies up to 256 KiB of `data` into a send buffer and hands it to the
    /// kernel; returns at once unless a send is still in flight.
    pub fn poll_write_ref(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut w = self.write.borrow_mut();
        ready!(self.poll_sent(&mut w, cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Large writes first try the socket directly (no copy); what does
        // not fit goes through the ring.
        if data.len() >= DIRECT_SEND_MIN {
            match socket2::SockRef::from(&*self.fd)
                .send_with_flags(data, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            {
                Ok(n) if n > 0 => return Poll::Ready(Ok(n)),
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let n = data.len().min(SEND_MAX);
        let mut buf = std::mem::take(&mut w.spare);
        buf.extend_from_slice(&data[..n]);
        let sqe = opcode::Send::new(types::Fd(self.fd.raw()), buf.as_ptr(), n as u32)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
            .build();
        // SAFETY: the send reads `buf`'s heap memory, owned by the keep until
        // the completion; `fd` is held by the keep as well.
        w.op = Some(unsafe { self.submit_on_fd(sqe, Some(buf)) });
        Poll::Ready(Ok(n))
    }

    /// Waits until everything written has been sent.
    pub fn poll_flush_ref(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut w = self.write.borrow_mut();
        self.poll_sent(&mut w, cx)
    }

    /// Flushes, then shuts the sending direction down.
    pub fn poll_shutdown_ref(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_ref(cx))?;
        Poll::Ready(crate::stream::shutdown_write(socket2::SockRef::from(
            &*self.fd,
        )))
    }

    /// Submits an operation on this stream's descriptor; its slot keeps the
    /// descriptor and `buf` until the last completion.
    ///
    /// # Safety
    /// Every pointer in `sqe` must point into `buf`'s heap memory.
    unsafe fn submit_on_fd(&self, sqe: io_uring::squeue::Entry, buf: Option<Vec<u8>>) -> usize {
        let keep = Keep {
            buf,
            fd: Some(Rc::clone(&self.fd)),
            ..Keep::default()
        };
        // SAFETY: forwarded from the caller; the keep owns buffer and descriptor.
        unsafe { self.reactor.submit(sqe, keep) }
    }

    /// Waits until the socket is readable (or, with `writable`, writable),
    /// through a one-shot poll on the ring.
    pub async fn ready(&self, writable: bool) -> io::Result<()> {
        let mask = if writable {
            libc::POLLOUT
        } else {
            libc::POLLIN | libc::POLLRDHUP
        };
        let sqe = opcode::PollAdd::new(types::Fd(self.fd.raw()), mask as u32).build();
        // SAFETY: a poll carries no pointers; the keep holds the descriptor.
        let id = unsafe { self.submit_on_fd(sqe, None) };
        OpFuture::new(Rc::clone(&self.reactor), id)
            .await
            .io_result()
            .map(drop)
    }

    /// Whether bytes are buffered that a read would return without waiting.
    pub fn has_buffered(&self) -> bool {
        let r = self.read.borrow();
        r.pos < r.end
    }
}

/// Longest a send left in flight by a dropped stream may wait on its peer
/// when the worker has no send deadline of its own.
const DETACHED_SEND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

impl Drop for UringStream {
    fn drop(&mut self) {
        if let Some(id) = self.read.get_mut().op.take() {
            self.reactor.abandon(id);
        }
        // A send in flight is not cancelled: the data was accepted by a
        // write, so it is left to finish; its slot holds the descriptor,
        // which closes through the ring when the last holder lets go. A
        // peer with a zero window would keep it (and the descriptor and
        // buffer) forever, so the socket gets a send deadline if it has
        // none: the kernel then aborts it and the send completes. (A cancel
        // queued later by slot id could hit another operation that reused
        // the slot; the kernel's deadline needs no timer here.)
        if let Some(id) = self.write.get_mut().op.take() {
            if crate::stream::send_timeout().is_none() {
                let _ = socket2::SockRef::from(&*self.fd)
                    .set_tcp_user_timeout(Some(DETACHED_SEND_DEADLINE));
            }
            self.reactor.detach(id);
        }
    }
}

/// Awaits one single-shot operation; dropping it abandons the operation.
pub(crate) struct OpFuture {
    reactor: Rc<Reactor>,
    id: Option<usize>,
}

impl OpFuture {
    pub(crate) fn new(reactor: Rc<Reactor>, id: usize) -> Self {
        Self {
            reactor,
            id: Some(id),
        }
    }
}

impl Future for OpFuture {
    type Output = Completion;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completion> {
        let Some(id) = self.id else {
            return Poll::Ready(Completion {
                result: -libc::ECANCELED,
                keep: Keep::default(),
            });
        };
        let c = ready!(self.reactor.poll_op(id, cx));
        self.id = None;
        Poll::Ready(c)
    }
}

impl Drop for OpFuture {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.reactor.abandon(id);
        }
    }
}

/// A listening socket accepting through one multishot accept.
#[derive(Debug)]
pub struct UringListener {
    fd: Rc<SockFd>,
    reactor: Rc<Reactor>,
    op: Option<usize>,
}

impl UringListener {
    /// Wraps a bound, listening socket.
    pub(crate) fn new(reactor: Rc<Reactor>, listener: std::net::TcpListener) -> Self {
        Self {
            fd: SockFd::new(&reactor, OwnedFd::from(listener)),
            reactor,
            op: None,
        }
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket2::SockRef::from(&*self.fd)
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }

    /// Accepts the next connection, (re)arming the multishot accept as needed.
    pub fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(UringStream, SocketAddr)>> {
        loop {
            let id = match self.op {
                Some(id) => id,
                None => {
                    let sqe = opcode::AcceptMulti::new(types::Fd(self.fd.raw()))
                        .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                        .build();
                    // SAFETY: multishot accept carries no pointers; the keep
                    // holds the listening descriptor.
                    let id = unsafe {
                        self.reactor.submit_multi_fd(
                            sqe,
                            Keep {
                                fd: Some(Rc::clone(&self.fd)),
                                ..Keep::default()
                            },
                        )
                    };
                    self.op = Some(id);
                    id
                }
            };
            match ready!(self.reactor.poll_multi(id, cx)) {
                None => self.op = None,
                Some(r) if r < 0 => {
                    return Poll::Ready(Err(io::Error::from_raw_os_error(-r)));
                }
                Some(r) => {
                    // SAFETY: a non-negative accept result is a new descriptor
                    // that nothing else owns.
                    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(r) };
                    let peer = socket2::SockRef::from(&fd)
                        .peer_addr()
                        .ok()
                        .and_then(|a| a.as_socket());
                    let stream = UringStream::from_fd(Rc::clone(&self.reactor), fd);
                    match peer {
                        Some(peer) => return Poll::Ready(Ok((stream, peer))),
                        // The peer already went away: drop it and go on.
                        None => continue,
                    }
                }
            }
        }
    }

    /// Accepts the next connection.
    pub async fn accept(&mut self) -> io::Result<(UringStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }
}

impl Drop for UringListener {
    fn drop(&mut self) {
        if let Some(id) = self.op.take() {
            self.reactor.abandon(id);
        }
    }
}
