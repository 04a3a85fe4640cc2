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
    /// p99.9 latency in µs, one per round.
    pub p999: Vec<f64>,
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
    out.push_str("| path | req/s | CPU µs/req | p50 µs | p99 µs | p99.9 µs | peak RSS MiB | errors |\n|---|---|---|---|---|---|---|---|\n");
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
            "| {name} | {:.0} | {cpu} | {:.0} | {:.0} | {:.0} | {rss} | {} |",
            median(f.rps.clone()),
            median(f.p50.clone()),
            median(f.p99.clone()),
            median(f.p999.clone()),
            f.errors
        );
    }
    if let Some(r) = ratios(names, figs) {
        let _ = writeln!(
            out,
            "\nratios: req/s lb/haproxy {:.2}, lb/nginx {:.2}; CPU/req lb/haproxy {:.2}, lb/nginx {:.2}",
            r[0], r[1], r[2], r[3]
        );
    }
    out
}

/// The names of the four ratios [`ratios`] returns, in order.
pub const RATIO_NAMES: [&str; 4] = [
    "req/s lb/HAProxy",
    "req/s lb/nginx",
    "CPU/req lb/HAProxy",
    "CPU/req lb/nginx",
];

/// lb's req/s and CPU/request relative to HAProxy and nginx (see
/// [`RATIO_NAMES`]), when `names` include "lb", "haproxy" and "nginx".
pub fn ratios(names: &[&str], figs: &[Figures]) -> Option<[f64; 4]> {
    let find = |n: &str| names.iter().position(|x| *x == n).and_then(|i| figs.get(i));
    let (lb, ha, ng) = (find("lb")?, find("haproxy")?, find("nginx")?);
    Some([
        ratio(&lb.rps, &ha.rps),
        ratio(&lb.rps, &ng.rps),
        ratio(&lb.cpu_us_per_req, &ha.cpu_us_per_req),
        ratio(&lb.cpu_us_per_req, &ng.cpu_us_per_req),
    ])
}

/// Where a scenario's results go: `bench/results/<scenario>.<ext>`.
pub fn result_path(scenario: &str, ext: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("results")
        .join(format!("{scenario}.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figs(rps: f64, cpu: f64) -> Figures {
        Figures {
            rps: vec![rps],
            cpu_us_per_req: vec![cpu],
            p50: vec![100.0],
            p99: vec![900.0],
            p999: vec![1500.0],
            ..Figures::default()
        }
    }

    #[test]
    fn table_has_p999_and_ratios() {
        let names = ["direct", "lb", "haproxy", "nginx"];
        let f = [
            Figures::default(),
            figs(200.0, 10.0),
            figs(100.0, 20.0),
            figs(400.0, 5.0),
        ];
        let t = figures_table(&names, &f);
        assert!(t.contains("| p99 µs | p99.9 µs |"), "{t}");
        assert!(
            t.contains("| lb | 200 | 10.00 | 100 | 900 | 1500 | - | 0 |"),
            "{t}"
        );
        assert!(t.contains(
            "req/s lb/haproxy 2.00, lb/nginx 0.50; CPU/req lb/haproxy 0.50, lb/nginx 2.00"
        ));
        assert_eq!(ratios(&names, &f), Some([2.0, 0.5, 0.5, 2.0]));
        assert_eq!(ratios(&names[..2], &f[..2]), None);
    }
}
