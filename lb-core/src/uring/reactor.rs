//! The per-worker ring: submission batching, completion dispatch and the
//! ownership of everything the kernel may still touch.
//!
//! Every operation occupies one slot of a slab; its `user_data` is the slot
//! index. The slot owns the operation's [`Keep`] (buffer, socket address,
//! timespec, and a reference to the descriptor) until the kernel posts the
//! operation's final completion, so neither a buffer nor a descriptor can be
//! freed or reused while the kernel holds it, whatever the caller does.
//! A caller that loses interest *abandons* its slot: an `AsyncCancel` is
//! queued and the slot is freed (and any descriptor the kernel handed over in
//! the meantime closed) when the last completion arrives.
//!
//! Submissions are only queued by tasks; the driver task submits them all with
//! one `io_uring_enter` per loop tick, then reaps the completion queue and
//! wakes the tasks waiting on it. The ring's descriptor is registered with the
//! tokio runtime of the worker, which wakes the driver when completions exist.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use tokio::io::unix::AsyncFd;

/// Submission queue entries per ring.
const ENTRIES: u32 = 1024;
/// Sentinel `user_data` for completions nobody waits for (cancels, closes).
const IGNORED: u64 = u64::MAX;

/// What an operation's slot keeps alive until the kernel is done with it.
/// Only `buf` is read back; the other fields exist to be held.
#[derive(Debug, Default)]
#[allow(dead_code)]
pub(crate) struct Keep {
    /// The data buffer the kernel reads from or writes into.
    pub buf: Option<Vec<u8>>,
    /// The descriptor the operation targets, so it is not closed (and its
    /// number reused) while the operation is in flight.
    pub fd: Option<Rc<SockFd>>,
    /// A socket address the kernel reads (connect).
    pub addr: Option<Box<socket2::SockAddr>>,
    /// A timespec the kernel reads (linked timeouts).
    pub time: Option<Box<types::Timespec>>,
}

/// The completion of a single-shot operation.
#[derive(Debug)]
pub(crate) struct Completion {
    /// The kernel's result: a count, a descriptor, or a negated errno.
    pub result: i32,
    /// What the slot kept, handed back.
    pub keep: Keep,
}

impl Completion {
    /// The result as an `io::Result` of a non-negative count.
    pub fn io_result(&self) -> io::Result<usize> {
        if self.result < 0 {
            Err(io::Error::from_raw_os_error(-self.result))
        } else {
            Ok(self.result as usize)
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Kind {
    /// One completion.
    Single,
    /// Several completions, the last without `IORING_CQE_F_MORE`; a
    /// non-negative result is a new descriptor (multishot accept).
    MultiFd,
}

#[derive(Debug)]
struct Slot {
    kind: Kind,
    results: VecDeque<i32>,
    finished: bool,
    abandoned: bool,
    waker: Option<Waker>,
    keep: Keep,
}

#[derive(Debug, Default)]
struct Slab {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    live: usize,
}

impl Slab {
    fn insert(&mut self, slot: Slot) -> usize {
        self.live += 1;
        if let Some(i) = self.free.pop() {
            self.slots[i] = Some(slot);
            i
        } else {
            self.slots.push(Some(slot));
            self.slots.len() - 1
        }
    }

    fn remove(&mut self, i: usize) -> Option<Slot> {
        let slot = self.slots.get_mut(i)?.take()?;
        self.live -= 1;
        self.free.push(i);
        Some(slot)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Slot> {
        self.slots.get_mut(i)?.as_mut()
    }
}

/// A socket descriptor owned by lb whose close goes through the ring of the
/// worker it belongs to (or directly, once that ring is gone).
#[derive(Debug)]
pub struct SockFd {
    fd: Option<OwnedFd>,
    reactor: Weak<Reactor>,
}

impl SockFd {
    pub(crate) fn new(reactor: &Rc<Reactor>, fd: OwnedFd) -> Rc<Self> {
        Rc::new(Self {
            fd: Some(fd),
            reactor: Rc::downgrade(reactor),
        })
    }

    /// The raw descriptor.
    pub fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }
}

impl AsFd for SockFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("descriptor present until drop")
            .as_fd()
    }
}

impl Drop for SockFd {
    fn drop(&mut self) {
        if let (Some(fd), Some(reactor)) = (self.fd.take(), self.reactor.upgrade()) {
            reactor.close(fd);
        }
    }
}

struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// One worker's io_uring instance. Lives on one thread (`Rc`).
pub(crate) struct Reactor {
    ready: AsyncFd<RingFd>,
    ring: RefCell<IoUring>,
    slab: RefCell<Slab>,
    unsubmitted: Cell<u32>,
    driver: RefCell<Option<Waker>>,
    stopped: Cell<bool>,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Reactor {
    /// Creates the ring (single issuer, cooperative task running) and
    /// registers its descriptor with the current tokio runtime.
    pub fn new() -> io::Result<Rc<Self>> {
        let ring = Self::build_ring()?;
        // SAFETY: the ring's descriptor stays open for as long as `ready`
        // lives: both are fields of the reactor, `ready` declared first so it
        // is dropped (deregistered) before the ring closes the descriptor.
        let ready = unsafe {
            AsyncFd::register_with_interest(RingFd(ring.as_raw_fd()), tokio::io::Interest::READABLE)
        }?;
        Ok(Rc::new(Self {
            ready,
            ring: RefCell::new(ring),
            slab: RefCell::new(Slab::default()),
            unsubmitted: Cell::new(0),
            driver: RefCell::new(None),
            stopped: Cell::new(false),
        }))
    }

    /// Builds a ring with the flags lb wants, without registering it; used
    /// by the probe as well.
    pub fn build_ring() -> io::Result<IoUring> {
        IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(ENTRIES * 4)
            .build(ENTRIES)
    }

    /// Operations whose final completion has not arrived yet.
    pub fn in_flight(&self) -> usize {
        self.slab.borrow().live
    }

    /// Queues `sqe` (whose pointers must point into `keep`, or into memory
    /// that lives as long as the ring) and returns its slot.
    ///
    /// # Safety
    /// Every pointer in `sqe` must point into memory owned by `keep` (heap
    /// memory that does not move when `keep` moves) or be otherwise valid
    /// until the operation's final completion.
    pub unsafe fn submit(&self, sqe: squeue::Entry, keep: Keep) -> usize {
        // SAFETY: forwarded from the caller.
        unsafe { self.submit_kind(sqe, keep, Kind::Single) }
    }

    /// Like [`Reactor::submit`] for a multishot operation producing descriptors.
    ///
    /// # Safety
    /// As for [`Reactor::submit`].
    pub unsafe fn submit_multi_fd(&self, sqe: squeue::Entry, keep: Keep) -> usize {
        // SAFETY: forwarded from the caller.
        unsafe { self.submit_kind(sqe, keep, Kind::MultiFd) }
    }

    /// Queues a linked pair (`first` with `IO_LINK`, then `second`), the
    /// second's completion ignored but its `keep` held until it arrives.
    ///
    /// # Safety
    /// As for [`Reactor::submit`], for both entries and their keeps.
    pub unsafe fn submit_linked(
        &self,
        first: squeue::Entry,
        keep: Keep,
        second: squeue::Entry,
        second_keep: Keep,
    ) -> usize {
        let id = self.slab.borrow_mut().insert(Slot {
            kind: Kind::Single,
            results: VecDeque::new(),
            finished: false,
            abandoned: false,
            waker: None,
            keep,
        });
        let id2 = self.slab.borrow_mut().insert(Slot {
            kind: Kind::Single,
            results: VecDeque::new(),
            finished: false,
            abandoned: true,
            waker: None,
            keep: second_keep,
        });
        let first = first.flags(squeue::Flags::IO_LINK).user_data(id as u64);
        let second = second.user_data(id2 as u64);
        // SAFETY: the caller guarantees both entries' pointers live in their
        // keeps, which their slots hold until their completions arrive.
        unsafe { self.push_all(&[first, second]) };
        id
    }

    /// # Safety
    /// As for [`Reactor::submit`].
    unsafe fn submit_kind(&self, sqe: squeue::Entry, keep: Keep, kind: Kind) -> usize {
        let id = self.slab.borrow_mut().insert(Slot {
            kind,
            results: VecDeque::new(),
            finished: false,
            abandoned: false,
            waker: None,
            keep,
        });
        // SAFETY: the caller guarantees the entry's pointers live in `keep`,
        // which slot `id` holds until the final completion arrives.
        unsafe { self.push_all(&[sqe.user_data(id as u64)]) };
        id
    }

    /// Pushes entries onto the submission queue, submitting first when it is
    /// full, and makes sure the driver submits them this tick.
    ///
    /// # Safety
    /// The entries' pointers must stay valid until their completions.
    unsafe fn push_all(&self, entries: &[squeue::Entry]) {
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: forwarded from the caller.
            let pushed = unsafe { ring.submission().push_multiple(entries) };
            if pushed.is_ok() {
                break;
            }
            // Queue full: hand the kernel what is queued and try again.
            if let Err(e) = ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EAGAIN) {
                    tracing::error!(error = %e, "io_uring submit failed");
                }
                drop(ring);
                self.reap();
                ring = self.ring.borrow_mut();
            }
        }
        self.unsubmitted
            .set(self.unsubmitted.get() + entries.len() as u32);
        drop(ring);
        self.wake_driver();
    }

    fn wake_driver(&self) {
        if let Some(w) = self.driver.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    /// Polls a single-shot operation; on `Ready` the slot is freed and its
    /// keep handed back.
    pub fn poll_op(&self, id: usize, cx: &mut Context<'_>) -> Poll<Completion> {
        let mut slab = self.slab.borrow_mut();
        let Some(slot) = slab.get_mut(id) else {
            return Poll::Ready(Completion {
                result: -libc::ECANCELED,
                keep: Keep::default(),
            });
        };
        match slot.results.pop_front() {
            Some(result) => {
                let keep = slab.remove(id).map(|s| s.keep).unwrap_or_default();
                drop(slab);
                Poll::Ready(Completion { result, keep })
            }
            None => {
                match &slot.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => slot.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// Polls a multishot descriptor operation: `Some(result)` per completion,
    /// `None` once the kernel has ended it (the slot is then freed).
    pub fn poll_multi(&self, id: usize, cx: &mut Context<'_>) -> Poll<Option<i32>> {
        let mut slab = self.slab.borrow_mut();
        let Some(slot) = slab.get_mut(id) else {
            return Poll::Ready(None);
        };
        if let Some(r) = slot.results.pop_front() {
            return Poll::Ready(Some(r));
        }
        if slot.finished {
            let removed = slab.remove(id);
            drop(slab);
            drop(removed);
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Gives up on an operation: completed results are released now, and an
    /// operation still in flight is cancelled and released on its last
    /// completion.
    pub fn abandon(&self, id: usize) {
        self.let_go(id, true);
    }

    /// Stops waiting for an operation without cancelling it: it runs to its
    /// end and its slot (with what it keeps) is released then.
    pub fn detach(&self, id: usize) {
        self.let_go(id, false);
    }

    /// Releases slot `id` now if its operation is over (closing descriptors
    /// a multishot accept handed over meanwhile), else marks it abandoned so
    /// its last completion releases it, queueing a cancel when `cancel`.
    fn let_go(&self, id: usize, cancel: bool) {
        let mut slab = self.slab.borrow_mut();
        let Some(slot) = slab.get_mut(id) else {
            return;
        };
        let kind = slot.kind;
        let results: Vec<i32> = slot.results.drain(..).collect();
        let done = match kind {
            Kind::Single => !results.is_empty(),
            Kind::MultiFd => slot.finished,
        };
        let removed = if done {
            slab.remove(id)
        } else {
            slot.abandoned = true;
            slot.waker = None;
            None
        };
        drop(slab);
        drop(removed);
        if kind == Kind::MultiFd {
            results.into_iter().for_each(close_result_fd);
        }
        if cancel && !done {
            let cancel = opcode::AsyncCancel::new(id as u64)
                .build()
                .user_data(IGNORED);
            // SAFETY: a cancel entry carries no pointers.
            unsafe { self.push_all(&[cancel]) };
        }
    }

    /// Queues a close of `fd` through the ring (no completion awaited).
    pub fn close(&self, fd: OwnedFd) {
        let raw = fd.as_raw_fd();
        // The kernel closes it; forget our ownership without closing.
        std::mem::forget(fd);
        let sqe = opcode::Close::new(types::Fd(raw))
            .build()
            .user_data(IGNORED);
        // SAFETY: a close entry carries no pointers.
        unsafe { self.push_all(&[sqe]) };
    }

    /// Drains the completion queue, recording results and waking waiters.
    fn reap(&self) -> usize {
        let mut n = 0;
        let mut wakers = Vec::new();
        // Released slots are dropped only after the borrows end: dropping a
        // keep may close a descriptor through the ring.
        let mut released = Vec::new();
        {
            let mut ring = self.ring.borrow_mut();
            let mut slab = self.slab.borrow_mut();
            for cqe in ring.completion() {
                n += 1;
                let id = cqe.user_data();
                if id == IGNORED {
                    continue;
                }
                let id = id as usize;
                let more = cqueue::more(cqe.flags());
                let Some(slot) = slab.get_mut(id) else {
                    continue;
                };
                let last = slot.kind == Kind::Single || !more;
                if slot.abandoned {
                    if slot.kind == Kind::MultiFd {
                        close_result_fd(cqe.result());
                    }
                    if last {
                        released.extend(slab.remove(id));
                    }
                    continue;
                }
                slot.results.push_back(cqe.result());
                if last {
                    slot.finished = true;
                }
                if let Some(w) = slot.waker.take() {
                    wakers.push(w);
                }
            }
        }
        drop(released);
        for w in wakers {
            w.wake();
        }
        n
    }

    /// Ends the driver loop (used when the worker stops).
    pub fn stop(&self) {
        self.stopped.set(true);
        self.wake_driver();
    }

    /// The driver: submits everything queued this tick with one
    /// `io_uring_enter`, reaps completions, and sleeps until the ring's
    /// descriptor is readable or a task queues work.
    pub async fn drive(self: Rc<Self>) {
        loop {
            // Task work runs cooperatively (no interrupting IPIs); when the
            // kernel flags some pending, an enter (`submit` adds GETEVENTS
            // then) runs it and posts its completions. Deferred task running
            // is not used: it does not make the ring's descriptor readable,
            // which is what wakes this driver.
            let pending_work = self.ring.borrow_mut().submission().taskrun();
            if self.unsubmitted.get() > 0 || pending_work {
                let r = self.ring.borrow().submit();
                match r {
                    Ok(_) => self.unsubmitted.set(0),
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            || e.raw_os_error() == Some(libc::EAGAIN) =>
                    {
                        // Completion queue backed up: reap first, retry next turn.
                    }
                    Err(e) => tracing::error!(error = %e, "io_uring submit failed"),
                }
            }
            self.reap();
            if self.stopped.get() && self.in_flight() == 0 {
                return;
            }
            poll_fn(|cx| {
                if self.unsubmitted.get() > 0 || (self.stopped.get() && self.in_flight() == 0) {
                    return Poll::Ready(());
                }
                *self.driver.borrow_mut() = Some(cx.waker().clone());
                match self.ready.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        guard.clear_ready();
                        Poll::Ready(())
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::error!(error = %e, "io_uring readiness failed");
                        Poll::Ready(())
                    }
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
        }
    }
}

/// Closes a descriptor the kernel handed to an operation nobody wants any more.
fn close_result_fd(result: i32) {
    if result >= 0 {
        // SAFETY: a non-negative result of a descriptor-producing operation
        // is a new descriptor that nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(result) });
    }
}
