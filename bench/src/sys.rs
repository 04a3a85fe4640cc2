//! Process facts from /proc (resident memory, children, liveness) and the
//! open-file limit, read and changed without unsafe code: limits are raised
//! with the `prlimit` command, signals are sent with `kill`.

use std::process::Command;
use std::time::{Duration, Instant};

/// Current resident set size of `pid` in KiB (VmRSS: user memory only, socket
/// buffers and other kernel memory are not in it).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_field(&stat, 0) != Some("Z"),
        Err(_) => false,
    }
}

/// Field `i` after the parenthesised command name of a /proc stat line
/// (0 = state, 1 = ppid).
fn stat_field(stat: &str, i: usize) -> Option<&str> {
    stat.get(stat.rfind(')')? + 2..)?.split_whitespace().nth(i)
}

/// Every live descendant of `pid` (children, grandchildren, ...).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            if stat_field(&stat, 0) == Some("Z") {
                continue;
            }
            if let Some(pp) = stat_field(&stat, 1).and_then(|v| v.parse::<u32>().ok()) {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// Sends `signal` (a `kill -s` name such as `HUP`) to `pid`.
pub fn signal(pid: u32, signal: &str) -> Result<(), String> {
    let ok = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(format!("kill -s {signal} {pid} failed"))
    }
}

/// Waits up to `limit` for every pid in `pids` to exit; SIGKILLs and returns
/// those still alive after it.
pub fn reap_all(pids: &[u32], limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    for &p in &left {
        let _ = signal(p, "KILL");
    }
    left
}

/// The soft and hard RLIMIT_NOFILE of this process.
pub fn nofile_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_nofile(&limits)
}

/// The soft RLIMIT_NOFILE of process `pid` (what it may open).
pub fn nofile_of(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    parse_nofile(&limits).map(|l| l.0)
}

fn parse_nofile(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse::<u64>().ok());
    Some((nums.next()??, nums.next()??))
}

/// Raises this process's soft open-file limit to its hard limit (with the
/// `prlimit` command) so children started afterwards inherit it; returns the
/// soft limit in force afterwards.
pub fn raise_nofile() -> Result<u64, String> {
    let (soft, hard) = nofile_limits().ok_or("cannot read /proc/self/limits")?;
    if soft < hard {
        let status = Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={hard}:{hard}"))
            .status()
            .map_err(|e| format!("prlimit: {e}"))?;
        if !status.success() {
            return Err(format!("prlimit --nofile={hard}:{hard} failed"));
        }
    }
    Ok(nofile_limits().map_or(soft, |l| l.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_limits() {
        let status = "Name:\tlb\nVmHWM:\t   20480 kB\nVmRSS:\t   18432 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(18432));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 20000                files     \n";
        assert_eq!(parse_nofile(limits), Some((1024, 20000)));
        assert_eq!(
            parse_nofile("Max open files unlimited unlimited files\n"),
            None
        );
    }

    #[test]
    fn stat_fields_skip_the_command_name() {
        let stat = "42 (a (weird) name) S 7 42 42 0";
        assert_eq!(stat_field(stat, 0), Some("S"));
        assert_eq!(stat_field(stat, 1), Some("7"));
    }

    #[test]
    fn own_process_is_alive_and_has_rss() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(vm_rss_kib(me).unwrap_or(0) > 0);
        assert!(nofile_limits().is_some());
        assert_eq!(nofile_of(me), nofile_limits().map(|l| l.0));
    }
}
