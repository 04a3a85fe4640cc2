//! Operations: the file source keeps the last good objects when a manifest
//! file is emptied or its directory vanishes, and watches a re-created
//! directory again; SIGHUP applies the keys a reload can and names the
//! ones that need a restart; lb makes itself non-dumpable (private keys
//! stay out of core dumps) unless `[runtime] dumpable` says otherwise.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use bench::echo::EchoServer;

use crate::support::{Lb, ingress_named, ingress_to, service_yaml};

const LIMIT: Duration = Duration::from_secs(10);

fn echo(name: &str) -> EchoServer {
    EchoServer::start("127.0.0.1:0".parse().unwrap(), name).expect("echo")
}

#[test]
fn an_emptied_file_or_a_vanished_directory_keeps_serving() {
    let (a, b) = (echo("a"), echo("b"));
    let svc = [
        service_yaml("default", "svc-a", 80, None, &[a.local_addr()]),
        service_yaml("default", "svc-b", 80, None, &[b.local_addr()]),
    ]
    .join("---\n");
    let ing = ingress_to("ops.test", "svc-a");
    let lb = Lb::start("ops-files", &[("svc.yaml", &svc), ("ing.yaml", &ing)], "");
    assert_eq!(lb.get("ops.test", "/").backend(), "a");
    let mut generation = lb.generation();

    // Truncated in place (an editor or a writer caught half-way): kept.
    std::fs::write(lb.manifest_path("ing.yaml"), "").unwrap();
    generation = lb.wait_generation_above(generation, LIMIT);
    assert_eq!(lb.get("ops.test", "/").backend(), "a");
    assert_eq!(lb.metric("lb_source_files_kept_objects"), 1);
    assert!(lb.wait_log("file is empty", LIMIT), "{}", lb.log_text());
    std::fs::write(lb.manifest_path("ing.yaml"), &ing).unwrap();
    generation = lb.wait_generation_above(generation, LIMIT);
    assert_eq!(lb.metric("lb_source_files_kept_objects"), 0);

    // The whole directory goes away: everything it held keeps serving.
    let dir = lb.dir.join("manifests");
    let gone = lb.dir.join("manifests.gone");
    std::fs::rename(&dir, &gone).unwrap();
    lb.wait_generation_above(generation, LIMIT);
    assert_eq!(lb.get("ops.test", "/").backend(), "a");
    let kept = lb.metric("lb_source_files_kept_objects");
    assert!(kept >= 3, "kept {kept} objects");
    assert!(
        lb.wait_log("cannot read manifest path", LIMIT),
        "{}",
        lb.log_text()
    );

    // Re-created with new content: seen without SIGHUP, and watched again
    // (a later change inside it is seen too).
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("svc.yaml"), &svc).unwrap();
    std::fs::write(
        dir.join("ing.yaml"),
        ingress_named("web", "ops.test", "svc-b"),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while lb.get("ops.test", "/").backend() != "b" {
        assert!(
            std::time::Instant::now() < deadline,
            "re-created directory not loaded:\n{}",
            lb.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lb.metric("lb_source_files_kept_objects"), 0);
    generation = lb.generation();
    std::fs::write(
        dir.join("ing.yaml"),
        ingress_named("web", "ops.test", "svc-a"),
    )
    .unwrap();
    lb.wait_generation_above(generation, LIMIT);
    let deadline = std::time::Instant::now() + LIMIT;
    while lb.get("ops.test", "/").backend() != "a" {
        assert!(
            std::time::Instant::now() < deadline,
            "a change inside the re-created directory was not seen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A file deleted from a directory that lists is a deletion.
    generation = lb.generation();
    std::fs::remove_file(dir.join("ing.yaml")).unwrap();
    lb.wait_generation_above(generation, LIMIT);
    assert_eq!(lb.get("ops.test", "/").status, 404);
    let _ = std::fs::remove_dir_all(&gone);
}

#[test]
fn sighup_applies_reloadable_keys_and_names_the_rest() {
    let a = echo("a");
    let svc = service_yaml("default", "svc-a", 80, None, &[a.local_addr()]);
    let lb = Lb::start(
        "ops-hup",
        &[
            ("svc.yaml", &svc),
            ("ing.yaml", &ingress_to("hup.test", "svc-a")),
        ],
        "",
    );
    assert_eq!(lb.get("hup.test", "/").backend(), "a");
    assert_eq!(lb.metric("lb_config_restart_pending"), 0);
    let config = std::fs::read_to_string(lb.config_path()).unwrap();
    assert!(config.contains("class = \"lb\""), "{config}");
    // ingress.class applies on reload (the Ingress of class lb is no longer
    // ours); http.idle_timeout needs a restart: named, and kept.
    let changed =
        config.replace("class = \"lb\"", "class = \"other\"") + "\n[http]\nidle_timeout = \"7s\"\n";
    std::fs::write(lb.config_path(), changed).unwrap();
    let generation = lb.generation();
    lb.signal("HUP");
    lb.wait_generation_above(generation, LIMIT);
    assert_eq!(lb.get("hup.test", "/").status, 404);
    assert!(
        lb.wait_log(
            "reload: http.idle_timeout changed; these take effect on restart",
            LIMIT
        ),
        "{}",
        lb.log_text()
    );
    assert_eq!(lb.metric("lb_config_restart_pending"), 1);
    // Back to the running values: nothing pending any more.
    std::fs::write(lb.config_path(), &config).unwrap();
    let generation = lb.generation();
    lb.signal("HUP");
    lb.wait_generation_above(generation, LIMIT);
    assert_eq!(lb.get("hup.test", "/").backend(), "a");
    assert_eq!(lb.metric("lb_config_restart_pending"), 0);
}

/// The owner of `/proc/PID/environ`: the process's user while it is
/// dumpable, root once it made itself non-dumpable.
fn proc_owner(lb: &Lb) -> u32 {
    // setpriv execs lb, so the child's pid is lb's.
    let pid = lb.child.as_ref().expect("running").id();
    std::fs::metadata(format!("/proc/{pid}/environ"))
        .unwrap()
        .uid()
}

#[test]
fn lb_is_not_dumpable_unless_configured() {
    assert!(
        is_root(),
        "this test runs lb as another user (setpriv) and needs root"
    );
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let lb = Lb::start_via("ops-dump", &[], str::to_owned, &nobody);
    assert_eq!(proc_owner(&lb), 0, "lb left itself dumpable");
    drop(lb);
    let lb = Lb::start_via(
        "ops-dump-on",
        &[],
        |c: &str| c.replace("[runtime]\n", "[runtime]\ndumpable = true\n"),
        &nobody,
    );
    assert_eq!(
        proc_owner(&lb),
        65534,
        "[runtime] dumpable = true not honoured"
    );
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
