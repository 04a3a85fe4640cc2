//! The `lb.toml` configuration file: typed sections with defaults, strict
//! parsing (an unknown key is an error naming the key and its line), and
//! durations written as `"250ms"`, `"30s"`, `"5m"`, `"1h"`.

mod bounds;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::error::Error as ConfigError;
pub use lb_compile::settings::{Gateway, Ingress, LoadBalancer, format_duration, parse_duration};
use lb_compile::settings::{Settings, duration_serde};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node.
    pub node: Node,
    /// Worker threads and shutdown.
    pub runtime: Runtime,
    /// The admin HTTP API.
    pub admin: Admin,
    /// Ingress class and listeners.
    pub ingress: Ingress,
    /// HTTP limits and timeouts.
    pub http: Http,
    /// HTTP/2 limits and flood defences.
    pub http2: Http2,
    /// Gateway API controller identity.
    pub gateway: Gateway,
    /// Upstream endpoint health: passive outlier detection.
    pub upstream: Upstream,
    /// The optional access log.
    pub access_log: AccessLogConfig,
    /// Addresses for type=LoadBalancer Services and Gateways.
    pub loadbalancer: LoadBalancer,
    /// Where Kubernetes objects come from.
    pub sources: Sources,
}

/// `[node]`: who this appliance is in the cluster's topology. Endpoint
/// selection compares `name` with EndpointSlice `nodeName` (traffic policy
/// `Local`, `PreferSameNode`) and `zone` with `hints.forZones`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Node {
    /// Node name, matched against EndpointSlice `nodeName` (default: the hostname, or `lb`).
    pub name: String,
    /// Zone, matched against topology hints (`hints.forZones`); none: zone hints never match.
    pub zone: Option<String>,
    /// This node's addresses, where NodePort listeners bind (default `["127.0.0.1"]`).
    pub addresses: Vec<IpAddr>,
}

impl Default for Node {
    fn default() -> Self {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "lb".to_owned());
        Self {
            name,
            zone: None,
            addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Runtime {
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// How long SIGTERM waits for in-flight requests.
    #[serde(with = "duration_serde")]
    pub shutdown_grace: Duration,
    /// I/O engine: `auto` (io_uring, else epoll with a logged reason),
    /// `uring` (fail without it) or `epoll`.
    pub io: lb_core::runtime::IoSetting,
    /// Pin each worker to one CPU of the process's allowed set.
    pub pin: bool,
    /// Leave the process dumpable (core dumps, ptrace and /proc access by
    /// the same user). Off by default: memory holds TLS private keys and
    /// the API server token.
    pub dumpable: bool,
    /// Most connections each worker holds at once; 0 derives it from the
    /// descriptor limit (see `lb_core::limits::auto_max_connections`).
    pub max_connections: usize,
    /// Most connections each worker holds at once from one client address; 0: no cap.
    pub max_connections_per_client: usize,
    /// Send deadline of every TCP socket (TCP_USER_TIMEOUT); 0: kernel default.
    #[serde(with = "duration_serde")]
    pub send_timeout: Duration,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            workers: 0,
            shutdown_grace: Duration::from_secs(30),
            io: lb_core::runtime::IoSetting::Auto,
            pin: true,
            dumpable: false,
            max_connections: 0,
            max_connections_per_client: 1024,
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Admin API listen address.
    pub listen: SocketAddr,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// Time allowed for a complete request head.
    #[serde(with = "duration_serde")]
    pub header_read_timeout: Duration,
    /// Idle keep-alive connections are closed after this long.
    #[serde(with = "duration_serde")]
    pub idle_timeout: Duration,
    /// Upstream connect timeout.
    #[serde(with = "duration_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream response head.
    #[serde(with = "duration_serde")]
    pub response_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Most request headers accepted.
    pub max_headers: usize,
    /// Longest request target accepted (414 beyond).
    pub max_uri_bytes: usize,
    /// Largest request body accepted (413 beyond); 0 means no limit.
    pub max_body_bytes: u64,
    /// Time allowed for a request body before `body_min_rate` extends it.
    #[serde(with = "duration_serde")]
    pub body_timeout: Duration,
    /// Bytes per second of request body that extend `body_timeout`; 0: none.
    pub body_min_rate: u64,
    /// An upgraded connection (WebSocket) or TLS passthrough with no bytes either way for this long is closed.
    #[serde(with = "duration_serde")]
    pub tunnel_idle_timeout: Duration,
    /// Mirrored requests each worker keeps in flight; more are dropped.
    pub max_mirrors_in_flight: usize,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            body_timeout: Duration::from_secs(60),
            body_min_rate: 1024,
            tunnel_idle_timeout: Duration::from_secs(3600),
            max_mirrors_in_flight: 256,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            max_header_bytes: 65536,
            max_headers: 100,
            max_uri_bytes: 8192,
            max_body_bytes: 0,
        }
    }
}

/// `[http2]`: HTTP/2 downstream connections (TLS with ALPN `h2`, or
/// cleartext by prior knowledge) and upstream h2c connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http2 {
    /// Streams a client may have open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Largest request header list in bytes (default: `http.max_header_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_list_size: Option<usize>,
    /// Client-reset streams that may wait unaccepted before GOAWAY.
    pub max_pending_accept_reset_streams: usize,
    /// Streams lb may reset for client protocol errors before GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// Client RST_STREAMs per connection and second before GOAWAY (rapid reset).
    pub max_resets_per_second: u32,
    /// Client PING and SETTINGS frames per connection and second before
    /// GOAWAY (control-frame floods).
    pub max_control_frames_per_second: u32,
    /// Initial flow-control window of each stream, in bytes.
    pub stream_window: u32,
    /// Flow-control window of each connection, in bytes.
    pub connection_window: u32,
    /// Once lb sent GOAWAY (idle, drain) and no stream is open, the
    /// connection is closed hard after this long (a client that never
    /// acknowledges the closing PING).
    #[serde(with = "duration_serde")]
    pub goaway_timeout: Duration,
}

impl Default for Http2 {
    fn default() -> Self {
        Self {
            goaway_timeout: Duration::from_secs(5),
            max_concurrent_streams: 100,
            max_header_list_size: None,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            max_resets_per_second: 100,
            max_control_frames_per_second: 100,
            stream_window: 256 * 1024,
            connection_window: 1024 * 1024,
        }
    }
}

impl Http2 {
    fn validate(&self) -> Result<(), String> {
        for (key, n) in [
            (
                "max_concurrent_streams",
                self.max_concurrent_streams as usize,
            ),
            (
                "max_pending_accept_reset_streams",
                self.max_pending_accept_reset_streams,
            ),
            (
                "max_local_error_reset_streams",
                self.max_local_error_reset_streams,
            ),
            ("max_resets_per_second", self.max_resets_per_second as usize),
            (
                "max_control_frames_per_second",
                self.max_control_frames_per_second as usize,
            ),
        ] {
            if n == 0 {
                return Err(format!("http2.{key}: must be at least 1"));
            }
        }
        if self.max_header_list_size.is_some_and(|n| n < 1024) {
            return Err("http2.max_header_list_size: must be at least 1024".into());
        }
        for (key, n) in [
            ("stream_window", self.stream_window),
            ("connection_window", self.connection_window),
        ] {
            if !(65_535..=0x7fff_ffff).contains(&n) {
                return Err(format!("http2.{key}: must be between 65535 and 2147483647"));
            }
        }
        Ok(())
    }
}

/// `[access_log]`: one JSON line per HTTP request, off unless a path is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogConfig {
    /// File to append to (`-` for standard output); none: no access log.
    pub path: Option<PathBuf>,
}

/// `[upstream]`: passive outlier detection of L7 endpoints (per worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Upstream {
    /// Consecutive failures (connect errors, 5xx) that eject an endpoint; 0: never.
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection of an endpoint lasts n times as long.
    #[serde(with = "duration_serde")]
    pub base_ejection: Duration,
    /// Longest ejection.
    #[serde(with = "duration_serde")]
    pub max_ejection: Duration,
    /// Idle keep-alive connections kept per endpoint and worker (HTTP/1.1
    /// upstreams); more are closed when they go idle.
    pub max_idle_per_endpoint: usize,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_idle_per_endpoint: 512,
        }
    }
}

/// `[sources]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sources {
    /// Manifest files or directories; relative paths are relative to the current directory.
    pub files: Vec<PathBuf>,
    /// The Kubernetes API server to list and watch objects from; none by default.
    pub kubernetes: Option<KubernetesSource>,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            files: vec![PathBuf::from("config/manifests")],
            kubernetes: None,
        }
    }
}

/// `[sources] kubernetes = { kubeconfig = "PATH", context = "NAME" }` or
/// `{ in_cluster = true }`: how to reach the API server, what to read of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesSource {
    /// A kubeconfig file (for an edge host outside the cluster).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; its current context when unset.
    pub context: Option<String>,
    /// Use the pod's service account (`KUBERNETES_SERVICE_HOST`, the mounted token and CA).
    pub in_cluster: bool,
    /// Namespaced kinds are listed and watched only in these namespaces
    /// (default: empty, every namespace).
    pub namespaces: Vec<String>,
    /// `kubernetes.io/tls` Secrets are read only in these namespaces (default:
    /// those of `namespaces`; `[]` reads no Secret at all).
    pub secret_namespaces: Option<Vec<String>>,
    /// The leader election Lease, `NAMESPACE/NAME` (default:
    /// `$POD_NAMESPACE/lb-leader`, `lb-system` when `POD_NAMESPACE` is unset).
    pub lease: Option<String>,
    /// The deadline of every API request but watches (default 5 s).
    #[serde(with = "duration_serde")]
    pub request_timeout: Duration,
}

impl Default for KubernetesSource {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            in_cluster: false,
            namespaces: Vec::new(),
            secret_namespaces: None,
            lease: None,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether `name` is a valid namespace name (an RFC 1123 label).
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `name` is a valid object name (an RFC 1123 subdomain).
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

impl KubernetesSource {
    /// The namespaces Secrets are read in; `None` means every namespace.
    pub fn secret_scope(&self) -> Option<&[String]> {
        match &self.secret_namespaces {
            Some(list) => Some(list),
            None if self.namespaces.is_empty() => None,
            None => Some(&self.namespaces),
        }
    }

    /// The leader election Lease as (namespace, name).
    pub fn lease_ref(&self) -> (String, String) {
        if let Some((ns, name)) = self.lease.as_deref().and_then(|l| l.split_once('/')) {
            return (ns.to_owned(), name.to_owned());
        }
        let ns = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "lb-system".to_owned());
        (ns, "lb-leader".to_owned())
    }

    fn validate(&self) -> Result<(), String> {
        for (key, list) in [
            ("namespaces", Some(&self.namespaces)),
            ("secret_namespaces", self.secret_namespaces.as_ref()),
        ] {
            for ns in list.into_iter().flatten() {
                if !is_dns_label(ns) {
                    return Err(format!(
                        "sources.kubernetes.{key}: {ns:?} is not a namespace name (an RFC 1123 label)"
                    ));
                }
            }
        }
        if let Some(lease) = &self.lease {
            let ok = lease
                .split_once('/')
                .is_some_and(|(ns, name)| is_dns_label(ns) && is_dns_subdomain(name));
            if !ok {
                return Err(format!(
                    "sources.kubernetes.lease: {lease:?} is not NAMESPACE/NAME"
                ));
            }
        }
        if self.request_timeout < Duration::from_millis(100)
            || self.request_timeout > Duration::from_secs(60)
        {
            return Err("sources.kubernetes.request_timeout: must be between 100ms and 60s".into());
        }
        match (&self.kubeconfig, self.in_cluster) {
            (Some(_), true) => {
                Err("sources.kubernetes: set either kubeconfig or in_cluster, not both".into())
            }
            (None, false) => {
                Err("sources.kubernetes: set kubeconfig = \"PATH\" or in_cluster = true".into())
            }
            (None, true) if self.context.is_some() => {
                Err("sources.kubernetes: context needs kubeconfig".into())
            }
            _ if self.context.as_deref() == Some("") => {
                Err("sources.kubernetes.context: must not be empty".into())
            }
            _ => Ok(()),
        }
    }
}

impl Config {
    /// What the compile reads of this configuration.
    pub fn settings(&self) -> Settings {
        Settings {
            node: lb_compile::settings::Node {
                name: self.node.name.clone(),
                zone: self.node.zone.clone(),
                addresses: self.node.addresses.clone(),
            },
            ingress: self.ingress.clone(),
            gateway: self.gateway.clone(),
            loadbalancer: self.loadbalancer.clone(),
        }
    }

    /// Reads and parses the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ConfigIo {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::ConfigInvalid {
            path: path.to_owned(),
            message,
        };
        let de = toml::Deserializer::parse(text).map_err(|e| invalid(describe(&e, text)))?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = describe(e.inner(), text);
            if key.is_empty() || key == "." {
                invalid(inner)
            } else {
                invalid(format!("{key}: {inner}"))
            }
        })?;
        cfg.validate().map_err(invalid)?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let m = self.loadbalancer.maglev_table_size;
        if !lb_core::maglev::is_prime(m) || m > lb_core::maglev::MAX_TABLE_SIZE {
            return Err(format!(
                "loadbalancer.maglev_table_size: {m} is not a prime of at most {}",
                lb_core::maglev::MAX_TABLE_SIZE
            ));
        }
        if self.upstream.max_ejection < self.upstream.base_ejection {
            return Err("upstream.max_ejection: must be at least upstream.base_ejection".into());
        }
        if self.loadbalancer.udp_idle_timeout.is_zero() {
            return Err("loadbalancer.udp_idle_timeout: must be more than 0".into());
        }
        if self.loadbalancer.udp_flows == 0 {
            return Err("loadbalancer.udp_flows: must be at least 1".into());
        }
        if self.loadbalancer.udp_flow_sockets == 0 {
            return Err("loadbalancer.udp_flow_sockets: must be at least 1".into());
        }
        if let Some(name) = &self.loadbalancer.interface {
            validate_interface_name(name)?;
        }
        if let Some(k) = &self.sources.kubernetes {
            k.validate()?;
        }
        if self.node.name.is_empty() {
            return Err("node.name: must not be empty".into());
        }
        if self.node.zone.as_deref() == Some("") {
            return Err("node.zone: must not be empty (leave the key out for no zone)".into());
        }
        if let Some(dup) = self
            .node
            .addresses
            .iter()
            .enumerate()
            .find_map(|(i, a)| self.node.addresses[..i].contains(a).then_some(a))
        {
            return Err(format!("node.addresses: {dup} is listed twice"));
        }
        if let Some(d) = &self.ingress.default_certificate
            && d.split_once('/')
                .is_none_or(|(ns, n)| ns.is_empty() || n.is_empty())
        {
            return Err(format!(
                "ingress.default_certificate: {d:?} is not \"namespace/name\" of a Secret"
            ));
        }
        if self.ingress.class.is_empty() {
            return Err("ingress.class: must not be empty".into());
        }
        if self.http.max_header_bytes < 1024 {
            return Err("http.max_header_bytes: must be at least 1024".into());
        }
        if self.http.max_headers == 0 {
            return Err("http.max_headers: must be at least 1".into());
        }
        if self.http.max_uri_bytes == 0 {
            return Err("http.max_uri_bytes: must be at least 1".into());
        }
        for (key, d) in [
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.connect_timeout", self.http.connect_timeout),
            ("http.response_timeout", self.http.response_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{key}: must be more than zero"));
            }
        }
        self.http2.validate()?;
        bounds::validate(self)?;
        Ok(())
    }
}

/// One line for a TOML error: its message and where it is (`line N, column M`).
fn describe(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{message} at line {line}, column {column}")
        }
        None => message,
    }
}

/// An interface name the kernel can hold: 1 to 15 bytes (IFNAMSIZ - 1), no
/// `/`, whitespace or NUL.
fn validate_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(
            "loadbalancer.interface: must not be empty (leave the key out for none)".into(),
        );
    }
    if name.len() > 15 {
        return Err(format!(
            "loadbalancer.interface: {name:?} is longer than 15 bytes (IFNAMSIZ - 1)"
        ));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', '\0'])
        || name.contains(char::is_whitespace)
    {
        return Err(format!(
            "loadbalancer.interface: {name:?} is not a valid interface name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("test/lb.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn loadbalancer_keys_parse_and_the_maglev_size_must_be_prime() {
        let cfg = parse(
            "[loadbalancer]\npools = [\"127.0.10.0/29\"]\nclass = \"x/y\"\ndefault = false\nconnect_timeout = \"2s\"\nidle_timeout = \"1h\"\nmaglev_table_size = 251\n",
        )
        .unwrap();
        assert_eq!(cfg.loadbalancer.class, "x/y");
        assert!(!cfg.loadbalancer.default);
        assert_eq!(cfg.loadbalancer.idle_timeout, Duration::from_secs(3600));
        assert_eq!(cfg.loadbalancer.maglev_table_size, 251);
        let err = parse("[loadbalancer]\nmaglev_table_size = 65536\n").unwrap_err();
        assert!(err.contains("maglev_table_size"), "{err}");
    }

    #[test]
    fn loadbalancer_interface_parses_and_bad_names_are_refused() {
        assert_eq!(parse("").unwrap().loadbalancer.interface, None);
        let cfg = parse("[loadbalancer]\ninterface = \"eth0\"\n").unwrap();
        assert_eq!(cfg.loadbalancer.interface.as_deref(), Some("eth0"));
        let cfg = parse("[loadbalancer]\ninterface = \"abcdefghijklmno\"\n").unwrap();
        assert_eq!(
            cfg.loadbalancer.interface.as_deref(),
            Some("abcdefghijklmno")
        );
        for bad in ["", "abcdefghijklmnop", "a b", "a/b", ".."] {
            let err = parse(&format!("[loadbalancer]\ninterface = {bad:?}\n")).unwrap_err();
            assert!(err.contains("loadbalancer.interface"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn udp_flow_keys_parse_and_zero_is_refused() {
        let cfg = parse(
            "[loadbalancer]\nudp_idle_timeout = \"5s\"\nudp_flows = 100\nendpoint_grace = \"0s\"\n",
        )
        .unwrap();
        assert_eq!(cfg.loadbalancer.udp_idle_timeout, Duration::from_secs(5));
        assert_eq!(cfg.loadbalancer.udp_flows, 100);
        assert_eq!(cfg.loadbalancer.endpoint_grace, Duration::ZERO);
        let err = parse("[loadbalancer]\nudp_flows = 0\n").unwrap_err();
        assert!(err.contains("loadbalancer.udp_flows"), "{err}");
        let err = parse("[loadbalancer]\nudp_idle_timeout = \"0s\"\n").unwrap_err();
        assert!(err.contains("loadbalancer.udp_idle_timeout"), "{err}");
    }

    #[test]
    fn full_example_parses() {
        let cfg = parse(
            r#"
[node]
name = "edge-1"
zone = "zone-a"
addresses = ["127.0.0.1", "::1"]
[runtime]
workers = 0
shutdown_grace = "30s"
[admin]
listen = "127.0.0.1:9901"
[ingress]
class = "lb"
controller = "lb.example.com/ingress-controller"
http = ["127.0.0.1:8080"]
https = ["127.0.0.1:8443"]
[http]
header_read_timeout = "30s"
idle_timeout = "60s"
connect_timeout = "5s"
response_timeout = "60s"
max_header_bytes = 65536
max_headers = 100
max_uri_bytes = 8192
max_body_bytes = 0
[gateway]
controller_name = "lb.example.com/gateway-controller"
[loadbalancer]
pools = ["127.0.0.16/28"]
[sources]
files = ["config/manifests"]
"#,
        )
        .expect("parses");
        assert_eq!(cfg.node.name, "edge-1");
        assert_eq!(cfg.node.zone.as_deref(), Some("zone-a"));
        assert_eq!(
            cfg.node.addresses,
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert_eq!(cfg.runtime.shutdown_grace, Duration::from_secs(30));
        assert_eq!(cfg.ingress.https, vec!["127.0.0.1:8443".parse().unwrap()]);
        assert_eq!(
            cfg.loadbalancer.pools,
            vec!["127.0.0.16/28".parse::<IpNet>().unwrap()]
        );
        assert_eq!(cfg.sources.files, vec![PathBuf::from("config/manifests")]);
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["http"]["idle_timeout"], "1m");
    }

    #[test]
    fn kubernetes_source_parses_and_is_checked() {
        assert_eq!(parse("").unwrap().sources.kubernetes, None);
        let cfg = parse(
            "[sources]\nkubernetes = { kubeconfig = \"/etc/lb/kubeconfig\", context = \"edge\" }\n",
        )
        .unwrap();
        let k = cfg.sources.kubernetes.unwrap();
        assert_eq!(k.kubeconfig, Some(PathBuf::from("/etc/lb/kubeconfig")));
        assert_eq!(k.context.as_deref(), Some("edge"));
        assert!(!k.in_cluster);
        let cfg = parse("[sources]\nkubernetes = { in_cluster = true }\n").unwrap();
        assert!(cfg.sources.kubernetes.unwrap().in_cluster);
        for (bad, needle) in [
            ("kubernetes = {}", "in_cluster = true"),
            (
                "kubernetes = { kubeconfig = \"k\", in_cluster = true }",
                "not both",
            ),
            (
                "kubernetes = { in_cluster = true, context = \"x\" }",
                "context needs kubeconfig",
            ),
            (
                "kubernetes = { kubeconfig = \"k\", contxt = \"x\" }",
                "contxt",
            ),
            (
                "kubernetes = { in_cluster = true, namespaces = [\"Team\"] }",
                "not a namespace name",
            ),
            (
                "kubernetes = { in_cluster = true, secret_namespaces = [\"\"] }",
                "secret_namespaces",
            ),
            (
                "kubernetes = { in_cluster = true, lease = \"lb-leader\" }",
                "NAMESPACE/NAME",
            ),
            (
                "kubernetes = { in_cluster = true, request_timeout = \"5m\" }",
                "request_timeout",
            ),
        ] {
            let e = parse(&format!("[sources]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let k = parse(
            "[sources]\nkubernetes = { in_cluster = true, namespaces = [\"a\", \"b\"], lease = \"edge/lb-east\", request_timeout = \"2s\" }\n",
        )
        .unwrap()
        .sources
        .kubernetes
        .unwrap();
        assert_eq!(
            k.secret_scope(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        assert_eq!(k.lease_ref(), ("edge".to_owned(), "lb-east".to_owned()));
        assert_eq!(k.request_timeout, Duration::from_secs(2));
        let k = parse("[sources]\nkubernetes = { in_cluster = true, secret_namespaces = [] }\n")
            .unwrap()
            .sources
            .kubernetes
            .unwrap();
        assert_eq!(k.secret_scope(), Some(&[][..]));
        let k = parse("[sources]\nkubernetes = { in_cluster = true }\n")
            .unwrap()
            .sources
            .kubernetes
            .unwrap();
        assert_eq!(k.secret_scope(), None);
        assert_eq!(k.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn http_limit_keys_parse_and_are_checked() {
        let cfg = parse("[http]\nmax_uri_bytes = 100\nmax_body_bytes = 1048576\n").unwrap();
        assert_eq!(cfg.http.max_uri_bytes, 100);
        assert_eq!(cfg.http.max_body_bytes, 1_048_576);
        let defaults = Http::default();
        assert_eq!((defaults.max_uri_bytes, defaults.max_body_bytes), (8192, 0));
        let err = parse("[http]\nmax_uri_bytes = 0\n").unwrap_err();
        assert!(err.contains("http.max_uri_bytes"), "{err}");
        let err = parse("[http]\nmax_body_bytes = -1\n").unwrap_err();
        assert!(err.contains("http.max_body_bytes"), "{err}");
    }

    #[test]
    fn http2_keys_parse_and_are_checked() {
        let cfg = parse(
            "[http2]\nmax_concurrent_streams = 10\nmax_header_list_size = 4096\nmax_resets_per_second = 5\nmax_control_frames_per_second = 7\nstream_window = 65535\n",
        )
        .unwrap();
        assert_eq!(cfg.http2.max_control_frames_per_second, 7);
        assert_eq!(Http2::default().max_control_frames_per_second, 100);
        assert_eq!(cfg.http2.max_concurrent_streams, 10);
        assert_eq!(cfg.http2.max_header_list_size, Some(4096));
        assert_eq!(cfg.http2.max_resets_per_second, 5);
        assert_eq!(cfg.http2.stream_window, 65535);
        assert_eq!(Http2::default().max_concurrent_streams, 100);
        for bad in [
            "max_concurrent_streams = 0",
            "max_header_list_size = 100",
            "max_resets_per_second = 0",
            "max_control_frames_per_second = 0",
            "stream_window = 100",
            "connection_window = 2147483648",
        ] {
            let key = bad.split(' ').next().unwrap();
            let err = parse(&format!("[http2]\n{bad}\n")).unwrap_err();
            assert!(err.contains(&format!("http2.{key}")), "{err}");
        }
        let err = parse("[http2]\nmax_streams = 1\n").unwrap_err();
        assert!(err.contains("max_streams"), "{err}");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let cfg = parse("").expect("parses");
        assert_eq!(cfg.ingress.class, "lb");
        assert_eq!(cfg.admin.listen, "127.0.0.1:9901".parse().unwrap());
        assert_eq!(cfg.http.max_headers, 100);
        assert!(!cfg.node.name.is_empty());
        assert_eq!(cfg.node.zone, None);
        assert_eq!(cfg.node.addresses, vec![IpAddr::from([127, 0, 0, 1])]);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[admin]\nlisten = \"127.0.0.1:1\"\n\n[ingress]\nclass = \"lb\"\nhttp_listen = [\"x\"]\n")
            .unwrap_err();
        assert!(err.contains("http_listen"), "{err}");
        assert!(err.contains("line 6"), "{err}");
        assert!(err.contains("test/lb.toml"), "{err}");
        assert!(
            !err.contains('\n') && !err.contains('|'),
            "one clean line: {err}"
        );
        let err = parse("[nodes]\nname = \"x\"\n").unwrap_err();
        assert!(err.contains("nodes") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = parse("[runtime]\n\nshutdown_grace = \"30 parsecs\"\n").unwrap_err();
        assert!(err.contains("runtime.shutdown_grace"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let err = parse("[admin]\nlisten = \"nope\"\n").unwrap_err();
        assert!(
            err.contains("admin.listen") && err.contains("line 2"),
            "{err}"
        );
        let err = parse("[loadbalancer]\npools = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(err.contains("loadbalancer.pools"), "{err}");
        let err = parse("[http]\nmax_headers = 0\n").unwrap_err();
        assert!(err.contains("http.max_headers"), "{err}");
        let err = parse("[node]\nname = \"\"\n").unwrap_err();
        assert!(err.contains("node.name"), "{err}");
        let err = parse("[node]\nzone = \"\"\n").unwrap_err();
        assert!(err.contains("node.zone"), "{err}");
        let err = parse("[node]\naddresses = [\"127.0.0.1\", \"127.0.0.1\"]\n").unwrap_err();
        assert!(err.contains("node.addresses"), "{err}");
        let err = parse("[node]\n\naddresses = [\"localhost\"]\n").unwrap_err();
        assert!(
            err.contains("node.addresses") && err.contains("line 3"),
            "{err}"
        );
        let err = parse("[node]\nregion = \"r\"\n").unwrap_err();
        assert!(err.contains("region") && err.contains("line 2"), "{err}");
        let err = parse("not toml [").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn io_error_is_distinct() {
        let err = Config::load(Path::new("/nonexistent/lb.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::ConfigIo { .. }), "{err}");
    }

    #[test]
    fn durations() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            ("0", Duration::ZERO),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        for bad in ["", "30", "s", "1d", "-1s", "1.5s", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for d in [250, 30_000, 300_000, 3_600_000, 90_000] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
