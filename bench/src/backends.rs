//! The backends behind the proxies: nginx answering from memory and static
//! files (the default, for throughput), or the bench echo backend (where the
//! identity of the answering backend matters). Both serve `/fixed`,
//! `/bytes/1024` and `/bytes/65536` on [`ports::BACKEND`].

use std::fmt::Write as _;
use std::path::Path;

use crate::harness::Proc;
use crate::proxies::{other_cores, ports, start_echo, write};

/// Which backend a scenario runs behind the proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// nginx with `return 200` and static files: cheap, so the proxy is the bottleneck.
    #[default]
    Nginx,
    /// The bench echo backend (`lb-echo`), which says who answered.
    Echo,
}

impl Backend {
    /// Parses `nginx` or `echo`.
    pub fn parse(s: &str) -> Result<Backend, String> {
        match s {
            "nginx" => Ok(Backend::Nginx),
            "echo" => Ok(Backend::Echo),
            other => Err(format!("unknown backend {other}; available: nginx, echo")),
        }
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nginx => "nginx return 200",
            Backend::Echo => "lb-echo",
        }
    }

    /// Starts this backend on the other cores, with its files under `dir`.
    pub fn start(self, dir: &Path) -> Result<Proc, String> {
        match self {
            Backend::Nginx => start_nginx_backend(dir),
            Backend::Echo => start_echo(),
        }
    }
}

/// Response sizes served from static files under `/bytes/`.
pub const STATIC_SIZES: [usize; 2] = [1024, 65536];

/// The backend nginx's configuration: one worker in a single process, room
/// for more than 10,000 connections, `/fixed` answered from memory and
/// `/bytes/N` from files under `dir/www`. Pid, logs and temp files stay in `dir`.
pub fn nginx_backend_config(dir: &Path) -> String {
    let d = dir.display();
    let mut temp = String::new();
    for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(temp, "  {t}_temp_path {d}/{t};");
    }
    format!(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\nworker_rlimit_nofile 19000;\npid {d}/nginx.pid;\nerror_log {d}/nginx.err;\nevents {{ worker_connections 16000; }}\nhttp {{\n  access_log off;\n{temp}  default_type application/octet-stream;\n  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n  server {{\n    listen 127.0.0.1:{b} backlog=4096;\n    location = /fixed {{ return 200 \"ok\"; }}\n    location /bytes/ {{ root {d}/www; }}\n  }}\n}}\n",
        b = ports::BACKEND
    )
}

/// Writes the backend nginx's config and static files into `dir/backend`
/// and starts it on the other cores.
pub fn start_nginx_backend(dir: &Path) -> Result<Proc, String> {
    let d = dir.join("backend");
    let www = d.join("www").join("bytes");
    std::fs::create_dir_all(&www).map_err(|e| format!("{}: {e}", www.display()))?;
    for n in STATIC_SIZES {
        let body: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
        let path = www.join(n.to_string());
        std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let cfg = d.join("nginx.conf");
    write(&cfg, &nginx_backend_config(&d))?;
    let args = vec![
        "-p".into(),
        d.display().to_string(),
        "-e".into(),
        d.join("nginx.err").display().to_string(),
        "-c".into(),
        cfg.display().to_string(),
    ];
    Proc::start(
        "nginx backend",
        &other_cores(),
        Path::new("/usr/sbin/nginx"),
        &args,
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_parse() {
        assert_eq!(Backend::parse("echo"), Ok(Backend::Echo));
        assert_eq!(Backend::parse("nginx"), Ok(Backend::Nginx));
        assert!(Backend::parse("apache").is_err());
        assert_eq!(Backend::default(), Backend::Nginx);
    }

    #[test]
    fn nginx_backend_keeps_its_files_in_the_scratch_dir() {
        let c = nginx_backend_config(Path::new("/s"));
        assert!(c.contains("pid /s/nginx.pid;"));
        assert!(c.contains("proxy_temp_path /s/proxy;"));
        assert!(c.contains("location = /fixed { return 200 \"ok\"; }"));
        assert!(c.contains("root /s/www;"));
    }
}
