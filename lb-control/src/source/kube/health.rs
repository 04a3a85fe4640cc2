//! The API server connection's health and the source's counters, for
//! `/metrics` and the log.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// What `/metrics` and the log say about the API server source.
#[derive(Debug, Default)]
pub struct KubeStatus {
    /// Whether the last contact with the API server succeeded.
    up: AtomicBool,
    /// Whether the current outage was logged (once per outage).
    outage_logged: AtomicBool,
    /// Whether the initial list of every served kind completed.
    synced: AtomicBool,
    /// Watch events received after the initial sync.
    pub(super) events: AtomicU64,
    /// Kinds the API server serves and lb watches.
    pub(super) watched_kinds: AtomicUsize,
    /// Status write-back counters (`lb_status_writes_total`, ...).
    pub status_writes: super::status_writer::WriteCounters,
}

impl KubeStatus {
    /// Whether the API server is reachable as far as lb knows.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether the initial list of every kind the API server serves completed.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    pub(super) fn set_synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
    }

    /// Appends `lb_source_kubernetes_up`, `lb_source_kubernetes_events_total`,
    /// `lb_source_kubernetes_kinds` and the status writer's counters.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP lb_source_kubernetes_up Whether the Kubernetes API server is reachable (0: serving the last snapshot).\n# TYPE lb_source_kubernetes_up gauge\nlb_source_kubernetes_up {}",
            u8::from(self.is_up())
        );
        let _ = writeln!(
            out,
            "# HELP lb_source_kubernetes_events_total Watch events received from the Kubernetes API server after the initial sync.\n# TYPE lb_source_kubernetes_events_total counter\nlb_source_kubernetes_events_total {}",
            self.events.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP lb_source_kubernetes_kinds Kinds lb reads that the Kubernetes API server serves (and lb watches).\n# TYPE lb_source_kubernetes_kinds gauge\nlb_source_kubernetes_kinds {}",
            self.watched_kinds.load(Ordering::Relaxed)
        );
        self.status_writes.write_metrics(out);
    }

    pub(super) fn contact_ok(&self) {
        self.up.store(true, Ordering::Relaxed);
        if self.outage_logged.swap(false, Ordering::Relaxed) {
            tracing::info!("kubernetes API server reachable again");
        }
    }

    pub(super) fn contact_failed(&self, what: &str, e: &dyn std::fmt::Display) {
        self.up.store(false, Ordering::Relaxed);
        if !self.outage_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                what,
                "kubernetes API server unreachable ({e}); serving the last snapshot until it is back"
            );
        } else {
            tracing::debug!(what, "kubernetes request failed: {e}");
        }
    }
}

impl crate::control_state::MetricWriter for KubeStatus {
    fn write_metrics(&self, out: &mut String) {
        KubeStatus::write_metrics(self, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_say_up_and_count_events() {
        let s = KubeStatus::default();
        let mut out = String::new();
        s.write_metrics(&mut out);
        assert!(out.contains("lb_source_kubernetes_up 0"), "{out}");
        s.contact_ok();
        s.events.fetch_add(3, Ordering::Relaxed);
        s.watched_kinds.store(6, Ordering::Relaxed);
        let mut out = String::new();
        s.write_metrics(&mut out);
        assert!(out.contains("lb_source_kubernetes_up 1"), "{out}");
        assert!(out.contains("lb_source_kubernetes_events_total 3"), "{out}");
        assert!(out.contains("lb_source_kubernetes_kinds 6"), "{out}");
    }
}
