//! `l4`: lb as a plain TCP proxy (a `type: LoadBalancer` Service on its VIP)
//! beside HAProxy (`mode tcp`), nginx (`stream {}`) and the direct path, with
//! a second lb on the epoll engine beside the default io_uring one. Three
//! loads, interleaved round by round: wrk keep-alive requests, wrk new
//! connections (`Connection: close`) and iperf3 bulk throughput. One table per
//! load, and a chart of lb's ratios to HAProxy and nginx per load.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Options;
use crate::chart::{Bars, Series};
use crate::harness::{
    Proc, cpu_micros, log_tail, median, peak_rss_kib, run_wrk, scratch, wait_listening,
};
use crate::l4_proxies::{
    Io, ensure_free, ports, start_haproxy_tcp, start_iperf_server, start_lb_l4, start_nginx_stream,
};
use crate::proxies::{other_cores, ports as http_ports};
use crate::report::{Figures, figures_table, ratio, ratios, result_path};
use crate::sys::alive;

/// How long a proxy gets to start listening.
const START_LIMIT: Duration = Duration::from_secs(15);
/// Time an iperf3 client gets beyond its `-t` before it is killed.
const IPERF_GRACE: Duration = Duration::from_secs(15);

/// One path under test: where to send traffic, and the proxy (none for direct).
struct Row {
    name: &'static str,
    proc_: Option<Proc>,
    log: Option<PathBuf>,
    host: Ipv4Addr,
    web: u16,
    iperf: u16,
    /// Why this row is not measured (not listening, exited).
    down: Option<String>,
}

impl Row {
    fn pid(&self) -> Option<u32> {
        self.proc_.as_ref().map(Proc::pid)
    }

    /// Marks the row down if its process has exited (it stays unreaped
    /// until its [`Proc`] guard drops, so its pid cannot be reused meanwhile).
    fn check_alive(&mut self) {
        if self.down.is_some() {
            return;
        }
        if self.pid().is_some_and(|p| !alive(p)) {
            self.down = Some(format!("exited{}", self.tail()));
        }
    }

    /// The last line of the proxy's log, as a suffix for messages.
    fn tail(&self) -> String {
        let text = self.log.as_deref().map(|l| log_tail(l, 1));
        let line = strip_ansi(text.as_deref().unwrap_or_default());
        let line = line.trim();
        if line.is_empty() {
            String::new()
        } else {
            format!(
                "; its log ends: {}",
                line.chars().take(240).collect::<String>()
            )
        }
    }

    /// Waits until both of the row's ports listen; marks the row down if its
    /// process exits or `START_LIMIT` passes first.
    fn wait_up(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        for port in [self.web, self.iperf] {
            let addr = SocketAddr::from((self.host, port));
            loop {
                if wait_listening(addr, Duration::from_millis(200)) {
                    break;
                }
                self.check_alive();
                if self.down.is_some() {
                    return;
                }
                if Instant::now() >= deadline {
                    self.down = Some(format!(
                        "not listening on {addr} after {} s{}",
                        START_LIMIT.as_secs(),
                        self.tail()
                    ));
                    return;
                }
            }
        }
    }
}

/// `text` without ANSI escape sequences (the colours of a log meant for a terminal).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// iperf3 figures for one row over all rounds.
#[derive(Debug, Default, Clone)]
struct Bulk {
    gbps: Vec<f64>,
    cpu_s_per_gb: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
    rss_kib: u64,
}

/// Runs the scenario and writes `bench/results/l4.svg`.
pub fn run(o: &Options) -> Result<String, String> {
    let dir = scratch("l4");
    let result = run_in(o, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(o: &Options, dir: &Path) -> Result<String, String> {
    let lo = Ipv4Addr::LOCALHOST;
    let lo2 = Ipv4Addr::new(127, 0, 0, 2);
    for (host, port) in [
        (lo, http_ports::BACKEND),
        (lo, ports::IPERF),
        (lo, ports::LB_WEB),
        (lo, ports::LB_IPERF),
        (lo2, ports::LB_WEB),
        (lo2, ports::LB_IPERF),
        (lo, ports::LB_ADMIN),
        (lo, ports::LB_EPOLL_ADMIN),
        (lo, ports::HAPROXY_WEB),
        (lo, ports::HAPROXY_IPERF),
        (lo, ports::NGINX_WEB),
        (lo, ports::NGINX_IPERF),
    ] {
        ensure_free(SocketAddr::from((host, port)))?;
    }
    let cores = other_cores();
    let _backend = o.backend.start(dir)?;
    let _iperf_server = start_iperf_server(dir)?;
    for (what, port) in [
        ("backend", http_ports::BACKEND),
        ("iperf3 -s", ports::IPERF),
    ] {
        let addr = SocketAddr::from((lo, port));
        if !wait_listening(addr, START_LIMIT) {
            return Err(format!("{what} did not start listening on {addr}"));
        }
    }
    let sub = |name: &str| -> Result<PathBuf, String> {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        Ok(d)
    };
    let (lb_dir, epoll_dir, ha_dir, ng_dir) =
        (sub("lb")?, sub("lb-epoll")?, sub("haproxy")?, sub("nginx")?);
    let row = |name, proc_, log: Option<PathBuf>, host, web, iperf| Row {
        name,
        proc_: Some(proc_),
        log,
        host,
        web,
        iperf,
        down: None,
    };
    let mut rows = vec![
        Row {
            name: "direct",
            proc_: None,
            log: None,
            host: lo,
            web: http_ports::BACKEND,
            iperf: ports::IPERF,
            down: None,
        },
        row(
            "lb",
            start_lb_l4(&lb_dir, lo, ports::LB_ADMIN, Io::Default)?,
            Some(lb_dir.join("lb.log")),
            lo,
            ports::LB_WEB,
            ports::LB_IPERF,
        ),
        row(
            "lb (epoll)",
            start_lb_l4(&epoll_dir, lo2, ports::LB_EPOLL_ADMIN, Io::Epoll)?,
            Some(epoll_dir.join("lb.log")),
            lo2,
            ports::LB_WEB,
            ports::LB_IPERF,
        ),
        row(
            "haproxy",
            start_haproxy_tcp(&ha_dir)?,
            Some(ha_dir.join("haproxy.log")),
            lo,
            ports::HAPROXY_WEB,
            ports::HAPROXY_IPERF,
        ),
        row(
            "nginx",
            start_nginx_stream(&ng_dir)?,
            Some(ng_dir.join("nginx.err")),
            lo,
            ports::NGINX_WEB,
            ports::NGINX_IPERF,
        ),
    ];
    for r in &mut rows {
        r.wait_up();
    }
    let down_at_start: Vec<bool> = rows.iter().map(|r| r.down.is_some()).collect();

    let mut out = format!(
        "backend: {} (HTTP), iperf3 -s (bulk); {}\n\nlb serves a `type: LoadBalancer` Service (lb on 127.0.0.1, lb (epoll) with `[runtime] io = \"epoll\"` on 127.0.0.2); HAProxy `mode tcp` with `option splice-auto`; nginx `stream {{}}`. Each proxy on core 0 with one worker; wrk, iperf3 and the backends on the other cores. CPU is the proxy's utime+stime from /proc over each run.\n",
        o.backend.name(),
        versions()
    );
    out.push_str(&down_notes(&rows, &[]));
    let mut chart = ratio_chart(o);
    let loads: [(&str, &str, &[&str]); 2] = [
        ("keep-alive", "requests/s, HTTP/1.1 keep-alive", &[]),
        (
            "new conns",
            "new connections/s, `Connection: close`",
            &["Connection: close"],
        ),
    ];
    for (group, title, headers) in loads {
        let figs = wrk_load(o, &cores, &mut rows, headers)?;
        let _ = writeln!(
            out,
            "\n### {title}: wrk `GET /fixed` ({} rounds x {} s, {} connections, median)\n",
            o.rounds, o.seconds, o.connections
        );
        let (names, live): (Vec<&str>, Vec<Figures>) = rows
            .iter()
            .zip(figs)
            .filter(|(r, _)| r.down.is_none())
            .map(|(r, f)| (r.name, f))
            .unzip();
        out.push_str(&figures_table(&names, &live));
        if let Some(line) = epoll_line(&names, &live) {
            out.push_str(&line);
        }
        if let Some(r) = ratios(&names, &live) {
            chart.groups.push(group.to_owned());
            for (s, v) in chart.series.iter_mut().zip(r) {
                s.values.push(v);
            }
        }
    }

    let bulk = iperf_load(o, &cores, &mut rows);
    let _ = writeln!(
        out,
        "\n### bulk TCP throughput: iperf3, one stream ({} rounds x {} s, median)\n",
        o.rounds, o.seconds
    );
    let (names, live): (Vec<&str>, Vec<Bulk>) = rows
        .iter()
        .zip(bulk)
        .filter(|(r, _)| r.down.is_none())
        .map(|(r, b)| (r.name, b))
        .unzip();
    out.push_str(&bulk_table(&names, &live));
    if let Some(r) = bulk_ratios(&names, &live) {
        chart.groups.push("iperf3 Gbit/s".to_owned());
        for (s, v) in chart.series.iter_mut().zip(r) {
            s.values.push(v);
        }
    }
    out.push_str(&down_notes(&rows, &down_at_start));
    drop(rows);
    chart.write_svg(&result_path("l4", "svg"))?;
    Ok(out)
}

/// Runs wrk against every live row, `o.rounds` interleaved rounds, and
/// returns one [`Figures`] per row (empty for rows that are down).
fn wrk_load(
    o: &Options,
    cores: &str,
    rows: &mut [Row],
    headers: &[&str],
) -> Result<Vec<Figures>, String> {
    let mut figs = vec![Figures::default(); rows.len()];
    for _ in 0..o.rounds {
        for (row, f) in rows.iter_mut().zip(&mut figs) {
            if row.down.is_some() {
                continue;
            }
            let pid = row.pid();
            let before = pid.and_then(cpu_micros);
            let r = run_wrk(
                cores,
                &format!("http://{}:{}/fixed", row.host, row.web),
                o.connections,
                o.seconds,
                headers,
            )
            .map_err(|e| format!("wrk: {e}"))?;
            let after = pid.and_then(cpu_micros);
            f.rps.push(r.rps);
            f.p50.push(r.p50_us);
            f.p99.push(r.p99_us);
            f.p999.push(r.p999_us);
            f.errors += r.errors;
            if let (Some(b), Some(a)) = (before, after) {
                f.cpu_us_per_req
                    .push(a.saturating_sub(b) as f64 / r.requests.max(1) as f64);
            }
            f.rss_kib = pid.and_then(peak_rss_kib).unwrap_or(0);
            row.check_alive();
        }
    }
    Ok(figs)
}

/// Runs one iperf3 client per live row per round.
fn iperf_load(o: &Options, cores: &str, rows: &mut [Row]) -> Vec<Bulk> {
    let mut bulk = vec![Bulk::default(); rows.len()];
    let scratch_out = scratch("l4-iperf");
    for round in 0..o.rounds {
        for (i, (row, b)) in rows.iter_mut().zip(&mut bulk).enumerate() {
            if row.down.is_some() {
                continue;
            }
            let pid = row.pid();
            let before = pid.and_then(cpu_micros);
            let json = scratch_out.join(format!("{round}-{i}.json"));
            match run_iperf(cores, row.host, row.iperf, o.seconds, &json) {
                Ok((bps, bytes)) => {
                    b.gbps.push(bps / 1e9);
                    if let (Some(s), Some(e)) = (before, pid.and_then(cpu_micros)) {
                        let gb = (bytes / 1e9).max(f64::MIN_POSITIVE);
                        b.cpu_s_per_gb.push(e.saturating_sub(s) as f64 / 1e6 / gb);
                    }
                }
                Err(e) => {
                    b.errors += 1;
                    b.first_error.get_or_insert(e);
                }
            }
            b.rss_kib = pid.and_then(peak_rss_kib).unwrap_or(0);
            row.check_alive();
        }
    }
    let _ = std::fs::remove_dir_all(&scratch_out);
    bulk
}

/// One `iperf3 -c` run to `host:port` for `seconds`, pinned to `cores`, its
/// JSON written to `json`; returns bits/s and bytes received. A busy server
/// (the previous test still closing) is retried twice.
fn run_iperf(
    cores: &str,
    host: Ipv4Addr,
    port: u16,
    seconds: u32,
    json: &Path,
) -> Result<(f64, f64), String> {
    let mut last = String::new();
    for _ in 0..3 {
        match iperf_once(cores, host, port, seconds, json) {
            Ok(v) => return Ok(v),
            Err(e) if e.contains("busy") => {
                last = e;
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn iperf_once(
    cores: &str,
    host: Ipv4Addr,
    port: u16,
    seconds: u32,
    json: &Path,
) -> Result<(f64, f64), String> {
    let file = std::fs::File::create(json).map_err(|e| format!("{}: {e}", json.display()))?;
    let child = Command::new("taskset")
        .args(["-c", cores, "iperf3", "-c", &host.to_string(), "-p"])
        .arg(port.to_string())
        .arg("-t")
        .arg(seconds.to_string())
        .args(["-i", "0", "-J", "--connect-timeout", "3000"])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3: {e}"))?;
    let mut client = IperfClient(child);
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds)) + IPERF_GRACE;
    loop {
        match client.0.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => return Err("iperf3 client timed out".into()),
            Err(e) => return Err(format!("iperf3: {e}")),
        }
    }
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    parse_iperf(&text)
}

/// An iperf3 client, killed and reaped on drop (a no-op once it has exited).
struct IperfClient(std::process::Child);

impl Drop for IperfClient {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads `end.sum_received.bits_per_second` and `.bytes` from iperf3's JSON,
/// or its `error`.
fn parse_iperf(text: &str) -> Result<(f64, f64), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("iperf3 output: {e}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("iperf3: {e}"));
    }
    let sum = &v["end"]["sum_received"];
    match (sum["bits_per_second"].as_f64(), sum["bytes"].as_f64()) {
        (Some(bps), Some(bytes)) => Ok((bps, bytes)),
        _ => Err("iperf3 output has no end.sum_received".into()),
    }
}

/// The iperf3 table for `names[i]` -> `bulk[i]`, with lb's ratios.
fn bulk_table(names: &[&str], bulk: &[Bulk]) -> String {
    let mut out = String::from(
        "| path | Gbit/s | CPU s/GB | peak RSS MiB | errors |\n|---|---|---|---|---|\n",
    );
    for (name, b) in names.iter().zip(bulk) {
        let cpu = if b.cpu_s_per_gb.is_empty() {
            "-".into()
        } else {
            format!("{:.3}", median(b.cpu_s_per_gb.clone()))
        };
        let rss = if b.rss_kib == 0 {
            "-".into()
        } else {
            format!("{:.1}", b.rss_kib as f64 / 1024.0)
        };
        let _ = writeln!(
            out,
            "| {name} | {:.2} | {cpu} | {rss} | {} |",
            median(b.gbps.clone()),
            b.errors
        );
    }
    if let Some(r) = bulk_ratios(names, bulk) {
        let _ = writeln!(
            out,
            "\nratios: Gbit/s lb/haproxy {:.2}, lb/nginx {:.2}; CPU/GB lb/haproxy {:.2}, lb/nginx {:.2}",
            r[0], r[1], r[2], r[3]
        );
    }
    let find = |n: &str| names.iter().position(|x| *x == n).map(|i| &bulk[i]);
    if let (Some(lb), Some(ep)) = (find("lb"), find("lb (epoll)")) {
        let _ = writeln!(
            out,
            "lb (epoll)/lb: Gbit/s {:.2}, CPU/GB {:.2}",
            ratio(&ep.gbps, &lb.gbps),
            ratio(&ep.cpu_s_per_gb, &lb.cpu_s_per_gb)
        );
    }
    for (name, b) in names.iter().zip(bulk) {
        if let Some(e) = &b.first_error {
            let _ = writeln!(out, "\n{name}: {e}");
        }
    }
    out
}

/// lb's Gbit/s and CPU/GB relative to HAProxy and nginx.
fn bulk_ratios(names: &[&str], bulk: &[Bulk]) -> Option<[f64; 4]> {
    let find = |n: &str| names.iter().position(|x| *x == n).map(|i| &bulk[i]);
    let (lb, ha, ng) = (find("lb")?, find("haproxy")?, find("nginx")?);
    if lb.gbps.is_empty() {
        return None;
    }
    Some([
        ratio(&lb.gbps, &ha.gbps),
        ratio(&lb.gbps, &ng.gbps),
        ratio(&lb.cpu_s_per_gb, &ha.cpu_s_per_gb),
        ratio(&lb.cpu_s_per_gb, &ng.cpu_s_per_gb),
    ])
}

/// The epoll engine relative to io_uring, when both lb rows ran.
fn epoll_line(names: &[&str], figs: &[Figures]) -> Option<String> {
    let find = |n: &str| names.iter().position(|x| *x == n).map(|i| &figs[i]);
    let (lb, ep) = (find("lb")?, find("lb (epoll)")?);
    Some(format!(
        "lb (epoll)/lb: req/s {:.2}, CPU/req {:.2}\n",
        ratio(&ep.rps, &lb.rps),
        ratio(&ep.cpu_us_per_req, &lb.cpu_us_per_req)
    ))
}

/// One line per row that is down, saying why, except rows flagged in `skip`.
fn down_notes(rows: &[Row], skip: &[bool]) -> String {
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        if let (Some(why), false) = (&r.down, skip.get(i).copied().unwrap_or(false)) {
            let _ = writeln!(out, "\n**{} not measured**: {why}", r.name);
        }
    }
    out
}

/// The versions of the programs measured, e.g. `HAProxy 2.6.12, nginx 1.22.1, iperf 3.12`.
fn versions() -> String {
    let first = |prog: &str, arg: &str| -> String {
        Command::new(prog)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                let text = String::from_utf8_lossy(&text);
                text.lines().next().unwrap_or_default().to_owned()
            })
            .unwrap_or_default()
    };
    let word = |line: String, n: usize| -> String {
        line.split_whitespace()
            .take(n)
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "{}, {}, {}",
        word(first("/usr/sbin/haproxy", "-v"), 3),
        first("/usr/sbin/nginx", "-v").replace("nginx version: ", ""),
        word(first("iperf3", "--version"), 2)
    )
}

/// An empty chart of lb's ratios to HAProxy and nginx, one group per load.
fn ratio_chart(o: &Options) -> Bars {
    let names = [
        "rate lb/HAProxy",
        "rate lb/nginx",
        "CPU lb/HAProxy",
        "CPU lb/nginx",
    ];
    Bars {
        title: format!(
            "l4: lb / HAProxy and lb / nginx (wrk {} connections, iperf3 1 stream)",
            o.connections
        ),
        y_desc: "ratio (rate: higher is better; CPU per unit: lower)".into(),
        groups: Vec::new(),
        series: names
            .iter()
            .map(|n| Series {
                name: (*n).to_owned(),
                values: Vec::new(),
            })
            .collect(),
        reference: Some(1.0),
        decimals: 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iperf_json() {
        let ok = r#"{"start":{},"end":{"sum_sent":{"bits_per_second":5e10},"sum_received":{"bytes":6250000000,"bits_per_second":4.99e10}}}"#;
        assert_eq!(parse_iperf(ok), Ok((4.99e10, 6.25e9)));
        let err = r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}"#;
        assert!(parse_iperf(err).unwrap_err().contains("Connection refused"));
        assert!(parse_iperf("").is_err());
    }

    #[test]
    fn bulk_table_has_ratios_and_epoll_line() {
        let b = |g: f64, c: f64| Bulk {
            gbps: vec![g],
            cpu_s_per_gb: vec![c],
            rss_kib: 2048,
            ..Bulk::default()
        };
        let names = ["direct", "lb", "lb (epoll)", "haproxy", "nginx"];
        let bulk = [
            b(40.0, 0.0),
            b(20.0, 0.1),
            b(10.0, 0.2),
            b(10.0, 0.2),
            b(40.0, 0.05),
        ];
        let t = bulk_table(&names, &bulk);
        assert!(t.contains("| lb | 20.00 | 0.100 | 2.0 | 0 |"), "{t}");
        assert!(
            t.contains(
                "Gbit/s lb/haproxy 2.00, lb/nginx 0.50; CPU/GB lb/haproxy 0.50, lb/nginx 2.00"
            ),
            "{t}"
        );
        assert!(t.contains("lb (epoll)/lb: Gbit/s 0.50, CPU/GB 2.00"), "{t}");
        assert_eq!(bulk_ratios(&names[3..], &bulk[3..]), None);
    }

    #[test]
    fn strips_terminal_colours() {
        let line = "\u{1b}[2m2026-11-26T21:28:18Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m bad `io`";
        assert_eq!(strip_ansi(line), "2026-11-26T21:28:18Z ERROR bad `io`");
    }

    #[test]
    fn epoll_line_needs_both_lbs() {
        let f = |rps: f64| Figures {
            rps: vec![rps],
            cpu_us_per_req: vec![10.0],
            ..Figures::default()
        };
        let line = epoll_line(&["lb", "lb (epoll)"], &[f(100.0), f(90.0)]);
        assert_eq!(
            line.as_deref(),
            Some("lb (epoll)/lb: req/s 0.90, CPU/req 1.00\n")
        );
        assert_eq!(epoll_line(&["lb"], &[f(1.0)]), None);
    }
}
