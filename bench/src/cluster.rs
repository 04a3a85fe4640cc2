//! The local Kubernetes control plane of `bench/cluster.sh`, from Rust: start
//! or join one, run kubectl against it, make namespaces that clean up after
//! themselves, read its audit log.
//!
//! Tests and benchmarks share one cluster when `LB_TEST_CLUSTER` names the
//! directory of a running one (`bench/cluster.sh up DIR`, as the test command
//! does); otherwise each [`Cluster::shared`] starts a private cluster of its
//! own, stopped when the handle drops. Tests that change the cluster itself
//! (CRDs, stopping the API server) always take a [`Cluster::private`] one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The ServiceAccount user lb runs as with `lb.kubeconfig`.
pub const LB_USER: &str = "system:serviceaccount:lb-system:lb";

/// A running cluster of `bench/cluster.sh`.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    env: BTreeMap<String, String>,
    /// Whether dropping the handle stops the cluster.
    owned: bool,
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench is in the repository")
        .to_owned()
}

/// The repository's `bench/cluster.sh`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.sh")
}

fn run_script(args: &[&str]) -> Result<(), String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("bench/cluster.sh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "bench/cluster.sh {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Cluster {
    /// The run's shared cluster (`LB_TEST_CLUSTER`), or else a private one.
    pub fn shared() -> Result<Cluster, String> {
        match std::env::var_os("LB_TEST_CLUSTER").filter(|d| !d.is_empty()) {
            Some(dir) => Self::join(Path::new(&dir)),
            None => {
                eprintln!(
                    "LB_TEST_CLUSTER is not set: starting a private cluster for this test (the test command shares one)"
                );
                Self::private("shared")
            }
        }
    }

    /// A cluster of its own in a fresh directory under the temp dir, stopped
    /// (`bench/cluster.sh down`) when the handle drops.
    pub fn private(tag: &str) -> Result<Cluster, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lb-cluster-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let dir_s = dir.to_string_lossy().into_owned();
        if let Err(e) = run_script(&["up", &dir_s]) {
            let _ = run_script(&["down", &dir_s]);
            return Err(e);
        }
        let mut c = Self::join(&dir)?;
        c.owned = true;
        Ok(c)
    }

    /// A handle on the running cluster in `dir`, which stays up when it drops.
    pub fn join(dir: &Path) -> Result<Cluster, String> {
        let text = std::fs::read_to_string(dir.join("cluster.env")).map_err(|e| {
            format!(
                "{}: no cluster ({e}); start one with bench/cluster.sh up DIR",
                dir.display()
            )
        })?;
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Ok(Cluster {
            dir: dir.to_owned(),
            env,
            owned: false,
        })
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A value of `cluster.env` (`API_PORT`, `POD_CIDR`, `NODE_NAME`, ...).
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    /// The API server's port on 127.0.0.1.
    pub fn api_port(&self) -> u16 {
        self.env("API_PORT")
            .and_then(|p| p.parse().ok())
            .expect("cluster.env has API_PORT")
    }

    /// The cluster-admin kubeconfig.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// lb's kubeconfig: the lb-system/lb ServiceAccount's token.
    pub fn lb_kubeconfig(&self) -> PathBuf {
        self.dir.join("lb.kubeconfig")
    }

    /// The cluster's kubectl.
    pub fn kubectl_path(&self) -> PathBuf {
        self.dir.join("bin/kubectl")
    }

    /// Runs kubectl as cluster-admin with `stdin` as its input.
    pub fn kubectl_in(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(self.kubectl_path())
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin.as_bytes());
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("kubectl: {e}"))
    }

    /// Runs kubectl as cluster-admin; panics with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_in(args, "");
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of `yaml` (in `namespace` unless the objects name one).
    pub fn apply(&self, namespace: &str, yaml: &str) {
        let out = self.kubectl_in(&["apply", "-n", namespace, "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n--- of:\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl get -o json` of one object, `None` when it does not exist.
    pub fn get_json(
        &self,
        namespace: Option<&str>,
        resource: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        let mut args = vec!["get", resource, name, "-o", "json", "--ignore-not-found"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        let out = self.kubectl(&args);
        if out.trim().is_empty() {
            return None;
        }
        serde_json::from_str(&out).ok()
    }

    /// A fresh namespace `PREFIX-PID-SEQ`, deleted (without waiting) when the
    /// guard drops.
    pub fn namespace(&self, prefix: &str) -> Namespace<'_> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        self.kubectl(&["create", "namespace", &name]);
        // Pods need the namespace's default ServiceAccount (made by the controller manager).
        let start = Instant::now();
        while self
            .kubectl_in(&["-n", &name, "get", "serviceaccount", "default"], "")
            .status
            .code()
            != Some(0)
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no default ServiceAccount in {name}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // lb may read its TLS Secrets, as an operator grants it per namespace.
        let grant = std::fs::read_to_string(repo_root().join("config/kubernetes/tls-secrets.yaml"))
            .expect("config/kubernetes/tls-secrets.yaml");
        self.apply(&name, &grant);
        Namespace {
            cluster: self,
            name,
        }
    }

    /// The audit log's current length, to read only later events.
    pub fn audit_mark(&self) -> u64 {
        std::fs::metadata(self.dir.join("audit.log")).map_or(0, |m| m.len())
    }

    /// Audit events written after `mark`.
    pub fn audit_since(&self, mark: u64) -> Vec<serde_json::Value> {
        let Ok(bytes) = std::fs::read(self.dir.join("audit.log")) else {
            return Vec::new();
        };
        let from = usize::try_from(mark).unwrap_or(0).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Audit events of `user` answered 403 Forbidden after `mark`, one line each.
    pub fn forbidden_since(&self, mark: u64, user: &str) -> Vec<String> {
        self.forbidden_between(mark, u64::MAX, user)
    }

    /// Audit events of `user` answered 403 Forbidden between two marks.
    pub fn forbidden_between(&self, from: u64, to: u64, user: &str) -> Vec<String> {
        let Ok(bytes) = std::fs::read(self.dir.join("audit.log")) else {
            return Vec::new();
        };
        let end = usize::try_from(to).unwrap_or(usize::MAX).min(bytes.len());
        let from = usize::try_from(from).unwrap_or(0).min(end);
        String::from_utf8_lossy(&bytes[from..end])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["user"]["username"] == user && e["responseStatus"]["code"] == 403)
            .map(|e| {
                format!(
                    "{} {} ({})",
                    e["verb"].as_str().unwrap_or(""),
                    e["requestURI"].as_str().unwrap_or(""),
                    e["annotations"]["authorization.k8s.io/reason"]
                        .as_str()
                        .unwrap_or("")
                )
            })
            .collect()
    }

    /// Installs (`standard`, `experimental`) or removes (`none`) the Gateway API CRDs.
    pub fn crds(&self, channel: &str) -> Result<(), String> {
        run_script(&["crds", &self.dir.to_string_lossy(), channel])
    }

    /// Stops (`stop`) or starts (`start`) the cluster's API server only.
    pub fn apiserver(&self, action: &str) -> Result<(), String> {
        run_script(&["apiserver", &self.dir.to_string_lossy(), action])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned
            && let Err(e) = run_script(&["down", &self.dir.to_string_lossy()])
        {
            eprintln!("{e}");
        }
    }
}

/// A namespace of a test, deleted when dropped.
#[derive(Debug)]
pub struct Namespace<'a> {
    cluster: &'a Cluster,
    /// The namespace's name.
    pub name: String,
}

impl Namespace<'_> {
    /// `kubectl apply` of `yaml` in this namespace.
    pub fn apply(&self, yaml: &str) {
        self.cluster.apply(&self.name, yaml);
    }

    /// kubectl with `-n NAMESPACE` added.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.cluster.kubectl(&all)
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl_in(&["delete", "namespace", &self.name, "--wait=false"], "");
    }
}
