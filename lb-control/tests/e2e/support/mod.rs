//! Test support: start the real `lb` binary on loopback with generated
//! configuration and manifests, talk to it over real sockets, stop it.
#![allow(dead_code, missing_docs)]

pub mod certs;
pub mod client;
pub mod h2c;
pub mod h2raw;
pub mod k8s;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use client::{Client, Response};

/// The `lb` binary under test.
pub fn lb_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lb")
}

/// A free TCP port on 127.0.0.1 (bound and released), never one this
/// process handed out before: the kernel may give a released port to the
/// next `bind(0)`, and two lb processes would then both bind it (lb's
/// listeners set SO_REUSEPORT) and share its connections between tests.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let port = l.local_addr().expect("local addr").port();
        if GIVEN.lock().map(|mut g| g.insert(port)).unwrap_or(true) {
            return port;
        }
    }
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lb-test-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("manifests")).expect("create scratch dir");
    dir
}

/// A running `lb serve` process with its own config and manifest directory.
pub struct Lb {
    pub dir: PathBuf,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Lb {
    /// Writes `lb.toml` (with `extra` TOML appended) and the given manifest
    /// files, starts `lb serve` and waits until `/readyz` answers 200.
    pub fn start(tag: &str, manifests: &[(&str, &str)], extra: &str) -> Lb {
        Self::start_with(tag, manifests, extra, "")
    }

    /// Like [`Lb::start`], with `ingress` TOML lines added to `[ingress]`.
    pub fn start_with(tag: &str, manifests: &[(&str, &str)], extra: &str, ingress: &str) -> Lb {
        // free_port() releases the port before lb binds it, so a concurrent
        // test can take it first: try again with fresh ports in that case.
        for _ in 0..5 {
            let mut lb = Self::spawn_unready_with(tag, manifests, extra, ingress);
            if lb.wait_ready_or_port_taken(Duration::from_secs(20)) {
                return lb;
            }
        }
        panic!("lb could not bind free ports after 5 tries");
    }

    /// Like [`Lb::wait_ready`], but returns false when lb exited because a
    /// port it was given had been taken meanwhile.
    fn wait_ready_or_port_taken(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                if self.log_text().contains("Address already in use") {
                    self.child = None;
                    return false;
                }
                panic!("lb exited early with {status}; log:\n{}", self.log_text());
            }
            if admin_get(self.admin, "/readyz").map(|r| r.status) == Some(200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("lb not ready after {limit:?}; log:\n{}", self.log_text());
    }

    /// Like [`Lb::start`] but returns right after spawning the process.
    /// The I/O mode is `LB_TEST_IO` (`uring`, `epoll`), else `auto`.
    pub fn spawn_unready(tag: &str, manifests: &[(&str, &str)], extra: &str) -> Lb {
        Self::spawn_unready_with(tag, manifests, extra, "")
    }

    /// An lb whose objects come from the stand-in API server `api` (and
    /// `extra` TOML after `[sources]`), started but not waited for.
    pub fn on_api_unready(tag: &str, api: &kube_api::KubeApi, extra: &str) -> Lb {
        let kubeconfig = api.kubeconfig(&scratch_dir(&format!("{tag}-kc")));
        Lb::spawn_unready(
            tag,
            &[],
            &format!(
                "kubernetes = {{ kubeconfig = \"{}\", context = \"test\" }}\n{extra}",
                kubeconfig.display()
            ),
        )
    }

    /// [`Lb::on_api_unready`], waited for until ready.
    pub fn on_api(tag: &str, api: &kube_api::KubeApi, extra: &str) -> Lb {
        let mut lb = Self::on_api_unready(tag, api, extra);
        lb.wait_ready(Duration::from_secs(20));
        lb
    }

    /// Like [`Lb::spawn_unready`], with `ingress` TOML lines added to `[ingress]`.
    /// Every lb also listens for HTTPS on [`Lb::https`].
    pub fn spawn_unready_with(
        tag: &str,
        manifests: &[(&str, &str)],
        extra: &str,
        ingress: &str,
    ) -> Lb {
        let mut lb = Self::prepare(tag, manifests, extra, ingress);
        lb.spawn(&[]);
        lb
    }

    /// Like [`Lb::start`], with `runtime` TOML lines added to `[runtime]`
    /// (a `workers` line there replaces the default of 2 workers).
    pub fn start_runtime(tag: &str, manifests: &[(&str, &str)], runtime: &str, extra: &str) -> Lb {
        for _ in 0..5 {
            let mut lb = Self::prepare_full(tag, manifests, extra, "", runtime);
            lb.spawn(&[]);
            if lb.wait_ready_or_port_taken(Duration::from_secs(20)) {
                return lb;
            }
        }
        panic!("lb could not bind free ports after 5 tries");
    }

    /// The lb process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("lb running").id()
    }

    /// Writes the manifests and `lb.toml` (free ports for HTTP, HTTPS and the
    /// admin API) into a fresh scratch directory, without starting lb.
    fn prepare(tag: &str, manifests: &[(&str, &str)], extra: &str, ingress: &str) -> Lb {
        Self::prepare_full(tag, manifests, extra, ingress, "")
    }

    fn prepare_full(
        tag: &str,
        manifests: &[(&str, &str)],
        extra: &str,
        ingress: &str,
        runtime: &str,
    ) -> Lb {
        let dir = scratch_dir(tag);
        for (name, body) in manifests {
            std::fs::write(dir.join("manifests").join(name), body).expect("write manifest");
        }
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = format!(
            "[runtime]\n{workers}shutdown_grace = \"10s\"\nio = \"{io}\"\npin = false\n{runtime}\n[admin]\nlisten = \"{admin}\"\n[ingress]\nclass = \"lb\"\nhttp = [\"{http}\"]\nhttps = [\"{https}\"]\n{ingress}\n[sources]\nfiles = [\"{}\"]\n{extra}",
            dir.join("manifests").display(),
            io = test_io(),
            workers = if runtime.contains("workers") {
                ""
            } else {
                "workers = 2\n"
            },
        );
        std::fs::write(dir.join("lb.toml"), config).expect("write lb.toml");
        Lb {
            log: dir.join("lb.log"),
            dir,
            http,
            https,
            admin,
            child: None,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("lb.toml")
    }

    pub fn manifest_path(&self, name: &str) -> PathBuf {
        self.dir.join("manifests").join(name)
    }

    /// Like [`Lb::start`], with `edit` applied to the generated `lb.toml`
    /// and lb run through `prefix` (a program and its arguments that then
    /// execute lb, e.g. `setpriv --reuid=...`).
    pub fn start_via(
        tag: &str,
        manifests: &[(&str, &str)],
        edit: impl Fn(&str) -> String,
        prefix: &[&str],
    ) -> Lb {
        let mut lb = Self::prepare(tag, manifests, "", "");
        let config = std::fs::read_to_string(lb.config_path()).expect("read lb.toml");
        std::fs::write(lb.config_path(), edit(&config)).expect("write lb.toml");
        lb.spawn_via(prefix, &[]);
        lb.wait_ready(Duration::from_secs(20));
        lb
    }

    fn spawn(&mut self, env: &[(&str, &str)]) {
        self.spawn_via(&[], env);
    }

    fn spawn_via(&mut self, prefix: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::File::create(&self.log).expect("create log");
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(lb_bin());
                c
            }
            None => Command::new(lb_bin()),
        };
        let child = command
            .args(["serve", "--config"])
            .arg(self.config_path())
            .env("LB_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn lb");
        self.child = Some(child);
    }

    /// Polls `/readyz` until it answers 200.
    pub fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("lb exited early with {status}; log:\n{}", self.log_text());
            }
            if admin_get(self.admin, "/readyz").map(|r| r.status) == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("lb not ready after {limit:?}; log:\n{}", self.log_text());
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The published snapshot generation, from `/metrics`.
    pub fn generation(&self) -> u64 {
        let m = admin_get(self.admin, "/metrics").expect("metrics");
        m.text()
            .lines()
            .find_map(|l| l.strip_prefix("lb_snapshot_generation "))
            .and_then(|v| v.trim().parse().ok())
            .expect("generation in /metrics")
    }

    /// The value of an unlabelled series in `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let m = admin_get(self.admin, "/metrics").expect("metrics").text();
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{m}"))
    }

    /// Waits until the unlabelled series `name` reads `want`; panics with
    /// lb's log after `limit`.
    pub fn wait_metric(&self, name: &str, want: u64, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.metric(name) == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{name} did not become {want} within {limit:?}; log:\n{}",
            self.log_text()
        );
    }

    /// Waits until the generation is greater than `than`.
    pub fn wait_generation_above(&self, than: u64, limit: Duration) -> u64 {
        let start = Instant::now();
        while start.elapsed() < limit {
            let g = self.generation();
            if g > than {
                return g;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("generation stayed at {than}; log:\n{}", self.log_text());
    }

    /// A new keep-alive client connection to the HTTP listener.
    pub fn client(&self) -> Client {
        Client::connect(self.http)
    }

    /// `GET path` with `Host: host` on a fresh connection.
    pub fn get(&self, host: &str, path: &str) -> Response {
        self.client().get(host, path)
    }

    /// Sends a signal to the process with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(start.elapsed() < limit, "lb did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One GET to the admin API on a fresh connection; `None` if it cannot connect.
pub fn admin_get(admin: SocketAddr, path: &str) -> Option<Response> {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    use std::io::Write;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    client::parse_full_response(&raw)
}

/// Runs `lb check --config path` and returns (exit code, stdout + stderr).
pub fn lb_check(config: &Path) -> (i32, String) {
    let out = Command::new(lb_bin())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run lb check");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Manifest text for a Service with one port and an EndpointSlice pointing at `endpoints`.
pub fn service_yaml(
    ns: &str,
    name: &str,
    port: u16,
    port_name: Option<&str>,
    endpoints: &[SocketAddr],
) -> String {
    let pname = port_name
        .map(|n| format!("    name: {n}\n"))
        .unwrap_or_default();
    let sname = port_name
        .map(|n| format!("  - name: {n}\n    port: PORT\n"))
        .unwrap_or_else(|| "  - port: PORT\n".into());
    let mut by_port: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for e in endpoints {
        by_port
            .entry(e.port())
            .or_default()
            .push(e.ip().to_string());
    }
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: {ns}\n  name: {name}\nspec:\n  ports:\n  - port: {port}\n    protocol: TCP\n{pname}"
    );
    for (i, (p, ips)) in by_port.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: {ns}\n  name: {name}-{i}\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n{}endpoints:\n",
            sname.replace("PORT", &p.to_string())
        ));
        for ip in ips {
            out.push_str(&format!(
                "  - addresses: [\"{ip}\"]\n    conditions:\n      ready: true\n"
            ));
        }
    }
    out.push('\n');
    out
}

/// The `[runtime] io` value under test: `LB_TEST_IO` (`uring` or `epoll`), else `auto`.
pub fn test_io() -> &'static str {
    match std::env::var("LB_TEST_IO").as_deref() {
        Ok("epoll") => "epoll",
        Ok("uring") => "uring",
        _ => "auto",
    }
}

impl Lb {
    /// Like [`Lb::spawn_unready`], with `env` added to the lb process's
    /// environment (e.g. systemd's `NOTIFY_SOCKET`). Same configuration.
    pub fn spawn_unready_env(
        tag: &str,
        manifests: &[(&str, &str)],
        extra: &str,
        env: &[(&str, &str)],
    ) -> Lb {
        let mut lb = Self::prepare(tag, manifests, extra, "");
        lb.spawn(env);
        lb
    }
}
/// The real control plane of `bench/cluster.sh` (shared by the test run or private).
pub use bench::cluster::{self, Cluster};
/// The stand-in Kubernetes API server (it lives in the bench crate, which
/// also drives lb through it).
pub use bench::kube_api;

impl Lb {
    /// An lb reading the namespaces `namespaces` of the real API server
    /// `cluster` as its ServiceAccount (`lb.kubeconfig`), with a leader Lease
    /// of its own (`lb-system/lb-leader-TAG`), started but not waited for.
    /// `kube` is added inside `kubernetes = { ... }`, `extra` after `[sources]`.
    pub fn on_cluster_unready(
        tag: &str,
        cluster: &Cluster,
        namespaces: &[&str],
        kube: &str,
        extra: &str,
    ) -> Lb {
        Self::on_cluster_with(tag, &cluster.lb_kubeconfig(), namespaces, kube, extra)
    }

    /// Like [`Lb::on_cluster_unready`] with another kubeconfig (e.g. one whose
    /// server is a forwarder in front of the API server).
    pub fn on_cluster_with(
        tag: &str,
        kubeconfig: &Path,
        namespaces: &[&str],
        kube: &str,
        extra: &str,
    ) -> Lb {
        let list = namespaces
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let lease = tag
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
        let mut lb = Self::prepare(
            tag,
            &[],
            &format!(
                "kubernetes = {{ kubeconfig = \"{}\", namespaces = [{list}], lease = \"lb-system/lb-leader-{lease}\"{kube} }}\n{extra}",
                kubeconfig.display()
            ),
            "",
        );
        // The API server's objects only.
        let config = std::fs::read_to_string(lb.config_path()).unwrap();
        let config = config.replacen(
            &format!("files = [\"{}\"]", lb.dir.join("manifests").display()),
            "files = []",
            1,
        );
        std::fs::write(lb.config_path(), config).unwrap();
        lb.spawn(&[]);
        lb
    }

    /// [`Lb::on_cluster_unready`], waited for until ready.
    pub fn on_cluster(
        tag: &str,
        cluster: &Cluster,
        namespaces: &[&str],
        kube: &str,
        extra: &str,
    ) -> Lb {
        let mut lb = Self::on_cluster_unready(tag, cluster, namespaces, kube, extra);
        lb.wait_ready(Duration::from_secs(30));
        lb
    }
}

/// The run's cluster (see [`Cluster::shared`]); panics with the reason when
/// none can be had, so a test never passes without one.
pub fn shared_cluster() -> Cluster {
    Cluster::shared().unwrap_or_else(|e| panic!("no Kubernetes control plane for this test: {e}"))
}
pub mod forwarder;
pub mod netns;

/// Replaces a file atomically (write aside, rename over), as config
/// management does.
pub fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An Ingress `web` of class `lb` sending every path of `host` to port 80 of
/// `service`.
pub fn ingress_to(host: &str, service: &str) -> String {
    ingress_named("web", host, service)
}

/// An Ingress `name` (namespace `default`) of class `lb` sending every path
/// of `host` to port 80 of `service`.
pub fn ingress_named(name: &str, host: &str, service: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default}}
spec:
  ingressClassName: lb
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}
"
    )
}
