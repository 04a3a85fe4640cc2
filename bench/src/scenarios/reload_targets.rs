//! The proxies of the `reload` scenario, each started so that it can be
//! reloaded, with its way of applying one configuration change and its own
//! count of the reloads it completed:
//!
//! - lb: rewrite the manifest file (with or without a second Ingress) and send
//!   SIGHUP; counted from its log ("SIGHUP: reloading") and checked against
//!   `lb_snapshot_generation` and `lb_config_reloads_total` in `/metrics`.
//! - HAProxy: master-worker mode (`-W`); rewrite haproxy.cfg (a response
//!   header changes) and send `reload` on the master CLI (`-S`). While the
//!   master re-executes itself it refuses CLI connections, so the request is
//!   retried until it is taken (a SIGUSR2 arriving at such a moment is lost);
//!   counted from the master's "Loading success." lines.
//! - nginx: `master_process on`; rewrite nginx.conf and send SIGHUP to the
//!   master; counted from its "reconfiguring" log lines.
//!
//! Every process seen (masters, new and old workers) is checked gone at the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{Proc, log_tail, wait_listening};
use crate::proxies::{
    Tuning, haproxy_config_tuned, lb_config, nginx_args, nginx_config_tuned, ports, sibling,
    web_manifests, write,
};
use crate::sys::{descendants, reap_all, signal};

/// Longest wait for one reload request to be taken and done.
const APPLY_LIMIT: Duration = Duration::from_secs(2);
/// Requests made for one change before it counts as not applied.
const ATTEMPTS: u32 = 3;

#[derive(Debug)]
enum Kind {
    /// lb: its manifest file and its counters when the run started.
    Lb {
        manifest: PathBuf,
        base: Counters,
    },
    /// HAProxy: master CLI connections kept open until the end.
    Haproxy {
        cli: Vec<UnixStream>,
    },
    Nginx,
}

/// A proxy under the reload scenario; stopped (with every process it forked)
/// when dropped.
#[derive(Debug)]
pub struct Target {
    /// The port wrk loads.
    pub port: u16,
    proc_: Option<Proc>,
    kind: Kind,
    dir: PathBuf,
    /// The file where the proxy logs its reloads.
    log: PathBuf,
    /// Every process seen: the main one, then each worker.
    seen: Vec<u32>,
    /// Reload requests sent again because the first was not acted on.
    resent: u32,
}

/// lb's reload figures from `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    generation: u64,
    ok: u64,
    partial: u64,
    failed: u64,
}

fn variant(i: u32) -> &'static str {
    if i.is_multiple_of(2) { "a" } else { "b" }
}

/// lb's manifests for variant `v`: "b" adds a second Ingress with a host rule.
fn lb_manifests(v: &str) -> String {
    let mut m = web_manifests(ports::BACKEND);
    if v == "b" {
        m.push_str("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web-alt}\nspec:\n  ingressClassName: lb\n  rules:\n  - host: alt.bench.test\n    http:\n      paths:\n      - path: /alt\n        pathType: Prefix\n        backend: {service: {name: web, port: {number: 80}}}\n");
    }
    m
}

fn tuning(v: &'static str) -> Tuning {
    Tuning {
        variant: Some(v),
        nginx_master: true,
        ..Tuning::default()
    }
}

fn started(
    name: &str,
    p: Proc,
    port: u16,
    kind: Kind,
    dir: &Path,
    log: &Path,
) -> Result<Target, String> {
    let mut t = Target {
        port,
        seen: vec![p.pid()],
        proc_: Some(p),
        kind,
        dir: dir.to_owned(),
        log: log.to_owned(),
        resent: 0,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if !wait_listening(addr, Duration::from_secs(20)) {
        return Err(format!(
            "{name} did not start listening on {addr}\n{}",
            log_tail(log, 5)
        ));
    }
    t.note_workers();
    Ok(t)
}

/// Starts lb (one worker, core 0) on manifest variant "a".
pub fn lb(dir: &Path) -> Result<Target, String> {
    let cfg = lb_config(dir, &lb_manifests("a"))?;
    let log = dir.join("lb.log");
    let args = vec!["serve".into(), "--config".into(), cfg.display().to_string()];
    let p =
        Proc::start_logged("lb", "0", &sibling("lb")?, &args, &log).map_err(|e| e.to_string())?;
    let kind = Kind::Lb {
        manifest: dir.join("manifests").join("web.yaml"),
        base: Counters::default(),
    };
    let mut t = started("lb", p, ports::LB, kind, dir, &log)?;
    let now = lb_counters()?;
    if let Kind::Lb { base, .. } = &mut t.kind {
        *base = now;
    }
    Ok(t)
}

/// Starts HAProxy in master-worker mode with a master CLI (nbthread 1,
/// core 0) on variant "a".
pub fn haproxy(dir: &Path) -> Result<Target, String> {
    let cfg = haproxy_config_tuned(dir, &tuning("a"))?;
    let log = dir.join("haproxy.log");
    let args = vec![
        "-W".into(),
        "-db".into(),
        "-S".into(),
        dir.join("master.sock").display().to_string(),
        "-f".into(),
        cfg.display().to_string(),
    ];
    let p = Proc::start_logged("haproxy", "0", Path::new("/usr/sbin/haproxy"), &args, &log)
        .map_err(|e| e.to_string())?;
    let kind = Kind::Haproxy { cli: Vec::new() };
    started("haproxy", p, ports::HAPROXY, kind, dir, &log)
}

/// Starts nginx with a master process and one worker (core 0) on variant "a".
pub fn nginx(dir: &Path) -> Result<Target, String> {
    let cfg = nginx_config_tuned(dir, &tuning("a"))?;
    let p = Proc::start_logged(
        "nginx",
        "0",
        Path::new("/usr/sbin/nginx"),
        &nginx_args(dir, &cfg),
        &dir.join("nginx.out"),
    )
    .map_err(|e| e.to_string())?;
    started(
        "nginx",
        p,
        ports::NGINX,
        Kind::Nginx,
        dir,
        &dir.join("nginx.err"),
    )
}

/// Lines of `log` that contain `needle`.
fn count_lines(log: &Path, needle: &str) -> u32 {
    count_matching(log, |l| l.contains(needle))
}

/// Lines of `log` for which `pred` holds.
fn count_matching(log: &Path, pred: impl Fn(&str) -> bool) -> u32 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter(|l| pred(l)).count() as u32
}

impl Target {
    fn pid(&self) -> u32 {
        self.seen[0]
    }

    /// Records worker processes not seen before.
    fn note_workers(&mut self) {
        for p in descendants(self.pid()) {
            if !self.seen.contains(&p) {
                self.seen.push(p);
            }
        }
    }

    /// Makes change `i` (variant "b" for even `i`, back to "a" for odd), asks
    /// the proxy to reload and waits until it reports the reload done, asking
    /// again when a request was lost; returns whether the reload was done.
    pub fn change(&mut self, i: u32) -> Result<bool, String> {
        let v = variant(i + 1);
        self.note_workers();
        match &self.kind {
            Kind::Lb { manifest, .. } => write(manifest, &lb_manifests(v))?,
            Kind::Haproxy { .. } => drop(haproxy_config_tuned(&self.dir, &tuning(v))?),
            Kind::Nginx => drop(nginx_config_tuned(&self.dir, &tuning(v))?),
        }
        let want = self.applied() + 1;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                self.resent += 1;
            }
            self.request()?;
            let deadline = Instant::now() + APPLY_LIMIT;
            while Instant::now() < deadline {
                if self.applied() >= want {
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(false)
    }

    /// Asks the proxy to reload: SIGHUP for lb and nginx, `reload` on
    /// HAProxy's master CLI (retried while the master refuses connections).
    fn request(&mut self) -> Result<(), String> {
        let pid = self.pid();
        let Kind::Haproxy { cli } = &mut self.kind else {
            return signal(pid, "HUP");
        };
        let sock = self.dir.join("master.sock");
        let deadline = Instant::now() + APPLY_LIMIT;
        // Just after a reload the master may refuse or drop CLI requests; one
        // that answers `show proc` is back in its loop and takes a reload.
        loop {
            match master_cli(&sock, "show proc") {
                Ok(reply) if reply.contains("master") => break,
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(reply) => return Err(format!("master CLI: unexpected reply {reply:?}")),
                Err(e) => return Err(format!("master CLI {}: {e}", sock.display())),
            }
        }
        let mut s = UnixStream::connect(&sock).map_err(|e| format!("master CLI: {e}"))?;
        s.write_all(b"reload\n")
            .map_err(|e| format!("master CLI: {e}"))?;
        cli.push(s);
        Ok(())
    }

    /// Reloads completed so far, by the proxy's own account.
    fn applied(&self) -> u32 {
        match self.kind {
            Kind::Lb { .. } => count_lines(&self.log, "SIGHUP: reloading"),
            Kind::Haproxy { .. } => count_lines(&self.log, "Loading success.").saturating_sub(1),
            // The master's own "reconfiguring" line, not the one that
            // reports the signal ("signal 1 (SIGHUP) received ..., reconfiguring").
            Kind::Nginx => count_matching(&self.log, |l| l.trim_end().ends_with(": reconfiguring")),
        }
    }

    /// Checks the proxy's own account of the run after `changes` changes.
    pub fn check(&mut self, changes: u32) -> Vec<String> {
        self.note_workers();
        if matches!(self.kind, Kind::Lb { .. }) {
            // lb's file watcher reloads once more 100 ms after the last write.
            std::thread::sleep(Duration::from_millis(500));
        }
        let mut notes = Vec::new();
        if self.resent > 0 {
            notes.push(format!(
                "{} reload requests were not acted on within {} s and were sent again",
                self.resent,
                APPLY_LIMIT.as_secs()
            ));
        }
        match &self.kind {
            Kind::Lb { base, .. } => match lb_counters() {
                Ok(c) => {
                    let delta = c.generation - base.generation;
                    let want = 2 * u64::from(changes);
                    notes.push(format!(
                        "lb_snapshot_generation +{delta} (expected {want}: each change reloads once on SIGHUP and once from the file watcher){}; lb_config_reloads_total ok +{}, partial +{}, failed +{}",
                        if delta == want { "" } else { " MISMATCH" },
                        c.ok - base.ok,
                        c.partial - base.partial,
                        c.failed - base.failed
                    ));
                }
                Err(e) => notes.push(format!("cannot read /metrics: {e}")),
            },
            Kind::Haproxy { .. } => notes.push(format!(
                "{} worker processes seen (the first and one per reload); {} \"Loading failure\" and {} ALERT lines in its log",
                self.seen.len() - 1,
                count_lines(&self.log, "Loading failure"),
                count_lines(&self.log, "ALERT")
            )),
            Kind::Nginx => notes.push(format!(
                "{} worker processes seen (the first and one per reload); {} emerg/alert lines in its error log",
                self.seen.len() - 1,
                count_lines(&self.log, "[emerg]") + count_lines(&self.log, "[alert]")
            )),
        }
        notes
    }

    /// Stops the proxy and every process it forked; reports stragglers.
    pub fn stop(&mut self) -> Vec<String> {
        let Some(p) = self.proc_.take() else {
            return Vec::new();
        };
        self.note_workers();
        if let Kind::Haproxy { cli } = &mut self.kind {
            cli.clear();
        }
        drop(p);
        let left = reap_all(&self.seen, Duration::from_secs(5));
        if left.is_empty() {
            vec![format!(
                "processes seen (main and workers): {}, all gone after the stop",
                self.seen.len()
            )]
        } else {
            vec![format!(
                "processes {left:?} outlived the stop and were killed"
            )]
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one command to HAProxy's master CLI at `sock` and returns the reply.
fn master_cli(sock: &Path, command: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    // The master answers and closes once the client has finished sending.
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Reads lb's reload counters from its admin `/metrics`.
fn lb_counters() -> Result<Counters, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], ports::LB_ADMIN));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    parse_counters(&text).ok_or_else(|| "no lb_snapshot_generation in /metrics".into())
}

fn parse_counters(text: &str) -> Option<Counters> {
    let mut c = Counters::default();
    let mut found = false;
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<u64>() else {
            continue;
        };
        match name {
            "lb_snapshot_generation" => {
                c.generation = v;
                found = true;
            }
            "lb_config_reloads_total{result=\"ok\"}" => c.ok = v,
            "lb_config_reloads_total{result=\"partial\"}" => c.partial = v,
            "lb_config_reloads_total{result=\"failed\"}" => c.failed = v,
            _ => {}
        }
    }
    found.then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lb_reload_metrics() {
        let text = "HTTP/1.1 200 OK\r\n\r\n# TYPE lb_config_reloads_total counter\nlb_config_reloads_total{result=\"ok\"} 7\nlb_config_reloads_total{result=\"partial\"} 1\nlb_config_reloads_total{result=\"failed\"} 0\nlb_snapshot_generation 9\n";
        let c = parse_counters(text).expect("counters");
        assert_eq!((c.generation, c.ok, c.partial, c.failed), (9, 7, 1, 0));
        assert!(parse_counters("lb_ready 1\n").is_none());
    }

    #[test]
    fn variants_alternate_and_differ() {
        assert_eq!((variant(0), variant(1), variant(2)), ("a", "b", "a"));
        assert_ne!(lb_manifests("a"), lb_manifests("b"));
        assert!(lb_manifests("b").contains("web-alt"));
    }
}
