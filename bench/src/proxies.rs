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
        "{}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web}}\nspec:\n  ingressClassName: lb\n  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}\n",
        web_service(backend)
    )
}

/// The Service `web` and its EndpointSlice with one endpoint on `backend`.
fn web_service(backend: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{ports: [{{port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{port: {backend}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n"
    )
}

/// The name of the `kubernetes.io/tls` Secret lb serves in the `tls` scenario.
pub const TLS_SECRET: &str = "bench-tls";

/// The server name the benchmark certificate is issued for.
pub const TLS_HOST: &str = "bench.test";

/// A self-signed certificate and its key, generated for one run.
#[derive(Debug, Clone)]
pub struct Cert {
    /// The certificate, PEM.
    pub crt: PathBuf,
    /// The private key, PEM.
    pub key: PathBuf,
    /// Certificate then key in one PEM file (HAProxy's `crt`).
    pub both: PathBuf,
}

impl Cert {
    /// Generates an ECDSA P-256 self-signed certificate for [`TLS_HOST`]
    /// with the `openssl` CLI into `dir`.
    pub fn generate(dir: &Path) -> Result<Cert, String> {
        let cert = Cert {
            crt: dir.join("bench.crt"),
            key: dir.join("bench.key"),
            both: dir.join("bench.pem"),
        };
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .arg("-subj")
            .arg(format!("/CN={TLS_HOST}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{TLS_HOST}"))
            .arg("-keyout")
            .arg(&cert.key)
            .arg("-out")
            .arg(&cert.crt)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl req failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let (crt, key) = cert.pem()?;
        write(&cert.both, &format!("{crt}{key}"))?;
        Ok(cert)
    }

    /// The certificate and key PEM text.
    pub fn pem(&self) -> Result<(String, String), String> {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        Ok((read(&self.crt)?, read(&self.key)?))
    }
}

/// lb's manifests for the `tls` scenario: [`web_manifests`]' Service, the
/// certificate as the `kubernetes.io/tls` Secret [`TLS_SECRET`], and an
/// Ingress with `spec.tls` for [`TLS_HOST`] that opts out of the HTTPS redirect.
pub fn tls_manifests(backend: u16, crt_pem: &str, key_pem: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {TLS_SECRET}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  namespace: default\n  annotations:\n    lb.example.com/ssl-redirect: \"false\"\nspec:\n  ingressClassName: lb\n  tls:\n  - hosts: [\"{TLS_HOST}\"]\n    secretName: {TLS_SECRET}\n  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}\n",
        web_service(backend),
        indent(crt_pem),
        indent(key_pem)
    )
}

/// Writes lb's config into `dir` (manifests in `dir/manifests/web.yaml`) and
/// returns the config path.
pub fn lb_config(dir: &Path, manifests: &str) -> Result<PathBuf, String> {
    lb_config_ingress(
        dir,
        manifests,
        &format!("http = [\"127.0.0.1:{}\"]\nhttps = []\n", ports::LB),
    )
}

/// Like [`lb_config`] with `ingress` as the body of the `[ingress]` table
/// (listeners, default certificate).
pub fn lb_config_ingress(dir: &Path, manifests: &str, ingress: &str) -> Result<PathBuf, String> {
    let m = dir.join("manifests");
    std::fs::create_dir_all(&m).map_err(|e| e.to_string())?;
    write(&m.join("web.yaml"), manifests)?;
    let cfg = dir.join("lb.toml");
    write(
        &cfg,
        &format!(
            // Like HAProxy's maxconn in these benches: the caps sit above
            // any connection count a scenario opens from its one address.
            "[runtime]\nworkers = 1\nmax_connections = 1000000\nmax_connections_per_client = 0\n[admin]\nlisten = \"127.0.0.1:{}\"\n[ingress]\n{ingress}[sources]\nfiles = [\"{}\"]\n",
            ports::LB_ADMIN,
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

/// Starts lb with one worker on core 0 on the config at `cfg`, its output
/// appended to `dir/lb.log`.
pub fn start_lb_logged(dir: &Path, cfg: &Path) -> Result<Proc, String> {
    let args = vec!["serve".into(), "--config".into(), cfg.display().to_string()];
    Proc::start_logged("lb", "0", &sibling("lb")?, &args, &dir.join("lb.log"))
        .map_err(|e| e.to_string())
}

/// Starts lb with one worker on core 0 terminating TLS on [`ports::LB`]
/// (no plain listener) with `cert` as the Secret [`TLS_SECRET`], which is
/// also the default certificate; output in `dir/lb.log`.
pub fn start_lb_tls(dir: &Path, cert: &Cert) -> Result<Proc, String> {
    let (crt, key) = cert.pem()?;
    let cfg = lb_config_ingress(
        dir,
        &tls_manifests(ports::BACKEND, &crt, &key),
        &format!(
            "http = []\nhttps = [\"127.0.0.1:{}\"]\ndefault_certificate = \"default/{TLS_SECRET}\"\n",
            ports::LB
        ),
    )?;
    start_lb_logged(dir, &cfg)
}

/// What the frontends of HAProxy and nginx listen for.
#[derive(Debug, Clone, Default)]
pub enum Listen {
    /// Plain HTTP/1.1.
    #[default]
    Http,
    /// TLS 1.3 only with `cert`, ALPN `http/1.1`.
    Tls(Cert),
    /// Cleartext HTTP/2 with prior knowledge (h2c).
    H2c,
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
    /// The frontend's protocol. With anything but [`Listen::Http`], nginx
    /// serves any number of requests per client connection (its default
    /// `keepalive_requests` 1000 would end h2load's connections, which are
    /// not reopened).
    pub listen: Listen,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            max_conns: 4000,
            variant: None,
            nginx_master: false,
            listen: Listen::Http,
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
    let bind_opts = match &t.listen {
        Listen::Http => String::new(),
        Listen::Tls(c) => format!(
            " ssl crt {} alpn http/1.1 ssl-min-ver TLSv1.3",
            c.both.display()
        ),
        Listen::H2c => " proto h2".into(),
    };
    let ulimit = if t.max_conns > 4000 {
        "  no strict-limits\n"
    } else {
        ""
    };
    write(
        &cfg,
        &format!(
            "global\n  nbthread 1\n  maxconn {m}\n{ulimit}defaults\n  mode http\n  maxconn {m}\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\nfrontend f\n  bind 127.0.0.1:{}{bind_opts}\n{variant}  default_backend b\nbackend b\n  http-reuse always\n  server s1 127.0.0.1:{}\n",
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

/// Starts HAProxy (nbthread 1) on core 0 with its frontend on `listen`,
/// output in `dir/haproxy.log`.
pub fn start_haproxy_listen(dir: &Path, listen: Listen) -> Result<Proc, String> {
    let t = Tuning {
        listen,
        ..Tuning::default()
    };
    let cfg = haproxy_config_tuned(dir, &t)?;
    let args = vec!["-db".into(), "-f".into(), cfg.display().to_string()];
    let log = dir.join("haproxy.log");
    Proc::start_logged("haproxy", "0", Path::new("/usr/sbin/haproxy"), &args, &log)
        .map_err(|e| e.to_string())
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
    let listen = match &t.listen {
        Listen::Http => format!("listen 127.0.0.1:{};", ports::NGINX),
        Listen::Tls(c) => format!(
            "listen 127.0.0.1:{} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.3;\n    keepalive_requests 100000000;",
            ports::NGINX,
            c.crt.display(),
            c.key.display()
        ),
        // `http2 on` replaced `listen ... http2` in nginx 1.25.1.
        Listen::H2c if nginx_version().is_some_and(|v| v >= (1, 25, 1)) => format!(
            "listen 127.0.0.1:{};\n    http2 on;\n    keepalive_requests 100000000;",
            ports::NGINX
        ),
        Listen::H2c => format!(
            "listen 127.0.0.1:{} http2;\n    keepalive_requests 100000000;",
            ports::NGINX
        ),
    };
    write(
        &cfg,
        &format!(
            "worker_processes 1;\ndaemon off;\nmaster_process {master};\n{nofile}pid {d}/nginx.pid;\nerror_log {d}/nginx.err{level};\nevents {{ worker_connections {worker_conns}; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  upstream b {{ server 127.0.0.1:{b}; keepalive 64; }}\n  server {{\n    {listen}\n    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\";{variant} }}\n  }}\n}}\n",
            d = dir.display(),
            b = ports::BACKEND,
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

/// Starts nginx (one worker, no master) on core 0 with its server on
/// `listen`; its error log is `dir/nginx.err`.
pub fn start_nginx_listen(dir: &Path, listen: Listen) -> Result<Proc, String> {
    let t = Tuning {
        listen,
        ..Tuning::default()
    };
    let cfg = nginx_config_tuned(dir, &t)?;
    Proc::start(
        "nginx",
        "0",
        Path::new("/usr/sbin/nginx"),
        &nginx_args(dir, &cfg),
    )
    .map_err(|e| e.to_string())
}

/// The installed nginx's version (`nginx -v`), as (major, minor, patch).
pub fn nginx_version() -> Option<(u32, u32, u32)> {
    let out = std::process::Command::new("/usr/sbin/nginx")
        .arg("-v")
        .output()
        .ok()?;
    parse_nginx_version(&String::from_utf8_lossy(&out.stderr))
}

/// Parses `nginx version: nginx/1.22.1` (possibly followed by more text).
fn parse_nginx_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split("nginx/").nth(1)?;
    let mut n = v
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    Some((n.next()??, n.next()??, n.next()??))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_versions_parse() {
        assert_eq!(
            parse_nginx_version("nginx version: nginx/1.22.1\n"),
            Some((1, 22, 1))
        );
        assert_eq!(
            parse_nginx_version("nginx version: nginx/1.25.3 (Ubuntu)"),
            Some((1, 25, 3))
        );
        assert_eq!(parse_nginx_version("openresty"), None);
    }

    #[test]
    fn plain_configs_are_unchanged_and_listeners_follow_listen() {
        let d = std::env::temp_dir().join(format!("lb-bench-proxies-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch");
        let ha = std::fs::read_to_string(haproxy_config(&d).expect("cfg")).expect("read");
        assert!(
            ha.contains("frontend f\n  bind 127.0.0.1:19503\n  default_backend b\n"),
            "{ha}"
        );
        let ng = std::fs::read_to_string(nginx_config(&d).expect("cfg")).expect("read");
        assert!(
            ng.contains("server {\n    listen 127.0.0.1:19504;\n    location / {"),
            "{ng}"
        );
        let cert = Cert {
            crt: d.join("c.crt"),
            key: d.join("c.key"),
            both: d.join("c.pem"),
        };
        let tls = Tuning {
            listen: Listen::Tls(cert),
            ..Tuning::default()
        };
        let ha =
            std::fs::read_to_string(haproxy_config_tuned(&d, &tls).expect("cfg")).expect("read");
        assert!(ha.contains(&format!(
            "bind 127.0.0.1:19503 ssl crt {} alpn http/1.1 ssl-min-ver TLSv1.3\n",
            d.join("c.pem").display()
        )));
        let ng = std::fs::read_to_string(nginx_config_tuned(&d, &tls).expect("cfg")).expect("read");
        assert!(ng.contains("listen 127.0.0.1:19504 ssl;"), "{ng}");
        assert!(ng.contains("ssl_protocols TLSv1.3;"), "{ng}");
        let h2 = Tuning {
            listen: Listen::H2c,
            ..Tuning::default()
        };
        let ha =
            std::fs::read_to_string(haproxy_config_tuned(&d, &h2).expect("cfg")).expect("read");
        assert!(ha.contains("bind 127.0.0.1:19503 proto h2\n"), "{ha}");
        let ng = std::fs::read_to_string(nginx_config_tuned(&d, &h2).expect("cfg")).expect("read");
        assert!(ng.contains("http2"), "{ng}");
        assert!(ng.contains("keepalive_requests 100000000;"), "{ng}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn tls_manifests_hold_the_secret_and_the_tls_ingress() {
        let m = tls_manifests(19500, "-----BEGIN CERTIFICATE-----\nAA\n", "KEY\n");
        assert!(m.contains("type: kubernetes.io/tls"));
        assert!(m.contains("  tls.crt: |\n    -----BEGIN CERTIFICATE-----\n    AA\n"));
        assert!(m.contains("secretName: bench-tls"));
        assert!(m.contains("lb.example.com/ssl-redirect: \"false\""));
        assert!(web_manifests(19500).starts_with(&web_service(19500)));
    }
}
