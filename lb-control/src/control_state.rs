//! The control plane's state, shared by the control thread (which
//! publishes snapshots and records reloads), the admin API (which reads
//! it) and the parts that register metric writers: readiness, reload
//! counts and timings, event-to-traffic times, the snapshot swap point,
//! the workers' counters and progress, and the published view.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lb_core::counters::CounterSet;
use lb_core::snapshot::SnapshotCell;
use lb_http::ApplianceSnapshot;

/// Outcome of one configuration load, as counted in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// Everything loaded and compiled cleanly.
    Ok,
    /// Applied, but some objects were invalid and skipped.
    Partial,
    /// Nothing applied: the configuration file was unusable.
    Failed,
}

/// What the control thread last published, for `/config` and `/status`.
#[derive(Debug, Default)]
pub struct ControlView {
    /// The effective configuration as JSON.
    pub config: serde_json::Value,
    /// Kubernetes-style status entries.
    pub status: Vec<serde_json::Value>,
    /// Diagnostics of the last load, one line each.
    pub diagnostics: Vec<String>,
    /// `lb_listener_conflicts`: claims not bound, by claimant kind.
    pub conflicts: std::collections::BTreeMap<&'static str, usize>,
}

/// Event-to-traffic times: from the first change event of a burst (a file
/// event, SIGHUP) to the swap of the snapshot built from it.
#[derive(Debug)]
pub(crate) struct EventToTraffic {
    /// Microseconds, 1 µs to an hour, 3 significant figures.
    pub(crate) micros: Histogram<u64>,
    /// Sum of every recorded time, in microseconds (for `_sum`).
    pub(crate) sum_micros: u64,
}

/// The longest time the histogram holds; longer ones are recorded as this.
pub(crate) const EVENT_TO_TRAFFIC_MAX_MICROS: u64 = 3_600_000_000;

impl EventToTraffic {
    fn new() -> Self {
        // Constant, valid bounds (low >= 1, high >= 2 * low, sigfig <= 5).
        let micros = Histogram::new_with_bounds(1, EVENT_TO_TRAFFIC_MAX_MICROS, 3)
            .expect("valid histogram bounds");
        Self {
            micros,
            sum_micros: 0,
        }
    }

    fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, EVENT_TO_TRAFFIC_MAX_MICROS);
        self.micros.saturating_record(us);
        self.sum_micros = self.sum_micros.saturating_add(us);
    }
}

/// A part of lb that writes series of its own into `/metrics`
/// (registered with [`ControlState::register_metrics`]).
pub trait MetricWriter: Send + Sync + std::fmt::Debug {
    /// Appends the part's series, in the Prometheus text format, to `out`.
    fn write_metrics(&self, out: &mut String);
}

/// The control plane's state (see the module documentation).
#[derive(Debug)]
pub struct ControlState {
    pub(crate) ready: AtomicBool,
    pub(crate) reloads: [AtomicU64; 3],
    /// Change events seen (`lb_config_events_total`).
    pub(crate) events: AtomicU64,
    /// Loads compiled (`lb_config_compiles_total`).
    pub(crate) compiles: AtomicU64,
    /// The first event of the changes not yet published, if any.
    pub(crate) pending_change: Mutex<Option<Instant>>,
    pub(crate) event_to_traffic: Mutex<EventToTraffic>,
    /// Duration of the last load's compile and publish steps, in nanoseconds.
    pub(crate) compile_nanos: AtomicU64,
    pub(crate) publish_nanos: AtomicU64,
    /// The snapshot swap point.
    pub snapshot: Arc<SnapshotCell<ApplianceSnapshot>>,
    /// Per-worker counters.
    pub counters: Arc<CounterSet>,
    /// I/O mode of each worker, for `/metrics` and `/config`.
    pub io_mode: &'static str,
    pub(crate) view: Mutex<ControlView>,
    /// Parts that write series of their own into `/metrics` (the
    /// Kubernetes API server source, when configured), in registration order.
    pub(crate) metric_writers: Mutex<Vec<Arc<dyn MetricWriter>>>,
    /// The leader election, when the Kubernetes API server source is configured.
    pub leader: std::sync::OnceLock<crate::leader::Leader>,
    /// The workers' heartbeats and panic counts, once the workers run.
    pub progress: std::sync::OnceLock<Arc<lb_core::progress::Progress>>,
    /// Whether `lb.toml` holds changes that only a restart applies
    /// (`lb_config_restart_pending`).
    pub(crate) restart_pending: AtomicBool,
    /// Objects served from an earlier load of their manifest file
    /// (`lb_source_files_kept_objects`).
    pub(crate) files_kept: AtomicU64,
}

/// A worker that has not beaten for this long is stalled: `/readyz`
/// answers 503 and the systemd watchdog pings stop.
pub const WORKER_STALL: Duration = Duration::from_secs(5);

impl ControlState {
    /// Adds `writer`'s series to `/metrics`.
    pub fn register_metrics(&self, writer: Arc<dyn MetricWriter>) {
        self.metric_writers
            .lock()
            .expect("metric writers lock")
            .push(writer);
    }

    /// Creates the state; not ready until [`ControlState::set_ready`].
    pub fn new(snapshot: Arc<SnapshotCell<ApplianceSnapshot>>, counters: Arc<CounterSet>) -> Self {
        Self {
            ready: AtomicBool::new(false),
            reloads: Default::default(),
            events: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
            pending_change: Mutex::new(None),
            event_to_traffic: Mutex::new(EventToTraffic::new()),
            compile_nanos: AtomicU64::new(0),
            publish_nanos: AtomicU64::new(0),
            snapshot,
            counters,
            io_mode: "epoll",
            view: Mutex::new(ControlView::default()),
            metric_writers: Mutex::new(Vec::new()),
            leader: std::sync::OnceLock::new(),
            progress: std::sync::OnceLock::new(),
            restart_pending: AtomicBool::new(false),
            files_kept: AtomicU64::new(0),
        }
    }

    /// Records whether `lb.toml` holds changes that wait for a restart.
    pub fn set_restart_pending(&self, pending: bool) {
        self.restart_pending.store(pending, Ordering::Relaxed);
    }

    /// Records how many objects the file source kept from earlier loads.
    pub fn set_files_kept(&self, n: usize) {
        self.files_kept.store(n as u64, Ordering::Relaxed);
    }

    /// The workers that made no progress within [`WORKER_STALL`] (none
    /// before the workers run).
    pub fn stalled_workers(&self) -> Vec<usize> {
        self.progress
            .get()
            .map(|p| p.stalled(WORKER_STALL))
            .unwrap_or_default()
    }

    /// Marks the process ready (or not, while draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Counts one configuration load.
    pub fn count_reload(&self, result: ReloadResult) {
        self.reloads[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records one compile (`lb_config_compiles_total`) and how long the
    /// load took to read, validate and compile (`lb_config_compile_seconds`).
    pub fn set_compile_time(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.compile_nanos.store(nanos, Ordering::Relaxed);
        self.compiles.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes `events` change events (`lb_config_events_total`) whose burst
    /// began at `first`; a source calls it before reloading. The next
    /// [`ControlState::snapshot_published`] ends the event-to-traffic interval
    /// of the earliest unpublished change.
    pub fn note_change(&self, first: Instant, events: u64) {
        self.events.fetch_add(events, Ordering::Relaxed);
        if let Ok(mut pending) = self.pending_change.lock() {
            *pending = Some(pending.map_or(first, |p| p.min(first)));
        }
    }

    /// Called right after a snapshot swap: records the time since the first
    /// event of the changes it carries (`lb_event_to_traffic_seconds`), if
    /// any were noted.
    pub fn snapshot_published(&self) {
        let first = self.pending_change.lock().ok().and_then(|mut p| p.take());
        if let Some(first) = first
            && let Ok(mut h) = self.event_to_traffic.lock()
        {
            h.record(first.elapsed());
        }
    }

    /// Records how long the last snapshot swap and generation bump took
    /// (`lb_config_publish_seconds`).
    pub fn set_publish_time(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.publish_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Replaces the published view.
    pub fn set_view(&self, view: ControlView) {
        if let Ok(mut v) = self.view.lock() {
            *v = view;
        }
    }
}
