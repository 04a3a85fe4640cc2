//! The pods' network namespace (`--netns`): Pod IPs of a non-loopback range are local
//! only inside it. Processes are started there with `ip netns exec`, and the runner
//! checks ports there from a short-lived thread that joins it (`setns` changes only the
//! calling thread's namespace).

use std::fs::File;
use std::io;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};

/// Where `ip netns` keeps the namespace called `name`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Checks that the namespace `name` exists and can be joined.
pub fn check(name: &str) -> io::Result<()> {
    in_netns(Some(name), || ())
}

/// Runs `f` in the network namespace `name` (on a thread of its own), or right here
/// when `name` is `None`.
pub fn in_netns<T: Send>(name: Option<&str>, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let Some(name) = name else {
        return Ok(f());
    };
    let path = path(name);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(&path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    io::Error::other(format!("joining network namespace {name}: {e}"))
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("network namespace thread panicked")))
    })
}

/// The program and arguments that run `program args` inside the namespace `name`.
pub fn wrap(name: &str, program: &std::path::Path, args: &[String]) -> (PathBuf, Vec<String>) {
    let mut all = vec![
        "netns".to_owned(),
        "exec".to_owned(),
        name.to_owned(),
        program.display().to_string(),
    ];
    all.extend(args.iter().cloned());
    (PathBuf::from("ip"), all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_with_ip_netns_exec() {
        let (program, args) = wrap("lbpods-1", "/bin/lb-echo".as_ref(), &["--listen".into()]);
        assert_eq!(program, PathBuf::from("ip"));
        assert_eq!(
            args,
            ["netns", "exec", "lbpods-1", "/bin/lb-echo", "--listen"]
        );
    }

    #[test]
    fn without_a_namespace_runs_here() {
        assert_eq!(in_netns(None, || 7).unwrap(), 7);
        assert!(in_netns(Some("lb-pod-runner-no-such-netns"), || 7).is_err());
    }
}
