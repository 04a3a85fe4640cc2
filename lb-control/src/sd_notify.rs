//! The systemd notification protocol (`sd_notify(3)`) without libsystemd.
//!
//! When systemd starts lb with `Type=notify`, it sets `NOTIFY_SOCKET` to a
//! Unix datagram socket: a path (`/run/systemd/notify`) or an abstract name
//! (`@...`). lb sends newline-separated `KEY=VALUE` assignments there:
//!
//! - `READY=1` once the first snapshot is published and every listener is
//!   bound (the moment `/readyz` turns 200), with a `STATUS=` line;
//! - `RELOADING=1` and `MONOTONIC_USEC=` (`CLOCK_MONOTONIC` in µs) when a
//!   SIGHUP reload starts, `READY=1` when it is done, whatever its outcome;
//! - `STOPPING=1` when the drain starts;
//! - `WATCHDOG=1` every `WATCHDOG_USEC / 2` when systemd set `WATCHDOG_USEC`
//!   (`WatchdogSec=`) for this process (`WATCHDOG_PID`, when set, is our pid).
//!
//! Without `NOTIFY_SOCKET` every call is a no-op. A failed send is logged at
//! debug level and otherwise ignored: notification never stops serving.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

/// Longest a send may block on a full notification socket queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends notifications to the service manager; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<Target>>,
    watchdog: Option<Duration>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// A notifier configured from `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
    /// `WATCHDOG_PID`; inert when `NOTIFY_SOCKET` is unset or unusable.
    pub fn from_env() -> Notifier {
        let var = |name| std::env::var(name).ok();
        Self::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// [`Notifier::from_env`] with the variables' values given.
    fn from_vars(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Notifier {
        let Some(socket) = socket.filter(|s| !s.is_empty()) else {
            return Notifier::default();
        };
        let target = match connect(socket) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={socket} unusable, not notifying systemd: {e}");
                return Notifier::default();
            }
        };
        let watchdog = watchdog_interval(watchdog_usec, watchdog_pid, pid);
        tracing::debug!(socket, ?watchdog, "notifying systemd");
        Notifier {
            target: Some(Arc::new(target)),
            watchdog,
        }
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often [`Notifier::watchdog`] must be called: half of
    /// `WATCHDOG_USEC`; `None` when systemd set no watchdog for us.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1` with `MONOTONIC_USEC`, before a reload.
    pub fn reloading(&self) {
        let mut msg = String::from("RELOADING=1\nSTATUS=reloading");
        if let Some(usec) = monotonic_usec() {
            msg.push_str(&format!("\nMONOTONIC_USEC={usec}"));
        }
        self.send(&msg);
    }

    /// `STOPPING=1`, when the drain starts.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining");
    }

    /// `STATUS=` alone.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: the control thread is alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Spawns a task on the current tokio runtime that sends `WATCHDOG=1`
    /// every [`Notifier::watchdog_interval`] while `healthy()` holds;
    /// nothing when there is no watchdog. The task runs on the control
    /// thread's runtime, so a stuck control loop stops the pings, and
    /// `healthy` (every worker made progress lately) stops them for a stuck
    /// worker: either way systemd restarts lb.
    pub fn spawn_watchdog(&self, healthy: impl Fn() -> bool + Send + 'static) {
        let Some(every) = self.watchdog.filter(|_| self.is_enabled()) else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if healthy() {
                    this.watchdog();
                }
            }
        });
    }

    fn send(&self, msg: &str) {
        if let Some(t) = &self.target
            && let Err(e) = t.socket.send_to_addr(msg.as_bytes(), &t.addr)
        {
            tracing::debug!("sd_notify {msg:?} failed: {e}");
        }
    }
}

/// An unbound datagram socket and the address `NOTIFY_SOCKET` names.
fn connect(socket: &str) -> std::io::Result<Target> {
    let addr = if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())?
    } else if socket.starts_with('/') {
        SocketAddr::from_pathname(socket)?
    } else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract @name",
        ));
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    Ok(Target { socket, addr })
}

/// Half of `WATCHDOG_USEC`, if it is set, valid, and meant for `pid`.
fn watchdog_interval(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    let usec: u64 = match usec?.trim().parse() {
        Ok(0) | Err(_) => {
            tracing::warn!("WATCHDOG_USEC is not a positive integer; no watchdog pings");
            return None;
        }
        Ok(n) => n,
    };
    if let Some(p) = for_pid
        && p.trim().parse::<u32>().ok() != Some(pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares
/// `MONOTONIC_USEC` against.
pub fn monotonic_usec() -> Option<u64> {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(ts.tv_sec()).ok()?;
    let micros = u64::try_from(ts.tv_nsec()).ok()? / 1_000;
    Some(secs * 1_000_000 + micros)
}

/// A status line cannot contain a newline: it would end the assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_socket_is_inert() {
        let n = Notifier::from_vars(None, Some("1000000"), None, 1);
        assert!(!n.is_enabled());
        n.ready("x");
        let n = Notifier::from_vars(Some(""), None, None, 1);
        assert!(!n.is_enabled());
        let n = Notifier::from_vars(Some("relative/path"), None, None, 1);
        assert!(!n.is_enabled());
    }

    #[test]
    fn watchdog_interval_is_half_and_checks_pid() {
        let half = Some(Duration::from_millis(500));
        assert_eq!(watchdog_interval(Some("1000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("1000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("1000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("lb-sd-notify-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let n = Notifier::from_vars(path.to_str(), Some("2000000"), None, 1);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(1)));
        n.ready("serving\ngeneration 1");
        n.reloading();
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).expect("ready");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving generation 1");
        let len = rx.recv(&mut buf).expect("reloading");
        let text = std::str::from_utf8(&buf[..len]).expect("utf-8");
        let now = monotonic_usec().expect("clock");
        let sent: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse().ok())
            .expect("MONOTONIC_USEC");
        assert!(text.starts_with("RELOADING=1\n"), "{text}");
        assert!(sent <= now && now - sent < 5_000_000, "{sent} vs {now}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
