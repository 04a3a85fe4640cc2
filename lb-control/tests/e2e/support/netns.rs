//! Helpers for the tests that run lb inside network namespaces they create
//! (VIPs on an interface, VIP failover): commands, `ip -j` reads inside a
//! namespace, and an `lb serve` process in one. Tests need root and skip
//! without it ([`can_create`]).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `program ARGS` and returns its output.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"))
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = run("ip", args);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip ARGS` (with `-j`) and parses its JSON output.
pub fn ip_json(args: &[&str]) -> serde_json::Value {
    let out = run("ip", args);
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ip {args:?}: {e}"))
}

/// Sets sysctl `settings` (`key=value`) inside namespace `ns`.
pub fn sysctl(ns: &str, settings: &[&str]) {
    let out = run(
        "ip",
        &[&["netns", "exec", ns, "sysctl", "-q", "-w"][..], settings].concat(),
    );
    assert!(out.status.success(), "sysctl {settings:?}: {out:?}");
}

/// Whether this process may create namespaces (root); prints why the test
/// `tag` is skipped when not.
pub fn can_create(tag: &str) -> bool {
    let root = String::from_utf8_lossy(&run("id", &["-u"]).stdout).trim() == "0";
    if !root {
        eprintln!("skipping {tag}: needs root to create network namespaces");
    }
    root
}

/// Polls `done` every 50 ms; false when it has not held within `limit`.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The addresses on device `dev` of namespace `ns`.
pub fn addresses(ns: &str, dev: &str) -> Vec<IpAddr> {
    let v = ip_json(&["-n", ns, "-j", "addr", "show", "dev", dev]);
    v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["local"].as_str()?.parse().ok())
        .collect()
}

/// The MAC address of device `dev` of namespace `ns`.
pub fn mac(ns: &str, dev: &str) -> String {
    let v = ip_json(&["-n", ns, "-j", "link", "show", "dev", dev]);
    v[0]["address"].as_str().expect("a MAC").to_owned()
}

/// The link-layer address of `ip` in the neighbour table of `dev` in `ns`.
pub fn neighbour(ns: &str, dev: &str, ip: IpAddr) -> Option<String> {
    let v = ip_json(&["-n", ns, "-j", "neigh", "show", "dev", dev]);
    v.as_array()?
        .iter()
        .find(|n| n["dst"].as_str().and_then(|d| d.parse::<IpAddr>().ok()) == Some(ip))
        .and_then(|n| Some(n["lladdr"].as_str()?.to_owned()))
}

/// The whole neighbour table of `ns`, for failure messages.
pub fn neighbours(ns: &str) -> String {
    String::from_utf8_lossy(&run("ip", &["-n", ns, "neigh", "show"]).stdout).into_owned()
}

/// `curl` inside `ns` to `ip`:`port` (3 s at most); curl's exit code (7:
/// could not connect, 28: timeout, 52/56: connected, then closed).
pub fn curl_code(ns: &str, ip: IpAddr, port: u16) -> i32 {
    let url = match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}/"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}/"),
    };
    let args = ["netns", "exec", ns, "curl", "-s", "-o", "/dev/null"];
    let out = run("ip", &[&args[..], &["--max-time", "3", &url]].concat());
    out.status.code().unwrap_or(-1)
}

/// GET `path` from the lb admin API at `admin` inside `ns`; None unless 2xx.
pub fn admin_get(ns: &str, admin: &str, path: &str) -> Option<String> {
    let url = format!("http://{admin}{path}");
    let out = run(
        "ip",
        &["netns", "exec", ns, "curl", "-sf", "--max-time", "2", &url],
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `lb serve` inside a namespace (`ip netns exec` execs lb, so the child's
/// pid is lb's), killed on drop if still running; its scratch directory
/// goes too unless the test panicked.
pub struct NsLb {
    /// The scratch directory: `lb.toml`, `manifests/`, `lb.log`.
    pub dir: PathBuf,
    child: Option<Child>,
}

impl NsLb {
    /// Starts lb in `ns` on `dir/lb.toml` (already written); does not wait.
    pub fn spawn(ns: &str, dir: PathBuf) -> NsLb {
        let log = std::fs::File::create(dir.join("lb.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, super::lb_bin()])
            .args(["serve", "--config"])
            .arg(dir.join("lb.toml"))
            .env("LB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn lb");
        NsLb {
            dir,
            child: Some(child),
        }
    }

    /// lb's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("lb.log")).unwrap_or_default()
    }

    /// The path of manifest file `name`.
    pub fn manifest(&self, name: &str) -> PathBuf {
        self.dir.join("manifests").join(name)
    }

    /// The exit status, once lb has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends signal `sig` (`TERM`, `KILL`, ...).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(run("kill", &[&format!("-{sig}"), &pid]).status.success());
    }

    /// Waits (bounded) for lb to exit; false if it did not.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let exited = wait_until(limit, || self.exited().is_some());
        if exited {
            self.child = None;
        }
        exited
    }
}

impl Drop for NsLb {
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
