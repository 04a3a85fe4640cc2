//! `http1` and `http1-close`: wrk against lb, HAProxy, nginx and the direct
//! path, interleaved rounds, one table per response size.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::Options;
use crate::harness::{Proc, cpu_micros, peak_rss_kib, run_wrk, scratch, wait_listening};
use crate::proxies::{other_cores, ports, start_echo, start_haproxy, start_lb, start_nginx};
use crate::report::{Figures, figures_table};

/// Runs wrk for each of `paths` (with request `headers`) against every proxy.
pub fn run(o: &Options, paths: &[&str], headers: &[&str]) -> Result<String, String> {
    let dir = scratch("http1");
    let cores = other_cores();
    let _backend = start_echo()?;
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
    let mut out = String::new();
    for body in paths {
        let mut figs: Vec<Figures> = procs.iter().map(|_| Figures::default()).collect();
        for _ in 0..o.rounds {
            for (i, (proc_, port, _)) in procs.iter().enumerate() {
                let pid = proc_.as_ref().map(Proc::pid);
                let before = pid.and_then(cpu_micros);
                let r = run_wrk(
                    &cores,
                    &format!("http://127.0.0.1:{port}{body}"),
                    o.connections,
                    o.seconds,
                    headers,
                )
                .map_err(|e| format!("wrk: {e}"))?;
                let after = pid.and_then(cpu_micros);
                let f = &mut figs[i];
                f.rps.push(r.rps);
                f.p50.push(r.p50_us);
                f.p99.push(r.p99_us);
                f.errors += r.errors;
                if let (Some(b), Some(a)) = (before, after) {
                    f.cpu_us_per_req
                        .push((a - b) as f64 / r.requests.max(1) as f64);
                }
                f.rss_kib = pid.and_then(peak_rss_kib).unwrap_or(0);
            }
        }
        let _ = writeln!(
            out,
            "\n### `{body}` ({} rounds x {} s, {} connections, median)\n",
            o.rounds, o.seconds, o.connections
        );
        out.push_str(&figures_table(&names, &figs));
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
