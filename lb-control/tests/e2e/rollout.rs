//! A rolling update of a 3-replica Deployment on the real control plane,
//! behind an Ingress and behind a LoadBalancer Service at once, under wrk
//! load: not one request fails. The Deployment, ReplicaSet and EndpointSlice
//! controllers are the real ones; the pod runner keeps a deleted Pod serving
//! through its grace period (its echo backend answers `Connection: close`
//! after SIGTERM, as a well-behaved server drains).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::k8s::{self, backend_at, backend_via_ingress, wait_for};
use crate::support::{Lb, cluster::LB_USER, shared_cluster};

/// wrk's summary: (requests, non-2xx/3xx responses, socket errors line).
fn wrk_summary(out: &str) -> (u64, u64, Option<String>) {
    let requests = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or(0);
    let non2xx = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let errors = out
        .lines()
        .find(|l| l.contains("Socket errors"))
        .map(|l| l.trim().to_owned());
    (requests, non2xx, errors)
}

fn wrk(url: &str, host: &str, seconds: u32) -> std::process::Child {
    Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{seconds}s"), "--timeout", "5s"])
        .args(["-H", &format!("Host: {host}"), url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk (Debian package wrk; ./test.sh installs it)")
}

#[test]
fn a_rolling_update_under_load_fails_no_request() {
    let cluster = shared_cluster();
    let mark = cluster.audit_mark();
    let ns = cluster.namespace("rollout");
    k8s::ingress_class(&cluster);
    ns.apply(&k8s::deployment("web", 3, 3));
    ns.apply(&k8s::service("web", true));
    ns.apply(&k8s::ingress("web", "web.rollout.test", "web"));
    let old: BTreeSet<String> = k8s::wait_ready_pods(&cluster, &ns.name, "web", 3)
        .into_iter()
        .collect();
    let lb = Lb::on_cluster(
        "rollout",
        &cluster,
        &[&ns.name],
        "",
        &k8s::loadbalancer_pool(),
    );
    let vip = SocketAddr::new(k8s::wait_service_vip(&cluster, &ns.name, "web"), 80);
    wait_for(Duration::from_secs(20), "both paths serve", || {
        (backend_via_ingress(&lb, "web.rollout.test").is_some() && backend_at(vip).is_some())
            .then_some(())
    });

    let seconds = 25;
    let started = Instant::now();
    let via_ingress = wrk(&format!("http://{}/", lb.http), "web.rollout.test", seconds);
    let via_vip = wrk(&format!("http://{vip}/"), "web.rollout.test", seconds);
    std::thread::sleep(Duration::from_secs(2));
    ns.kubectl(&["rollout", "restart", "deployment/web"]);
    ns.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    // Every old Pod gone (its grace period over, its process killed).
    wait_for(Duration::from_secs(30), "the old pods to go", || {
        let out = ns.kubectl(&["get", "pods", "-o", "name"]);
        (!old.iter().any(|p| out.contains(p.as_str()))).then_some(())
    });
    let rolled = started.elapsed();
    assert!(
        rolled < Duration::from_secs(u64::from(seconds) - 2),
        "the rollout took {rolled:?}, longer than the load"
    );
    let new: BTreeSet<String> = k8s::wait_ready_pods(&cluster, &ns.name, "web", 3)
        .into_iter()
        .collect();
    assert!(new.is_disjoint(&old), "{old:?} {new:?}");

    for (what, child) in [("Ingress", via_ingress), ("LoadBalancer VIP", via_vip)] {
        let out = child.wait_with_output().expect("wrk");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "wrk: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (requests, non2xx, errors) = wrk_summary(&text);
        eprintln!(
            "rolling update via {what}: {requests} requests, {non2xx} non-2xx, socket errors: {}\n{text}",
            errors.as_deref().unwrap_or("none")
        );
        assert!(requests > 1000, "{what}: too few requests to tell\n{text}");
        assert_eq!(non2xx, 0, "{what}: failed responses\n{text}");
        assert!(errors.is_none(), "{what}: {errors:?}\n{text}");
    }
    // Only the new Pods serve now, on both paths.
    for _ in 0..10 {
        let b = backend_via_ingress(&lb, "web.rollout.test").expect("served");
        assert!(new.contains(&b), "{b} is not a new pod");
        let b = backend_at(vip).expect("served");
        assert!(new.contains(&b), "{b} is not a new pod");
    }
    drop(lb);
    let refused = cluster.forbidden_since(mark, LB_USER);
    assert!(
        refused.is_empty(),
        "the API server refused lb: {refused:#?}"
    );
}
