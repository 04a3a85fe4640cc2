//! Child processes: started in the runner's process group with their output appended to
//! a log file, signalled by pid, reaped by polling.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::plan::ProcSpec;

/// A running (or exited, not yet noticed) child process. Dropping it kills and reaps it
/// if it still runs.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `spec` (inside the network namespace `netns`, if given), appending its
    /// stdout and stderr to `log`.
    pub fn spawn(spec: &ProcSpec, netns: Option<&str>, log: &Path) -> io::Result<Proc> {
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let (program, args) = match netns {
            // `ip netns exec` execs the program: the pid stays the program's.
            Some(name) => super::netns::wrap(name, &spec.program, &spec.args),
            None => (spec.program.clone(), spec.args.clone()),
        };
        let child = Command::new(program)
            .args(args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        Ok(Proc {
            child,
            exited: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status once the process has exited (reaping it), `None` while it runs.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => self.exited = Some(status),
                Ok(None) => {}
                // Not our child any more (cannot happen short of a bug): call it gone.
                Err(_) => self.exited = Some(ExitStatus::default()),
            }
        }
        self.exited
    }

    /// Sends `signal` unless the process is known to have exited (and been reaped, so
    /// its pid may have been reused).
    pub fn signal(&mut self, signal: Signal) {
        if self.poll().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// SIGKILLs the process (if it still runs) and waits for it to be gone.
    pub async fn kill(&mut self) -> ExitStatus {
        self.signal(Signal::SIGKILL);
        for _ in 0..500 {
            if let Some(status) = self.poll() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Still not gone after 5 s (stuck in the kernel): block until it is.
        let status = self.child.wait().unwrap_or_default();
        self.exited = Some(status);
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.poll().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A short description of how a process ended, for the log.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(s) => format!("signal {s}"),
            Err(_) => format!("signal {signal}"),
        },
        _ => "unknown status".to_owned(),
    }
}

/// Exit code and signal as a container's terminated state reports them (a signal `n` is
/// exit code `128 + n`, as shells and container runtimes report it).
pub fn exit_code(status: ExitStatus) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(signal)) => (128 + signal, Some(signal)),
        _ => (1, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str, args: &[&str]) -> ProcSpec {
        ProcSpec {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("LB_TEST_VALUE".into(), "v42".into())],
            port: 0,
        }
    }

    async fn wait_exit(p: &mut Proc) -> ExitStatus {
        for _ in 0..1000 {
            if let Some(status) = p.poll() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("process {} did not exit", p.pid());
    }

    #[tokio::test]
    async fn spawn_log_signal_and_kill() {
        let dir = std::env::temp_dir().join(format!("lb-pod-runner-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("c.log");
        let _ = std::fs::remove_file(&log);

        let mut p = Proc::spawn(
            &spec("/bin/sh", &["-c", "echo out $LB_TEST_VALUE; echo err >&2"]),
            None,
            &log,
        )
        .unwrap();
        assert_eq!(exit_code(wait_exit(&mut p).await), (0, None));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("out v42") && text.contains("err"), "{text}");

        let mut p = Proc::spawn(&spec("/bin/sleep", &["30"]), None, &log).unwrap();
        assert!(p.poll().is_none());
        p.signal(Signal::SIGTERM);
        let status = wait_exit(&mut p).await;
        assert_eq!(exit_code(status), (128 + 15, Some(15)));
        assert_eq!(describe(status), "signal SIGTERM");

        let mut p = Proc::spawn(&spec("/bin/sleep", &["30"]), None, &log).unwrap();
        let status = p.kill().await;
        assert_eq!(exit_code(status), (137, Some(9)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
