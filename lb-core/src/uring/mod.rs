//! The io_uring reactor: one ring per worker thread, driven inside that
//! worker's tokio current-thread runtime. This is the only module of lb
//! allowed to use `unsafe`; each block states the invariant it relies on.
//!
//! - [`reactor`] owns the ring, batches submissions (one `io_uring_enter` per
//!   loop tick) and holds every buffer, address and descriptor an operation
//!   uses until the kernel's last completion for it, so cancellation (dropping
//!   a future or a stream) never frees memory or closes a descriptor the
//!   kernel still uses.
//! - [`stream`] has the TCP listener (multishot accept) and stream (recv,
//!   send, connect with a linked timeout, close through the ring).
//! - [`socket`] has a readiness-only socket (polls on the ring) for UDP.

pub(crate) mod reactor;
pub mod socket;
pub mod stream;

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use reactor::Reactor;
pub use reactor::SockFd;
pub use socket::UringSocket;
pub use stream::{UringListener, UringStream};

thread_local! {
    static CURRENT: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

/// Why io_uring cannot be used here, if it cannot: the ring setup error
/// (EPERM under seccomp or `kernel.io_uring_disabled`, ENOSYS on old
/// kernels) or a missing operation.
///
/// The probe ring is made and torn down on a short-lived thread of its own:
/// tearing a ring down can leave task work aimed at the thread that made it,
/// which interrupts that thread's next blocking call with EINTR.
pub fn probe() -> Result<(), String> {
    std::thread::Builder::new()
        .name("lb-uring-probe".into())
        .spawn(probe_here)
        .map_err(|e| format!("cannot start the io_uring probe: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the io_uring probe panicked".into()))
}

fn probe_here() -> Result<(), String> {
    let ring = Reactor::build_ring().map_err(|e| describe_setup_error(&e))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe failed: {e}"))?;
    use io_uring::opcode;
    let needed = [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::Recv::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::Connect::CODE, "connect"),
        (opcode::Close::CODE, "close"),
        (opcode::AsyncCancel::CODE, "async cancel"),
        (opcode::LinkTimeout::CODE, "link timeout"),
        (opcode::Splice::CODE, "splice"),
    ];
    for (code, name) in needed {
        if !probe.is_supported(code) {
            return Err(format!("the kernel's io_uring lacks the {name} operation"));
        }
    }
    Ok(())
}

fn describe_setup_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => format!(
            "io_uring is not permitted ({e}): a seccomp profile or kernel.io_uring_disabled forbids it"
        ),
        Some(libc::ENOSYS) => format!("the kernel has no io_uring ({e})"),
        Some(libc::EINVAL) => format!(
            "the kernel's io_uring lacks single-issuer/cooperative task running ({e}); kernel 6.1 or later is needed"
        ),
        _ => format!("io_uring setup failed: {e}"),
    }
}

/// Creates this thread's ring and registers it with the current tokio
/// runtime; the returned driver future must be spawned on the thread's
/// `LocalSet`. Fails when io_uring is unavailable.
pub fn install() -> io::Result<impl Future<Output = ()> + 'static> {
    let reactor = Reactor::new()?;
    CURRENT.with(|c| *c.borrow_mut() = Some(Rc::clone(&reactor)));
    Ok(reactor.drive())
}

/// Removes this thread's ring: the driver finishes once the operations in
/// flight have completed.
pub fn uninstall() {
    if let Some(r) = CURRENT.with(|c| c.borrow_mut().take()) {
        r.stop();
    }
}

/// Whether this thread runs a ring.
pub fn is_installed() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

/// Operations in flight on this thread's ring (0 without a ring).
pub fn in_flight() -> usize {
    CURRENT.with(|c| c.borrow().as_ref().map_or(0, |r| r.in_flight()))
}

fn current() -> io::Result<Rc<Reactor>> {
    CURRENT
        .with(|c| c.borrow().clone())
        .ok_or_else(|| io::Error::other("no io_uring reactor on this thread"))
}

/// Wraps a listening socket for accepting on this thread's ring.
pub fn listener(l: std::net::TcpListener) -> io::Result<UringListener> {
    Ok(UringListener::new(current()?, l))
}

/// Wraps a socket for readiness polls on this thread's ring.
pub fn socket(fd: std::os::fd::OwnedFd) -> io::Result<UringSocket> {
    Ok(UringSocket::new(current()?, fd))
}

/// Connects on this thread's ring with a linked timeout.
pub async fn connect(
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> io::Result<UringStream> {
    UringStream::connect(current()?, addr, timeout).await
}
