//! `lb-echo`: the echo backend as a standalone server (see `bench::echo`).
//!
//! ```text
//! lb-echo --listen 127.0.0.1:9376 [--listen ADDR ...] [--name NAME] [--workers N]
//!         [--drain-on-sigterm]
//! lb-echo --from-manifests config/manifests [--from-manifests PATH ...]
//! ```
//!
//! `--from-manifests` scans Kubernetes YAML files (or directories of them) for
//! EndpointSlice endpoints and listens on every loopback `address:port` found, naming each
//! backend after its address. Without `--name`, `--listen` backends are named after their
//! address too. One line is printed per listener, then `lb-echo: ready`; SIGINT or SIGTERM
//! stops the server.
//!
//! With `--drain-on-sigterm`, the first SIGTERM only starts draining (as a pod does during
//! its termination grace period): `lb-echo: draining` is printed, listeners stay open and
//! every response from then on carries `Connection: close` and closes its connection, so
//! keep-alive clients reconnect instead of seeing errors. A second SIGTERM, or SIGINT,
//! stops the server.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bench::echo::{Stats, serve};
use serde::Deserialize;
use serde_yaml_ng::Value;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: lb-echo [--listen ADDR]... [--name NAME] \
                     [--from-manifests PATH]... [--workers N] [--drain-on-sigterm]";

/// Parsed command line.
#[derive(Debug, Default)]
struct Args {
    listen: Vec<SocketAddr>,
    name: Option<String>,
    manifests: Vec<PathBuf>,
    workers: Option<usize>,
    /// The first SIGTERM drains instead of stopping.
    drain_on_sigterm: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args::default();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        if flag == "--drain-on-sigterm" {
            if inline.is_some() {
                return Err("--drain-on-sigterm takes no value".into());
            }
            out.drain_on_sigterm = true;
            continue;
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(format!("{flag} needs a value")),
        };
        match flag.as_str() {
            "--listen" => out.listen.push(
                value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?,
            ),
            "--name" => out.name = Some(value),
            "--from-manifests" => out.manifests.push(PathBuf::from(value)),
            "--workers" => {
                out.workers = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--workers {value}: {e}"))?,
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if out.listen.is_empty() && out.manifests.is_empty() {
        return Err("give at least one --listen or --from-manifests".into());
    }
    Ok(out)
}

/// One endpoint found in an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    addr: SocketAddr,
    ready: bool,
    service: String,
}

/// `*.yaml` / `*.yml` files under `path` (or `path` itself), sorted.
fn yaml_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort();
        for entry in entries {
            if entry.is_dir() {
                yaml_files(&entry, out)?;
            } else if entry
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                out.push(entry);
            }
        }
    } else {
        out.push(path.to_owned());
    }
    Ok(())
}

/// Endpoints of every EndpointSlice in a multi-document YAML text.
fn endpoints_in_yaml(text: &str) -> Result<Vec<Endpoint>, serde_yaml_ng::Error> {
    let mut found = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let doc = Value::deserialize(doc)?;
        if doc.get("kind").and_then(Value::as_str) != Some("EndpointSlice") {
            continue;
        }
        let service = doc
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let ports: Vec<u16> = seq(doc.get("ports"))
            .filter_map(|p| p.get("port").and_then(Value::as_u64))
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        for endpoint in seq(doc.get("endpoints")) {
            // Kubernetes treats an absent `ready` as ready.
            let ready = endpoint
                .get("conditions")
                .and_then(|c| c.get("ready"))
                .and_then(Value::as_bool)
                .unwrap_or(true);
            for address in seq(endpoint.get("addresses")).filter_map(Value::as_str) {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue;
                };
                for &port in &ports {
                    found.push(Endpoint {
                        addr: SocketAddr::new(ip, port),
                        ready,
                        service: service.clone(),
                    });
                }
            }
        }
    }
    Ok(found)
}

fn seq(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    value
        .and_then(Value::as_sequence)
        .into_iter()
        .flat_map(|s| s.iter())
}

/// Every distinct endpoint in the manifests under `paths`.
fn endpoints_from_manifests(paths: &[PathBuf]) -> Result<Vec<Endpoint>, String> {
    let mut files = Vec::new();
    for path in paths {
        yaml_files(path, &mut files).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut all: Vec<Endpoint> = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let found = endpoints_in_yaml(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        for endpoint in found {
            if !all.iter().any(|e| e.addr == endpoint.addr) {
                all.push(endpoint);
            }
        }
    }
    Ok(all)
}

/// A listener to open: address, backend name and a note for the ready line.
struct Plan {
    addr: SocketAddr,
    name: String,
    note: String,
}

fn plan(args: &Args) -> Result<Vec<Plan>, String> {
    let mut plans: Vec<Plan> = args
        .listen
        .iter()
        .map(|&addr| Plan {
            addr,
            name: args.name.clone().unwrap_or_else(|| addr.to_string()),
            note: String::new(),
        })
        .collect();
    for endpoint in endpoints_from_manifests(&args.manifests)? {
        if !endpoint.addr.ip().is_loopback() {
            eprintln!(
                "lb-echo: skipping {} (service {}): not a loopback address",
                endpoint.addr, endpoint.service
            );
            continue;
        }
        if plans.iter().any(|p| p.addr == endpoint.addr) {
            continue;
        }
        let mut note = format!(" (service {}", endpoint.service);
        if !endpoint.ready {
            note.push_str(", not ready: lb must never route here");
        }
        note.push(')');
        plans.push(Plan {
            addr: endpoint.addr,
            name: endpoint.addr.to_string(),
            note,
        });
    }
    if plans.is_empty() {
        return Err("no endpoints to listen on".into());
    }
    Ok(plans)
}

async fn run(plans: Vec<Plan>, drain_on_sigterm: bool) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut bound = 0;
    let mut all_stats = Vec::new();
    for plan in plans {
        let listener = match tokio::net::TcpListener::bind(plan.addr).await {
            Ok(l) => l,
            // A host without IPv6 loopback still serves the IPv4 endpoints.
            Err(e) if plan.addr.is_ipv6() && e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                eprintln!("lb-echo: skipping {}: {e}", plan.addr);
                continue;
            }
            Err(e) => return Err(format!("listen on {}: {e}", plan.addr)),
        };
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!(
            "lb-echo: backend {} listening on {addr}{}",
            plan.name, plan.note
        );
        let stats = Arc::new(Stats::default());
        tokio::spawn(serve(
            listener,
            Arc::from(plan.name.as_str()),
            stats.clone(),
        ));
        all_stats.push(stats);
        bound += 1;
    }
    println!("lb-echo: ready ({bound} listeners)");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let sigterm = tokio::select! {
        _ = term.recv() => true,
        _ = int.recv() => false,
    };
    if sigterm && drain_on_sigterm {
        for stats in &all_stats {
            stats.drain();
        }
        println!("lb-echo: draining");
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    println!("lb-echo: stopping");
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            if msg.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("lb-echo: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let plans = match plan(&args) {
        Ok(plans) => plans,
        Err(msg) => {
            eprintln!("lb-echo: {msg}");
            return ExitCode::from(2);
        }
    };
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name("lb-echo")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lb-echo: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(plans, args.drain_on_sigterm));
    // Connections still open are closed when their tasks are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("lb-echo: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse() {
        let args = parse_args(
            [
                "--listen",
                "127.0.0.1:1",
                "--listen=127.0.0.1:2",
                "--name",
                "a",
            ]
            .into_iter()
            .map(String::from),
        )
        .unwrap();
        assert_eq!(args.listen.len(), 2);
        assert_eq!(args.name.as_deref(), Some("a"));
        assert!(!args.drain_on_sigterm);
        assert!(parse_args(std::iter::empty()).is_err());
        assert!(parse_args(["--bogus", "x"].into_iter().map(String::from)).is_err());
    }

    #[test]
    fn drain_on_sigterm_is_a_flag() {
        let args = parse_args(
            [
                "--drain-on-sigterm",
                "--listen",
                "127.0.0.1:1",
                "--workers",
                "1",
            ]
            .into_iter()
            .map(String::from),
        )
        .unwrap();
        assert!(args.drain_on_sigterm);
        assert_eq!(args.listen.len(), 1);
        assert_eq!(args.workers, Some(1));
        let args = parse_args(
            ["--listen", "127.0.0.1:1", "--drain-on-sigterm"]
                .into_iter()
                .map(String::from),
        )
        .unwrap();
        assert!(args.drain_on_sigterm);
        assert!(
            parse_args(
                ["--listen", "127.0.0.1:1", "--drain-on-sigterm=yes"]
                    .into_iter()
                    .map(String::from)
            )
            .is_err()
        );
    }

    #[test]
    fn endpoints_from_yaml() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: s}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: s-1
  labels: {kubernetes.io/service-name: s}
addressType: IPv4
ports: [{port: 9000}]
endpoints:
  - addresses: ["127.0.0.1", "127.0.0.2"]
    conditions: {ready: true}
  - addresses: ["127.0.0.3"]
    conditions: {ready: false}
"#;
        let found = endpoints_in_yaml(text).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(found[0].service, "s");
        assert!(found[1].ready);
        assert!(!found[2].ready);
    }

    #[test]
    fn repo_manifests_are_loopback_only() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/manifests");
        let found = endpoints_from_manifests(&[dir]).unwrap();
        assert!(!found.is_empty());
        for endpoint in &found {
            assert!(endpoint.addr.ip().is_loopback(), "{endpoint:?}");
        }
        let addr: SocketAddr = "127.0.0.1:9376".parse().unwrap();
        assert!(found.iter().any(|e| e.addr == addr && e.ready));
    }
}
