//! Event-to-traffic: bursts of file changes are coalesced into a few
//! compiles, and the time from a change to its snapshot serving is exported
//! in `/metrics`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bench::echo::EchoServer;

use crate::support::{Lb, admin_get, ingress_to, replace, service_yaml};

/// A series of `/metrics` (labels included in `series`), as a float.
fn series(admin: SocketAddr, series: &str) -> f64 {
    let m = admin_get(admin, "/metrics").expect("metrics").text();
    m.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{m}"))
}

fn echo(name: &str) -> EchoServer {
    EchoServer::start("127.0.0.1:0".parse().unwrap(), name).expect("echo")
}

#[test]
fn burst_of_two_thousand_files_compiles_a_few_times_and_serves_the_result() {
    let (a, b) = (echo("a"), echo("b"));
    let lb = Lb::start(
        "latency-burst",
        &[
            (
                "svc.yaml",
                &service_yaml("default", "svc-a", 80, None, &[a.local_addr()]),
            ),
            ("ing.yaml", &ingress_to("latency.test", "svc-a")),
        ],
        "",
    );
    assert_eq!(lb.get("latency.test", "/").backend(), "a");
    // A new directory first, so that the watcher watches it before the burst.
    let dir = lb.manifest_path("burst");
    std::fs::create_dir_all(&dir).unwrap();
    lb.wait_generation_above(lb.generation(), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    let compiles = lb.metric("lb_config_compiles_total");
    let events = lb.metric("lb_config_events_total");
    let samples = series(lb.admin, "lb_event_to_traffic_seconds_count");
    let generation = lb.generation();

    // 2,000 new files (a Service and its EndpointSlice each), then the
    // Ingress moves to the last of them: as fast as the disk takes them.
    for i in 0..2000 {
        let svc = service_yaml(
            "default",
            &format!("burst-{i}"),
            80,
            None,
            &[b.local_addr()],
        );
        std::fs::write(dir.join(format!("burst-{i}.yaml")), svc).unwrap();
    }
    replace(
        &lb.manifest_path("ing.yaml"),
        &ingress_to("latency.test", "burst-1999"),
    );

    // The final state serves...
    let start = Instant::now();
    while lb.get("latency.test", "/").backend() != "b" {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the last change never served; log:\n{}",
            lb.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(lb.generation() > generation);
    // ...and once nothing more is compiled for a second, far fewer
    // compiles than events happened.
    let mut last = (lb.metric("lb_config_compiles_total"), Instant::now());
    while last.1.elapsed() < Duration::from_secs(1) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "compiles never settled"
        );
        std::thread::sleep(Duration::from_millis(100));
        let now = lb.metric("lb_config_compiles_total");
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let (compiles, events) = (
        last.0 - compiles,
        lb.metric("lb_config_events_total") - events,
    );
    eprintln!("burst: {events} events, {compiles} compiles");
    assert!(events >= 2001, "only {events} events for 2,001 file writes");
    assert!(
        (1..20).contains(&compiles),
        "{compiles} compiles for {events} events"
    );
    assert_eq!(lb.get("latency.test", "/").backend(), "b");
    // Every reload carried a change: one event-to-traffic sample per compile.
    let count = series(lb.admin, "lb_event_to_traffic_seconds_count") - samples;
    assert_eq!(count, compiles as f64);
}

#[test]
fn a_single_change_records_its_event_to_traffic_time() {
    let (a, b) = (echo("a"), echo("b"));
    let services = [
        service_yaml("default", "svc-a", 80, None, &[a.local_addr()]),
        service_yaml("default", "svc-b", 80, None, &[b.local_addr()]),
    ]
    .join("---\n");
    let lb = Lb::start(
        "latency-single",
        &[
            ("svc.yaml", &services),
            ("ing.yaml", &ingress_to("latency.test", "svc-a")),
        ],
        "",
    );
    // The first load is no change: nothing recorded yet.
    assert_eq!(series(lb.admin, "lb_event_to_traffic_seconds_count"), 0.0);
    assert!(series(lb.admin, "lb_event_to_traffic_seconds{quantile=\"0.5\"}").is_nan());

    let generation = lb.generation();
    let written = Instant::now();
    replace(
        &lb.manifest_path("ing.yaml"),
        &ingress_to("latency.test", "svc-b"),
    );
    let generation = lb.wait_generation_above(generation, Duration::from_secs(10));
    let observed = written.elapsed().as_secs_f64();
    assert_eq!(lb.get("latency.test", "/").backend(), "b");
    assert_eq!(series(lb.admin, "lb_event_to_traffic_seconds_count"), 1.0);
    let p50 = series(lb.admin, "lb_event_to_traffic_seconds{quantile=\"0.5\"}");
    let p99 = series(lb.admin, "lb_event_to_traffic_seconds{quantile=\"0.99\"}");
    let max = series(lb.admin, "lb_event_to_traffic_seconds_max");
    // At least the quiet period of the debounce, at most what the test saw.
    assert!(
        p50 >= 0.09 && p50 <= observed + 0.01,
        "p50 {p50} s, observed {observed} s"
    );
    assert!((p99 - p50).abs() < 0.01 && (max - p50).abs() < 0.01);
    assert!(lb.metric("lb_config_events_total") >= 1);

    // A SIGHUP counts too, from the signal's receipt.
    lb.signal("HUP");
    lb.wait_generation_above(generation, Duration::from_secs(10));
    assert_eq!(series(lb.admin, "lb_event_to_traffic_seconds_count"), 2.0);
}
