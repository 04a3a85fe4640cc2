//! Changing an HTTPRoute under load: keep-alive clients and a bounded wrk
//! run keep sending while the route's backend (and a weight split) change;
//! no request fails and routing follows each change.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::conformance::http_route;
use super::{INFRA, Infra, get};
use crate::support::client::Client;
use crate::support::replace;

fn route_to(backends: &str) -> String {
    http_route(
        INFRA,
        "moving",
        &format!("{INFRA}/same-namespace"),
        &["load.example.com"],
        &format!("  - backendRefs: [{backends}]\n"),
    )
}

#[test]
fn changing_an_http_route_under_load_fails_no_request() {
    let infra = Infra::start();
    let v1 = "{name: infra-backend-v1, port: 8080}";
    let v2 = "{name: infra-backend-v2, port: 8080}";
    let split = "{name: infra-backend-v1, port: 8080, weight: 1}, {name: infra-backend-v3, port: 8080, weight: 1}";
    let lb = infra.lb("gw-load", &route_to(v1));
    let gw = infra.gw("same-namespace");
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..3 {
        let stop = Arc::clone(&stop);
        clients.push(std::thread::spawn(move || {
            let mut client = Client::connect(gw);
            let (mut ok, mut failed, mut seen) = (0u64, Vec::new(), BTreeSet::new());
            // Bounded: stops when told, or after 60 s at most.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match client.request("GET", "load.example.com", "/fixed", &[], None) {
                    Ok(r) if r.status == 200 => {
                        ok += 1;
                        seen.insert(r.backend());
                    }
                    Ok(r) => failed.push(format!("status {}", r.status)),
                    Err(e) => {
                        failed.push(format!("error {e}"));
                        client = Client::connect(gw);
                    }
                }
            }
            (ok, failed, seen)
        }));
    }
    // wrk alongside: 2 threads, 16 connections, 4 s, then it stops by itself.
    let wrk = std::thread::spawn(move || {
        Command::new("wrk")
            .args(["-t2", "-c16", "-d4s", "-H", "Host: load.example.com"])
            .arg(format!("http://{gw}/fixed"))
            .output()
            .expect("wrk runs (package wrk)")
    });
    let mut generation = lb.generation();
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let target = [v2, split, v1][i % 3];
        replace(&lb.manifest_path("test.yaml"), &route_to(target));
        generation = lb.wait_generation_above(generation, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(100));
        i += 1;
    }
    let out = wrk.join().expect("wrk thread");
    stop.store(true, Ordering::Relaxed);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw failed responses:\n{text}"
    );
    assert!(
        !text.contains("Socket errors"),
        "wrk saw socket errors:\n{text}"
    );
    let mut seen_all = BTreeSet::new();
    let mut total = 0;
    for c in clients {
        let (ok, failed, seen) = c.join().expect("client");
        assert!(
            failed.is_empty(),
            "failed requests during changes: {failed:?}"
        );
        total += ok;
        seen_all.extend(seen);
    }
    assert!(i >= 3, "at least one full cycle of changes ({i})");
    assert!(total > 100, "too few requests to mean anything: {total}");
    let want: BTreeSet<String> = ["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"]
        .map(String::from)
        .into();
    assert_eq!(seen_all, want, "routing followed every change");
    // The final state is the last route written.
    let last = [v2, split, v1][(i - 1) % 3];
    if last == v2 {
        assert_eq!(
            get(gw, "load.example.com", "/").backend(),
            "infra-backend-v2"
        );
    } else if last == v1 {
        assert_eq!(
            get(gw, "load.example.com", "/").backend(),
            "infra-backend-v1"
        );
    }
}
