//! The benchmark scenarios. Each returns the markdown body of its report.

pub mod conns;
pub mod gateway;
pub mod http1;
pub mod http2;
pub mod idle;
pub mod l4;
pub mod reload;
pub mod reload_targets;
pub mod scale;
pub mod tls;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::{Proc, log_tail, wait_listening};
use crate::report::{Figures, figures_table};
use crate::sys::alive;

/// Options common to every scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds per load run.
    pub seconds: u32,
    /// Interleaved rounds; medians are reported.
    pub rounds: usize,
    /// Client connections for throughput loads.
    pub connections: u32,
    /// The backend behind the proxies (`--backend nginx|echo`).
    pub backend: crate::backends::Backend,
    /// Idle client connections per proxy in `conns` (`--idle`).
    pub idle: usize,
    /// Configuration changes per proxy in `reload` (`--changes`).
    pub changes: u32,
    /// Object counts for `scale` (`--objects 1000,10000`).
    pub objects: Vec<usize>,
}

/// A proxy under test in the `tls` and `http2` scenarios: its process, the
/// loopback port it serves the load on, and why it is not measured when it
/// is not (it exited or never listened): such a row is reported as failed
/// instead of ending the run.
#[derive(Debug)]
pub struct Target {
    /// Its name in reports: "lb", "haproxy" or "nginx".
    pub name: &'static str,
    /// The running proxy, stopped when the target drops.
    pub proc_: Proc,
    /// The port the load goes to.
    pub port: u16,
    /// Its log, quoted when it fails.
    pub log: PathBuf,
    /// Why it is not measured.
    pub down: Option<String>,
}

impl Target {
    /// The proxy's pid.
    pub fn pid(&self) -> u32 {
        self.proc_.pid()
    }

    /// Waits up to `limit` for its port to listen; marks it down if it
    /// exits or the time passes first.
    pub fn wait_up(&mut self, limit: Duration) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + limit;
        while !wait_listening(addr, Duration::from_millis(200)) {
            self.check_alive();
            if self.down.is_some() {
                return;
            }
            if Instant::now() >= deadline {
                self.down = Some(format!(
                    "not listening on {addr} after {} s{}",
                    limit.as_secs(),
                    self.log_end()
                ));
                return;
            }
        }
    }

    /// Marks it down if its process has exited.
    pub fn check_alive(&mut self) {
        if self.down.is_none() && !alive(self.pid()) {
            self.down = Some(format!("exited{}", self.log_end()));
        }
    }

    /// The last line of its log, as a suffix for messages.
    fn log_end(&self) -> String {
        let tail = log_tail(&self.log, 1);
        let line: String = tail.chars().filter(|c| !c.is_control()).take(200).collect();
        if line.trim().is_empty() {
            String::new()
        } else {
            format!("; its log ends: {}", line.trim())
        }
    }
}

/// [`figures_table`] for `names[i]` -> `figs[i]`, where a row with
/// `failed[i]` set shows "failed: reason" instead of figures (and, when it is
/// lb, HAProxy or nginx, leaves out the ratio line).
pub fn table_with_failures(names: &[&str], figs: &[Figures], failed: &[Option<String>]) -> String {
    let live: Vec<usize> = (0..names.len())
        .filter(|&i| failed.get(i).is_none_or(Option::is_none))
        .collect();
    let live_names: Vec<&str> = live.iter().map(|&i| names[i]).collect();
    let live_figs: Vec<Figures> = live.iter().map(|&i| figs[i].clone()).collect();
    let table = figures_table(&live_names, &live_figs);
    let mut lines = table.lines();
    let mut out = String::new();
    for line in lines.by_ref().take(2) {
        let _ = writeln!(out, "{line}");
    }
    for (i, name) in names.iter().enumerate() {
        match failed.get(i).and_then(Option::as_ref) {
            Some(why) => {
                let why = why.replace('|', "/");
                let errors = figs.get(i).map_or(0, |f| f.errors);
                let _ = writeln!(
                    out,
                    "| {name} | failed: {why} | - | - | - | - | - | {errors} |"
                );
            }
            None => {
                if let Some(line) = lines.next() {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
    }
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// Why a load failed for a row, if it did: a round that completed no
/// request, or a row that was down.
pub fn load_failure(f: &Figures, down: Option<&String>) -> Option<String> {
    if let Some(d) = down {
        return Some(d.clone());
    }
    if f.rps.is_empty() || f.rps.iter().any(|&r| r <= 0.0) {
        return Some(format!(
            "no request completed in a round ({} errors)",
            f.errors
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figs(rps: f64) -> Figures {
        Figures {
            rps: vec![rps],
            cpu_us_per_req: vec![10.0],
            p50: vec![1.0],
            p99: vec![2.0],
            p999: vec![3.0],
            ..Figures::default()
        }
    }

    #[test]
    fn failed_rows_keep_their_place_and_drop_the_ratios() {
        let names = ["lb", "haproxy", "nginx"];
        let f = [figs(0.0), figs(100.0), figs(200.0)];
        let failed = [Some("no request completed".to_owned()), None, None];
        let t = table_with_failures(&names, &f, &failed);
        let rows: Vec<&str> = t.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 4, "{t}");
        assert!(
            rows[1].starts_with("| lb | failed: no request completed |"),
            "{t}"
        );
        assert!(rows[2].starts_with("| haproxy | 100 |"), "{t}");
        assert!(rows[3].starts_with("| nginx | 200 |"), "{t}");
        assert!(!t.contains("ratios:"), "{t}");
        let all = table_with_failures(&names, &f, &[None, None, None]);
        assert!(all.contains("ratios: req/s lb/haproxy 0.00"), "{all}");
    }

    #[test]
    fn a_round_without_requests_fails_the_load() {
        assert!(load_failure(&figs(5.0), None).is_none());
        assert!(load_failure(&figs(0.0), None).is_some());
        assert!(load_failure(&Figures::default(), None).is_some());
        let down = "exited".to_owned();
        assert_eq!(load_failure(&figs(5.0), Some(&down)), Some(down));
    }
}
