//! The admin HTTP API: `/healthz`, `/readyz`, `/metrics`, `/config`, `/status`.
//! It runs on the control thread, never on a worker, and answers one request
//! per connection.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::counters::CounterSet;
use lb_core::snapshot::SnapshotCell;
use lb_http::HttpSnapshot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
}

/// State shared between the control thread and the admin server.
#[derive(Debug)]
pub struct AdminState {
    ready: AtomicBool,
    reloads: [AtomicU64; 3],
    /// Duration of the last load's compile and publish steps, in nanoseconds.
    compile_nanos: AtomicU64,
    publish_nanos: AtomicU64,
    /// The snapshot swap point.
    pub snapshot: Arc<SnapshotCell<HttpSnapshot>>,
    /// Per-worker counters.
    pub counters: Arc<CounterSet>,
    /// I/O mode of each worker, for `/metrics` and `/config`.
    pub io_mode: &'static str,
    view: Mutex<ControlView>,
}

impl AdminState {
    /// Creates the state; not ready until [`AdminState::set_ready`].
    pub fn new(snapshot: Arc<SnapshotCell<HttpSnapshot>>, counters: Arc<CounterSet>) -> Self {
        Self {
            ready: AtomicBool::new(false),
            reloads: Default::default(),
            compile_nanos: AtomicU64::new(0),
            publish_nanos: AtomicU64::new(0),
            snapshot,
            counters,
            io_mode: "epoll",
            view: Mutex::new(ControlView::default()),
        }
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

    /// Records how long the last load took to read, validate and compile
    /// (`lb_config_compile_seconds`).
    pub fn set_compile_time(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.compile_nanos.store(nanos, Ordering::Relaxed);
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
        let _ = writeln!(
            out,
            "# HELP lb_ready Whether the process is ready.\n# TYPE lb_ready gauge\nlb_ready {}",
            u8::from(self.is_ready())
        );
        out
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
            "/readyz" if self.is_ready() => (200, TEXT, "ready\n".into()),
            "/readyz" => (503, TEXT, "not ready\n".into()),
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
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
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

async fn handle(mut stream: TcpStream, state: &AdminState) -> std::io::Result<()> {
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
