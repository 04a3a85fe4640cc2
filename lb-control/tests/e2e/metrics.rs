//! Admin `/metrics`: the compile and publish times of the last configuration
//! load are exposed as gauges, set from the first load on and updated by a
//! reload.

use std::time::Duration;

use crate::support::{Lb, admin_get, service_yaml};

/// The value of the unlabelled series `name`, after checking its HELP and TYPE lines.
fn gauge(text: &str, name: &str) -> f64 {
    assert!(text.contains(&format!("# HELP {name} ")), "{text}");
    assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} has no value:\n{text}"))
}

fn load_times(lb: &Lb) -> (f64, f64) {
    let text = admin_get(lb.admin, "/metrics").expect("metrics").text();
    (
        gauge(&text, "lb_config_compile_seconds"),
        gauge(&text, "lb_config_publish_seconds"),
    )
}

#[test]
fn compile_and_publish_times_are_exposed_after_start_and_reload() {
    let backend = "127.0.0.1:9".parse().unwrap();
    let lb = Lb::start(
        "metrics",
        &[(
            "svc.yaml",
            &service_yaml("default", "s", 80, None, &[backend]),
        )],
        "",
    );
    let (compile, publish) = load_times(&lb);
    assert!(compile > 0.0 && compile < 60.0, "compile {compile}");
    assert!(publish > 0.0 && publish < 60.0, "publish {publish}");

    let generation = lb.generation();
    lb.signal("HUP");
    lb.wait_generation_above(generation, Duration::from_secs(10));
    let (compile, publish) = load_times(&lb);
    assert!(compile > 0.0 && publish > 0.0, "{compile} {publish}");
}
