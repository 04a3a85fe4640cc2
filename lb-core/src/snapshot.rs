//! The single swap point through which the control thread publishes immutable
//! configuration snapshots to the workers.
//!
//! Workers never lock: each keeps a worker-local handle ([`LocalSnapshot`]) and
//! refreshes it only when the published generation number changes, so the hot
//! path does one relaxed atomic load per check and no shared reference-count
//! updates.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

/// A published snapshot together with its generation number.
#[derive(Debug)]
pub struct Published<T> {
    /// Generation number, strictly increasing with every publication.
    pub generation: u64,
    /// The immutable snapshot.
    pub value: T,
}

/// The swap point shared by the control thread (writer) and the workers (readers).
#[derive(Debug)]
pub struct SnapshotCell<T> {
    current: ArcSwap<Published<T>>,
    generation: AtomicU64,
}

impl<T> SnapshotCell<T> {
    /// Creates the cell holding `initial` as generation 0.
    pub fn new(initial: T) -> Self {
        Self {
            current: ArcSwap::from_pointee(Published {
                generation: 0,
                value: initial,
            }),
            generation: AtomicU64::new(0),
        }
    }

    /// Publishes `value` as the next generation and returns that generation.
    /// Only the control thread calls this.
    pub fn publish(&self, value: T) -> u64 {
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        self.current
            .store(Arc::new(Published { generation, value }));
        self.generation.store(generation, Ordering::Release);
        generation
    }

    /// The generation most recently published.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current snapshot (takes a reference count; not for the per-request path).
    pub fn load(&self) -> Arc<Published<T>> {
        self.current.load_full()
    }
}

/// A worker-local view of a [`SnapshotCell`]. Cloning the handle and reading the
/// snapshot touch only worker-local memory unless a new generation was published.
#[derive(Debug)]
#[allow(clippy::redundant_allocation)] // The Rc layer keeps per-request clones worker-local.
pub struct LocalSnapshot<T> {
    cell: Arc<SnapshotCell<T>>,
    cached: RefCell<Rc<Arc<Published<T>>>>,
}

impl<T> LocalSnapshot<T> {
    /// Creates a worker-local view of `cell`.
    pub fn new(cell: Arc<SnapshotCell<T>>) -> Self {
        let cached = RefCell::new(Rc::new(cell.load()));
        Self { cell, cached }
    }

    /// The newest snapshot: refreshed from the cell when its generation moved on.
    /// The returned handle keeps that generation alive for as long as it is held,
    /// so an in-flight request finishes on the snapshot it started with.
    #[allow(clippy::redundant_allocation)] // See the struct: cloning the Rc is not atomic.
    pub fn current(&self) -> Rc<Arc<Published<T>>> {
        let generation = self.cell.generation();
        let mut cached = self.cached.borrow_mut();
        if cached.generation != generation {
            *cached = Rc::new(self.cell.load());
        }
        Rc::clone(&cached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_view_follows_publications() {
        let cell = Arc::new(SnapshotCell::new("a"));
        let local = LocalSnapshot::new(Arc::clone(&cell));
        let first = local.current();
        assert_eq!((first.generation, first.value), (0, "a"));
        assert_eq!(cell.publish("b"), 1);
        let second = local.current();
        assert_eq!((second.generation, second.value), (1, "b"));
        // The old handle still sees the generation it started with.
        assert_eq!(first.value, "a");
    }
}
