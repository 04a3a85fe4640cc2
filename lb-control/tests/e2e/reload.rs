//! Reloads: file changes and SIGHUP apply new routes with zero failed
//! requests; bad input is reported and loses nothing that was serving.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bench::echo::EchoServer;

use crate::support::{Client, Lb, ingress_to, lb_check, replace, service_yaml};

fn two_services(a: &EchoServer, b: &EchoServer) -> String {
    [
        service_yaml("default", "svc-a", 80, None, &[a.local_addr()]),
        service_yaml("default", "svc-b", 80, None, &[b.local_addr()]),
    ]
    .join("---\n")
}

#[test]
fn file_changes_reload_with_zero_failed_requests() {
    let a = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").expect("echo");
    let b = EchoServer::start("127.0.0.1:0".parse().unwrap(), "b").expect("echo");
    let lb = Lb::start(
        "reload",
        &[
            ("svc.yaml", &two_services(&a, &b)),
            ("ing.yaml", &ingress_to("reload.test", "svc-a")),
        ],
        "",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, http) = (Arc::clone(&stop), lb.http);
        clients.push(std::thread::spawn(move || {
            let mut client = Client::connect(http);
            let (mut ok, mut failed, mut seen) = (0u64, Vec::new(), BTreeSet::new());
            // Bounded: stops when told, or after 60 s at most.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match client.request("GET", "reload.test", "/fixed", &[], None) {
                    Ok(r) if r.status == 200 => {
                        ok += 1;
                        seen.insert(r.backend());
                    }
                    Ok(r) => failed.push(format!("status {}", r.status)),
                    Err(e) => {
                        failed.push(format!("error {e}"));
                        client = Client::connect(http);
                    }
                }
            }
            (ok, failed, seen)
        }));
    }
    let mut generation = lb.generation();
    for i in 0..10 {
        let target = if i % 2 == 0 { "svc-b" } else { "svc-a" };
        replace(
            &lb.manifest_path("ing.yaml"),
            &ingress_to("reload.test", target),
        );
        generation = lb.wait_generation_above(generation, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    // One more by SIGHUP, without any file change.
    lb.signal("HUP");
    lb.wait_generation_above(generation, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, failed, seen) = c.join().expect("client");
        assert!(
            failed.is_empty(),
            "failed requests during reloads: {failed:?}"
        );
        assert!(
            seen.contains("a") && seen.contains("b"),
            "routes did not switch: {seen:?}"
        );
        total += ok;
    }
    assert!(total > 100, "too few requests to mean anything: {total}");
    // Final state: the last change routed to svc-a.
    assert_eq!(lb.get("reload.test", "/").backend(), "a");
}

#[test]
fn bad_input_keeps_what_was_serving() {
    let a = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a").expect("echo");
    let b = EchoServer::start("127.0.0.1:0".parse().unwrap(), "b").expect("echo");
    let lb = Lb::start(
        "badinput",
        &[
            ("svc.yaml", &two_services(&a, &b)),
            ("ing.yaml", &ingress_to("reload.test", "svc-a")),
        ],
        "",
    );
    assert_eq!(lb.get("reload.test", "/").backend(), "a");
    let mut generation = lb.generation();

    // 1. The Ingress becomes invalid: the previous version keeps serving, and
    //    a second, valid object in the same file is applied.
    let broken = ingress_to("reload.test", "svc-b")
        .replace("pathType: Prefix", "pathType: Sometimes")
        + "---\n"
        + &ingress_to("reload.test", "svc-b")
            .replace("name: web", "name: extra")
            .replace("reload.test", "extra.test");
    replace(&lb.manifest_path("ing.yaml"), &broken);
    generation = lb.wait_generation_above(generation, Duration::from_secs(10));
    assert_eq!(
        lb.get("reload.test", "/").backend(),
        "a",
        "previous version of the Ingress must keep serving"
    );
    assert_eq!(
        lb.get("extra.test", "/").backend(),
        "b",
        "valid objects in the same reload must apply"
    );
    assert!(
        lb.wait_log(
            "spec.rules[0].http.paths[0].pathType",
            Duration::from_secs(5)
        ),
        "field not logged:\n{}",
        lb.log_text()
    );
    assert!(
        lb.log_text().contains("ing.yaml"),
        "file not logged:\n{}",
        lb.log_text()
    );
    let (code, text) = lb_check(&lb.config_path());
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("ing.yaml") && text.contains("pathType"),
        "{text}"
    );

    // 2. The Service file stops being YAML at all: its objects stay.
    replace(&lb.manifest_path("svc.yaml"), "this: is: not: yaml: [\n");
    lb.wait_generation_above(generation, Duration::from_secs(10));
    assert_eq!(lb.get("reload.test", "/").backend(), "a");
    assert_eq!(lb.get("extra.test", "/").backend(), "b");
    assert!(lb.wait_log("svc.yaml", Duration::from_secs(5)));

    // 3. A configuration file that became unusable on SIGHUP changes nothing.
    let config = std::fs::read_to_string(lb.config_path()).unwrap();
    std::fs::write(lb.config_path(), format!("{config}\n[bogus]\nkey = 1\n")).unwrap();
    lb.signal("HUP");
    assert!(
        lb.wait_log("bogus", Duration::from_secs(5)),
        "bad config not reported:\n{}",
        lb.log_text()
    );
    assert_eq!(lb.get("reload.test", "/").backend(), "a");
    let metrics = crate::support::admin_get(lb.admin, "/metrics")
        .unwrap()
        .text();
    assert!(
        metrics.contains("lb_config_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
}
