//! The benchmark harness: starts proxies and backends pinned to cores, runs
//! wrk against each in interleaved rounds, and reads each proxy's CPU time and
//! peak RSS from /proc. Every process it starts is stopped when its guard drops.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A started process, killed and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    /// The process.
    pub child: Child,
    /// What it is, for messages.
    pub name: String,
}

impl Proc {
    /// Starts `cmd` pinned to `cores` (a `taskset -c` list) with output discarded.
    pub fn start(
        name: &str,
        cores: &str,
        program: &Path,
        args: &[String],
    ) -> std::io::Result<Proc> {
        let child = Command::new("taskset")
            .arg("-c")
            .arg(cores)
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Proc {
            child,
            name: name.to_owned(),
        })
    }

    /// The process id (taskset execs the program, so this is the program's pid).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `addr` accepts connections.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// CPU time (user + system) of `pid` and all its threads, in microseconds.
pub fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1_000_000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// Peak resident set size of `pid` in KiB (VmHWM).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What one wrk run reported.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Requests completed.
    pub requests: u64,
    /// Latency percentiles in microseconds: p50, p99.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// Socket errors plus non-2xx/3xx responses.
    pub errors: u64,
}

fn parse_latency(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, mult) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|n| n * mult)
}

/// Parses wrk's `--latency` output.
pub fn parse_wrk(out: &str) -> WrkResult {
    let mut r = WrkResult::default();
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => r.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => r.p50_us = parse_latency(v).unwrap_or(0.0),
            ["99%", v] => r.p99_us = parse_latency(v).unwrap_or(0.0),
            [n, "requests", "in", ..] => r.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    r
}

/// Runs wrk pinned to `cores` against `url` (with extra request `headers`) and parses the result.
pub fn run_wrk(
    cores: &str,
    url: &str,
    connections: u32,
    seconds: u32,
    headers: &[&str],
) -> std::io::Result<WrkResult> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cores, "wrk", "-t1", "--latency"]);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    let out = cmd
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("5s")
        .arg(url)
        .output()?;
    Ok(parse_wrk(&String::from_utf8_lossy(&out.stdout)))
}

/// The median of `values` (0 when empty).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A fresh scratch directory for configs and pid files.
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 1s test @ http://127.0.0.1:1/\n  Latency Distribution\n     50%  384.00us\n     75%  1.20ms\n     99%    1.34ms\n  63176 requests in 1.00s, 5 MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:  63176.22\n";
        let r = parse_wrk(out);
        assert_eq!(r.requests, 63176);
        assert!((r.rps - 63176.22).abs() < 0.01);
        assert!((r.p50_us - 384.0).abs() < 0.01);
        assert!((r.p99_us - 1340.0).abs() < 0.01);
        assert_eq!(r.errors, 7);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 4.0);
        assert_eq!(median(vec![]), 0.0);
    }
}
