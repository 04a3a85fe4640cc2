//! Result reporting: machine facts, the per-proxy figures table with ratios,
//! and writing `bench/results/<scenario>.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::harness::median;

/// One line of machine facts: CPU model, cores, kernel.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("machine: {cpu}, {cores} cores, kernel {}", kernel.trim())
}

/// Figures gathered for one proxy over all rounds of one load.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// Requests per second, one per round.
    pub rps: Vec<f64>,
    /// Proxy CPU microseconds per request, one per round.
    pub cpu_us_per_req: Vec<f64>,
    /// p50 latency in µs, one per round.
    pub p50: Vec<f64>,
    /// p99 latency in µs, one per round.
    pub p99: Vec<f64>,
    /// Errors summed over rounds.
    pub errors: u64,
    /// Peak RSS of the proxy in KiB (0 when not measured).
    pub rss_kib: u64,
}

/// The median of a ratio a/b of two figure series.
pub fn ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.to_vec()) / median(b.to_vec()).max(f64::MIN_POSITIVE)
}

/// Renders the figures table for `names[i]` -> `figs[i]`; names must include
/// "lb", "haproxy" and "nginx" for the ratio line.
pub fn figures_table(names: &[&str], figs: &[Figures]) -> String {
    let mut out = String::new();
    out.push_str("| path | req/s | CPU µs/req | p50 µs | p99 µs | peak RSS MiB | errors |\n|---|---|---|---|---|---|---|\n");
    for (name, f) in names.iter().zip(figs) {
        let cpu = if f.cpu_us_per_req.is_empty() {
            "-".into()
        } else {
            format!("{:.2}", median(f.cpu_us_per_req.clone()))
        };
        let rss = if f.rss_kib == 0 {
            "-".into()
        } else {
            format!("{:.1}", f.rss_kib as f64 / 1024.0)
        };
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {cpu} | {:.0} | {:.0} | {rss} | {} |",
            median(f.rps.clone()),
            median(f.p50.clone()),
            median(f.p99.clone()),
            f.errors
        );
    }
    let find = |n: &str| names.iter().position(|x| *x == n).map(|i| &figs[i]);
    if let (Some(lb), Some(ha), Some(ng)) = (find("lb"), find("haproxy"), find("nginx")) {
        let _ = writeln!(
            out,
            "\nratios: req/s lb/haproxy {:.2}, lb/nginx {:.2}; CPU/req lb/haproxy {:.2}, lb/nginx {:.2}",
            ratio(&lb.rps, &ha.rps),
            ratio(&lb.rps, &ng.rps),
            ratio(&lb.cpu_us_per_req, &ha.cpu_us_per_req),
            ratio(&lb.cpu_us_per_req, &ng.cpu_us_per_req)
        );
    }
    out
}

/// Where a scenario's results go: `bench/results/<scenario>.<ext>`.
pub fn result_path(scenario: &str, ext: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("results")
        .join(format!("{scenario}.{ext}"))
}
