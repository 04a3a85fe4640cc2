//! `conns`: the memory cost of idle keep-alive connections. For each of the
//! direct path (the backend itself), lb, HAProxy and nginx in turn: start it,
//! warm it up, read its VmRSS, open `--idle` client connections that each get
//! one response and then stay idle, read VmRSS again, close them all, read it
//! once more, stop it. VmRSS is user memory only, so socket buffers and other
//! kernel memory are not in the figure.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Options;
use super::idle::IdleConns;
use crate::chart::{Bars, Series};
use crate::harness::{Proc, log_tail, ports_free, scratch, wait_listening};
use crate::proxies::{
    Tuning, haproxy_config_tuned, nginx_args, nginx_config_tuned, ports, start_lb,
};
use crate::report::result_path;
use crate::sys::{nofile_of, raise_nofile, vm_rss_kib};

/// Longest time spent opening the connections of one row.
const OPEN_LIMIT: Duration = Duration::from_secs(20);
/// Time given to a process to settle before its RSS is read.
const SETTLE: Duration = Duration::from_millis(300);

/// What one row measured.
#[derive(Debug, Default)]
struct Row {
    name: &'static str,
    before_kib: u64,
    after_kib: u64,
    closed_kib: u64,
    /// The process's own open-file limit.
    nofile: Option<u64>,
    opened: usize,
    served: usize,
    open_secs: f64,
    error: Option<String>,
}

impl Row {
    /// RSS increase per connection served, in bytes.
    fn bytes_per_conn(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) * 1024.0 / self.served.max(1) as f64
    }
}

/// Runs the scenario and writes `bench/results/conns.svg`.
pub fn run(o: &Options) -> Result<String, String> {
    let limit = raise_nofile()?;
    let need = o.idle as u64 + 500;
    if limit < need {
        return Err(format!(
            "open-file limit {limit} is too low for --idle {}: need {need}",
            o.idle
        ));
    }
    ports_free(&ports::ALL)?;
    let dir = scratch("conns");
    let backend = o.backend.start(&dir)?;
    listening("backend", ports::BACKEND, None)?;
    let tuning = Tuning {
        max_conns: (o.idle as u32 + 500).max(4000),
        ..Tuning::default()
    };
    let mut rows = vec![measure("direct", ports::BACKEND, backend.pid(), o.idle)?];
    {
        let lb = start_lb(&dir)?;
        listening("lb", ports::LB, None)?;
        rows.push(measure("lb", ports::LB, lb.pid(), o.idle)?);
    }
    {
        let log = dir.join("haproxy.log");
        let cfg = haproxy_config_tuned(&dir, &tuning)?;
        let args = vec!["-db".into(), "-f".into(), cfg.display().to_string()];
        let ha = Proc::start_logged("haproxy", "0", Path::new("/usr/sbin/haproxy"), &args, &log)
            .map_err(|e| e.to_string())?;
        listening("haproxy", ports::HAPROXY, Some(&log))?;
        rows.push(measure("haproxy", ports::HAPROXY, ha.pid(), o.idle)?);
    }
    {
        let cfg = nginx_config_tuned(&dir, &tuning)?;
        let ng = Proc::start(
            "nginx",
            "0",
            Path::new("/usr/sbin/nginx"),
            &nginx_args(&dir, &cfg),
        )
        .map_err(|e| e.to_string())?;
        listening("nginx", ports::NGINX, Some(&dir.join("nginx.err")))?;
        rows.push(measure("nginx", ports::NGINX, ng.pid(), o.idle)?);
    }
    drop(backend);
    let _ = std::fs::remove_dir_all(&dir);
    chart(&rows, o).write_svg(&result_path("conns", "svg"))?;
    Ok(table(&rows, o, limit))
}

fn listening(name: &str, port: u16, log: Option<&Path>) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if wait_listening(addr, Duration::from_secs(20)) {
        return Ok(());
    }
    let tail = log.map(|l| log_tail(l, 5)).unwrap_or_default();
    Err(format!("{name} did not start listening on {addr}\n{tail}"))
}

/// Warms up the process `pid` listening on `port`, then measures it holding
/// `n` idle connections.
fn measure(name: &'static str, port: u16, pid: u32, n: usize) -> Result<Row, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let rss = || vm_rss_kib(pid).ok_or(format!("{name} (pid {pid}) is gone"));
    let warm = IdleConns::open(addr, 100, Instant::now() + OPEN_LIMIT);
    if let Some(e) = warm.error {
        return Err(format!("{name}: warm-up failed: {e}"));
    }
    drop(warm);
    std::thread::sleep(SETTLE);
    let before_kib = rss()?;
    let conns = IdleConns::open(addr, n, Instant::now() + OPEN_LIMIT);
    std::thread::sleep(SETTLE);
    let after_kib = rss()?;
    let held = conns.held();
    let (opened, served, open_secs) = (conns.opened, conns.served, conns.elapsed.as_secs_f64());
    let error = conns.error.clone();
    drop(conns);
    std::thread::sleep(SETTLE);
    let closed_kib = rss()?;
    eprintln!("conns: {name}: held {held} connections, VmRSS {before_kib} -> {after_kib} KiB");
    Ok(Row {
        name,
        before_kib,
        after_kib,
        closed_kib,
        nofile: nofile_of(pid),
        opened,
        served,
        open_secs,
        error,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn table(rows: &[Row], o: &Options, limit: u64) -> String {
    let mut out = format!(
        "backend: {}; {} idle connections per path, each served one `GET /fixed` first; open-file limit {limit}\n\n",
        o.backend.name(),
        o.idle
    );
    out.push_str("| path | opened | served | open s | VmRSS before MiB | VmRSS idle MiB | per conn KiB | per conn bytes | VmRSS after close MiB | fd limit | all accepted and served |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let all = if r.served == o.idle { "yes" } else { "no" };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {} | {:.1} | {:.0} | {} | {} | {all} |",
            r.name,
            r.opened,
            r.served,
            r.open_secs,
            mib(r.before_kib),
            mib(r.after_kib),
            r.bytes_per_conn() / 1024.0,
            r.bytes_per_conn(),
            mib(r.closed_kib),
            r.nofile.map_or("-".into(), |n| n.to_string()),
        );
    }
    for r in rows {
        if let Some(e) = &r.error {
            let _ = writeln!(out, "\n{}: stopped early: {e}", r.name);
        }
    }
    out.push_str("\nVmRSS is the process's resident user memory (kernel socket memory is not in it); per conn = (idle - before) / served. HAProxy and nginx size their connection tables from maxconn/worker_connections at start, so part of their cost is already in \"before\".\n");
    out
}

fn chart(rows: &[Row], o: &Options) -> Bars {
    Bars {
        title: format!(
            "conns: VmRSS increase per idle keep-alive connection ({} connections)",
            o.idle
        ),
        y_desc: "KiB per connection".into(),
        groups: rows.iter().map(|r| r.name.to_owned()).collect(),
        series: vec![Series {
            name: "KiB / connection".into(),
            values: rows.iter().map(|r| r.bytes_per_conn() / 1024.0).collect(),
        }],
        reference: None,
        decimals: 1,
    }
}
