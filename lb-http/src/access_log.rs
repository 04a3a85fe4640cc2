//! The optional access log: one JSON line per request, written by a thread of
//! its own so a worker never blocks on the disk. Workers format the line and
//! hand it over through a bounded channel; when the writer falls behind, lines
//! are dropped and counted rather than delaying requests.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Lines buffered between the workers and the writer thread.
const QUEUE: usize = 65_536;

/// One request as logged.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// When the request head was complete (RFC 3339, UTC).
    pub time: String,
    /// The client's address.
    pub client: SocketAddr,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'a str,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The normalised host.
    pub host: &'a str,
    /// The method.
    pub method: &'a str,
    /// The path and query.
    pub path: &'a str,
    /// The status sent to the client (0 when none was).
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// The endpoint that served it, if one was reached.
    pub upstream: Option<SocketAddr>,
    /// The backend (`namespace/service:port`), if a route matched.
    pub backend: Option<&'a str>,
    /// Milliseconds from the complete request head to the end of the response.
    pub duration_ms: f64,
    /// Milliseconds from the complete request head to the upstream's response head.
    pub upstream_ms: Option<f64>,
}

/// Milliseconds of a duration, for [`Record`].
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The workers' handle on the access log (cheap to clone).
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Opens `path` (appending; `-` is standard output) and starts the
    /// writer thread.
    pub fn open(path: PathBuf) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?,
            )
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("lb-access-log".into())
            .spawn(move || write_lines(rx, out))?;
        Ok(Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues one record; never waits. Returns false when it was dropped.
    pub fn log(&self, record: &Record<'_>) -> bool {
        let mut line = Vec::with_capacity(256);
        if serde_json::to_writer(&mut line, record).is_err() {
            return false;
        }
        line.push(b'\n');
        match self.tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer thread: writes lines in batches, flushing when the queue is empty.
fn write_lines(rx: Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let mut ok = out.write_all(&line).is_ok();
        while let Ok(more) = rx.try_recv() {
            ok &= out.write_all(&more).is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            tracing::warn!("access log write failed");
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert!(now_rfc3339().ends_with('Z'));
    }

    #[test]
    fn records_become_json_lines() {
        let dir = std::env::temp_dir().join(format!("lb-access-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let log = AccessLog::open(dir.clone()).unwrap();
        let r = Record {
            time: now_rfc3339(),
            client: "127.0.0.1:5000".parse().unwrap(),
            protocol: "HTTP/1.1",
            tls: false,
            host: "a.test",
            method: "GET",
            path: "/x?\"q\"",
            status: 200,
            bytes_sent: 12,
            upstream: Some("127.0.0.2:80".parse().unwrap()),
            backend: Some("default/web:80"),
            duration_ms: 1.5,
            upstream_ms: Some(1.0),
        };
        assert!(log.log(&r));
        drop(log);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let text = loop {
            let t = std::fs::read_to_string(&dir).unwrap_or_default();
            if t.ends_with('\n') || std::time::Instant::now() > deadline {
                break t;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["path"], "/x?\"q\"");
        assert_eq!(v["status"], 200);
        assert_eq!(v["upstream"], "127.0.0.2:80");
        let _ = std::fs::remove_file(&dir);
    }
}
