//! `bench SCENARIO`: side-by-side load benchmarks of lb, HAProxy, nginx and the
//! direct path on loopback. Each proxy gets core 0 (lb with one worker); wrk and
//! the backend get the other cores. Rounds are interleaved and medians reported.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bench::harness::{
    Proc, WrkResult, cpu_micros, median, peak_rss_kib, run_wrk, scratch, wait_listening,
};

const BACKEND: u16 = 19500;
const LB: u16 = 19501;
const LB_ADMIN: u16 = 19502;
const HAPROXY: u16 = 19503;
const NGINX: u16 = 19504;

struct Options {
    scenario: String,
    seconds: u32,
    rounds: usize,
    connections: u32,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        scenario: String::new(),
        seconds: 5,
        rounds: 3,
        connections: 50,
    };
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> Result<u32, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{what} needs a number"))
        };
        match a.as_str() {
            "--seconds" => o.seconds = num("--seconds")?,
            "--rounds" => o.rounds = num("--rounds")? as usize,
            "--connections" => o.connections = num("--connections")?,
            s if !s.starts_with('-') && o.scenario.is_empty() => o.scenario = s.to_owned(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.scenario.is_empty() {
        return Err(
            "usage: bench http1|http1-close [--seconds N] [--rounds N] [--connections N]".into(),
        );
    }
    Ok(o)
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release -p lb-control -p bench` first",
            path.display()
        ))
    }
}

fn other_cores() -> String {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    if n <= 1 {
        "0".into()
    } else {
        format!("1-{}", n - 1)
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn start_lb(dir: &Path) -> Result<Proc, String> {
    let m = dir.join("manifests");
    std::fs::create_dir_all(&m).map_err(|e| e.to_string())?;
    write(
        &m.join("web.yaml"),
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{ports: [{{port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{port: {BACKEND}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web}}\nspec:\n  ingressClassName: lb\n  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}\n"
        ),
    )?;
    let cfg = dir.join("lb.toml");
    write(
        &cfg,
        &format!(
            "[runtime]\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:{LB_ADMIN}\"\n[ingress]\nhttp = [\"127.0.0.1:{LB}\"]\nhttps = []\n[sources]\nfiles = [\"{}\"]\n",
            m.display()
        ),
    )?;
    let args = vec!["serve".into(), "--config".into(), cfg.display().to_string()];
    Proc::start("lb", "0", &sibling("lb")?, &args).map_err(|e| e.to_string())
}

fn start_haproxy(dir: &Path) -> Result<Proc, String> {
    let cfg = dir.join("haproxy.cfg");
    write(
        &cfg,
        &format!(
            "global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\nfrontend f\n  bind 127.0.0.1:{HAPROXY}\n  default_backend b\nbackend b\n  http-reuse always\n  server s1 127.0.0.1:{BACKEND}\n"
        ),
    )?;
    let args = vec!["-db".into(), "-f".into(), cfg.display().to_string()];
    Proc::start("haproxy", "0", Path::new("/usr/sbin/haproxy"), &args).map_err(|e| e.to_string())
}

fn start_nginx(dir: &Path) -> Result<Proc, String> {
    let cfg = dir.join("nginx.conf");
    write(
        &cfg,
        &format!(
            "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx.err;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  upstream b {{ server 127.0.0.1:{BACKEND}; keepalive 64; }}\n  server {{\n    listen 127.0.0.1:{NGINX};\n    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
            d = dir.display()
        ),
    )?;
    let args = vec![
        "-p".into(),
        dir.display().to_string(),
        "-c".into(),
        cfg.display().to_string(),
    ];
    Proc::start("nginx", "0", Path::new("/usr/sbin/nginx"), &args).map_err(|e| e.to_string())
}

#[derive(Default)]
struct Figures {
    rps: Vec<f64>,
    cpu_us_per_req: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    errors: u64,
    rss_kib: u64,
}

fn http1(o: &Options, paths: &[&str], headers: &[&str]) -> Result<String, String> {
    let dir = scratch("http1");
    let cores = other_cores();
    let echo_args = vec![
        "--listen".into(),
        format!("127.0.0.1:{BACKEND}"),
        "--name".into(),
        "web".into(),
        "--workers".into(),
        "1".into(),
    ];
    let _backend = Proc::start("lb-echo", &cores, &sibling("lb-echo")?, &echo_args)
        .map_err(|e| e.to_string())?;
    let procs = [
        (None, BACKEND, "direct"),
        (Some(start_lb(&dir)?), LB, "lb"),
        (Some(start_haproxy(&dir)?), HAPROXY, "haproxy"),
        (Some(start_nginx(&dir)?), NGINX, "nginx"),
    ];
    for (_, port, name) in &procs {
        let addr: SocketAddr = format!("127.0.0.1:{port}")
            .parse()
            .map_err(|_| "addr".to_string())?;
        if !wait_listening(addr, Duration::from_secs(20)) {
            return Err(format!("{name} did not start listening on {addr}"));
        }
    }
    let mut out = String::new();
    for body in paths {
        let mut figs: Vec<Figures> = procs.iter().map(|_| Figures::default()).collect();
        for _ in 0..o.rounds {
            for (i, (proc_, port, _)) in procs.iter().enumerate() {
                let pid = proc_.as_ref().map(Proc::pid);
                let before = pid.and_then(cpu_micros);
                let r: WrkResult = run_wrk(
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
        out.push_str("| path | req/s | CPU µs/req | p50 µs | p99 µs | peak RSS MiB | errors |\n|---|---|---|---|---|---|---|\n");
        for (i, (_, _, name)) in procs.iter().enumerate() {
            let f = &figs[i];
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
        let (lb, ha, ng) = (&figs[1], &figs[2], &figs[3]);
        let ratio =
            |a: &[f64], b: &[f64]| median(a.to_vec()) / median(b.to_vec()).max(f64::MIN_POSITIVE);
        let _ = writeln!(
            out,
            "\nratios: req/s lb/haproxy {:.2}, lb/nginx {:.2}; CPU/req lb/haproxy {:.2}, lb/nginx {:.2}",
            ratio(&lb.rps, &ha.rps),
            ratio(&lb.rps, &ng.rps),
            ratio(&lb.cpu_us_per_req, &ha.cpu_us_per_req),
            ratio(&lb.cpu_us_per_req, &ng.cpu_us_per_req)
        );
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

fn machine() -> String {
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

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match o.scenario.as_str() {
        "http1" => http1(&o, &["/fixed", "/bytes/1024", "/bytes/65536"], &[]),
        "http1-close" => http1(&o, &["/fixed"], &["Connection: close"]),
        other => Err(format!(
            "unknown scenario {other}; available: http1, http1-close"
        )),
    };
    match result {
        Ok(table) => {
            let report = format!(
                "## http1: lb vs HAProxy vs nginx vs direct\n\n{}\n{table}",
                machine()
            );
            println!("{report}");
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("results")
                .join(format!("{}.md", o.scenario));
            if let Err(e) = std::fs::write(&path, &report) {
                eprintln!("cannot write {}: {e}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
