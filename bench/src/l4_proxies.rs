//! The proxies of the `l4` scenario as plain TCP relays: lb serving a
//! `type: LoadBalancer` Service on its VIP, HAProxy in `mode tcp` and nginx's
//! `stream {}` module, each with two listeners (HTTP traffic to the usual
//! backend, bulk traffic to an `iperf3 -s` server), and that iperf3 server.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::Proc;
use crate::proxies::{other_cores, ports as http_ports, sibling, write};

/// Fixed loopback ports of the `l4` scenario (clear of [`crate::proxies::ports`]).
pub mod ports {
    /// lb's Service port `web` on its VIP, relayed to the HTTP backend.
    pub const LB_WEB: u16 = 19505;
    /// lb's Service port `iperf` on its VIP, relayed to [`IPERF`].
    pub const LB_IPERF: u16 = 19506;
    /// The `iperf3 -s` backend.
    pub const IPERF: u16 = 19507;
    /// The admin listener of the io_uring lb.
    pub const LB_ADMIN: u16 = 19508;
    /// The admin listener of the epoll lb.
    pub const LB_EPOLL_ADMIN: u16 = 19509;
    /// HAProxy's frontend for HTTP traffic.
    pub const HAPROXY_WEB: u16 = 19510;
    /// HAProxy's frontend for iperf3.
    pub const HAPROXY_IPERF: u16 = 19511;
    /// nginx's stream server for HTTP traffic.
    pub const NGINX_WEB: u16 = 19512;
    /// nginx's stream server for iperf3.
    pub const NGINX_IPERF: u16 = 19513;
}

/// lb's I/O engine, `[runtime] io` in lb.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// The default (io_uring, with epoll as fallback): `io` is left out.
    Default,
    /// `io = "epoll"`.
    Epoll,
}

/// The manifests of lb's L4 Service `tcp` on `vip`: port `web`
/// ([`ports::LB_WEB`]) to the HTTP backend and port `iperf`
/// ([`ports::LB_IPERF`]) to the iperf3 server, one ready endpoint each.
pub fn l4_manifests(vip: Ipv4Addr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: tcp, namespace: default}}\nspec:\n  type: LoadBalancer\n  loadBalancerIP: {vip}\n  ports: [{{name: web, port: {lw}, protocol: TCP}}, {{name: iperf, port: {li}, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: tcp-1, namespace: default, labels: {{kubernetes.io/service-name: tcp}}}}\naddressType: IPv4\nports: [{{name: web, port: {bw}, protocol: TCP}}, {{name: iperf, port: {bi}, protocol: TCP}}]\nendpoints: [{{addresses: [\"127.0.0.1\"], conditions: {{ready: true}}}}]\n",
        lw = ports::LB_WEB,
        li = ports::LB_IPERF,
        bw = http_ports::BACKEND,
        bi = ports::IPERF,
    )
}

/// lb's config text: one worker, no HTTP listeners, admin on `admin`,
/// manifests from `manifests`, and `io` when not the default.
pub fn lb_l4_config_text(manifests: &Path, admin: u16, io: Io) -> String {
    let io = match io {
        Io::Default => "",
        Io::Epoll => "io = \"epoll\"\n",
    };
    format!(
        "[runtime]\nworkers = 1\n{io}[admin]\nlisten = \"127.0.0.1:{admin}\"\n[ingress]\nhttp = []\nhttps = []\n[loadbalancer]\npools = [\"127.0.0.0/8\"]\n[sources]\nfiles = [\"{}\"]\n",
        manifests.display()
    )
}

/// Writes lb's L4 config and manifests into `dir` and starts lb on core 0,
/// its output appended to `dir/lb.log`.
pub fn start_lb_l4(dir: &Path, vip: Ipv4Addr, admin: u16, io: Io) -> Result<Proc, String> {
    let m = dir.join("manifests");
    std::fs::create_dir_all(&m).map_err(|e| format!("{}: {e}", m.display()))?;
    write(&m.join("tcp.yaml"), &l4_manifests(vip))?;
    let cfg = dir.join("lb.toml");
    write(&cfg, &lb_l4_config_text(&m, admin, io))?;
    let args = vec!["serve".into(), "--config".into(), cfg.display().to_string()];
    let name = match io {
        Io::Default => "lb",
        Io::Epoll => "lb (epoll)",
    };
    Proc::start_logged(name, "0", &sibling("lb")?, &args, &dir.join("lb.log"))
        .map_err(|e| format!("{name}: {e}"))
}

/// HAProxy's config text: one thread, `mode tcp`, two frontends, with
/// `option splice-auto` (HAProxy's own zero-copy relay).
pub fn haproxy_tcp_config_text() -> String {
    let mut c = String::from(
        "global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode tcp\n  maxconn 4000\n  option splice-auto\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n",
    );
    for (name, front, back) in [
        ("web", ports::HAPROXY_WEB, http_ports::BACKEND),
        ("iperf", ports::HAPROXY_IPERF, ports::IPERF),
    ] {
        let _ = write!(
            c,
            "frontend {name}\n  bind 127.0.0.1:{front}\n  default_backend {name}\nbackend {name}\n  server s1 127.0.0.1:{back}\n"
        );
    }
    c
}

/// Writes HAProxy's TCP config into `dir` and starts it on core 0, its
/// output appended to `dir/haproxy.log`.
pub fn start_haproxy_tcp(dir: &Path) -> Result<Proc, String> {
    let cfg = dir.join("haproxy.cfg");
    write(&cfg, &haproxy_tcp_config_text())?;
    let args = vec!["-db".into(), "-f".into(), cfg.display().to_string()];
    Proc::start_logged(
        "haproxy",
        "0",
        Path::new("/usr/sbin/haproxy"),
        &args,
        &dir.join("haproxy.log"),
    )
    .map_err(|e| format!("haproxy: {e}"))
}

/// Where nginx's dynamic stream module is installed (Debian's
/// libnginx-mod-stream, or the RPM layouts); `None` when nginx has it built in
/// or it is missing.
pub fn nginx_stream_module() -> Option<PathBuf> {
    [
        "/usr/lib/nginx/modules/ngx_stream_module.so",
        "/usr/share/nginx/modules/ngx_stream_module.so",
        "/usr/lib64/nginx/modules/ngx_stream_module.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// nginx's config text: one worker, no master, a `stream {}` server per
/// listener; pid and logs in `dir`, the stream module loaded from `module`.
pub fn nginx_stream_config_text(dir: &Path, module: Option<&Path>) -> String {
    let load = module
        .map(|m| format!("load_module {};\n", m.display()))
        .unwrap_or_default();
    format!(
        "{load}worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx.err;\nevents {{ worker_connections 4096; }}\nstream {{\n  server {{ listen 127.0.0.1:{nw}; proxy_pass 127.0.0.1:{bw}; }}\n  server {{ listen 127.0.0.1:{ni}; proxy_pass 127.0.0.1:{bi}; }}\n}}\n",
        d = dir.display(),
        nw = ports::NGINX_WEB,
        bw = http_ports::BACKEND,
        ni = ports::NGINX_IPERF,
        bi = ports::IPERF,
    )
}

/// Writes nginx's stream config into `dir` and starts it on core 0; its
/// error log is `dir/nginx.err`.
pub fn start_nginx_stream(dir: &Path) -> Result<Proc, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cfg = dir.join("nginx.conf");
    write(
        &cfg,
        &nginx_stream_config_text(dir, nginx_stream_module().as_deref()),
    )?;
    let err = dir.join("nginx.err");
    let args = vec![
        "-p".into(),
        dir.display().to_string(),
        "-e".into(),
        err.display().to_string(),
        "-c".into(),
        cfg.display().to_string(),
    ];
    Proc::start_logged("nginx", "0", Path::new("/usr/sbin/nginx"), &args, &err)
        .map_err(|e| format!("nginx: {e}"))
}

/// Starts `iperf3 -s` on [`ports::IPERF`] on the other cores.
pub fn start_iperf_server(dir: &Path) -> Result<Proc, String> {
    let args = vec![
        "-s".into(),
        "-B".into(),
        "127.0.0.1".into(),
        "-p".into(),
        ports::IPERF.to_string(),
        // Back to listening if a client vanishes mid-test.
        "--idle-timeout".into(),
        "30".into(),
    ];
    Proc::start_logged(
        "iperf3 -s",
        &other_cores(),
        Path::new("iperf3"),
        &args,
        &dir.join("iperf3.log"),
    )
    .map_err(|e| format!("iperf3 -s: {e}"))
}

/// An error when something already accepts connections on `addr` (another
/// benchmark still running would be measured instead of ours).
pub fn ensure_free(addr: SocketAddr) -> Result<(), String> {
    match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        Ok(_) => Err(format!(
            "{addr} is already in use (another benchmark running?)"
        )),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_name_both_ports_on_the_vip() {
        let m = l4_manifests(Ipv4Addr::new(127, 0, 0, 2));
        assert!(m.contains("loadBalancerIP: 127.0.0.2"), "{m}");
        assert!(m.contains("{name: web, port: 19505, protocol: TCP}"), "{m}");
        assert!(
            m.contains("{name: iperf, port: 19507, protocol: TCP}"),
            "{m}"
        );
        assert_eq!(m.matches("\n---\n").count(), 1);
    }

    #[test]
    fn lb_config_sets_io_only_for_epoll() {
        let m = Path::new("/s/m");
        let d = lb_l4_config_text(m, 19508, Io::Default);
        assert!(!d.contains("io ="), "{d}");
        assert!(d.contains("http = []\nhttps = []\n"), "{d}");
        assert!(d.contains("files = [\"/s/m\"]"), "{d}");
        let e = lb_l4_config_text(m, 19509, Io::Epoll);
        assert!(e.contains("workers = 1\nio = \"epoll\"\n[admin]"), "{e}");
        assert!(e.contains("127.0.0.1:19509"), "{e}");
    }

    #[test]
    fn haproxy_and_nginx_relay_tcp() {
        let h = haproxy_tcp_config_text();
        assert!(h.contains("mode tcp") && h.contains("nbthread 1"), "{h}");
        assert!(
            h.contains("bind 127.0.0.1:19511\n  default_backend iperf"),
            "{h}"
        );
        assert!(h.contains("server s1 127.0.0.1:19500"), "{h}");
        let n = nginx_stream_config_text(Path::new("/s"), Some(Path::new("/m/stream.so")));
        assert!(
            n.starts_with("load_module /m/stream.so;\nworker_processes 1;"),
            "{n}"
        );
        assert!(
            n.contains("listen 127.0.0.1:19512; proxy_pass 127.0.0.1:19500;"),
            "{n}"
        );
        assert!(!nginx_stream_config_text(Path::new("/s"), None).contains("load_module"));
    }
}
