//! Starting the proxies under test (lb, HAProxy, nginx) with equivalent
//! configurations, each pinned to core 0, and the helpers the scenarios share
//! to find binaries and split cores.

use std::path::{Path, PathBuf};

use crate::harness::Proc;

/// Fixed loopback ports used by the scenarios.
pub mod ports {
    /// The backend (echo server or nginx `return 200`).
    pub const BACKEND: u16 = 19500;
    /// lb's HTTP listener.
    pub const LB: u16 = 19501;
    /// lb's admin listener.
    pub const LB_ADMIN: u16 = 19502;
    /// HAProxy's frontend.
    pub const HAPROXY: u16 = 19503;
    /// nginx's server.
    pub const NGINX: u16 = 19504;
    /// Every port above, for [`crate::harness::ports_free`].
    pub const ALL: [u16; 5] = [BACKEND, LB, LB_ADMIN, HAPROXY, NGINX];
}

/// The path of a binary built next to the running one (`lb`, `lb-echo`).
pub fn sibling(name: &str) -> Result<PathBuf, String> {
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

/// The `taskset -c` list of every core but core 0 (core 0 when there is only one).
pub fn other_cores() -> String {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    if n <= 1 {
        "0".into()
    } else {
        format!("1-{}", n - 1)
    }
}

/// Writes `text` to `path` with the path in the error.
pub fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The manifests lb serves in the benchmarks: one Service `web` with one
/// endpoint on `backend`, the default backend of one Ingress.
pub fn web_manifests(backend: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{ports: [{{port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{port: {backend}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web}}\nspec:\n  ingressClassName: lb\n  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}\n"
    )
}

/// Writes lb's config into `dir` (manifests in `dir/manifests/web.yaml`) and
/// returns the config path.
pub fn lb_config(dir: &Path, manifests: &str) -> Result<PathBuf, String> {
    let m = dir.join("manifests");
    std::fs::create_dir_all(&m).map_err(|e| e.to_string())?;
    write(&m.join("web.yaml"), manifests)?;
    let cfg = dir.join("lb.toml");
    write(
        &cfg,
        &format!(
            "[runtime]\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:{}\"\n[ingress]\nhttp = [\"127.0.0.1:{}\"]\nhttps = []\n[sources]\nfiles = [\"{}\"]\n",
            ports::LB_ADMIN,
            ports::LB,
            m.display()
        ),
    )?;
    Ok(cfg)
}

/// Starts lb with one worker on core 0 serving `web_manifests(BACKEND)`.
pub fn start_lb(dir: &Path) -> Result<Proc, String> {
    let cfg = lb_config(dir, &web_manifests(ports::BACKEND))?;
    let args = vec!["serve".into(), "--config".into(), cfg.display().to_string()];
    Proc::start("lb", "0", &sibling("lb")?, &args).map_err(|e| e.to_string())
}

/// What the scenarios change in the HAProxy and nginx configurations.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Client connections the proxy must hold at once (HAProxy `maxconn`;
    /// nginx `worker_connections` gets this plus room for upstream connections).
    pub max_conns: u32,
    /// A response header `x-bench-variant` with this value, so that two
    /// configurations differ for reloads; none when `None`.
    pub variant: Option<&'static str>,
    /// Run nginx with a master process (so `SIGHUP` reloads it), logging at
    /// `notice` so that each reload is in its error log.
    pub nginx_master: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            max_conns: 4000,
            variant: None,
            nginx_master: false,
        }
    }
}

/// HAProxy's configuration: one thread, HTTP mode, upstream keep-alive.
pub fn haproxy_config(dir: &Path) -> Result<PathBuf, String> {
    haproxy_config_tuned(dir, &Tuning::default())
}

/// HAProxy's configuration with `t` applied, written to `dir/haproxy.cfg`.
pub fn haproxy_config_tuned(dir: &Path, t: &Tuning) -> Result<PathBuf, String> {
    let cfg = dir.join("haproxy.cfg");
    let variant = t
        .variant
        .map(|v| format!("  http-response set-header x-bench-variant {v}\n"))
        .unwrap_or_default();
    // HAProxy reserves 2 x maxconn descriptors and, with strict-limits (on by
    // default since 2.3), refuses to start when it cannot raise its limit that
    // far; idle clients need one descriptor each, so above the default let it
    // start within the hard limit instead.
    let ulimit = if t.max_conns > 4000 {
        "  no strict-limits\n"
    } else {
        ""
    };
    write(
        &cfg,
        &format!(
            "global\n  nbthread 1\n  maxconn {m}\n{ulimit}defaults\n  mode http\n  maxconn {m}\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\nfrontend f\n  bind 127.0.0.1:{}\n{variant}  default_backend b\nbackend b\n  http-reuse always\n  server s1 127.0.0.1:{}\n",
            ports::HAPROXY,
            ports::BACKEND,
            m = t.max_conns,
        ),
    )?;
    Ok(cfg)
}

/// Starts HAProxy (nbthread 1) on core 0.
pub fn start_haproxy(dir: &Path) -> Result<Proc, String> {
    let cfg = haproxy_config(dir)?;
    let args = vec!["-db".into(), "-f".into(), cfg.display().to_string()];
    Proc::start("haproxy", "0", Path::new("/usr/sbin/haproxy"), &args).map_err(|e| e.to_string())
}

/// nginx's configuration: one worker, no master, upstream keep-alive.
pub fn nginx_config(dir: &Path) -> Result<PathBuf, String> {
    nginx_config_tuned(dir, &Tuning::default())
}

/// nginx's configuration with `t` applied, written to `dir/nginx.conf`.
pub fn nginx_config_tuned(dir: &Path, t: &Tuning) -> Result<PathBuf, String> {
    let cfg = dir.join("nginx.conf");
    // The default keeps the table small (nginx preallocates one slot per
    // connection); larger limits leave room for upstream connections.
    let (worker_conns, nofile) = if t.max_conns > 4000 {
        let hard = crate::sys::nofile_limits().map_or(u64::from(t.max_conns) * 2, |l| l.1);
        (
            t.max_conns + 2000,
            format!("worker_rlimit_nofile {hard};\n"),
        )
    } else {
        (4096, String::new())
    };
    let variant = t
        .variant
        .map(|v| format!(" add_header x-bench-variant {v};"))
        .unwrap_or_default();
    write(
        &cfg,
        &format!(
            "worker_processes 1;\ndaemon off;\nmaster_process {master};\n{nofile}pid {d}/nginx.pid;\nerror_log {d}/nginx.err{level};\nevents {{ worker_connections {worker_conns}; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  upstream b {{ server 127.0.0.1:{b}; keepalive 64; }}\n  server {{\n    listen 127.0.0.1:{n};\n    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\";{variant} }}\n  }}\n}}\n",
            d = dir.display(),
            b = ports::BACKEND,
            n = ports::NGINX,
            master = if t.nginx_master { "on" } else { "off" },
            // With a master, log its reloads ("reconfiguring") too.
            level = if t.nginx_master { " notice" } else { "" },
        ),
    )?;
    Ok(cfg)
}

/// The arguments that start nginx with its prefix, error log and config in `dir`.
pub fn nginx_args(dir: &Path, cfg: &Path) -> Vec<String> {
    vec![
        "-p".into(),
        dir.display().to_string(),
        "-e".into(),
        dir.join("nginx.err").display().to_string(),
        "-c".into(),
        cfg.display().to_string(),
    ]
}

/// Starts nginx (one worker, no master) on core 0.
pub fn start_nginx(dir: &Path) -> Result<Proc, String> {
    let cfg = nginx_config(dir)?;
    Proc::start(
        "nginx",
        "0",
        Path::new("/usr/sbin/nginx"),
        &nginx_args(dir, &cfg),
    )
    .map_err(|e| e.to_string())
}

/// Starts the echo backend on the other cores.
pub fn start_echo() -> Result<Proc, String> {
    let args = vec![
        "--listen".into(),
        format!("127.0.0.1:{}", ports::BACKEND),
        "--name".into(),
        "web".into(),
        "--workers".into(),
        "1".into(),
    ];
    Proc::start("lb-echo", &other_cores(), &sibling("lb-echo")?, &args).map_err(|e| e.to_string())
}
