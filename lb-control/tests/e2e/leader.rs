//! Leader election with a Lease on the real control plane
//! (`bench/cluster.sh`), as the ServiceAccount lb-system/lb: of two lb
//! processes exactly one leads; a drained leader (SIGTERM) releases the
//! Lease and the other takes over at its next look; a killed one (SIGKILL)
//! is replaced after the Lease expires; a leader cut off from the API server
//! by a black hole (requests hang, nothing fails) steps down by its renew
//! deadline, before the Lease expires for the other, which then takes over:
//! never two leaders.
//!
//! Each test has a Lease of its own (`lb-system/lb-leader-<tag>-<pid>`, both
//! lbs of a test share it) and an empty namespace of its own to read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use crate::support::forwarder::Forwarder;
use crate::support::{Cluster, Lb, cluster, scratch_dir, shared_cluster};

/// `leaseDurationSeconds` lb writes.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader steps down when its last renewal is this old.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// A Lease of one test: both lbs started with `tag` share it.
struct TestLease<'a> {
    cluster: &'a Cluster,
    tag: String,
    name: String,
}

impl<'a> TestLease<'a> {
    /// A fresh Lease name from `prefix` and the test process's id (a Lease
    /// left by an earlier run never matters).
    fn new(cluster: &'a Cluster, prefix: &str) -> Self {
        let tag = format!("{prefix}-{}", std::process::id());
        // Lb::on_cluster_with names the Lease after the tag.
        let name = format!("lb-leader-{tag}");
        let lease = TestLease { cluster, tag, name };
        lease.delete();
        lease
    }

    fn get(&self) -> Option<serde_json::Value> {
        self.cluster
            .get_json(Some("lb-system"), "lease", &self.name)
    }

    fn holder(&self) -> Option<String> {
        self.get()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_owned)
    }

    fn delete(&self) {
        let _ = self.cluster.kubectl_in(
            &[
                "-n",
                "lb-system",
                "delete",
                "lease",
                &self.name,
                "--ignore-not-found",
            ],
            "",
        );
    }
}

impl Drop for TestLease<'_> {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A time of the Lease's spec (`renewTime`, `acquireTime`).
fn lease_time(lease: &serde_json::Value, field: &str) -> Timestamp {
    lease["spec"][field]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no spec.{field} in {lease}"))
}

fn pid(lb: &Lb) -> u32 {
    lb.child.as_ref().expect("running").id()
}

fn holds(holder: &str, lb: &Lb) -> bool {
    holder.ends_with(&format!("_{}", pid(lb)))
}

fn logs(lbs: &[&Lb]) -> String {
    lbs.iter()
        .map(|lb| lb.log_text())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Waits until exactly one of `lbs` reports `lb_leader 1`; returns its index.
fn wait_one_leader(lbs: &[&Lb], limit: Duration) -> usize {
    let start = Instant::now();
    loop {
        let leading: Vec<usize> = (0..lbs.len())
            .filter(|&i| lbs[i].metric("lb_leader") == 1)
            .collect();
        if leading.len() == 1 {
            return leading[0];
        }
        assert!(leading.len() < 2, "two leaders; logs:\n{}", logs(lbs));
        assert!(
            start.elapsed() < limit,
            "no leader within {limit:?}; logs:\n{}",
            logs(lbs)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No request of lb's ServiceAccount was refused since `mark`.
fn assert_not_forbidden(cluster: &Cluster, mark: u64) {
    let refused = cluster.forbidden_since(mark, cluster::LB_USER);
    assert!(refused.is_empty(), "403 Forbidden for lb: {refused:#?}");
}

#[test]
fn one_leader_then_takeover_after_sigterm() {
    let cluster = shared_cluster();
    let ns = cluster.namespace("leader");
    let mark = cluster.audit_mark();
    let lease = TestLease::new(&cluster, "term");
    let a = Lb::on_cluster(&lease.tag, &cluster, &[&ns.name], "", "");
    let b = Lb::on_cluster(&lease.tag, &cluster, &[&ns.name], "", "");
    let first = wait_one_leader(&[&a, &b], Duration::from_secs(15));
    // Stays exactly one across a few renewals and follower looks.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert_eq!(
            a.metric("lb_leader") + b.metric("lb_leader"),
            1,
            "{}",
            logs(&[&a, &b])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (mut leader, follower) = if first == 0 { (a, b) } else { (b, a) };
    let h = lease.holder().expect("Lease holder");
    assert!(holds(&h, &leader), "holder {h}");
    assert!(
        leader
            .log_text()
            .contains(&format!("lb-system/{}", lease.name)),
        "the log names the Lease:\n{}",
        leader.log_text()
    );

    leader.signal("TERM");
    let start = Instant::now();
    leader.wait_exit(Duration::from_secs(20));
    assert!(
        leader.log_text().contains("leader Lease released"),
        "{}",
        leader.log_text()
    );
    wait_one_leader(&[&follower], Duration::from_secs(15));
    let took = start.elapsed();
    // Released: the follower's next look (every 2 s) takes it, not the 15 s expiry.
    assert!(took < Duration::from_secs(8), "takeover took {took:?}");
    eprintln!("takeover after SIGTERM: {took:?}");
    let h = lease.holder().expect("Lease holder");
    assert!(holds(&h, &follower), "holder {h}");
    let l = lease.get().unwrap();
    assert_eq!(l["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(l["spec"]["leaseTransitions"], 1, "{l}");
    drop(follower);
    assert_not_forbidden(&cluster, mark);
}

#[test]
fn killed_leader_is_replaced_after_the_lease_expires() {
    let cluster = shared_cluster();
    let ns = cluster.namespace("leader");
    let mark = cluster.audit_mark();
    let lease = TestLease::new(&cluster, "kill");
    let a = Lb::on_cluster(&lease.tag, &cluster, &[&ns.name], "", "");
    let b = Lb::on_cluster(&lease.tag, &cluster, &[&ns.name], "", "");
    let first = wait_one_leader(&[&a, &b], Duration::from_secs(15));
    let (mut leader, follower) = if first == 0 { (a, b) } else { (b, a) };
    let start = Instant::now();
    leader.signal("KILL");
    leader.wait_exit(Duration::from_secs(5));
    let renewed = lease_time(&lease.get().unwrap(), "renewTime");
    // Not released: the follower waits for the expiry (15 s after the last renewal).
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(follower.metric("lb_leader"), 0);
    wait_one_leader(&[&follower], Duration::from_secs(20));
    let took = start.elapsed();
    eprintln!("takeover after SIGKILL: {took:?}");
    assert!(
        took >= Duration::from_secs(9),
        "took over before expiry: {took:?}"
    );
    let l = lease.get().unwrap();
    let h = l["spec"]["holderIdentity"].as_str().unwrap_or_default();
    assert!(holds(h, &follower), "holder {h}");
    let acquired = lease_time(&l, "acquireTime");
    assert!(
        acquired.as_millisecond() >= renewed.as_millisecond() + 15_000,
        "acquired at {acquired}, the killed leader's renewal was {renewed}"
    );
    drop(follower);
    assert_not_forbidden(&cluster, mark);
}

/// `lb.kubeconfig` with its server moved to `to` (the API server's
/// certificate names 127.0.0.1, so TLS still verifies through a relay).
fn kubeconfig_via(cluster: &Cluster, to: SocketAddr) -> PathBuf {
    let text = std::fs::read_to_string(cluster.lb_kubeconfig()).expect("lb.kubeconfig");
    let from = format!("server: https://127.0.0.1:{}", cluster.api_port());
    assert!(text.contains(&from), "{from} not in lb.kubeconfig");
    let dir = scratch_dir("leader-kubeconfig");
    let path = dir.join("lb.kubeconfig");
    std::fs::write(&path, text.replace(&from, &format!("server: https://{to}"))).unwrap();
    path
}

/// Both lbs' `lb_leader` at one instant.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    wall: Timestamp,
    a: u64,
    b: u64,
}

fn sample(a: &Lb, b: &Lb) -> Sample {
    let (a, b) = (a.metric("lb_leader"), b.metric("lb_leader"));
    Sample {
        at: Instant::now(),
        wall: Timestamp::now(),
        a,
        b,
    }
}

#[test]
fn black_holed_leader_steps_down_before_the_lease_expires() {
    let cluster = shared_cluster();
    let ns = cluster.namespace("leader");
    let mark = cluster.audit_mark();
    let lease = TestLease::new(&cluster, "blackhole");
    let api: SocketAddr = format!("127.0.0.1:{}", cluster.api_port()).parse().unwrap();
    let fwd = Forwarder::start(api);
    let kubeconfig = kubeconfig_via(&cluster, fwd.addr());

    // A, through the forwarder, leads first; B talks to the API server directly.
    let mut a = Lb::on_cluster_with(&lease.tag, &kubeconfig, &[&ns.name], "", "");
    a.wait_ready(Duration::from_secs(30));
    a.wait_metric("lb_leader", 1, Duration::from_secs(15));
    let b = Lb::on_cluster(&lease.tag, &cluster, &[&ns.name], "", "");
    // B has looked at the Lease (every 2 s) and follows.
    std::thread::sleep(Duration::from_secs(3));
    let s = sample(&a, &b);
    assert_eq!((s.a, s.b), (1, 0), "{}", logs(&[&a, &b]));
    assert!(holds(&lease.holder().unwrap(), &a));
    assert!(fwd.relayed() > 0);

    // The black hole begins right after a renewal, so that A keeps the
    // Lease as long as it ever does: RENEW_DEADLINE from now.
    let seen = lease_time(&lease.get().unwrap(), "renewTime");
    let waiting = Instant::now();
    while lease_time(&lease.get().unwrap(), "renewTime") == seen {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "A did not renew; log:\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fwd.black_hole(true);
    let t0 = Instant::now();
    // A cannot write the Lease any more: its last renewal is final.
    let before = lease.get().expect("the Lease");
    assert!(holds(
        before["spec"]["holderIdentity"].as_str().unwrap(),
        &a
    ));
    let last_renewal = lease_time(&before, "renewTime");
    let transitions = before["spec"]["leaseTransitions"].as_i64().unwrap();

    // Sample both every 50 ms: never two leaders; A steps down, then B takes over.
    let mut a_down: Option<Sample> = None;
    let mut b_up: Option<Sample> = None;
    let limit = LEASE_DURATION + Duration::from_secs(15);
    loop {
        let s = sample(&a, &b);
        assert!(
            !(s.a == 1 && s.b == 1),
            "two leaders {:?} after the black hole began; logs:\n{}",
            s.at - t0,
            logs(&[&a, &b])
        );
        if s.a == 0 && a_down.is_none() {
            a_down = Some(s);
        }
        if s.b == 1 && b_up.is_none() {
            b_up = Some(s);
        }
        if let Some(up) = b_up {
            // Keep watching a little after the takeover.
            if s.at - up.at > Duration::from_secs(3) {
                break;
            }
        }
        assert!(
            t0.elapsed() < limit,
            "no takeover within {limit:?} of the black hole (A down: {:?}); logs:\n{}",
            a_down.map(|d| d.at - t0),
            logs(&[&a, &b])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (a_down, b_up) = (a_down.unwrap(), b_up.unwrap());
    let stepped_down = a_down.at - t0;
    let took_over = b_up.at - t0;
    eprintln!(
        "black hole: A stepped down after {stepped_down:?}, B took over after {took_over:?} \
         (A's last renewal {last_renewal}, A seen down at {}, B's acquireTime below)",
        a_down.wall
    );
    // A: by its renew deadline, counted from its last renewal (before the black hole).
    assert!(
        stepped_down <= RENEW_DEADLINE + Duration::from_millis(1500),
        "A stepped down {stepped_down:?} after the black hole; log:\n{}",
        a.log_text()
    );
    assert!(
        a_down.wall.as_millisecond()
            <= last_renewal.as_millisecond() + RENEW_DEADLINE.as_millis() as i64 + 1500,
        "A stepped down at {} for a renewal at {last_renewal}",
        a_down.wall
    );
    assert!(
        a.log_text().contains("no longer the leader"),
        "{}",
        a.log_text()
    );
    // B: only once the Lease had expired, after A had stepped down.
    assert!(b_up.at > a_down.at);
    assert!(
        took_over <= LEASE_DURATION + Duration::from_secs(5),
        "B took over {took_over:?} after the black hole; log:\n{}",
        b.log_text()
    );
    let after = lease.get().expect("the Lease");
    let h = after["spec"]["holderIdentity"].as_str().unwrap_or_default();
    assert!(holds(h, &b), "holder {h}");
    let acquired = lease_time(&after, "acquireTime");
    assert!(
        acquired.as_millisecond() >= last_renewal.as_millisecond() + 15_000,
        "B acquired at {acquired}, A's last renewal was {last_renewal}"
    );
    assert!(
        acquired.as_millisecond() > a_down.wall.as_millisecond(),
        "B acquired at {acquired}, before A was seen down at {}",
        a_down.wall
    );
    assert_eq!(
        after["spec"]["leaseTransitions"].as_i64(),
        Some(transitions + 1)
    );

    // The partition heals: A reaches the API server again and stays a
    // follower (B holds a valid Lease).
    let relayed = fwd.relayed();
    fwd.black_hole(false);
    let healed = Instant::now();
    while fwd.relayed() == relayed {
        assert!(
            healed.elapsed() < Duration::from_secs(15),
            "A did not talk to the API server after the black hole; log:\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let s = sample(&a, &b);
        assert_eq!(
            (s.a, s.b),
            (0, 1),
            "after the black hole ended; logs:\n{}",
            logs(&[&a, &b])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(fwd.relayed() > relayed);
    let l = lease.get().unwrap();
    assert!(holds(l["spec"]["holderIdentity"].as_str().unwrap(), &b));
    assert_eq!(
        l["spec"]["leaseTransitions"].as_i64(),
        Some(transitions + 1)
    );

    a.signal("TERM");
    a.wait_exit(Duration::from_secs(20));
    let leader_lines = |lb: &Lb| {
        lb.log_text()
            .lines()
            .filter(|l| l.contains("leader") || l.contains("Lease"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    eprintln!("A:\n{}\nB:\n{}", leader_lines(&a), leader_lines(&b));
    drop((a, b, fwd));
    let _ = std::fs::remove_dir_all(kubeconfig.parent().unwrap());
    assert_not_forbidden(&cluster, mark);
}
