//! The TCP relay: bytes both ways between client and upstream, each
//! direction's end of stream passed on as a half-close, until both
//! directions are done or nothing has moved for the idle timeout.
//!
//! Bytes move with `splice(2)` through a pipe per direction (socket to pipe,
//! pipe to socket: the data never enters user space), waiting for socket
//! readiness on the worker's engine (a poll on the io_uring ring, or epoll).
//! Where a pipe cannot be had, the relay copies through a buffer instead.
//! Pipes left empty by a relay that ended cleanly go back to a per-worker
//! pool, so short connections do not pay for creating and closing them.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use nix::unistd::pipe2;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::stream::Stream;

/// Relay buffer per direction.
const BUF: usize = 64 * 1024;

/// Bytes moved by a finished relay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Client to upstream.
    pub up: u64,
    /// Upstream to client.
    pub down: u64,
}

/// Why a relay ended early.
#[derive(Debug)]
pub enum RelayEnd {
    /// Nothing moved either way for the idle timeout.
    Idle(Moved),
    /// A socket error.
    Error(io::Error, Moved),
}

/// Relays between `client` and `upstream` until both directions have ended
/// (each end of stream is passed on with a write shutdown), or until neither
/// direction moved a byte for `idle`. The two directions run concurrently
/// and each finishes every write it started.
pub async fn relay(
    client: &mut Stream,
    upstream: &mut Stream,
    idle: Duration,
) -> Result<Moved, RelayEnd> {
    let last = Cell::new(Instant::now());
    let up = Cell::new(0u64);
    let down = Cell::new(0u64);
    let pipes = (take_pipe(), take_pipe());
    let both = async {
        match pipes {
            (Ok(p1), Ok(p2)) => {
                tokio::try_join!(
                    splice_pump(client, upstream, &p1, &last, &up),
                    splice_pump(upstream, client, &p2, &last, &down)
                )?;
                // Both directions ended cleanly: the pipes are empty, reuse them.
                give_pipe(p1);
                give_pipe(p2);
            }
            _ => {
                let (mut cr, mut cw) = client.split();
                let (mut ur, mut uw) = upstream.split();
                tokio::try_join!(
                    pump(&mut cr, &mut uw, &last, &up),
                    pump(&mut ur, &mut cw, &last, &down)
                )?;
            }
        }
        Ok::<(), io::Error>(())
    };
    let watchdog = async {
        loop {
            let deadline = last.get() + idle;
            tokio::time::sleep_until(deadline).await;
            if last.get() + idle <= Instant::now() {
                return;
            }
        }
    };
    let moved = |u: &Cell<u64>, d: &Cell<u64>| Moved {
        up: u.get(),
        down: d.get(),
    };
    tokio::select! {
        r = both => match r {
            Ok(_) => Ok(moved(&up, &down)),
            Err(e) => Err(RelayEnd::Error(e, moved(&up, &down))),
        },
        () = watchdog => Err(RelayEnd::Idle(moved(&up, &down))),
    }
}

/// Largest splice per call.
const SPLICE_CHUNK: usize = 256 * 1024;

/// A pipe: read end, write end.
type Pipe = (OwnedFd, OwnedFd);

/// Empty pipes kept per worker for the next relays.
const PIPE_POOL: usize = 256;

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// An empty pipe from this worker's pool, or a new one.
fn take_pipe() -> io::Result<Pipe> {
    match PIPES.with(|p| p.borrow_mut().pop()) {
        Some(pipe) => Ok(pipe),
        None => Ok(pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?),
    }
}

/// Returns an empty pipe to this worker's pool (closed when the pool is full).
fn give_pipe(pipe: Pipe) {
    PIPES.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < PIPE_POOL {
            pool.push(pipe);
        }
    });
}

/// Splices `src` to `dst` through `pipe` until end of stream, then shuts
/// `dst`'s sending side down.
async fn splice_pump(
    src: &Stream,
    dst: &Stream,
    pipe: &Pipe,
    last: &Cell<Instant>,
    count: &Cell<u64>,
) -> io::Result<()> {
    let (pipe_r, pipe_w) = pipe;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    // After a read smaller than a full chunk the socket is most likely
    // drained: the next read waits for readiness before trying.
    let mut drained = false;
    loop {
        let n = src
            .io(false, drained, |fd| {
                Ok(splice(fd, None, pipe_w, None, SPLICE_CHUNK, flags)?)
            })
            .await?;
        if n == 0 {
            dst.shutdown_write()?;
            return Ok(());
        }
        drained = n < SPLICE_CHUNK;
        let mut left = n;
        while left > 0 {
            left -= dst
                .io(true, false, |fd| {
                    Ok(splice(pipe_r, None, fd, None, left, flags)?)
                })
                .await?;
        }
        count.set(count.get() + n as u64);
        last.set(Instant::now());
    }
}

/// Copies `r` to `w` until end of stream, then shuts `w` down.
async fn pump<R, W>(r: &mut R, w: &mut W, last: &Cell<Instant>, count: &Cell<u64>) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        count.set(count.get() + n as u64);
        last.set(Instant::now());
    }
}
