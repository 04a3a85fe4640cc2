//! Per-core counters. Each worker owns one cache-line-padded block and is its
//! only writer, so increments are plain load+store (no locked instructions);
//! the admin thread sums the blocks when `/metrics` is scraped.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// A counter with a single writer (its worker) and any number of readers.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Must only be called from the owning worker thread.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one. Must only be called from the owning worker thread.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one (for gauges). Must only be called from the owning worker thread.
    #[inline]
    pub fn dec(&self) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(1),
            Ordering::Relaxed,
        );
    }

    /// Sets the value (for gauges). Must only be called from the owning worker thread.
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    /// Reads the current value (any thread).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters one worker keeps.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Downstream responses by status class: index 0 = 1xx ... 4 = 5xx.
    pub responses: [Counter; 5],
    /// Requests that failed on the upstream side (connect errors, resets, bad responses).
    pub upstream_errors: Counter,
    /// Downstream connections currently open.
    pub active_connections: Counter,
    /// Downstream connections accepted in total.
    pub accepted_connections: Counter,
    /// L4 connections relayed to an endpoint, in total.
    pub l4_connections: Counter,
    /// L4 connections that found no endpoint to connect to.
    pub l4_unserved: Counter,
    /// Entries in this worker's `sessionAffinity: ClientIP` tables (gauge).
    pub l4_affinity_entries: Counter,
    /// TLS handshakes that failed (no certificate, timeout, protocol error).
    pub tls_handshake_errors: Counter,
    /// UDP datagrams relayed (both directions), in total.
    pub l4_datagrams: Counter,
    /// UDP datagrams dropped (no endpoint, socket buffer full, send error).
    pub l4_datagrams_dropped: Counter,
    /// UDP flows in this worker's connection-tracking tables (gauge).
    pub l4_udp_flows: Counter,
    /// L4 TCP connections closed at accept: the client is outside the
    /// listener's source ranges.
    pub l4_source_refused_tcp: Counter,
    /// UDP datagrams dropped before any flow: the client is outside the
    /// listener's source ranges.
    pub l4_source_refused_udp: Counter,
    /// Gateway connections closed at accept: the client is outside the
    /// Gateway's source ranges.
    pub gateway_source_refused: Counter,
    /// Connections closed right after accept, by [`crate::limits::Refusal`]
    /// (index = the refusal as a number).
    pub connections_refused: [Counter; 2],
    /// Mirrored requests dropped because the worker had its cap in flight.
    pub mirrors_dropped: Counter,
}

impl WorkerCounters {
    /// Counts one response with HTTP status `status`.
    #[inline]
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].inc();
    }
}

/// The counters of all workers, one padded block each.
#[derive(Debug)]
pub struct CounterSet {
    workers: Vec<CachePadded<WorkerCounters>>,
}

impl CounterSet {
    /// Creates blocks for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self {
            workers: (0..workers)
                .map(|_| CachePadded::new(WorkerCounters::default()))
                .collect(),
        }
    }

    /// The block of worker `index`.
    pub fn worker(&self, index: usize) -> &WorkerCounters {
        &self.workers[index]
    }

    /// Iterates over all workers' blocks.
    pub fn iter(&self) -> impl Iterator<Item = &WorkerCounters> {
        self.workers.iter().map(|w| &**w)
    }

    /// Sums one counter over all workers.
    pub fn sum(&self, pick: impl Fn(&WorkerCounters) -> &Counter) -> u64 {
        self.iter()
            .map(|w| pick(w).get())
            .fold(0, u64::wrapping_add)
    }
}
