//! The admin HTTP API: `/healthz`, `/readyz`, `/metrics`, `/config`, `/status`.
//! It runs on the control thread, never on a worker, and answers one request
//! per connection.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::control_state::ControlState;

impl ControlState {
    fn metrics(&self) -> String {
        let c = &self.counters;
        let mut out = String::with_capacity(2048);
        out.push_str(
            "# HELP lb_http_responses_total HTTP responses sent downstream, by status class.\n",
        );
        out.push_str("# TYPE lb_http_responses_total counter\n");
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let n = c.sum(|w| &w.responses[i]);
            let _ = writeln!(out, "lb_http_responses_total{{code=\"{class}\"}} {n}");
        }
        let gauges: [(&str, &str, &str, u64); 10] = [
            (
                "lb_upstream_errors_total",
                "counter",
                "Requests that failed on the upstream side.",
                c.sum(|w| &w.upstream_errors),
            ),
            (
                "lb_active_connections",
                "gauge",
                "Downstream connections currently open.",
                c.sum(|w| &w.active_connections),
            ),
            (
                "lb_accepted_connections_total",
                "counter",
                "Downstream connections accepted.",
                c.sum(|w| &w.accepted_connections),
            ),
            (
                "lb_l4_connections_total",
                "counter",
                "L4 connections relayed to an endpoint.",
                c.sum(|w| &w.l4_connections),
            ),
            (
                "lb_l4_unserved_total",
                "counter",
                "L4 connections (and new UDP flows) that found no endpoint.",
                c.sum(|w| &w.l4_unserved),
            ),
            (
                "lb_l4_affinity_entries",
                "gauge",
                "Client-IP affinity entries held by the workers.",
                c.sum(|w| &w.l4_affinity_entries),
            ),
            (
                "lb_l4_datagrams_total",
                "counter",
                "UDP datagrams relayed, both directions.",
                c.sum(|w| &w.l4_datagrams),
            ),
            (
                "lb_l4_datagrams_dropped_total",
                "counter",
                "UDP datagrams dropped (no endpoint, buffer full, send error).",
                c.sum(|w| &w.l4_datagrams_dropped),
            ),
            (
                "lb_l4_udp_flows",
                "gauge",
                "UDP flows in the workers' connection-tracking tables.",
                c.sum(|w| &w.l4_udp_flows),
            ),
            (
                "lb_tls_handshake_errors_total",
                "counter",
                "TLS handshakes that failed (no certificate, timeout, protocol error).",
                c.sum(|w| &w.tls_handshake_errors),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let panics = self.progress.get().map_or(0, |p| p.panics());
        let operations: [(&str, &str, &str, u64); 4] = [
            (
                "lb_panics_total",
                "counter",
                "Connection tasks that panicked (each closed its connection).",
                panics,
            ),
            (
                "lb_workers_stalled",
                "gauge",
                "Workers that made no progress for 5 s.",
                self.stalled_workers().len() as u64,
            ),
            (
                "lb_config_restart_pending",
                "gauge",
                "1 when lb.toml holds changes that only a restart applies.",
                u64::from(self.restart_pending.load(Ordering::Relaxed)),
            ),
            (
                "lb_source_files_kept_objects",
                "gauge",
                "Objects served from an earlier load of a manifest file that is now unreadable, empty, being written or in a path that cannot be listed.",
                self.files_kept.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in operations {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP lb_http_unsafe_head_values_total Header fields left out and request targets or Locations escaped because they held CR, LF, NUL or other control bytes.\n# TYPE lb_http_unsafe_head_values_total counter\nlb_http_unsafe_head_values_total {}",
            lb_http::h1::rewrite::unsafe_head_values()
        );
        out.push_str("# HELP lb_connections_refused_total Connections closed right after accept because a cap was reached, by reason.\n# TYPE lb_connections_refused_total counter\n");
        for r in lb_core::limits::Refusal::ALL {
            let n = c.sum(|w| &w.connections_refused[r as usize]);
            let _ = writeln!(
                out,
                "lb_connections_refused_total{{reason=\"{}\"}} {n}",
                r.as_str()
            );
        }
        let dropped = c.sum(|w| &w.mirrors_dropped);
        let _ = writeln!(
            out,
            "# HELP lb_mirrors_dropped_total Mirrored requests dropped because the worker had http.max_mirrors_in_flight in flight.\n# TYPE lb_mirrors_dropped_total counter\nlb_mirrors_dropped_total {dropped}"
        );
        out.push_str("# HELP lb_config_reloads_total Configuration loads, by result.\n");
        out.push_str("# TYPE lb_config_reloads_total counter\n");
        for (i, result) in ["ok", "partial", "failed"].iter().enumerate() {
            let n = self.reloads[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "lb_config_reloads_total{{result=\"{result}\"}} {n}");
        }
        let seconds = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / 1e9;
        let load_times = [
            (
                "lb_config_compile_seconds",
                "Seconds the last configuration load took to read, parse, validate and compile every object.",
                seconds(&self.compile_nanos),
            ),
            (
                "lb_config_publish_seconds",
                "Seconds the last configuration load took to swap the snapshot in and bump the generation.",
                seconds(&self.publish_nanos),
            ),
        ];
        for (name, help, value) in load_times {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        self.write_change_metrics(&mut out);
        out.push_str("# HELP lb_l4_source_refused_total L4 TCP connections closed at accept and UDP datagrams dropped before any flow because the client is outside the Service's source ranges.\n# TYPE lb_l4_source_refused_total counter\n");
        let tcp = c.sum(|w| &w.l4_source_refused_tcp);
        let udp = c.sum(|w| &w.l4_source_refused_udp);
        let _ = writeln!(out, "lb_l4_source_refused_total{{protocol=\"tcp\"}} {tcp}");
        let _ = writeln!(out, "lb_l4_source_refused_total{{protocol=\"udp\"}} {udp}");
        let gw = c.sum(|w| &w.gateway_source_refused);
        let _ = writeln!(
            out,
            "# HELP lb_gateway_source_refused_total Gateway connections closed at accept because the client is outside the Gateway's source ranges.\n# TYPE lb_gateway_source_refused_total counter\nlb_gateway_source_refused_total {gw}"
        );
        out.push_str("# HELP lb_listener_conflicts Addresses and ports an object asked for but did not get (another owner has them), by the kind that lost.\n# TYPE lb_listener_conflicts gauge\n");
        let conflicts = self
            .view
            .lock()
            .map(|v| v.conflicts.clone())
            .unwrap_or_default();
        for kind in ["gateway", "service"] {
            let n = conflicts.get(kind).copied().unwrap_or(0);
            let _ = writeln!(out, "lb_listener_conflicts{{kind=\"{kind}\"}} {n}");
        }
        let generation = self.snapshot.generation();
        let _ = writeln!(
            out,
            "# HELP lb_snapshot_generation Generation of the published snapshot.\n# TYPE lb_snapshot_generation gauge\nlb_snapshot_generation {generation}"
        );
        out.push_str("# HELP lb_worker_info One series per worker with its I/O mode.\n# TYPE lb_worker_info gauge\n");
        for i in 0..self.counters.iter().count() {
            let _ = writeln!(
                out,
                "lb_worker_info{{worker=\"{i}\",io=\"{}\"}} 1",
                self.io_mode
            );
        }
        for w in self
            .metric_writers
            .lock()
            .expect("metric writers lock")
            .iter()
        {
            w.write_metrics(&mut out);
        }
        if let Some(l) = self.leader.get() {
            l.write_metrics(&mut out);
        }
        let _ = writeln!(
            out,
            "# HELP lb_ready Whether the process is ready.\n# TYPE lb_ready gauge\nlb_ready {}",
            u8::from(self.is_ready())
        );
        out
    }

    /// The change counters and the event-to-traffic summary.
    fn write_change_metrics(&self, out: &mut String) {
        let counters = [
            (
                "lb_config_events_total",
                "Change events seen by the sources (file events, SIGHUP) that led to a reload.",
                self.events.load(Ordering::Relaxed),
            ),
            (
                "lb_config_compiles_total",
                "Configuration loads compiled (bursts of events are coalesced into one).",
                self.compiles.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let name = "lb_event_to_traffic_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds from the first change event of a burst to the swap of the snapshot built from it.\n# TYPE {name} summary"
        );
        let Ok(h) = self.event_to_traffic.lock() else {
            return;
        };
        let count = h.micros.len();
        let seconds = |us: u64| us as f64 / 1e6;
        for q in ["0.5", "0.9", "0.99"] {
            let value = if count == 0 {
                "NaN".to_owned()
            } else {
                let quantile = q.parse().unwrap_or(0.5);
                seconds(h.micros.value_at_quantile(quantile)).to_string()
            };
            let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {value}");
        }
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {count}\n# HELP {name}_max Longest event-to-traffic time recorded, in seconds.\n# TYPE {name}_max gauge\n{name}_max {}",
            seconds(h.sum_micros),
            seconds(h.micros.max()),
        );
    }

    fn config_json(&self) -> serde_json::Value {
        let published = self.snapshot.load();
        let view = self
            .view
            .lock()
            .map(|v| (v.config.clone(), v.diagnostics.clone()));
        let (config, diagnostics) = view.unwrap_or_default();
        let workers: Vec<_> = (0..self.counters.iter().count())
            .map(|i| serde_json::json!({"worker": i, "io": self.io_mode}))
            .collect();
        serde_json::json!({
            "generation": published.generation,
            "config": config,
            "workers": workers,
            "diagnostics": diagnostics,
            "http": &published.value,
        })
    }

    fn status_json(&self) -> serde_json::Value {
        let status = self
            .view
            .lock()
            .map(|v| v.status.clone())
            .unwrap_or_default();
        serde_json::Value::Array(status)
    }

    /// Answers one admin request: `(status, content type, body)`.
    pub fn respond(&self, method: &str, path: &str) -> (u16, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        const JSON: &str = "application/json";
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if method != "GET" && method != "HEAD" {
            return (405, TEXT, "method not allowed\n".into());
        }
        match path {
            "/healthz" => (200, TEXT, "ok\n".into()),
            "/readyz" if !self.is_ready() => (503, TEXT, "not ready\n".into()),
            "/readyz" => match self.stalled_workers() {
                stalled if stalled.is_empty() => (200, TEXT, "ready\n".into()),
                stalled => (
                    503,
                    TEXT,
                    format!("not ready: worker(s) {stalled:?} made no progress\n"),
                ),
            },
            "/metrics" => (200, "text/plain; version=0.0.4", self.metrics()),
            "/config" => (200, JSON, pretty(&self.config_json())),
            "/status" => (200, JSON, pretty(&self.status_json())),
            _ => (404, TEXT, "not found\n".into()),
        }
    }
}

fn pretty(v: &serde_json::Value) -> String {
    let mut s =
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

/// Binds the admin listener (fails early so `lb serve` can report it).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves admin requests until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<ControlState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, &state)).await;
        });
    }
}

async fn handle(mut stream: TcpStream, state: &ControlState) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or("GET").to_owned(),
                    req.path.unwrap_or("/").to_owned(),
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => continue,
            _ => {
                stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
                return Ok(());
            }
        }
    };
    let (status, content_type, body) = state.respond(&method, &path);
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        out.push_str(&body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use lb_core::counters::CounterSet;
    use lb_core::snapshot::SnapshotCell;
    use lb_http::ApplianceSnapshot;

    fn state() -> ControlState {
        ControlState::new(
            Arc::new(SnapshotCell::new(ApplianceSnapshot::default())),
            Arc::new(CounterSet::new(1)),
        )
    }

    fn series(metrics: &str, name: &str) -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    }

    #[test]
    fn readyz_needs_every_worker_to_make_progress() {
        let s = state();
        s.set_ready(true);
        // Before the workers run, readiness is the control thread's alone.
        assert_eq!(s.respond("GET", "/readyz").0, 200);
        let progress = Arc::new(lb_core::progress::Progress::new(2));
        s.progress.set(Arc::clone(&progress)).unwrap();
        progress.beat(0);
        let (code, _, body) = s.respond("GET", "/readyz");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("[1]"), "{body}");
        assert_eq!(series(&s.metrics(), "lb_workers_stalled"), 1.0);
        progress.beat(1);
        assert_eq!(s.respond("GET", "/readyz").0, 200);
        progress.count_panic(1);
        assert_eq!(series(&s.metrics(), "lb_panics_total"), 1.0);
    }

    #[test]
    fn event_to_traffic_is_exported_as_a_summary() {
        let s = state();
        let m = s.metrics();
        assert_eq!(series(&m, "lb_event_to_traffic_seconds_count"), 0.0);
        assert!(series(&m, "lb_event_to_traffic_seconds{quantile=\"0.99\"}").is_nan());

        // A publish with no change noted (the first load) records nothing.
        s.set_compile_time(Duration::from_millis(1));
        s.snapshot_published();
        // Two bursts noted before one publish: one interval, from the earliest.
        let now = Instant::now();
        s.note_change(now - Duration::from_millis(40), 3);
        s.note_change(now - Duration::from_millis(80), 2);
        s.set_compile_time(Duration::from_millis(1));
        s.snapshot_published();
        // A SIGHUP right now.
        s.note_change(Instant::now(), 1);
        s.set_compile_time(Duration::from_millis(1));
        s.snapshot_published();

        let m = s.metrics();
        assert_eq!(series(&m, "lb_config_events_total"), 6.0);
        assert_eq!(series(&m, "lb_config_compiles_total"), 3.0);
        assert_eq!(series(&m, "lb_event_to_traffic_seconds_count"), 2.0);
        let p50 = series(&m, "lb_event_to_traffic_seconds{quantile=\"0.5\"}");
        let p99 = series(&m, "lb_event_to_traffic_seconds{quantile=\"0.99\"}");
        let max = series(&m, "lb_event_to_traffic_seconds_max");
        assert!(p50 < 0.05, "{p50}");
        assert!((0.08..1.0).contains(&p99), "{p99}");
        assert!((p99 - max).abs() < 0.001, "{p99} {max}");
        let sum = series(&m, "lb_event_to_traffic_seconds_sum");
        assert!((0.08..1.0).contains(&sum), "{sum}");
    }
}
