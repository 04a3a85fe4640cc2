//! `reload`: configuration changes under load. For each proxy in turn, wrk
//! runs `--connections` keep-alive connections on `/fixed` for `--seconds`
//! while the proxy's configuration is rewritten up to `--changes` times at a
//! steady pace, alternating between two valid variants, and the proxy is
//! told to reload after each rewrite (see [`super::reload_targets`]). Each
//! reload is waited for before the next change, as `systemctl reload` would.
//! The figure is failed requests (wrk socket errors plus non-2xx); the
//! direct row is the same load on the backend without changes.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Options;
use super::reload_targets::{Target, haproxy, lb, nginx};
use crate::chart::{Bars, Series};
use crate::harness::{WrkResult, ports_free, scratch, spawn_wrk, wait_listening};
use crate::proxies::{other_cores, ports};
use crate::report::result_path;

/// What one row measured.
#[derive(Debug)]
struct Row {
    name: &'static str,
    /// Changes made while the load ran and reloads the proxy reported done
    /// (none for the direct path).
    reloads: Option<(u32, u32)>,
    wrk: WrkResult,
    notes: Vec<String>,
}

/// Starts one proxy of the scenario in its own directory.
type Start = fn(&Path) -> Result<Target, String>;

/// Runs the scenario and writes `bench/results/reload.svg`.
pub fn run(o: &Options) -> Result<String, String> {
    ports_free(&ports::ALL)?;
    let dir = scratch("reload");
    let _backend = o.backend.start(&dir)?;
    if !wait_listening(
        SocketAddr::from(([127, 0, 0, 1], ports::BACKEND)),
        Duration::from_secs(20),
    ) {
        return Err("backend did not start listening".into());
    }
    let (wrk, _, _) = drive(o, ports::BACKEND, None)?;
    let mut rows = vec![Row {
        name: "direct",
        reloads: None,
        wrk,
        notes: Vec::new(),
    }];
    let targets: [(&'static str, Start); 3] = [("lb", lb), ("haproxy", haproxy), ("nginx", nginx)];
    for (name, start) in targets {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).map_err(|e| format!("{}: {e}", sub.display()))?;
        let mut t = start(&sub)?;
        let (wrk, made, done) = drive(o, t.port, Some(&mut t))?;
        let mut notes = t.check(made);
        notes.extend(t.stop());
        rows.push(Row {
            name,
            reloads: Some((made, done)),
            wrk,
            notes,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    chart(&rows, o).write_svg(&result_path("reload", "svg"))?;
    Ok(table(&rows, o))
}

/// Runs wrk on `port` for `o.seconds` and makes up to `o.changes` changes to
/// `target` at a steady pace meanwhile, each one waited for; a change that
/// takes longer than the pace delays the next, and none starts after the
/// load has ended. Returns wrk's result, the changes made and the reloads done.
fn drive(
    o: &Options,
    port: u16,
    target: Option<&mut Target>,
) -> Result<(WrkResult, u32, u32), String> {
    let url = format!("http://127.0.0.1:{port}/fixed");
    let wrk = spawn_wrk(&other_cores(), &url, o.connections, o.seconds, &[])
        .map_err(|e| format!("wrk: {e}"))?;
    let start = Instant::now();
    let length = Duration::from_secs(u64::from(o.seconds));
    let interval = length / (o.changes + 1);
    let (mut made, mut done) = (0, 0);
    if let Some(t) = target {
        for i in 0..o.changes {
            let at = start + interval * (i + 1);
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if start.elapsed() >= length {
                break;
            }
            made += 1;
            if t.change(i)? {
                done += 1;
            }
        }
    }
    let r = wrk.finish().map_err(|e| format!("wrk: {e}"))?;
    if r.requests == 0 {
        return Err(format!("wrk made no requests to {url}"));
    }
    Ok((r, made, done))
}

fn table(rows: &[Row], o: &Options) -> String {
    let mut out = format!(
        "backend: {}; wrk `/fixed`, {} connections, {} s per path; up to {} changes per proxy, one every {} ms, each reload waited for\n\n",
        o.backend.name(),
        o.connections,
        o.seconds,
        o.changes,
        u64::from(o.seconds) * 1000 / u64::from(o.changes + 1)
    );
    out.push_str("| path | changes made | reloads done | requests | socket errors (connect/read/write/timeout) | non-2xx | failed | p99 µs | p99.9 µs |\n|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let (made, done) = r.reloads.map_or(("-".into(), "-".into()), |(m, d)| {
            (format!("{m} of {}", o.changes), d.to_string())
        });
        let w = &r.wrk;
        let k = w.socket_kinds;
        let _ = writeln!(
            out,
            "| {} | {made} | {done} | {} | {} ({}/{}/{}/{}) | {} | {} | {:.0} | {:.0} |",
            r.name,
            w.requests,
            w.socket_errors,
            k[0],
            k[1],
            k[2],
            k[3],
            w.non_2xx,
            w.errors,
            w.p99_us,
            w.p999_us
        );
    }
    out.push('\n');
    for r in rows {
        for n in &r.notes {
            let _ = writeln!(out, "- {}: {n}", r.name);
        }
    }
    out
}

fn chart(rows: &[Row], o: &Options) -> Bars {
    Bars {
        title: format!(
            "reload: failed requests, up to {} config changes in {} s, {} connections",
            o.changes, o.seconds, o.connections
        ),
        y_desc: "failed requests".into(),
        groups: rows.iter().map(|r| r.name.to_owned()).collect(),
        series: vec![Series {
            name: "socket errors + non-2xx".into(),
            values: rows.iter().map(|r| r.wrk.errors as f64).collect(),
        }],
        reference: None,
        decimals: 0,
    }
}
