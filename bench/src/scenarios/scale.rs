//! `scale`: how lb copes with many objects. For each `--objects` count, lb
//! (one worker, every CPU) is started on that many Services, EndpointSlices and
//! Ingresses in a few YAML files, and the scenario reports the time to
//! `/readyz` 200, the compile and publish times lb measured itself
//! (`lb_config_compile_seconds`, `lb_config_publish_seconds`), the time from
//! SIGHUP to the next `lb_snapshot_generation`, and VmRSS. lb only: HAProxy
//! and nginx do not read Kubernetes objects, so there is nothing to compare.
//!
//! A second table measures event-to-traffic latency: for each count up to
//! [`LATENCY_MAX_OBJECTS`], lb serves that many Services (each with an
//! EndpointSlice), then that many Ingress hosts; one small file is changed
//! [`CHANGES`] times (lb's `lb_event_to_traffic_seconds` p50/p99/max), then
//! rewritten [`BURST`] times as fast as possible (events seen and compiles
//! run), and VmRSS is read; each workload runs once from manifest files and
//! once from the stand-in Kubernetes API server ([`crate::kube_api`]).
//!
//! The object generator is public so the `compile` criterion benchmark of
//! lb-control compiles exactly the same mix.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Options;
use crate::harness::{Proc, log_tail, median, scratch};
use crate::proxies::{sibling, write};

/// Largest `--objects` count that also gets the event-to-traffic rows.
pub const LATENCY_MAX_OBJECTS: usize = 10_000;
/// Single-object changes per event-to-traffic workload.
pub const CHANGES: usize = 20;
/// Rewrites of one file in the burst of each event-to-traffic workload.
pub const BURST: usize = 10_000;
/// Writes of the probe objects in the burst through the real API server
/// (each is two requests answered by etcd; fewer keep the run short).
pub const BURST_API: usize = 1_000;

/// Object counts run when `--objects` is not given.
pub const DEFAULT_OBJECTS: [usize; 3] = [1_000, 10_000, 100_000];

/// How long one load may take before the scenario gives up.
const LIMIT: Duration = Duration::from_secs(600);

/// Rules per generated Ingress.
pub const RULES: usize = 3;
/// Paths per Ingress, over all of its rules.
pub const PATHS: usize = 6;

/// Parses `--objects`: comma-separated positive counts (`1000,10000`).
pub fn parse_objects(s: &str) -> Result<Vec<usize>, String> {
    let counts: Result<Vec<usize>, _> = s.split(',').map(|n| n.trim().parse()).collect();
    match counts {
        Ok(c) if !c.is_empty() && c.iter().all(|&n| n > 0) => Ok(c),
        _ => Err(format!(
            "--objects needs counts such as 1000,10000, not {s:?}"
        )),
    }
}

fn service(app: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: app-{app}\n  namespace: ns-{ns}\n  labels: {{app: app-{app}, tier: web}}\nspec:\n  selector: {{app: app-{app}}}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080, protocol: TCP}}\n  - {{name: metrics, port: 9090, protocol: TCP}}\n",
        ns = app % 20
    )
}

fn endpoint_slice(app: usize) -> String {
    let (hi, lo) = ((app >> 8) & 0xff, app & 0xff);
    let mut out = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: app-{app}-x7k2p\n  namespace: ns-{ns}\n  labels:\n    kubernetes.io/service-name: app-{app}\naddressType: IPv4\nports:\n- {{name: http, port: 8080, protocol: TCP}}\n- {{name: metrics, port: 9090, protocol: TCP}}\nendpoints:\n",
        ns = app % 20
    );
    for e in 1..=3 {
        let _ = writeln!(
            out,
            "- addresses: [\"10.{hi}.{lo}.{e}\"]\n  conditions: {{ready: {}}}\n  nodeName: node-{}",
            e != 3 || app.is_multiple_of(2),
            (app + e) % 50
        );
    }
    out
}

fn ingress(app: usize) -> String {
    let path = |p: &str, kind: &str, port: &str| {
        format!(
            "      - path: {p}\n        pathType: {kind}\n        backend: {{service: {{name: app-{app}, port: {port}}}}}\n"
        )
    };
    let (num, name) = ("{number: 80}", "{name: http}");
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: app-{app}\n  namespace: ns-{ns}\n  creationTimestamp: \"2024-01-{day:02}T{h:02}:{m:02}:00Z\"\nspec:\n  ingressClassName: lb\n  rules:\n  - host: app-{app}.example.com\n    http:\n      paths:\n{}{}{}  - host: \"*.app-{app}.example.net\"\n    http:\n      paths:\n{}{}  - host: admin-{app}.example.com\n    http:\n      paths:\n{}",
        path("/", "Prefix", num),
        path("/api/v1", "Prefix", name),
        path("/healthz", "Exact", num),
        path("/", "Prefix", num),
        path("/static/assets", "ImplementationSpecific", name),
        path("/metrics", "Exact", "{number: 9090}"),
        ns = app % 20,
        day = 1 + app % 28,
        h = (app / 28) % 24,
        m = (app / 672) % 60,
    )
}

/// `n` objects, one YAML document each, in the order Service, EndpointSlice,
/// Ingress of app 0, then of app 1, and so on: a third of each kind. Every
/// Ingress has [`RULES`] rules (exact and `*.` hosts) and [`PATHS`] paths
/// (Prefix, Exact, ImplementationSpecific; ports by number and by name).
pub fn object_docs(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 3 {
            0 => service(i / 3),
            1 => endpoint_slice(i / 3),
            _ => ingress(i / 3),
        })
        .collect()
}

/// The same `n` objects as multi-document YAML files, one per kind:
/// `(file name, text)`.
pub fn manifest_files(n: usize) -> Vec<(&'static str, String)> {
    let mut files = [
        ("services.yaml", String::new()),
        ("endpointslices.yaml", String::new()),
        ("ingresses.yaml", String::new()),
    ];
    for (i, doc) in object_docs(n).into_iter().enumerate() {
        let text = &mut files[i % 3].1;
        text.push_str("---\n");
        text.push_str(&doc);
    }
    files.into_iter().filter(|(_, t)| !t.is_empty()).collect()
}

/// A free loopback port, so that a scale run never talks to another lb.
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Writes `dir/lb.toml` (one worker, free ports, `dir/manifests`) and the
/// manifest files; returns the config path and the admin address.
fn write_config(dir: &Path, files: &[(&str, String)]) -> Result<(PathBuf, SocketAddr), String> {
    write_config_with(dir, files, "")
}

/// [`write_config`] with `sources` TOML lines added to `[sources]`.
fn write_config_with(
    dir: &Path,
    files: &[(&str, String)],
    sources: &str,
) -> Result<(PathBuf, SocketAddr), String> {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).map_err(|e| format!("{}: {e}", manifests.display()))?;
    for (name, text) in files {
        write(&manifests.join(name), text)?;
    }
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let cfg = dir.join("lb.toml");
    let text = format!(
        "[runtime]\nworkers = 1\n[admin]\nlisten = \"{admin}\"\n[ingress]\nhttp = [\"127.0.0.1:{}\"]\nhttps = []\n[sources]\nfiles = [\"{}\"]\n{sources}",
        free_port()?,
        manifests.display()
    );
    write(&cfg, &text)?;
    Ok((cfg, admin))
}

/// One GET to lb's admin API: `(status, body)`; `None` while it cannot connect.
fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    // The admin API shares the control thread, which may be compiling.
    s.set_read_timeout(Some(LIMIT)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    Some((status, raw.split_once("\r\n\r\n")?.1.to_owned()))
}

/// The value of an unlabelled series in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn vm_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    kib as f64 / 1024.0
}

/// What one start and one reload of lb measured (times in ms).
#[derive(Debug, Default, Clone)]
struct Sample {
    startup: f64,
    compile: f64,
    publish: f64,
    rss_start: f64,
    reload: f64,
    reload_compile: f64,
    reload_publish: f64,
    rss_reload: f64,
}

/// `/metrics` as `(generation, compile ms, publish ms)`.
fn load_metrics(admin: SocketAddr) -> Result<(f64, f64, f64), String> {
    let (_, m) = admin_get(admin, "/metrics").ok_or("lb: /metrics unreachable")?;
    let get = |name| metric(&m, name).ok_or(format!("lb: {name} missing from /metrics"));
    Ok((
        get("lb_snapshot_generation")?,
        get("lb_config_compile_seconds")? * 1e3,
        get("lb_config_publish_seconds")? * 1e3,
    ))
}

/// Starts lb on the manifests in `dir`, measures, reloads once, stops it.
fn measure(dir: &Path, cfg: &Path, admin: SocketAddr) -> Result<Sample, String> {
    let log = dir.join("lb.log");
    let args = vec!["serve".into(), "--config".into(), cfg.display().to_string()];
    let start = Instant::now();
    // lb alone: its control plane parses and types on every CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all = format!("0-{}", cpus - 1);
    let mut lb = Proc::start_logged("lb", &all, &sibling("lb")?, &args, &log)
        .map_err(|e| format!("lb: {e}"))?;
    let fail = |what: &str| format!("lb {what}; log:\n{}", log_tail(&log, 20));
    while admin_get(admin, "/readyz").map(|r| r.0) != Some(200) {
        if start.elapsed() > LIMIT || lb.child.try_wait().ok().flatten().is_some() {
            return Err(fail("did not become ready"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut s = Sample {
        startup: start.elapsed().as_secs_f64() * 1e3,
        rss_start: vm_rss_mib(lb.pid()),
        ..Sample::default()
    };
    if lb.child.try_wait().ok().flatten().is_some() {
        return Err(fail("exited"));
    }
    let (generation, compile, publish) = load_metrics(admin)?;
    (s.compile, s.publish) = (compile, publish);

    let hup = Instant::now();
    let sent = Command::new("kill")
        .args(["-HUP", &lb.pid().to_string()])
        .status();
    if !sent.is_ok_and(|st| st.success()) {
        return Err(fail("could not be sent SIGHUP"));
    }
    loop {
        let (g, compile, publish) = load_metrics(admin)?;
        if g > generation {
            s.reload = hup.elapsed().as_secs_f64() * 1e3;
            (s.reload_compile, s.reload_publish) = (compile, publish);
            break;
        }
        if hup.elapsed() > LIMIT {
            return Err(fail("did not publish a new generation after SIGHUP"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    s.rss_reload = vm_rss_mib(lb.pid());
    Ok(s)
}

/// Runs the scenario for every count in `o.objects`, `o.rounds` starts each.
pub fn run(o: &Options) -> Result<String, String> {
    let mut out = format!(
        "\nlb only (HAProxy and nginx do not read Kubernetes objects: no comparison row). \
         Objects: Services, EndpointSlices (3 endpoints) and Ingresses ({RULES} rules, \
         {PATHS} paths) in equal numbers, in 3 YAML files; lb with `workers = 1`, free to use every CPU (it parses and types manifests on all of them); \
         median of {} start(s) + SIGHUP reload(s) per count. Compile = read, parse, validate \
         and compile every object (`lb_config_compile_seconds`); publish = snapshot swap and \
         generation bump (`lb_config_publish_seconds`).\n\n\
         | objects | routes | start to /readyz ms | compile ms | publish µs | SIGHUP to new generation ms | reload compile ms | reload publish µs | VmRSS after start MiB | VmRSS after reload MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        o.rounds
    );
    for &n in &o.objects {
        let dir = scratch(&format!("scale-{n}"));
        let (cfg, admin) = write_config(&dir, &manifest_files(n))?;
        let samples: Result<Vec<Sample>, String> = (0..o.rounds.max(1))
            .map(|_| measure(&dir, &cfg, admin))
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        let samples = samples?;
        let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        let _ = writeln!(
            out,
            "| {n} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
            n / 3 * PATHS,
            m(|s| s.startup),
            m(|s| s.compile),
            m(|s| s.publish) * 1e3,
            m(|s| s.reload),
            m(|s| s.reload_compile),
            m(|s| s.reload_publish) * 1e3,
            m(|s| s.rss_start),
            m(|s| s.rss_reload),
        );
    }
    let latency: Vec<usize> = o
        .objects
        .iter()
        .copied()
        .filter(|&n| n <= LATENCY_MAX_OBJECTS)
        .collect();
    if !latency.is_empty() {
        out.push_str(&latency_table(&latency)?);
    }
    Ok(out)
}

/// What an event-to-traffic workload serves.
#[derive(Debug, Clone, Copy)]
enum Workload {
    /// This many Services, each with an EndpointSlice.
    Services(usize),
    /// Ingresses with this many hosts in all ([`RULES`] per Ingress), with
    /// their Services and EndpointSlices.
    IngressHosts(usize),
}

impl Workload {
    fn name(self) -> String {
        match self {
            Workload::Services(n) => format!("{n} Services + {n} EndpointSlices"),
            Workload::IngressHosts(n) => format!(
                "{n} Ingress hosts ({} Ingresses + Services + EndpointSlices)",
                n.div_ceil(RULES)
            ),
        }
    }

    /// `(file name, text)` of the workload's manifests.
    fn files(self) -> Vec<(&'static str, String)> {
        let (apps, ingresses) = match self {
            Workload::Services(n) => (n, false),
            Workload::IngressHosts(n) => (n.div_ceil(RULES), true),
        };
        let mut files = vec![
            ("services.yaml", String::new()),
            ("endpointslices.yaml", String::new()),
        ];
        if ingresses {
            files.push(("ingresses.yaml", String::new()));
        }
        for app in 0..apps {
            files[0].1.push_str("---\n");
            files[0].1.push_str(&service(app));
            files[1].1.push_str("---\n");
            files[1].1.push_str(&endpoint_slice(app));
            if ingresses {
                files[2].1.push_str("---\n");
                files[2].1.push_str(&ingress(app));
            }
        }
        files.push((PROBE, probe(0)));
        files
    }

    fn objects(self) -> usize {
        match self {
            Workload::Services(n) => 2 * n,
            Workload::IngressHosts(n) => 3 * n.div_ceil(RULES),
        }
    }
}

/// Where an event-to-traffic workload's objects come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Manifest files; a change rewrites the probe file.
    Files,
    /// A real API server (a private `bench/cluster.sh` cluster) through
    /// lb's list+watch source, lb as its ServiceAccount; a change applies
    /// the probe objects there.
    Kubernetes,
}

/// A workload's objects as the API server takes them: Services without a
/// selector (their EndpointSlices are the workload's own, as for endpoints
/// outside the cluster; with one, the EndpointSlice controller would add an
/// empty slice per Service) and headless (lb does not use ClusterIPs, and
/// allocating 10,000 of them makes the load crawl), no `creationTimestamp`
/// (the server sets it).
fn api_documents(files: &[(&str, String)]) -> Result<Vec<serde_json::Value>, String> {
    let mut docs = Vec::new();
    for (_, text) in files {
        for mut d in crate::kube_load::documents(text)? {
            let service = d["kind"] == "Service";
            if let Some(spec) = d.get_mut("spec").and_then(|s| s.as_object_mut()) {
                spec.remove("selector");
                if service {
                    spec.insert("clusterIP".into(), "None".into());
                }
            }
            if let Some(md) = d.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                md.remove("creationTimestamp");
            }
            docs.push(d);
        }
    }
    Ok(docs)
}

/// The real API server of one workload: a private cluster, a client and a
/// runtime to drive it.
struct RealApi {
    cluster: crate::cluster::Cluster,
    client: kube::Client,
    rt: tokio::runtime::Runtime,
}

impl RealApi {
    /// Starts a cluster and loads `files` into it; returns it and the time
    /// the load took.
    fn start(files: &[(&'static str, String)]) -> Result<(RealApi, Duration), String> {
        let cluster = crate::cluster::Cluster::private("scale")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let client = rt.block_on(crate::kube_load::client(&cluster.admin_kubeconfig()))?;
        let docs = api_documents(files)?;
        let start = Instant::now();
        rt.block_on(crate::kube_load::create_all(&client, &docs))?;
        let took = start.elapsed();
        Ok((
            RealApi {
                cluster,
                client,
                rt,
            },
            took,
        ))
    }

    fn apply_yaml(&self, text: &str) -> Result<(), String> {
        let docs = crate::kube_load::documents(text)?;
        self.rt
            .block_on(crate::kube_load::apply_all(&self.client, &docs))
    }
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Files => "files",
            Source::Kubernetes => "API server",
        }
    }
}

/// The file each change rewrites.
const PROBE: &str = "probe.yaml";

/// The probe Service and EndpointSlice, version `v` (its endpoint moves).
fn probe(v: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: probe, namespace: bench}}\nspec:\n  ports:\n  - {{port: 80, protocol: TCP}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: probe-1\n  namespace: bench\n  labels: {{kubernetes.io/service-name: probe}}\naddressType: IPv4\nports:\n- {{port: 8080, protocol: TCP}}\nendpoints:\n- addresses: [\"10.254.{}.{}\"]\n",
        (v >> 8) & 0xff,
        1 + v % 250
    )
}

/// What one event-to-traffic workload measured (times in ms).
#[derive(Debug, Default, Clone)]
struct Latency {
    startup: f64,
    compile: f64,
    p50: f64,
    p99: f64,
    max: f64,
    samples: f64,
    observed: f64,
    burst_write: f64,
    burst_events: f64,
    burst_compiles: f64,
    rss: f64,
    /// Seconds the objects took to load into the API server.
    load: Option<f64>,
    /// Probe writes in the burst.
    burst: usize,
}

/// The whole `/metrics` text.
fn metrics_text(admin: SocketAddr) -> Result<String, String> {
    Ok(admin_get(admin, "/metrics")
        .ok_or("lb: /metrics unreachable")?
        .1)
}

/// A series (labels included) of `text`, or an error naming it.
fn series(text: &str, name: &str) -> Result<f64, String> {
    metric(text, name).ok_or(format!("lb: {name} missing from /metrics"))
}

/// Starts lb on `dir`'s config, waits for `/readyz` 200; returns the
/// process and the time that took.
fn start_lb(dir: &Path, cfg: &Path, admin: SocketAddr) -> Result<(Proc, Duration), String> {
    let log = dir.join("lb.log");
    let args = vec!["serve".into(), "--config".into(), cfg.display().to_string()];
    let start = Instant::now();
    let mut lb = Proc::start_logged("lb", "0", &sibling("lb")?, &args, &log)
        .map_err(|e| format!("lb: {e}"))?;
    while admin_get(admin, "/readyz").map(|r| r.0) != Some(200) {
        if start.elapsed() > LIMIT || lb.child.try_wait().ok().flatten().is_some() {
            return Err(format!(
                "lb did not become ready; log:\n{}",
                log_tail(&log, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok((lb, start.elapsed()))
}

/// Waits until `lb_snapshot_generation` exceeds `than`; returns it.
fn wait_generation(admin: SocketAddr, than: f64) -> Result<f64, String> {
    let start = Instant::now();
    loop {
        let g = series(&metrics_text(admin)?, "lb_snapshot_generation")?;
        if g > than {
            return Ok(g);
        }
        if start.elapsed() > LIMIT {
            return Err("lb did not publish after a file change".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Replaces `path` atomically (write aside, rename over), as config
/// management does.
fn replace(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    write(&tmp, text)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Starts lb on `w` (from `source`), changes the probe objects [`CHANGES`]
/// times, then writes them [`BURST`] times, and stops lb.
fn measure_latency(w: Workload, source: Source) -> Result<Latency, String> {
    let dir = scratch(&format!("latency-{}", w.objects()));
    let result = (|| {
        let api = match source {
            Source::Files => None,
            Source::Kubernetes => Some(RealApi::start(&w.files())?),
        };
        let (cfg, admin) = match &api {
            None => write_config(&dir, &w.files())?,
            Some((api, _)) => write_config_with(
                &dir,
                &[],
                &format!(
                    "kubernetes = {{ kubeconfig = \"{}\", secret_namespaces = [] }}\n",
                    api.cluster.lb_kubeconfig().display()
                ),
            )?,
        };
        let load = api.as_ref().map(|(_, took)| *took);
        let api = api.map(|(api, _)| api);
        let (lb, startup) = start_lb(&dir, &cfg, admin)?;
        let probe_path = dir.join("manifests").join(PROBE);
        // One change of the probe: the file replaced, or the objects written.
        let change = |v: usize, atomic: bool| match &api {
            Some(api) => api.apply_yaml(&probe(v)),
            None if atomic => replace(&probe_path, &probe(v)),
            None => write(&probe_path, &probe(v)),
        };
        let mut generation = series(&metrics_text(admin)?, "lb_snapshot_generation")?;

        let mut observed = Vec::new();
        for v in 1..=CHANGES {
            // Let the previous change's burst close first.
            std::thread::sleep(Duration::from_millis(50));
            let written = Instant::now();
            change(v, true)?;
            generation = wait_generation(admin, generation)?;
            observed.push(written.elapsed().as_secs_f64() * 1e3);
        }

        let m = metrics_text(admin)?;
        let q = |q: &str| {
            series(
                &m,
                &format!("lb_event_to_traffic_seconds{{quantile=\"{q}\"}}"),
            )
        };
        let mut l = Latency {
            startup: startup.as_secs_f64() * 1e3,
            compile: series(&m, "lb_config_compile_seconds")? * 1e3,
            p50: q("0.5")? * 1e3,
            p99: q("0.99")? * 1e3,
            max: series(&m, "lb_event_to_traffic_seconds_max")? * 1e3,
            samples: series(&m, "lb_event_to_traffic_seconds_count")?,
            observed: median(observed),
            ..Latency::default()
        };

        let (events, compiles) = (
            series(&m, "lb_config_events_total")?,
            series(&m, "lb_config_compiles_total")?,
        );
        let burst = Instant::now();
        let writes = if api.is_some() { BURST_API } else { BURST };
        for v in 0..writes {
            change(CHANGES + 1 + v, false)?;
        }
        l.burst_write = burst.elapsed().as_secs_f64() * 1e3;
        wait_generation(admin, generation)?;
        // Settled: no compile for 1 s and three compile times.
        let settle = Duration::from_secs(1).max(Duration::from_secs_f64(3.0 * l.compile / 1e3));
        let mut last = (compiles, Instant::now());
        let m = loop {
            let m = metrics_text(admin)?;
            let now = series(&m, "lb_config_compiles_total")?;
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= settle {
                break m;
            }
            if burst.elapsed() > LIMIT {
                return Err("lb kept compiling after the burst".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        l.burst_events = series(&m, "lb_config_events_total")? - events;
        l.burst_compiles = series(&m, "lb_config_compiles_total")? - compiles;
        l.rss = vm_rss_mib(lb.pid());
        l.load = load.map(|d| d.as_secs_f64());
        l.burst = writes;
        drop(lb);
        Ok(l)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The event-to-traffic table for `counts` (each gives a Services row and
/// an Ingress hosts row).
fn latency_table(counts: &[usize]) -> Result<String, String> {
    let mut out = format!(
        "\nEvent-to-traffic: lb (`workers = 1`, core 0) serves each workload plus one probe \
         Service + EndpointSlice, from manifest files (the probe in its own file) or from a \
         real API server (kube-apiserver, etcd and kube-controller-manager of \
         `bench/cluster.sh`, a cluster of its own per workload, loaded by creates, \
         64 requests in flight: *load s*) through lb's list+watch source, lb authenticated as \
         its ServiceAccount. The probe changes {CHANGES} times, 50 ms apart (file: replaced by \
         write aside and rename; API server: the objects applied), each time waiting for the \
         new generation. p50/p99/max are lb's own `lb_event_to_traffic_seconds` (first event \
         to snapshot swap, so they include the debounce quiet period, {} ms for files and 20 ms for the API server, and a reload); \
         *observed* is the median from the change to `/metrics` showing the new generation. \
         Then the probe is written {BURST} times in a row ({BURST_API} through the API server): \
         the events lb saw and the compiles they cost. VmRSS is read at the end.\n\n\
         | workload | source | objects | load s | start to /readyz ms | compile ms | event-to-traffic p50 ms | p99 ms | max ms | observed ms | burst writes | burst: write ms | events | compiles | VmRSS MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        DEBOUNCE_MS
    );
    for &n in counts {
        let runs = [Workload::Services(n), Workload::IngressHosts(n)]
            .into_iter()
            .flat_map(|w| [(w, Source::Files), (w, Source::Kubernetes)]);
        for (w, source) in runs {
            let l = measure_latency(w, source)?;
            if l.samples < CHANGES as f64 {
                return Err(format!(
                    "lb recorded {} event-to-traffic samples for {CHANGES} changes",
                    l.samples
                ));
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.0} | {:.0} | {:.1} |",
                w.name(),
                source.name(),
                w.objects() + 2,
                l.load.map_or("-".to_owned(), |s| format!("{s:.1}")),
                l.startup,
                l.compile,
                l.p50,
                l.p99,
                l.max,
                l.observed,
                l.burst,
                l.burst_write,
                l.burst_events,
                l.burst_compiles,
                l.rss,
            );
        }
    }
    Ok(out)
}

/// lb's debounce quiet period (`lb_control::source::files::DEBOUNCE`), for
/// the report's text.
const DEBOUNCE_MS: u64 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_object_counts() {
        assert_eq!(parse_objects("1000, 10000").unwrap(), [1000, 10000]);
        assert!(parse_objects("").is_err());
        assert!(parse_objects("0").is_err());
        assert!(parse_objects("1k").is_err());
    }

    #[test]
    fn generates_exactly_n_objects_of_mixed_kinds() {
        let docs = object_docs(7);
        assert_eq!(docs.len(), 7);
        let kinds: Vec<_> = docs
            .iter()
            .map(|d| d.lines().nth(1).unwrap_or_default())
            .collect();
        assert_eq!(
            kinds[..3],
            ["kind: Service", "kind: EndpointSlice", "kind: Ingress"]
        );
        let files = manifest_files(7);
        assert_eq!(files.len(), 3);
        let total: usize = files.iter().map(|(_, t)| t.matches("---\n").count()).sum();
        assert_eq!(total, 7);
        let ingress = &docs[2];
        assert_eq!(ingress.matches("- host:").count(), RULES);
        assert_eq!(ingress.matches("pathType:").count(), PATHS);
    }

    #[test]
    fn latency_workloads_have_the_named_sizes() {
        let count = |files: &[(&str, String)], kind: &str| -> usize {
            files
                .iter()
                .map(|(_, t)| t.matches(&format!("kind: {kind}\n")).count())
                .sum()
        };
        let files = Workload::Services(5).files();
        assert_eq!(count(&files, "Service"), 5 + 1, "plus the probe");
        assert_eq!(count(&files, "EndpointSlice"), 5 + 1);
        assert_eq!(count(&files, "Ingress"), 0);
        let files = Workload::IngressHosts(10).files();
        assert_eq!(count(&files, "Ingress"), 4);
        let hosts: usize = files
            .iter()
            .map(|(_, t)| t.matches("- host:").count())
            .sum();
        assert_eq!(hosts, 12);
        assert_eq!(Workload::IngressHosts(10).objects(), 12);
        assert_ne!(probe(1), probe(2));
    }
}
