//! Whether each worker is alive and making progress, and how many of its
//! connection tasks panicked: shared between the workers, which stamp it,
//! and the control thread, which reads it for `/readyz`, the systemd
//! watchdog and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a worker stamps its heartbeat.
pub const BEAT: Duration = Duration::from_millis(250);

/// Per-worker heartbeats and panic counts.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    /// Per worker: milliseconds since `start` at its last heartbeat, plus
    /// one (0: never).
    beats: Vec<AtomicU64>,
    /// Per worker: connection tasks that panicked.
    panics: Vec<AtomicU64>,
}

impl Progress {
    /// Progress of `workers` workers, none of which has beaten yet.
    pub fn new(workers: usize) -> Self {
        Self {
            start: Instant::now(),
            beats: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            panics: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Worker `index` is making progress now.
    pub fn beat(&self, index: usize) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(b) = self.beats.get(index) {
            b.store(ms.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// Counts a panicked connection task of worker `index`.
    pub fn count_panic(&self, index: usize) {
        if let Some(p) = self.panics.get(index) {
            p.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connection tasks that panicked, all workers.
    pub fn panics(&self) -> u64 {
        self.panics.iter().map(|p| p.load(Ordering::Relaxed)).sum()
    }

    /// The workers that have not beaten within `within` (never, or too
    /// long ago): stuck, dead, or not started.
    pub fn stalled(&self, within: Duration) -> Vec<usize> {
        let now = self.start.elapsed();
        self.beats
            .iter()
            .enumerate()
            .filter(|(_, b)| match b.load(Ordering::Relaxed) {
                0 => true,
                ms => now.saturating_sub(Duration::from_millis(ms - 1)) > within,
            })
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_that_do_not_beat_are_stalled() {
        let p = Progress::new(2);
        assert_eq!(p.stalled(Duration::from_secs(1)), [0, 1]);
        p.beat(0);
        assert_eq!(p.stalled(Duration::from_secs(1)), [1]);
        std::thread::sleep(Duration::from_millis(30));
        p.beat(1);
        assert_eq!(p.stalled(Duration::from_millis(20)), [0]);
        p.count_panic(1);
        p.count_panic(1);
        p.count_panic(7);
        assert_eq!(p.panics(), 2);
    }
}
