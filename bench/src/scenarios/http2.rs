//! `http2`: cleartext HTTP/2 with prior knowledge (h2c) from h2load to lb's
//! plain listener (which tells HTTP/2 from HTTP/1.1 by the connection
//! preface), HAProxy (`bind ... proto h2`) and nginx (`http2`), each proxying
//! to the HTTP/1.1 backend. Rounds interleaved, medians reported.
//!
//! h2load prints min, max, mean and standard deviation of the request time
//! but no percentiles; p50, p99 and p99.9 are computed from its per-request
//! log (`--log-file`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::http1::ratio_chart;
use super::{Options, Target, load_failure, table_with_failures};
use crate::harness::{cpu_micros, median, peak_rss_kib, ports_free, scratch, wait_listening};
use crate::proxies::{
    Listen, lb_config, other_cores, ports, start_haproxy_listen, start_lb_logged,
    start_nginx_listen, web_manifests,
};
use crate::report::{Figures, ratios, result_path};

/// How long a proxy gets to start listening.
const START_LIMIT: Duration = Duration::from_secs(20);
/// Time h2load gets beyond its `-D` before it is killed.
const H2LOAD_GRACE: Duration = Duration::from_secs(15);
/// Concurrent streams per connection (`h2load -m`).
const STREAMS: u32 = 10;

/// Runs the scenario and writes `bench/results/http2.svg`.
pub fn run(o: &Options) -> Result<String, String> {
    ports_free(&ports::ALL)?;
    let dir = scratch("http2");
    let result = run_in(o, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(o: &Options, dir: &Path) -> Result<String, String> {
    let cores = other_cores();
    let _backend = o.backend.start(dir)?;
    let backend = SocketAddr::from(([127, 0, 0, 1], ports::BACKEND));
    if !wait_listening(backend, START_LIMIT) {
        return Err(format!("backend did not start listening on {backend}"));
    }
    let sub = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        Ok::<_, String>(d)
    };
    let (lb_dir, ha_dir, ng_dir) = (sub("lb")?, sub("haproxy")?, sub("nginx")?);
    let lb_cfg = lb_config(&lb_dir, &web_manifests(ports::BACKEND))?;
    let target = |name, proc_, port, log| Target {
        name,
        proc_,
        port,
        log,
        down: None,
    };
    let mut targets = vec![
        target(
            "lb",
            start_lb_logged(&lb_dir, &lb_cfg)?,
            ports::LB,
            lb_dir.join("lb.log"),
        ),
        target(
            "haproxy",
            start_haproxy_listen(&ha_dir, Listen::H2c)?,
            ports::HAPROXY,
            ha_dir.join("haproxy.log"),
        ),
        target(
            "nginx",
            start_nginx_listen(&ng_dir, Listen::H2c)?,
            ports::NGINX,
            ng_dir.join("nginx.err"),
        ),
    ];
    for t in &mut targets {
        t.wait_up(START_LIMIT);
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    let mut figs = vec![Figures::default(); targets.len()];
    let mut details = vec![Details::default(); targets.len()];
    let logs = dir.join("h2load");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    for round in 0..o.rounds {
        for (i, t) in targets.iter_mut().enumerate() {
            if t.down.is_some() {
                continue;
            }
            let pid = t.pid();
            let before = cpu_micros(pid);
            let log = logs.join(format!("{}-{round}.log", t.name));
            let run = run_h2load(&cores, t.port, o, &log)?;
            let after = cpu_micros(pid);
            let d = &mut details[i];
            let f = &mut figs[i];
            match run {
                Ok(r) => {
                    let lat = success_latencies(&log);
                    f.rps.push(r.rps);
                    f.p50.push(percentile(&lat, 50.0));
                    f.p99.push(percentile(&lat, 99.0));
                    f.p999.push(percentile(&lat, 99.9));
                    f.errors += r.failed + r.status_4xx_5xx;
                    if let (Some(b), Some(a)) = (before, after) {
                        f.cpu_us_per_req
                            .push(a.saturating_sub(b) as f64 / r.succeeded.max(1) as f64);
                    }
                    if r.succeeded == 0 && d.first_problem.is_none() {
                        d.first_problem = Some(format!(
                            "h2load: {} succeeded, {} failed, {} errored",
                            r.succeeded, r.failed, r.errored
                        ));
                    }
                    d.add(&r);
                }
                Err(e) => {
                    f.rps.push(0.0);
                    d.first_problem.get_or_insert(e);
                }
            }
            let _ = std::fs::remove_file(&log);
            f.rss_kib = peak_rss_kib(pid).unwrap_or(0);
            t.check_alive();
        }
    }
    let failed: Vec<Option<String>> = targets
        .iter()
        .zip(&figs)
        .zip(&details)
        .map(|((t, f), d)| {
            load_failure(f, t.down.as_ref()).map(|why| match &d.first_problem {
                Some(p) => format!("{why}; {p}"),
                None => why,
            })
        })
        .collect();

    let mut out = format!(
        "backend: {} (HTTP/1.1 behind each proxy)\n\n\
         h2load: h2c with prior knowledge, `-c {c} -m {STREAMS} -t 1 -D {s}` (one thread, {c} connections, {STREAMS} concurrent streams each, {s} s per run), `GET /fixed`. lb on its plain HTTP listener (HTTP/2 told apart by the connection preface); HAProxy `bind ... proto h2`; nginx `{ngx}` with `keepalive_requests` raised so that it does not close h2load's connections after 1000 requests (h2load does not reopen them). Each proxy on core 0 with one worker; h2load and the backend on the other cores. CPU is the proxy's utime+stime from /proc over each run.\n",
        o.backend.name(),
        c = o.connections,
        s = o.seconds,
        ngx = nginx_h2_syntax(),
    );
    let _ = writeln!(
        out,
        "\n### requests/s, h2c: h2load `GET /fixed` ({} rounds x {} s, {} connections x {STREAMS} streams, median)\n",
        o.rounds, o.seconds, o.connections
    );
    out.push_str(&table_with_failures(&names, &figs, &failed));
    out.push_str(
        "\np50/p99/p99.9 are computed from h2load's per-request log (`--log-file`, successful requests only); h2load itself prints no percentiles. Its own figures, all rounds:\n\n",
    );
    out.push_str(&details_table(&names, &details));

    let mut chart = ratio_chart("http2", o);
    if failed.iter().all(Option::is_none)
        && let Some(r) = ratios(&names, &figs)
    {
        chart.groups.push("h2c /fixed".to_owned());
        for (s, v) in chart.series.iter_mut().zip(r) {
            s.values.push(v);
        }
    }
    drop(targets);
    chart.write_svg(&result_path("http2", "svg"))?;
    Ok(out)
}

/// The nginx directive used for h2c on the installed version.
fn nginx_h2_syntax() -> &'static str {
    if crate::proxies::nginx_version().is_some_and(|v| v >= (1, 25, 1)) {
        "listen ...; http2 on;"
    } else {
        "listen ... http2;"
    }
}

/// What one h2load run printed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct H2load {
    /// Requests per second (`finished in ..., N req/s`).
    pub rps: f64,
    /// Requests done.
    pub done: u64,
    /// Requests that got a response.
    pub succeeded: u64,
    /// Requests that failed (errored and timed out ones included).
    pub failed: u64,
    /// Requests that failed on a stream or connection error.
    pub errored: u64,
    /// Requests that timed out.
    pub timeout: u64,
    /// Responses with a 4xx or 5xx status.
    pub status_4xx_5xx: u64,
    /// Time for request in µs: min, max, mean, sd.
    pub request_us: [f64; 4],
}

/// Parses h2load's summary.
pub fn parse_h2load(out: &str) -> H2load {
    let mut r = H2load::default();
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "finished in 1.01s, 10000.00 req/s, 674.47KB/s"
            r.rps = rest
                .split(", ")
                .find_map(|p| p.strip_suffix(" req/s"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // "10069 total, 10090 started, 10069 done, 10000 succeeded, 69 failed, 69 errored, 0 timeout"
            for part in rest.split(", ") {
                if let Some((n, what)) = part.split_once(' ') {
                    let n = n.parse().unwrap_or(0);
                    match what {
                        "done" => r.done = n,
                        "succeeded" => r.succeeded = n,
                        "failed" => r.failed = n,
                        "errored" => r.errored = n,
                        "timeout" => r.timeout = n,
                        _ => {}
                    }
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            // "10000 2xx, 0 3xx, 0 4xx, 0 5xx"
            for part in rest.split(", ") {
                if let Some((n, "4xx" | "5xx")) = part.split_once(' ') {
                    r.status_4xx_5xx += n.parse::<u64>().unwrap_or(0);
                }
            }
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            // "47us      5.60ms      1.50ms       675us    81.31%"
            for (slot, v) in r.request_us.iter_mut().zip(rest.split_whitespace()) {
                *slot = duration_us(v).unwrap_or(0.0);
            }
        }
    }
    r
}

/// `47us`, `5.60ms` or `1.2s` in µs.
fn duration_us(v: &str) -> Option<f64> {
    let (num, mult) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else {
        (v.strip_suffix('s')?, 1e6)
    };
    num.parse::<f64>().ok().map(|n| n * mult)
}

/// Runs h2load pinned to `cores` against `127.0.0.1:port` for `o.seconds`,
/// writing its per-request log to `log`. The outer error is a harness
/// failure (h2load cannot be started); the inner one a failed run (killed
/// after [`H2LOAD_GRACE`], or no summary printed).
fn run_h2load(
    cores: &str,
    port: u16,
    o: &Options,
    log: &Path,
) -> Result<Result<H2load, String>, String> {
    let out_path = log.with_extension("out");
    let out =
        std::fs::File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    let child = Command::new("taskset")
        .args(["-c", cores, "h2load", "-t", "1"])
        .arg(format!("-c{}", o.connections))
        .arg(format!("-m{STREAMS}"))
        .arg(format!("-D{}", o.seconds))
        .arg(format!("--log-file={}", log.display()))
        .arg(format!("http://127.0.0.1:{port}/fixed"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("h2load: {e}"))?;
    let mut child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(u64::from(o.seconds)) + H2LOAD_GRACE;
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                return Ok(Err(format!(
                    "h2load did not finish within {} s",
                    (u64::from(o.seconds) + H2LOAD_GRACE.as_secs())
                )));
            }
            Err(e) => return Err(format!("h2load: {e}")),
        }
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    if !text.contains("requests: ") {
        return Ok(Err(format!("h2load exited ({status}) without a summary")));
    }
    Ok(Ok(parse_h2load(&text)))
}

/// A child process killed and reaped on drop, if still running.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// The durations (µs) of the successful requests in an h2load log, sorted.
fn success_latencies(log: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut v = parse_log(&text);
    v.sort_unstable();
    v
}

/// The third column (µs to end of response) of each log row whose status
/// (second column) is 2xx or 3xx.
fn parse_log(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let status: i64 = cols.nth(1)?.trim().parse().ok()?;
            let us: u64 = cols.next()?.trim().parse().ok()?;
            (200..400).contains(&status).then_some(us)
        })
        .collect()
}

/// The `p`th percentile of sorted `values` (0 when empty).
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

/// h2load's own counts and request times for one row over all rounds.
#[derive(Debug, Clone, Default)]
struct Details {
    succeeded: u64,
    failed: u64,
    errored: u64,
    timeout: u64,
    status_4xx_5xx: u64,
    min: Vec<f64>,
    max: Vec<f64>,
    mean: Vec<f64>,
    sd: Vec<f64>,
    first_problem: Option<String>,
}

impl Details {
    fn add(&mut self, r: &H2load) {
        self.succeeded += r.succeeded;
        self.failed += r.failed;
        self.errored += r.errored;
        self.timeout += r.timeout;
        self.status_4xx_5xx += r.status_4xx_5xx;
        if r.succeeded > 0 {
            let [min, max, mean, sd] = r.request_us;
            self.min.push(min);
            self.max.push(max);
            self.mean.push(mean);
            self.sd.push(sd);
        }
    }
}

/// h2load's counts (summed over rounds) and its time for request (min of
/// the minima, median mean and sd, max of the maxima).
fn details_table(names: &[&str], details: &[Details]) -> String {
    let mut out = String::from(
        "| path | succeeded | failed | errored | timeout | 4xx+5xx | min µs | mean µs | max µs | sd µs |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, d) in names.iter().zip(details) {
        let times = if d.mean.is_empty() {
            "- | - | - | -".to_owned()
        } else {
            format!(
                "{:.0} | {:.0} | {:.0} | {:.0}",
                d.min.iter().copied().fold(f64::INFINITY, f64::min),
                median(d.mean.clone()),
                d.max.iter().copied().fold(0.0, f64::max),
                median(d.sd.clone()),
            )
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {times} |",
            d.succeeded, d.failed, d.errored, d.timeout, d.status_4xx_5xx
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "Application protocol: h2c\n\
finished in 1.01s, 10000.00 req/s, 674.47KB/s\n\
requests: 10069 total, 10090 started, 10069 done, 10000 succeeded, 69 failed, 69 errored, 0 timeout\n\
status codes: 10000 2xx, 0 3xx, 3 4xx, 2 5xx\n\
traffic: 674.47KB (690660) total, 478.52KB (490000) headers (space savings 50.00%), 19.53KB (20000) data\n\
                     min         max         mean         sd        +/- sd\n\
time for request:       47us      5.60ms      1.50ms       675us    81.31%\n\
time for connect:       88us       241us       169us        48us    60.00%\n";

    #[test]
    fn parses_h2load_summary() {
        let r = parse_h2load(OUT);
        assert_eq!(r.rps, 10000.0);
        assert_eq!(r.done, 10069);
        assert_eq!(r.succeeded, 10000);
        assert_eq!(r.failed, 69);
        assert_eq!(r.errored, 69);
        assert_eq!(r.timeout, 0);
        assert_eq!(r.status_4xx_5xx, 5);
        assert_eq!(r.request_us, [47.0, 5600.0, 1500.0, 675.0]);
        assert_eq!(parse_h2load(""), H2load::default());
    }

    #[test]
    fn durations_and_log_rows() {
        assert_eq!(duration_us("1.5s"), Some(1.5e6));
        assert_eq!(duration_us("12us"), Some(12.0));
        assert_eq!(duration_us("x"), None);
        let log = "1795736634673961\t200\t1635\n1795736634673962\t-1\t10\n1795736634673963\t502\t9\n1795736634673964\t200\t20\n";
        assert_eq!(parse_log(log), vec![1635, 20]);
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), 51.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
    }

    #[test]
    fn details_show_dashes_without_successes() {
        let mut d = Details::default();
        d.add(&parse_h2load(OUT));
        let t = details_table(&["lb", "nginx"], &[Details::default(), d]);
        assert!(
            t.contains("| lb | 0 | 0 | 0 | 0 | 0 | - | - | - | - |"),
            "{t}"
        );
        assert!(
            t.contains("| nginx | 10000 | 69 | 69 | 0 | 5 | 47 | 1500 | 5600 | 675 |"),
            "{t}"
        );
    }
}
