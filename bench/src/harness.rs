//! The benchmark harness: starts proxies and backends pinned to cores, runs
//! wrk against each (with a generated Lua hook that adds the p99.9 latency),
//! and reads each proxy's CPU time and peak RSS from /proc. Every process it
//! starts is stopped when its guard drops.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
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

    /// Starts `program` like [`Proc::start`] with stdout and stderr appended
    /// to `log`, so a refusal to start can be read back (see [`log_tail`]).
    pub fn start_logged(
        name: &str,
        cores: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> std::io::Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(cores)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
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

/// The last `lines` lines of the file at `path` (empty when unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Fails when something already listens on one of `ports` (another bench
/// run, a stray proxy): the scenario would measure it instead of its own.
pub fn ports_free(ports: &[u16]) -> Result<(), String> {
    for &port in ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Err(format!(
                "something already listens on {addr} (another bench run?)"
            ));
        }
    }
    Ok(())
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
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency in microseconds (printed by [`P999_SCRIPT`]).
    pub p999_us: f64,
    /// Socket errors plus non-2xx/3xx responses.
    pub errors: u64,
    /// Socket errors alone: the sum of [`WrkResult::socket_kinds`].
    pub socket_errors: u64,
    /// Socket errors by kind: connect, read, write, timeout.
    pub socket_kinds: [u64; 4],
    /// Responses with a status of 400 or more.
    pub non_2xx: u64,
}

/// The wrk Lua script that prints the 99.9th latency percentile (µs), which
/// `--latency` leaves out, on a line of its own that [`parse_wrk`] reads.
pub const P999_SCRIPT: &str = "-- lb bench: print the p99.9 latency, which wrk --latency does not show.\n\
done = function(summary, latency, requests)\n\
  io.write(string.format(\"lb-bench p99.9 %.1f us\\n\", latency:percentile(99.9)))\n\
end\n";

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
            ["lb-bench", "p99.9", v, "us"] => r.p999_us = v.parse().unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                for pair in rest.chunks(2) {
                    if let [kind, n] = pair {
                        let n = n.trim_end_matches(',').parse::<u64>().unwrap_or(0);
                        let i = ["connect", "read", "write", "timeout"]
                            .iter()
                            .position(|k| k == kind);
                        if let Some(i) = i {
                            r.socket_kinds[i] = n;
                        }
                    }
                }
                r.socket_errors = r.socket_kinds.iter().sum();
            }
            _ => {}
        }
    }
    r.errors = r.socket_errors + r.non_2xx;
    r
}

/// A wrk run in progress; killed on drop if not finished.
#[derive(Debug)]
pub struct WrkRun {
    child: Option<Child>,
    script: PathBuf,
}

impl WrkRun {
    /// Waits for wrk to finish and parses what it printed.
    pub fn finish(mut self) -> std::io::Result<WrkResult> {
        let child = self.child.take().ok_or(std::io::ErrorKind::NotFound)?;
        let out = child.wait_with_output()?;
        Ok(parse_wrk(&String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for WrkRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.script);
    }
}

/// Starts wrk pinned to `cores` against `url` (with extra request `headers`),
/// with [`P999_SCRIPT`] written to a scratch file for the run.
pub fn spawn_wrk(
    cores: &str,
    url: &str,
    connections: u32,
    seconds: u32,
    headers: &[&str],
) -> std::io::Result<WrkRun> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let script = std::env::temp_dir().join(format!("lb-bench-{}-p999-{n}.lua", std::process::id()));
    std::fs::write(&script, P999_SCRIPT)?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cores, "wrk", "-t1", "--latency", "-s"])
        .arg(&script);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    let child = cmd
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("5s")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => Ok(WrkRun {
            child: Some(c),
            script,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&script);
            Err(e)
        }
    }
}

/// Runs wrk pinned to `cores` against `url` (with extra request `headers`) and parses the result.
pub fn run_wrk(
    cores: &str,
    url: &str,
    connections: u32,
    seconds: u32,
    headers: &[&str],
) -> std::io::Result<WrkResult> {
    spawn_wrk(cores, url, connections, seconds, headers)?.finish()
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
        let out = "Running 1s test @ http://127.0.0.1:1/\n  Latency Distribution\n     50%  384.00us\n     75%  1.20ms\n     99%    1.34ms\n  63176 requests in 1.00s, 5 MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:  63176.22\nTransfer/sec:      5.00MB\nlb-bench p99.9 2051.0 us\n";
        let r = parse_wrk(out);
        assert_eq!(r.requests, 63176);
        assert!((r.rps - 63176.22).abs() < 0.01);
        assert!((r.p50_us - 384.0).abs() < 0.01);
        assert!((r.p99_us - 1340.0).abs() < 0.01);
        assert_eq!(r.errors, 7);
        assert_eq!(r.socket_errors, 3);
        assert_eq!(r.socket_kinds, [0, 2, 0, 1]);
        assert_eq!(r.non_2xx, 4);
        assert!((r.p999_us - 2051.0).abs() < 0.01);
    }

    #[test]
    fn p999_absent_is_zero() {
        let r = parse_wrk("     99%    1.34ms\nRequests/sec:  1.00\n");
        assert_eq!(r.p999_us, 0.0);
        assert_eq!(r.errors, 0);
    }

    #[test]
    fn p999_script_prints_the_parsed_line() {
        assert!(P999_SCRIPT.contains("latency:percentile(99.9)"));
        assert!(P999_SCRIPT.contains("lb-bench p99.9 %.1f us\\n"));
    }

    #[test]
    fn a_port_in_use_is_not_free() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert!(ports_free(&[port]).is_err());
        drop(l);
        assert!(ports_free(&[port]).is_ok());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 4.0);
        assert_eq!(median(vec![]), 0.0);
    }
}
