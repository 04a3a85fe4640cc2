//! What to run for a pod: per container, its TCP ports, the program and the readiness
//! check. Pure functions of the pod spec and the command line.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::args::ImageBin;

/// What a container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// The echo server, one process per TCP port.
    Echo,
    /// This binary, one process for the container.
    Bin(PathBuf),
    /// Nothing (a container without TCP ports); it is ready at once.
    Nothing,
}

/// How readiness is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A TCP connect to the port.
    Tcp(u16),
    /// An HTTP GET of `path` on the port; 200..=399 is success.
    Http {
        /// The port.
        port: u16,
        /// The request target.
        path: String,
    },
}

/// A container's readiness check and its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Checks that must all succeed.
    pub checks: Vec<Check>,
    /// Before the first check.
    pub initial_delay: Duration,
    /// Between checks once the container is ready.
    pub period: Duration,
    /// Per check.
    pub timeout: Duration,
    /// Consecutive failures that make a ready container unready.
    pub failure_threshold: u32,
}

/// One container of a pod, as the runner runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    /// Container name.
    pub name: String,
    /// Its image (only used to choose the program and in the status).
    pub image: String,
    /// Its TCP container ports, in spec order, without duplicates.
    pub tcp_ports: Vec<u16>,
    /// What it runs.
    pub run: Run,
    /// How readiness is checked (empty checks for [`Run::Nothing`]).
    pub readiness: Readiness,
    /// Environment variables with literal values from the spec.
    pub env: Vec<(String, String)>,
}

/// A plan for every container of `pod`, plus notes on what was skipped (UDP ports,
/// probes the runner cannot honour) to log.
pub fn plan_pod(pod: &Pod, image_bins: &[ImageBin]) -> (Vec<ContainerPlan>, Vec<String>) {
    let mut notes = Vec::new();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let plans = containers
        .iter()
        .map(|c| plan_container(c, image_bins, &mut notes))
        .collect();
    (plans, notes)
}

/// The program to run for `image`: the first `--image-bin` whose substring it contains.
pub fn image_bin<'a>(image: &str, image_bins: &'a [ImageBin]) -> Option<&'a Path> {
    image_bins
        .iter()
        .find(|b| image.contains(&b.substring))
        .map(|b| b.path.as_path())
}

/// The TCP container ports of `container` (skipped ones noted).
pub fn tcp_ports(container: &Container, notes: &mut Vec<String>) -> Vec<u16> {
    let mut ports = Vec::new();
    for port in container.ports.iter().flatten() {
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        let Ok(number) = u16::try_from(port.container_port) else {
            notes.push(format!(
                "container {}: port {} out of range, skipped",
                container.name, port.container_port
            ));
            continue;
        };
        if number == 0 {
            continue;
        }
        if protocol != "TCP" {
            notes.push(format!(
                "container {}: {protocol} port {number} not run (TCP only)",
                container.name
            ));
            continue;
        }
        if !ports.contains(&number) {
            ports.push(number);
        }
    }
    ports
}

/// Resolves a probe port (a number or the name of a container port).
fn probe_port(container: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|&n| n != 0),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(
        value
            .and_then(|v| u64::try_from(v).ok())
            .filter(|&v| v > 0)
            .unwrap_or(default),
    )
}

fn plan_container(
    container: &Container,
    image_bins: &[ImageBin],
    notes: &mut Vec<String>,
) -> ContainerPlan {
    let image = container.image.clone().unwrap_or_default();
    let tcp_ports = tcp_ports(container, notes);
    let run = if tcp_ports.is_empty() {
        Run::Nothing
    } else if let Some(path) = image_bin(&image, image_bins) {
        Run::Bin(path.to_owned())
    } else {
        Run::Echo
    };
    let default_checks: Vec<Check> = tcp_ports.iter().map(|&p| Check::Tcp(p)).collect();
    let mut readiness = Readiness {
        checks: default_checks.clone(),
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        failure_threshold: 3,
    };
    if let Some(probe) = &container.readiness_probe {
        readiness.initial_delay = Duration::from_secs(
            probe
                .initial_delay_seconds
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0),
        );
        readiness.period = seconds(probe.period_seconds, 10);
        readiness.timeout = seconds(probe.timeout_seconds, 1);
        readiness.failure_threshold = probe
            .failure_threshold
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v > 0)
            .unwrap_or(3);
        let check = if let Some(tcp) = &probe.tcp_socket {
            probe_port(container, &tcp.port).map(Check::Tcp)
        } else if let Some(http) = &probe.http_get {
            probe_port(container, &http.port).map(|port| Check::Http {
                port,
                path: http.path.clone().unwrap_or_else(|| "/".to_owned()),
            })
        } else {
            notes.push(format!(
                "container {}: readiness probe kind not supported, using TCP connects",
                container.name
            ));
            None
        };
        match check {
            Some(check) => readiness.checks = vec![check],
            None if probe.tcp_socket.is_some() || probe.http_get.is_some() => {
                notes.push(format!(
                    "container {}: readiness probe port not found, using TCP connects",
                    container.name
                ));
            }
            None => {}
        }
    }
    if run == Run::Nothing {
        readiness.checks.clear();
    }
    let env = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    ContainerPlan {
        name: container.name.clone(),
        image,
        tcp_ports,
        run,
        readiness,
        env,
    }
}

/// One process to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSpec {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its extra environment.
    pub env: Vec<(String, String)>,
    /// The port it serves, for the log (echo: its only port; a binary: its first).
    pub port: u16,
}

/// Where a pod runs.
#[derive(Debug, Clone, Copy)]
pub struct PodPlace<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Pod name.
    pub name: &'a str,
    /// Pod IP.
    pub ip: Ipv4Addr,
}

/// The processes of one container: one echo server per TCP port, or one process of the
/// container's binary, or none.
pub fn processes(plan: &ContainerPlan, place: PodPlace<'_>, echo: &Path) -> Vec<ProcSpec> {
    let mut env = plan.env.clone();
    env.extend([
        ("POD_NAME".to_owned(), place.name.to_owned()),
        ("NAMESPACE".to_owned(), place.namespace.to_owned()),
        ("POD_IP".to_owned(), place.ip.to_string()),
    ]);
    match &plan.run {
        Run::Nothing => Vec::new(),
        Run::Echo => plan
            .tcp_ports
            .iter()
            .map(|&port| {
                let mut env = env.clone();
                env.push(("HTTP_PORT".to_owned(), port.to_string()));
                ProcSpec {
                    program: echo.to_owned(),
                    args: vec![
                        "--listen".into(),
                        format!("{}:{port}", place.ip),
                        "--name".into(),
                        place.name.to_owned(),
                        "--workers".into(),
                        "1".into(),
                        "--drain-on-sigterm".into(),
                    ],
                    env,
                    port,
                }
            })
            .collect(),
        Run::Bin(path) => {
            let port = plan.tcp_ports[0];
            env.push(("HTTP_PORT".to_owned(), port.to_string()));
            vec![ProcSpec {
                program: path.clone(),
                args: Vec::new(),
                env,
                port,
            }]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn bins() -> Vec<ImageBin> {
        vec![
            ImageBin {
                substring: "grpc".into(),
                path: "/bin/grpc".into(),
            },
            ImageBin {
                substring: "grpc-web".into(),
                path: "/bin/never".into(),
            },
        ]
    }

    #[test]
    fn image_mapping_first_match_wins() {
        let bins = bins();
        assert_eq!(
            image_bin("example/grpc-web:1", &bins),
            Some(Path::new("/bin/grpc"))
        );
        assert_eq!(image_bin("example/echo:1", &bins), None);
    }

    #[test]
    fn ports_and_programs() {
        let pod = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [
                {"name": "web", "image": "echo", "ports": [
                    {"containerPort": 8080},
                    {"containerPort": 8443, "protocol": "TCP", "name": "https"},
                    {"containerPort": 8080},
                    {"containerPort": 53, "protocol": "UDP"}
                ], "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]},
                {"name": "grpc", "image": "example/grpc:2", "ports": [{"containerPort": 9000}, {"containerPort": 9001}]},
                {"name": "sidecar", "image": "busybox"}
            ]}
        }));
        let (plans, notes) = plan_pod(&pod, &bins());
        assert_eq!(plans.len(), 3);
        assert_eq!(plans[0].tcp_ports, [8080, 8443]);
        assert_eq!(plans[0].run, Run::Echo);
        assert_eq!(
            plans[0].readiness.checks,
            [Check::Tcp(8080), Check::Tcp(8443)]
        );
        assert_eq!(plans[0].env, [("A".to_owned(), "1".to_owned())]);
        assert_eq!(plans[1].run, Run::Bin("/bin/grpc".into()));
        assert_eq!(plans[2].run, Run::Nothing);
        assert!(plans[2].readiness.checks.is_empty());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("UDP port 53"), "{notes:?}");

        let place = PodPlace {
            namespace: "ns",
            name: "p",
            ip: "127.77.0.9".parse().unwrap(),
        };
        let echo = Path::new("/bin/lb-echo");
        let procs = processes(&plans[0], place, echo);
        assert_eq!(procs.len(), 2);
        assert_eq!(procs[1].program, echo);
        assert_eq!(
            procs[1].args,
            [
                "--listen",
                "127.77.0.9:8443",
                "--name",
                "p",
                "--workers",
                "1",
                "--drain-on-sigterm"
            ]
        );
        let procs = processes(&plans[1], place, echo);
        assert_eq!(procs.len(), 1);
        assert_eq!(procs[0].program, Path::new("/bin/grpc"));
        assert!(procs[0].args.is_empty());
        let env = |k: &str| {
            procs[0]
                .env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(env("POD_NAME"), Some("p"));
        assert_eq!(env("NAMESPACE"), Some("ns"));
        assert_eq!(env("POD_IP"), Some("127.77.0.9"));
        assert_eq!(env("HTTP_PORT"), Some("9000"));
        assert!(processes(&plans[2], place, echo).is_empty());
    }

    #[test]
    fn readiness_probes() {
        let pod = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "http", "image": "e", "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 81}],
                 "readinessProbe": {"httpGet": {"port": "web", "path": "/healthz"}, "periodSeconds": 2,
                                    "initialDelaySeconds": 1, "failureThreshold": 1}},
                {"name": "tcp", "image": "e", "ports": [{"containerPort": 90}],
                 "readinessProbe": {"tcpSocket": {"port": 91}}},
                {"name": "exec", "image": "e", "ports": [{"containerPort": 95}],
                 "readinessProbe": {"exec": {"command": ["true"]}}},
                {"name": "badname", "image": "e", "ports": [{"containerPort": 96}],
                 "readinessProbe": {"tcpSocket": {"port": "nope"}}}
            ]}
        }));
        let (plans, notes) = plan_pod(&pod, &[]);
        let r = &plans[0].readiness;
        assert_eq!(
            r.checks,
            [Check::Http {
                port: 80,
                path: "/healthz".into()
            }]
        );
        assert_eq!(r.period, Duration::from_secs(2));
        assert_eq!(r.initial_delay, Duration::from_secs(1));
        assert_eq!(r.failure_threshold, 1);
        assert_eq!(plans[1].readiness.checks, [Check::Tcp(91)]);
        assert_eq!(plans[1].readiness.period, Duration::from_secs(10));
        assert_eq!(plans[2].readiness.checks, [Check::Tcp(95)]);
        assert_eq!(plans[3].readiness.checks, [Check::Tcp(96)]);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }
}
