//! systemd integration: the sd_notify sequence the real `lb serve` sends to a
//! test `NOTIFY_SOCKET` (path and abstract), and `systemd-analyze verify` of
//! `systemd/lb.service`.

use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Lb, admin_get, scratch_dir};

/// `CLOCK_MONOTONIC` in µs, the clock `MONOTONIC_USEC` is read from.
fn monotonic_usec() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000
}

/// The receiving end of a notification socket, standing in for systemd.
struct Manager {
    socket: UnixDatagram,
    /// `WATCHDOG=1` messages seen so far.
    watchdogs: usize,
    /// Every message, in order of arrival.
    seen: Vec<String>,
}

impl Manager {
    fn new(socket: UnixDatagram) -> Manager {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        Manager {
            socket,
            watchdogs: 0,
            seen: Vec::new(),
        }
    }

    /// Receives one message within `limit`, if any arrives.
    fn recv(&mut self, limit: Duration) -> Option<String> {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(len) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..len]).into_owned();
                if msg == "WATCHDOG=1" {
                    self.watchdogs += 1;
                }
                self.seen.push(msg.clone());
                return Some(msg);
            }
        }
        None
    }

    /// The next message other than `WATCHDOG=1`, within `limit`.
    fn next_state(&mut self, limit: Duration, lb: &Lb) -> String {
        let start = Instant::now();
        while start.elapsed() < limit {
            match self.recv(limit.saturating_sub(start.elapsed())) {
                Some(m) if m == "WATCHDOG=1" => continue,
                Some(m) => return m,
                None => break,
            }
        }
        panic!(
            "no notification within {limit:?}; seen {:?}; log:\n{}",
            self.seen,
            lb.log_text()
        );
    }
}

/// Starts lb with `env` (plus `NOTIFY_SOCKET`), retrying with fresh ports when
/// a port was taken by a concurrent test, and returns it with its first
/// non-watchdog notification.
fn start(tag: &str, manager: &mut Manager, env: &[(&str, &str)]) -> (Lb, String) {
    for _ in 0..5 {
        let mut lb = Lb::spawn_unready_env(tag, &[], "", env);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            match manager.recv(Duration::from_millis(100)) {
                Some(m) if m == "WATCHDOG=1" => {}
                Some(m) => return (lb, m),
                None => {}
            }
            if let Some(status) = lb.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                if lb.log_text().contains("Address already in use") {
                    break;
                }
                panic!("lb exited early with {status}; log:\n{}", lb.log_text());
            }
        }
        if lb.child.is_some() && start.elapsed() >= Duration::from_secs(20) {
            panic!("no READY=1 within 20 s; log:\n{}", lb.log_text());
        }
    }
    panic!("lb could not bind free ports after 5 tries");
}

fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn notify_sequence_on_a_path_socket() {
    let dir = scratch_dir("sd-notify");
    let path = dir.join("notify");
    let mut manager = Manager::new(UnixDatagram::bind(&path).expect("bind notify socket"));
    let socket = path.to_str().expect("utf-8 path");
    let (mut lb, first) = start(
        "sd-notify",
        &mut manager,
        &[("NOTIFY_SOCKET", socket), ("WATCHDOG_USEC", "200000")],
    );

    // READY=1 comes when /readyz is already 200, with a status line.
    assert_eq!(field(&first, "READY"), Some("1"), "{first}");
    let status = field(&first, "STATUS").expect("STATUS= with READY=1");
    assert!(status.starts_with("serving generation 1 "), "{status}");
    let ready = admin_get(lb.admin, "/readyz").map(|r| r.status);
    assert_eq!(ready, Some(200), "READY=1 sent before /readyz is 200");

    // WATCHDOG=1 every WATCHDOG_USEC / 2 = 100 ms.
    let start = Instant::now();
    while manager.watchdogs < 4 && start.elapsed() < Duration::from_secs(5) {
        let m = manager.recv(Duration::from_secs(1));
        assert!(
            m.is_none() || m.as_deref() == Some("WATCHDOG=1"),
            "unexpected {m:?}"
        );
    }
    assert!(
        manager.watchdogs >= 4,
        "{} watchdog pings in {:?}",
        manager.watchdogs,
        start.elapsed()
    );

    // SIGHUP: RELOADING=1 stamped with CLOCK_MONOTONIC between the signal and
    // its receipt, then READY=1 once the new generation is published.
    let before = monotonic_usec();
    lb.signal("HUP");
    let reloading = manager.next_state(Duration::from_secs(10), &lb);
    let after = monotonic_usec();
    assert_eq!(field(&reloading, "RELOADING"), Some("1"), "{reloading}");
    let stamp: u64 = field(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("MONOTONIC_USEC in {reloading:?}"));
    assert!(
        (before..=after).contains(&stamp),
        "MONOTONIC_USEC {stamp} not in [{before}, {after}]"
    );
    let reloaded = manager.next_state(Duration::from_secs(10), &lb);
    assert_eq!(field(&reloaded, "READY"), Some("1"), "{reloaded}");
    let status = field(&reloaded, "STATUS").expect("STATUS= with READY=1");
    assert!(status.starts_with("serving generation 2 "), "{status}");
    assert_eq!(lb.generation(), 2);

    // A reload refused because lb.toml is unusable still ends with READY=1
    // (systemd would otherwise show the unit as reloading until a timeout).
    std::fs::write(lb.config_path(), "[runtime\n").expect("break lb.toml");
    lb.signal("HUP");
    let reloading = manager.next_state(Duration::from_secs(10), &lb);
    assert_eq!(field(&reloading, "RELOADING"), Some("1"), "{reloading}");
    let refused = manager.next_state(Duration::from_secs(10), &lb);
    assert_eq!(field(&refused, "READY"), Some("1"), "{refused}");
    let status = field(&refused, "STATUS").expect("STATUS= with READY=1");
    assert!(status.starts_with("serving generation 2 "), "{status}");

    // SIGTERM: STOPPING=1 when the drain starts, then a clean exit.
    lb.signal("TERM");
    let stopping = manager.next_state(Duration::from_secs(10), &lb);
    assert_eq!(field(&stopping, "STOPPING"), Some("1"), "{stopping}");
    let exit = lb.wait_exit(Duration::from_secs(20));
    assert!(exit.success(), "{exit}");
    let states: Vec<&String> = manager.seen.iter().filter(|m| *m != "WATCHDOG=1").collect();
    assert_eq!(states.len(), 6, "{states:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn notify_on_an_abstract_socket_without_a_watchdog_for_another_pid() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("lb-test-notify-{}", std::process::id());
    let addr = UnixAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
    let mut manager = Manager::new(UnixDatagram::bind_addr(&addr).expect("bind abstract"));
    let socket = format!("@{name}");
    // WATCHDOG_PID names another process: lb must not ping.
    let (mut lb, first) = start(
        "sd-notify-abstract",
        &mut manager,
        &[
            ("NOTIFY_SOCKET", &socket),
            ("WATCHDOG_USEC", "100000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    assert_eq!(field(&first, "READY"), Some("1"), "{first}");
    assert_eq!(admin_get(lb.admin, "/readyz").map(|r| r.status), Some(200));
    // Four would-be intervals with no ping.
    assert_eq!(manager.recv(Duration::from_millis(400)), None);
    lb.signal("TERM");
    let stopping = manager.next_state(Duration::from_secs(10), &lb);
    assert_eq!(field(&stopping, "STOPPING"), Some("1"), "{stopping}");
    assert!(lb.wait_exit(Duration::from_secs(20)).success());
    assert_eq!(manager.watchdogs, 0, "{:?}", manager.seen);
}

/// `systemd-analyze verify` of the shipped unit, with ExecStart pointing at
/// the binary under test (verify checks that the command exists). Any
/// warning about the unit fails the test, not only errors.
#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        println!("systemd-analyze not found: skipping the unit file check");
        return;
    }
    let unit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd/lb.service");
    let text = std::fs::read_to_string(&unit).expect("read systemd/lb.service");
    assert!(
        text.contains("\nExecStart=/usr/local/bin/lb serve "),
        "ExecStart changed; update this test"
    );
    let text = text.replace(
        "\nExecStart=/usr/local/bin/lb ",
        &format!("\nExecStart={} ", crate::support::lb_bin()),
    );
    // Without the drop-in: no capability beyond binding low ports, no
    // packet sockets, no core dumps.
    let setting = |text: &str, key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        setting(&text, "CapabilityBoundingSet"),
        ["CAP_NET_BIND_SERVICE"]
    );
    assert_eq!(
        setting(&text, "AmbientCapabilities"),
        ["CAP_NET_BIND_SERVICE"]
    );
    assert!(!setting(&text, "RestrictAddressFamilies")[0].contains("AF_PACKET"));
    assert_eq!(setting(&text, "LimitCORE"), ["0"]);
    // With it (its [Service] lines added to the unit, as systemd merges a
    // drop-in): what [loadbalancer] interface needs.
    let dropin_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd/lb.service.d/vip-interface.conf");
    let dropin = std::fs::read_to_string(&dropin_path).expect("read the vip-interface drop-in");
    assert_eq!(
        setting(&dropin, "CapabilityBoundingSet"),
        ["CAP_NET_ADMIN CAP_NET_RAW"]
    );
    assert_eq!(setting(&dropin, "RestrictAddressFamilies"), ["AF_PACKET"]);
    let service_lines: String = dropin
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('[') && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let with_dropin = text.replace("\n[Install]", &format!("\n{service_lines}\n[Install]"));
    let dir = scratch_dir("systemd-verify");
    for (name, unit) in [("lb.service", &text), ("lb-vip.service", &with_dropin)] {
        let copy = dir.join(name);
        std::fs::write(&copy, unit).expect("write unit copy");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("run systemd-analyze");
        let mut report = String::from_utf8_lossy(&out.stdout).into_owned();
        report.push_str(&String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "verify of {name} failed:\n{report}");
        assert!(
            !report.contains(name),
            "verify warned about {name}:\n{report}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
