//! Leader election with a Lease on the stand-in API server: of two lb
//! processes exactly one leads; when it drains (SIGTERM) it releases the
//! Lease and the other takes over well within the lease duration.

use std::time::{Duration, Instant};

use crate::support::Lb;
use crate::support::kube_api::KubeApi;

fn holder(api: &KubeApi) -> Option<String> {
    api.get("Lease", Some("lb-system"), "lb-leader")?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

fn pid(lb: &Lb) -> u32 {
    lb.child.as_ref().expect("running").id()
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
        let logs = || {
            lbs.iter()
                .map(|lb| lb.log_text())
                .collect::<Vec<_>>()
                .join("\n---\n")
        };
        assert!(leading.len() < 2, "two leaders; logs:\n{}", logs());
        assert!(
            start.elapsed() < limit,
            "no leader within {limit:?}; logs:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_leader_then_takeover_after_sigterm() {
    let api = KubeApi::start();
    let a = Lb::on_api("leader-a", &api, "");
    let b = Lb::on_api("leader-b", &api, "");
    let first = wait_one_leader(&[&a, &b], Duration::from_secs(10));
    // Stays exactly one across a few renewals and follower looks.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(a.metric("lb_leader") + b.metric("lb_leader"), 1);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (mut leader, follower) = if first == 0 { (a, b) } else { (b, a) };
    let h = holder(&api).expect("Lease holder");
    assert!(h.ends_with(&format!("_{}", pid(&leader))), "holder {h}");

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
    let h = holder(&api).expect("Lease holder");
    assert!(h.ends_with(&format!("_{}", pid(&follower))), "holder {h}");
    let lease = api.get("Lease", Some("lb-system"), "lb-leader").unwrap();
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
}

#[test]
fn killed_leader_is_replaced_after_the_lease_expires() {
    let api = KubeApi::start();
    let a = Lb::on_api("leader-kill-a", &api, "");
    let b = Lb::on_api("leader-kill-b", &api, "");
    let first = wait_one_leader(&[&a, &b], Duration::from_secs(10));
    let (mut leader, follower) = if first == 0 { (a, b) } else { (b, a) };
    let start = Instant::now();
    leader.signal("KILL");
    leader.wait_exit(Duration::from_secs(5));
    // Not released: the follower waits for the expiry (15 s after the last renewal).
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(follower.metric("lb_leader"), 0);
    wait_one_leader(&[&follower], Duration::from_secs(20));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(9),
        "took over before expiry: {took:?}"
    );
    let h = holder(&api).expect("Lease holder");
    assert!(h.ends_with(&format!("_{}", pid(&follower))), "holder {h}");
}
