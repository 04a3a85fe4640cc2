//! `http1` and `http1-close`: wrk against lb, HAProxy, nginx and the direct
//! path, interleaved rounds, one table per response size, and a chart of
//! lb's ratios to HAProxy and nginx per response size.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::Options;
use crate::chart::{Bars, Series};
use crate::harness::{
    Proc, cpu_micros, peak_rss_kib, ports_free, run_wrk, scratch, wait_listening,
};
use crate::proxies::{other_cores, ports, start_haproxy, start_lb, start_nginx};
use crate::report::{Figures, RATIO_NAMES, figures_table, ratios, result_path};

/// Runs wrk for each of `paths` (with request `headers`) against every proxy
/// and writes the ratio chart to `bench/results/<scenario>.svg`.
pub fn run(
    o: &Options,
    scenario: &str,
    paths: &[&str],
    headers: &[&str],
) -> Result<String, String> {
    ports_free(&ports::ALL)?;
    let dir = scratch(scenario);
    let cores = other_cores();
    let _backend = o.backend.start(&dir)?;
    let procs = [
        (None, ports::BACKEND, "direct"),
        (Some(start_lb(&dir)?), ports::LB, "lb"),
        (Some(start_haproxy(&dir)?), ports::HAPROXY, "haproxy"),
        (Some(start_nginx(&dir)?), ports::NGINX, "nginx"),
    ];
    for (_, port, name) in &procs {
        let addr = SocketAddr::from(([127, 0, 0, 1], *port));
        if !wait_listening(addr, Duration::from_secs(20)) {
            return Err(format!("{name} did not start listening on {addr}"));
        }
    }
    let names: Vec<&str> = procs.iter().map(|p| p.2).collect();
    let mut out = format!("backend: {}\n", o.backend.name());
    let mut chart = ratio_chart(scenario, o);
    let targets: Vec<WrkTarget> = procs
        .iter()
        .map(|(proc_, port, _)| WrkTarget {
            pid: proc_.as_ref().map(Proc::pid),
            base: format!("http://127.0.0.1:{port}"),
        })
        .collect();
    for body in paths {
        let figs = wrk_rounds(o, &cores, &targets, body, headers)?;
        let _ = writeln!(
            out,
            "\n### `{body}` ({} rounds x {} s, {} connections, median)\n",
            o.rounds, o.seconds, o.connections
        );
        out.push_str(&figures_table(&names, &figs));
        if let Some(r) = ratios(&names, &figs) {
            chart.groups.push((*body).to_owned());
            for (s, v) in chart.series.iter_mut().zip(r) {
                s.values.push(v);
            }
        }
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    chart.write_svg(&result_path(scenario, "svg"))?;
    Ok(out)
}

/// One path under test in [`wrk_rounds`].
#[derive(Debug, Clone)]
pub struct WrkTarget {
    /// The process whose CPU time and peak RSS are read (none for direct).
    pub pid: Option<u32>,
    /// Scheme, host and port, such as `http://127.0.0.1:19501`.
    pub base: String,
}

/// Runs wrk (`o.connections` connections, `o.seconds`) on `path` with
/// request `headers` against each target in turn, `o.rounds` interleaved
/// rounds, and returns one [`Figures`] per target: req/s, latencies, errors,
/// the proxy's CPU µs per request and its peak RSS.
pub fn wrk_rounds(
    o: &Options,
    cores: &str,
    targets: &[WrkTarget],
    path: &str,
    headers: &[&str],
) -> Result<Vec<Figures>, String> {
    let mut figs = vec![Figures::default(); targets.len()];
    for _ in 0..o.rounds {
        for (t, f) in targets.iter().zip(&mut figs) {
            let before = t.pid.and_then(cpu_micros);
            let r = run_wrk(
                cores,
                &format!("{}{path}", t.base),
                o.connections,
                o.seconds,
                headers,
            )
            .map_err(|e| format!("wrk: {e}"))?;
            let after = t.pid.and_then(cpu_micros);
            f.rps.push(r.rps);
            f.p50.push(r.p50_us);
            f.p99.push(r.p99_us);
            f.p999.push(r.p999_us);
            f.errors += r.errors;
            if let (Some(b), Some(a)) = (before, after) {
                f.cpu_us_per_req
                    .push(a.saturating_sub(b) as f64 / r.requests.max(1) as f64);
            }
            f.rss_kib = t.pid.and_then(peak_rss_kib).unwrap_or(0);
        }
    }
    Ok(figs)
}

/// An empty chart of lb's four ratios, one group per load to come.
pub(crate) fn ratio_chart(scenario: &str, o: &Options) -> Bars {
    Bars {
        title: format!(
            "{scenario}: lb / HAProxy and lb / nginx, {} connections",
            o.connections
        ),
        y_desc: "ratio (req/s: higher is better; CPU/req: lower)".into(),
        groups: Vec::new(),
        series: RATIO_NAMES
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
